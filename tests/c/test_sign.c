/* test_sign: fb_sign (signing keys, keyrings, the signature construction) and list settings (fb_config): a key
 * signs and verifies; a flipped bit, another context, another key, an unknown key id and an empty keyring are
 * refused; typed key files are never taken for each other (or for backup keys); a rotation keyring trusts both. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "artifact/arc_key.h"
#include "common/fb_config.h"
#include "common/fb_sign.h"
#include "tap.h"

static char dir[] = "/tmp/fb-test-sign-XXXXXX";

static const char *path(const char *name) {
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

int main(void) {
    fb_err err;
    if (sodium_init() < 0) return 1;
    CHECK(mkdtemp(dir) != NULL);
    CHECK_EQ_INT(fb_sign_generate(path("a"), &err), FB_OK);
    CHECK_EQ_INT(fb_sign_generate(path("b"), &err), FB_OK);
    CHECK_EQ_INT(fb_sign_generate(path("a"), &err), FB_ERR_CONFLICT); /* never overwrites */
    CHECK_EQ_INT(arc_key_generate(path("box"), &err), FB_OK);
    struct stat st;
    CHECK(stat(path("a.key"), &st) == 0 && (st.st_mode & 0777) == 0600);

    fb_signer a, b;
    CHECK_EQ_INT(fb_signer_load(&a, path("a.key"), "--sign-key", &err), FB_OK);
    CHECK_EQ_INT(fb_signer_load(&b, path("b.key"), "--sign-key", &err), FB_OK);
    CHECK(strlen(a.key_id) == 16 && strcmp(a.key_id, b.key_id) != 0);
    /* Typed files: a public key is not a secret one, a backup key is neither. */
    CHECKF(fb_signer_load(&(fb_signer){0}, path("a.pub"), "--sign-key", &err) == FB_ERR_FORMAT &&
               strstr(err.msg, "public signing key"), "%s", err.msg);
    CHECKF(fb_signer_load(&(fb_signer){0}, path("box.key"), "--sign-key", &err) == FB_ERR_FORMAT &&
               strstr(err.msg, "keygen --sign"), "%s", err.msg);
    unsigned char pk[FB_SIGN_PK_BYTES];
    CHECK_EQ_INT(fb_sign_load_public(path("box.pub"), pk, &err), FB_ERR_FORMAT);
    CHECK_EQ_INT(fb_signer_load(&(fb_signer){0}, "", "--sign-key", &err), FB_ERR_USAGE);
    chmod(path("b.key"), 0640);
    CHECKF(fb_signer_load(&(fb_signer){0}, path("b.key"), "--sign-key", &err) == FB_ERR_USAGE &&
               strstr(err.msg, "chmod 600"), "%s", err.msg);

    unsigned char digest[32], sig[FB_SIGN_BYTES];
    crypto_generichash(digest, sizeof digest, (const unsigned char *)"hello", 5, NULL, 0);
    fb_sign_digest(&a, "message", digest, sig);
    CHECK(fb_sign_verify_digest(a.pk, "message", digest, sig));
    CHECK(!fb_sign_verify_digest(a.pk, "artifact", digest, sig)); /* domain separation */
    CHECK(!fb_sign_verify_digest(b.pk, "message", digest, sig));
    digest[7] ^= 1;
    CHECK(!fb_sign_verify_digest(a.pk, "message", digest, sig));
    digest[7] ^= 1;
    sig[0] ^= 0x80;
    CHECK(!fb_sign_verify_digest(a.pk, "message", digest, sig));
    sig[0] ^= 0x80;

    /* Keyrings: comma lists, duplicates once, unknown ids and an empty ring refused. */
    fb_keyring kr = {0};
    char list[2048];
    snprintf(list, sizeof list, "%s, %s,%s", path("a.pub"), path("b.pub"), path("a.pub"));
    CHECK_EQ_INT(fb_keyring_load(&kr, list, "--trusted-signer", &err), FB_OK);
    CHECK_EQ_INT(kr.n, 2);
    CHECK_EQ_INT(fb_keyring_verify(&kr, a.key_id, "message", digest, sig, "test", NULL, &err), FB_OK);
    CHECKF(fb_keyring_verify(&kr, "0000000000000000", "message", digest, sig, "test", NULL, &err) == FB_ERR_UNTRUSTED &&
               strstr(err.msg, "not trusted") && strstr(err.msg, a.key_id), "%s", err.msg);
    CHECK_EQ_INT(fb_keyring_verify(&kr, b.key_id, "message", digest, sig, "test", NULL, &err), FB_ERR_UNTRUSTED);
    snprintf(list, sizeof list, "%s", path("b.pub"));
    CHECK_EQ_INT(fb_keyring_load(&kr, list, "--trusted-signer", &err), FB_OK); /* the old key dropped */
    CHECK_EQ_INT(fb_keyring_verify(&kr, a.key_id, "message", digest, sig, "test", NULL, &err), FB_ERR_UNTRUSTED);
    snprintf(list, sizeof list, "%s,%s", path("b.pub"), path("missing.pub"));
    CHECKF(fb_keyring_load(&kr, list, "--trusted-signer", &err) == FB_ERR_NOTFOUND &&
               strstr(err.msg, "--trusted-signer") && kr.n == 0, "%s", err.msg);
    CHECK_EQ_INT(fb_keyring_load(&kr, "", "--trusted-signer", &err), FB_OK);
    CHECK_EQ_INT(fb_keyring_verify(&kr, a.key_id, "message", digest, sig, "test", NULL, &err), FB_ERR_UNTRUSTED);
    fb_keyring_free(&kr);

    /* List settings: repeated flags accumulate, a flag replaces the environment's list. The test's own environment
     * only: tests/run.sh's env.sh names the development keys in these variables. */
    unsetenv("FB_TRUSTED_REQUESTERS");
    unsetenv("FB_SIGN_KEY");
    unsetenv("FB_CONFIG");
    setenv("FB_TRUSTED_SIGNERS", "env1.pub,env2.pub", 1);
    fb_config cfg;
    CHECK_EQ_INT(fb_config_init(&cfg, &err), FB_OK);
    CHECK_EQ_STR(cfg.trusted_signers, "env1.pub,env2.pub");
    char *argv[] = {"x", "--trusted-signer", "f1.pub", "--trusted-signer=f2.pub", "--sign-key", "s.key", NULL};
    int argc = 6;
    CHECK_EQ_INT(fb_config_parse_args(&cfg, &argc, argv, FB_CFG_WORKER, NULL, &err), FB_OK);
    CHECK_EQ_STR(cfg.trusted_signers, "f1.pub,f2.pub");
    CHECK_EQ_STR(cfg.sign_key, "s.key");
    fb_config_free(&cfg);
    /* The same through a --config file: its lines accumulate too, and the flags still replace them once. */
    FILE *f = fopen(path("c.conf"), "w");
    fprintf(f, "trusted-requester = r1.pub\ntrusted-requester = r2.pub\n");
    fclose(f);
    unsetenv("FB_TRUSTED_SIGNERS");
    CHECK_EQ_INT(fb_config_init(&cfg, &err), FB_OK);
    char conf_arg[600];
    snprintf(conf_arg, sizeof conf_arg, "--config=%s", path("c.conf"));
    char *argv2[] = {"x", conf_arg, "--trusted-signer", "f1.pub", "--trusted-signer", "f2.pub", NULL};
    argc = 6;
    CHECK_EQ_INT(fb_config_parse_args(&cfg, &argc, argv2, FB_CFG_WORKER, NULL, &err), FB_OK);
    CHECK_EQ_STR(cfg.trusted_requesters, "r1.pub,r2.pub");
    CHECK_EQ_STR(cfg.trusted_signers, "f1.pub,f2.pub");
    fb_config_free(&cfg);

    fb_signer_wipe(&a);
    fb_signer_wipe(&b);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return tap_done();
}
