/* fb_sign: signing keys, keyrings and the signature construction. See fb_sign.h. */
#include "common/fb_sign.h"

#include "common/fb_keyfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SIGN_TAG_PUBLIC "ed25519-public"
#define SIGN_TAG_SEED "ed25519-seed"

fb_code fb_sign_generate(const char *prefix, fb_err *err) {
    unsigned char pk[FB_SIGN_PK_BYTES], sk[FB_SIGN_SK_BYTES], seed[FB_SIGN_SEED_BYTES];
    char pub[4096], sec[4096];
    fb_code rc = fb_keyfile_pair_paths(prefix, pub, sec, sizeof pub, err);
    if (rc) return rc;
    randombytes_buf(seed, sizeof seed);
    crypto_sign_seed_keypair(pk, sk, seed);
    rc = fb_keyfile_write(sec, 0600, "signing secret key (Ed25519)", SIGN_TAG_SEED, seed, err);
    if (!rc && (rc = fb_keyfile_write(pub, 0644, "signing public key (Ed25519)", SIGN_TAG_PUBLIC, pk, err)))
        unlink(sec);
    sodium_memzero(sk, sizeof sk);
    sodium_memzero(seed, sizeof seed);
    return rc;
}

void fb_sign_key_id(const unsigned char pk[FB_SIGN_PK_BYTES], char out[FB_SIGN_KEY_ID_HEX]) {
    unsigned char h[32];
    crypto_generichash(h, sizeof h, pk, FB_SIGN_PK_BYTES, NULL, 0);
    sodium_bin2hex(out, FB_SIGN_KEY_ID_HEX, h, FB_SIGN_KEY_ID_BYTES);
}

/* Reads the first non-comment line of path, which must be `TAG HEX64`, into key. A backup key file (bare hex,
 * arc_key.h) is named as such in the error, since that is the likely mistake. */
static fb_code sign_read(const char *path, const char *tag, int secret, unsigned char key[32], fb_err *err) {
    char line[256];
    const char *kind = secret ? "secret signing" : "public signing";
    fb_code rc = fb_keyfile_read_line(path, kind, line, sizeof line, err);
    size_t tl = strlen(tag);
    if (!rc && (strncmp(line, tag, tl) != 0 || line[tl] != ' ')) {
        const char *other = strcmp(tag, SIGN_TAG_SEED) == 0 ? SIGN_TAG_PUBLIC : SIGN_TAG_SEED;
        const char *why = strncmp(line, other, strlen(other)) == 0
                              ? (secret ? "it is a public signing key: give the .key file" : "it is a secret signing key: give the .pub file")
                              : "it looks like a backup (X25519) key or another file: make signing keys with "
                                "`fusion-backup keygen --sign --out PREFIX`";
        rc = fb_err_set(err, FB_ERR_FORMAT, "\"%s\" is not a fusion-backup %s key file (%s)", path, kind, why);
    }
    /* Permissions after the type: a public key given as the secret one is named as such, not as too readable. */
    if (!rc && secret) rc = fb_keyfile_check_private(path, "secret signing", err);
    if (!rc) rc = fb_keyfile_hex32(path, kind, line + tl + 1, key, err);
    sodium_memzero(line, sizeof line);
    return rc;
}

fb_code fb_signer_load(fb_signer *s, const char *path, const char *setting, fb_err *err) {
    memset(s, 0, sizeof *s);
    if (!path || !*path)
        return fb_err_set(err, FB_ERR_USAGE, "no signing key configured: set %s FILE (make one with `fusion-backup "
                          "keygen --sign --out PREFIX` and give PREFIX.pub to the parties that must trust it)", setting);
    unsigned char seed[FB_SIGN_SEED_BYTES];
    fb_code rc = sign_read(path, SIGN_TAG_SEED, 1, seed, err);
    if (!rc) {
        crypto_sign_seed_keypair(s->pk, s->sk, seed);
        fb_sign_key_id(s->pk, s->key_id);
        s->loaded = 1;
    } else {
        fb_err_prefix(err, "%s: ", setting);
    }
    sodium_memzero(seed, sizeof seed);
    return rc;
}

void fb_signer_wipe(fb_signer *s) {
    if (s) sodium_memzero(s, sizeof *s);
}

fb_code fb_sign_load_public(const char *path, unsigned char pk[FB_SIGN_PK_BYTES], fb_err *err) {
    return sign_read(path, SIGN_TAG_PUBLIC, 0, pk, err);
}

