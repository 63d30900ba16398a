/* arc_key: key pair files. See arc_key.h. */
#include "artifact/arc_key.h"

#include "common/fb_keyfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

fb_code arc_key_generate(const char *prefix, fb_err *err) {
    unsigned char pk[ARC_PK_BYTES], sk[ARC_SK_BYTES];
    char pub[4096], sec[4096];
    fb_code rc = fb_keyfile_pair_paths(prefix, pub, sec, sizeof pub, err);
    if (rc) return rc;
    crypto_box_keypair(pk, sk);
    rc = fb_keyfile_write(sec, 0600, "secret key (X25519)", NULL, sk, err);
    if (!rc && (rc = fb_keyfile_write(pub, 0644, "public key (X25519)", NULL, pk, err))) unlink(sec);
    sodium_memzero(sk, sizeof sk);
    return rc;
}

/* Reads the first non-comment line of path as 32 bytes of hex. */
static fb_code arc_key_read(const char *path, unsigned char key[32], int secret, fb_err *err) {
    char line[256];
    const char *kind = secret ? "secret" : "public";
    fb_code rc = fb_keyfile_read_line(path, kind, line, sizeof line, err);
    if (!rc && secret) rc = fb_keyfile_check_private(path, "secret", err);
    if (!rc) rc = fb_keyfile_hex32(path, kind, line, key, err);
    sodium_memzero(line, sizeof line);
    return rc;
}

fb_code arc_key_load_public(const char *path, unsigned char pk[ARC_PK_BYTES], fb_err *err) {
    if (!path || !*path)
        return fb_err_set(err, FB_ERR_USAGE, "no public key configured: set --public-key FILE or FB_PUBLIC_KEY "
                          "(create one with `fusion-backup keygen --out PREFIX`)");
    return arc_key_read(path, pk, 0, err);
}

fb_code arc_key_load_secret(const char *path, unsigned char sk[ARC_SK_BYTES], unsigned char pk[ARC_PK_BYTES],
                            fb_err *err) {
    if (!path || !*path)
        return fb_err_set(err, FB_ERR_USAGE, "no secret key configured: reading a backup needs the secret key; set "
                          "--secret-key FILE or FB_SECRET_KEY (workers normally hold only the public key)");
    fb_code rc = arc_key_read(path, sk, 1, err);
    if (rc) return rc;
    crypto_scalarmult_base(pk, sk);
    return FB_OK;
}
