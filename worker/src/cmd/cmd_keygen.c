/* cmd_keygen: `fusion-backup keygen [--sign] --out PREFIX`: writes a key pair, PREFIX.pub and PREFIX.key (mode
 * 0600). Without --sign, a backup key pair (arc_key.h: the public key for workers, the secret key for restore and
 * verify); with --sign, an Ed25519 signing key pair (fb_sign.h: the secret key for the party that signs, the
 * public key for those that must trust it). Never overwrites an existing key. */
#include <stdio.h>
#include <string.h>

#include "artifact/arc_key.h"
#include "cmd/cmd.h"
#include "common/fb_config.h"
#include "common/fb_json.h"
#include "common/fb_sign.h"

static const char cmd_keygen_usage[] =
    "usage: fusion-backup keygen [--sign] --out PREFIX\n"
    "  writes PREFIX.pub (give it to workers: --public-key) and PREFIX.key (mode 0600; restore and\n"
    "  verify need it: --secret-key). Refuses to overwrite existing files.\n"
    "  --sign: an Ed25519 signing key pair instead. PREFIX.key signs (--sign-key of the party that\n"
    "  speaks: a worker, the ops CLI; the Django app's FUSION_BACKUP SIGNING_KEY_FILE); PREFIX.pub goes\n"
    "  to the parties that trust it (--trusted-requester, --trusted-signer).\n";

int cmd_keygen(int argc, char **argv) {
    fb_config cfg;
    fb_err err;
    int help = 0;
    fb_code rc = cmd_args(&cfg, &argc, argv, FB_CMD_KEYGEN, cmd_keygen_usage, &help, &err);
    if (help) {
        fb_config_free(&cfg);
        return FB_OK;
    }
    const char *prefix = *cfg.out ? cfg.out : NULL;
    int sign = cfg.sign != 0;
    if (!rc && argc > 1)
        rc = fb_err_set(&err, FB_ERR_USAGE, "unexpected argument \"%s\" (usage: keygen [--sign] --out PREFIX)", argv[1]);
    if (!rc && !prefix) rc = fb_err_set(&err, FB_ERR_USAGE, "keygen needs --out PREFIX (writes PREFIX.pub and PREFIX.key)");
    if (!rc) rc = sign ? fb_sign_generate(prefix, &err) : arc_key_generate(prefix, &err);
    char id[FB_SIGN_KEY_ID_HEX] = "";
    if (!rc && sign) {
        unsigned char pk[FB_SIGN_PK_BYTES];
        char pub[4096];
        snprintf(pub, sizeof pub, "%s.pub", prefix);
        if (!(rc = fb_sign_load_public(pub, pk, &err))) fb_sign_key_id(pk, id);
    }
    if (rc) {
        fprintf(stderr, "fusion-backup keygen: %s\n", err.msg);
        if (cfg.json) cmd_json_failure(rc, err.msg);
    } else if (cfg.json) {
        char path[4200];
        printf("{\"ok\":true,\"kind\":\"%s\",\"public\":", sign ? "ed25519-signing" : "x25519-backup");
        snprintf(path, sizeof path, "%s.pub", prefix);
        fb_json_string(stdout, path);
        printf(",\"secret\":");
        snprintf(path, sizeof path, "%s.key", prefix);
        fb_json_string(stdout, path);
        if (sign) printf(",\"key_id\":\"%s\"", id);
        printf("}\n");
    } else if (sign) {
        printf("wrote %s.key (signing key, mode 0600: for the party that signs) and %s.pub (key id %s: for "
               "the parties that trust it)\n", prefix, prefix, id);
    } else {
        printf("wrote %s.pub (public: for workers) and %s.key (secret, mode 0600: keep it off worker machines)\n",
               prefix, prefix);
    }
    fb_config_free(&cfg);
    return rc;
}
