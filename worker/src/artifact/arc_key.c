/* arc_key: key pair files. See arc_key.h. */
#include "artifact/arc_key.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static fb_code arc_key_write(const char *path, mode_t mode, const char *kind, const unsigned char *key, fb_err *err) {
    char hex[2 * 32 + 1], buf[256];
    fb_code rc = FB_OK;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        int e = errno;
        return fb_err_set(err, e == EEXIST ? FB_ERR_CONFLICT : FB_ERR_IO,
                          "could not create key file \"%s\": %s%s", path, strerror(e),
                          e == EEXIST ? " (refusing to overwrite a key: choose another --out prefix)" : "");
    }
    sodium_bin2hex(hex, sizeof hex, key, 32);
    time_t now = time(NULL);
    struct tm tm;
    char when[32];
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    int n = snprintf(buf, sizeof buf, "# fusion-backup %s key (X25519), created %s\n%s\n", kind, when, hex);
    sodium_memzero(hex, sizeof hex);
    if (write(fd, buf, (size_t)n) != n || fsync(fd) != 0) {
        rc = fb_err_set(err, FB_ERR_IO, "could not write key file \"%s\": %s", path, strerror(errno));
        unlink(path);
    }
    sodium_memzero(buf, sizeof buf);
    close(fd);
    return rc;
}

fb_code arc_key_generate(const char *prefix, fb_err *err) {
    unsigned char pk[ARC_PK_BYTES], sk[ARC_SK_BYTES];
    size_t n = strlen(prefix) + 5;
    char *pub = malloc(n), *sec = malloc(n);
    fb_code rc = FB_OK;
    if (!pub || !sec) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }
    snprintf(pub, n, "%s.pub", prefix);
    snprintf(sec, n, "%s.key", prefix);
    if (access(pub, F_OK) == 0 || access(sec, F_OK) == 0) {
        rc = fb_err_set(err, FB_ERR_CONFLICT, "\"%s\" or \"%s\" already exists; refusing to overwrite a key "
                        "(choose another --out prefix)", pub, sec);
        goto out;
    }
    crypto_box_keypair(pk, sk);
    rc = arc_key_write(sec, 0600, "secret", sk, err);
    if (rc) goto out;
    rc = arc_key_write(pub, 0644, "public", pk, err);
    if (rc) unlink(sec);
out:
    sodium_memzero(sk, sizeof sk);
    free(pub);
    free(sec);
    return rc;
}

/* Reads the first non-comment line of path as 32 bytes of hex. */
static fb_code arc_key_read(const char *path, unsigned char key[32], int secret, fb_err *err) {
    char buf[1024];
    fb_code rc = FB_OK;
    struct stat st;
    ssize_t n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fb_err_set(err, errno == ENOENT ? FB_ERR_NOTFOUND : FB_ERR_IO, "could not open %s key file \"%s\": %s",
                          secret ? "secret" : "public", path, strerror(errno));
    if (secret && fstat(fd, &st) == 0 && (st.st_mode & 077)) {
        rc = fb_err_set(err, FB_ERR_USAGE, "secret key file \"%s\" is readable by others (mode %03o); run chmod 600 \"%s\"",
                        path, (unsigned)(st.st_mode & 0777), path);
        goto out;
    }
    n = read(fd, buf, sizeof buf - 1);
    if (n < 0) {
        rc = fb_err_set(err, FB_ERR_IO, "could not read key file \"%s\": %s", path, strerror(errno));
        goto out;
    }
    buf[n] = '\0';
    char *line = buf;
    while (*line == '#') {
        char *nl = strchr(line, '\n');
        line = nl ? nl + 1 : line + strlen(line);
    }
    size_t bin_len = 0;
    const char *end = NULL;
    if (sodium_hex2bin(key, 32, line, strlen(line), NULL, &bin_len, &end) != 0 || bin_len != 32 ||
        (*end && *end != '\n' && *end != '\r')) {
        rc = fb_err_set(err, FB_ERR_FORMAT, "\"%s\" is not a fusion-backup %s key file (expected 64 hex digits)", path,
                        secret ? "secret" : "public");
        goto out;
    }
out:
    sodium_memzero(buf, sizeof buf);
    close(fd);
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