fb_code fb_keyring_load(fb_keyring *kr, const char *list, const char *setting, fb_err *err) {
    fb_keyring_free(kr);
    const char *p = list ? list : "";
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len && (*p == ' ' || *p == '\t')) p++, len--;
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t')) len--;
        if (len) {
            if (kr->n == FB_KEYRING_MAX) {
                fb_keyring_free(kr);
                return fb_err_set(err, FB_ERR_USAGE, "%s: at most %d trusted keys", setting, FB_KEYRING_MAX);
            }
            fb_trusted_key *k = &kr->keys[kr->n];
            k->path = strndup(p, len);
            if (!k->path) {
                fb_keyring_free(kr);
                return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
            }
            fb_code rc = fb_sign_load_public(k->path, k->pk, err);
            if (rc) {
                fb_err_prefix(err, "%s: ", setting);
                kr->n++;
                fb_keyring_free(kr);
                return rc;
            }
            fb_sign_key_id(k->pk, k->key_id);
            if (fb_keyring_find(kr, k->key_id)) free(k->path), k->path = NULL; /* the same key listed twice */
            else kr->n++;
        }
        p += len;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == ',') p++;
    }
    return FB_OK;
}

const fb_trusted_key *fb_keyring_find(const fb_keyring *kr, const char *key_id) {
    for (size_t i = 0; kr && key_id && i < kr->n; i++)
        if (strcmp(kr->keys[i].key_id, key_id) == 0) return &kr->keys[i];
    return NULL;
}

void fb_keyring_free(fb_keyring *kr) {
    if (!kr) return;
    for (size_t i = 0; i < kr->n; i++) free(kr->keys[i].path);
    memset(kr, 0, sizeof *kr);
}

/* The signed bytes: domain, NUL, context, NUL, digest. */
static size_t sign_message(const char *context, const unsigned char digest[FB_SIGN_DIGEST_BYTES], unsigned char *out,
                           size_t cap) {
    size_t dl = sizeof FB_SIGN_DOMAIN, cl = strlen(context) + 1; /* both with their NUL */
    if (dl + cl + FB_SIGN_DIGEST_BYTES > cap) return 0;
    memcpy(out, FB_SIGN_DOMAIN, dl);
    memcpy(out + dl, context, cl);
    memcpy(out + dl + cl, digest, FB_SIGN_DIGEST_BYTES);
    return dl + cl + FB_SIGN_DIGEST_BYTES;
}

void fb_sign_digest(const fb_signer *s, const char *context, const unsigned char digest[FB_SIGN_DIGEST_BYTES],
                    unsigned char sig[FB_SIGN_BYTES]) {
    unsigned char m[256];
    size_t n = sign_message(context, digest, m, sizeof m);
    crypto_sign_detached(sig, NULL, m, n, s->sk);
}

int fb_sign_verify_digest(const unsigned char pk[FB_SIGN_PK_BYTES], const char *context,
                          const unsigned char digest[FB_SIGN_DIGEST_BYTES], const unsigned char sig[FB_SIGN_BYTES]) {
    unsigned char m[256];
    size_t n = sign_message(context, digest, m, sizeof m);
    return n && crypto_sign_verify_detached(sig, m, n, pk) == 0;
}

fb_code fb_keyring_verify(const fb_keyring *kr, const char *key_id, const char *context,
                          const unsigned char digest[FB_SIGN_DIGEST_BYTES], const unsigned char sig[FB_SIGN_BYTES],
                          const char *what, const fb_trusted_key **who, fb_err *err) {
    if (who) *who = NULL;
    if (!kr || kr->n == 0)
        return fb_err_set(err, FB_ERR_UNTRUSTED, "%s: no trusted signing keys are configured, so nothing can be "
                          "accepted", what);
    const fb_trusted_key *k = fb_keyring_find(kr, key_id);
    if (!k) {
        char known[FB_KEYRING_MAX * (FB_SIGN_KEY_ID_HEX + 1) + 1] = "";
        for (size_t i = 0; i < kr->n; i++) {
            if (i) strcat(known, ",");
            strcat(known, kr->keys[i].key_id);
        }
        return fb_err_set(err, FB_ERR_UNTRUSTED, "%s is signed by key %s, which is not trusted here (trusted: %s)",
                          what, key_id && *key_id ? key_id : "(none)", known);
    }
    if (!fb_sign_verify_digest(k->pk, context, digest, sig))
        return fb_err_set(err, FB_ERR_UNTRUSTED, "%s: bad signature for key %s (%s): altered after signing, or "
                          "forged", what, k->key_id, k->path ? k->path : "?");
    if (who) *who = k;
    return FB_OK;
}
