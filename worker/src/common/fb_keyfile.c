/* fb_keyfile: key files. See fb_keyfile.h. */
#include "common/fb_keyfile.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/fb_time.h"

fb_code fb_keyfile_write(const char *path, mode_t mode, const char *description, const char *tag,
                         const unsigned char key[32], fb_err *err) {
    char hex[2 * 32 + 1], buf[512], when[32];
    fb_code rc = FB_OK;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        int e = errno;
        return fb_err_set(err, e == EEXIST ? FB_ERR_CONFLICT : FB_ERR_IO, "could not create key file \"%s\": %s%s",
                          path, strerror(e), e == EEXIST ? " (refusing to overwrite a key: choose another --out prefix)" : "");
    }
    sodium_bin2hex(hex, sizeof hex, key, 32);
    fb_time_format_utc(fb_now_ms(), when, sizeof when);
    int n = snprintf(buf, sizeof buf, "# fusion-backup %s, created %s\n%s%s%s\n", description, when, tag ? tag : "",
                     tag ? " " : "", hex);
    sodium_memzero(hex, sizeof hex);
    if (n < 0 || (size_t)n >= sizeof buf || write(fd, buf, (size_t)n) != n || fsync(fd) != 0) {
        rc = fb_err_set(err, FB_ERR_IO, "could not write key file \"%s\": %s", path, strerror(errno));
        unlink(path);
    }
    sodium_memzero(buf, sizeof buf);
    close(fd);
    return rc;
}

fb_code fb_keyfile_read_line(const char *path, const char *kind, char *line, size_t cap, fb_err *err) {
    char buf[1024];
    fb_code rc = FB_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fb_err_set(err, errno == ENOENT ? FB_ERR_NOTFOUND : FB_ERR_IO, "could not open %s key file \"%s\": %s",
                          kind, path, strerror(errno));
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0) {
        rc = fb_err_set(err, FB_ERR_IO, "could not read key file \"%s\": %s", path, strerror(errno));
        goto out;
    }
    buf[n] = '\0';
    char *p = buf;
    while (*p == '#') {
        char *nl = strchr(p, '\n');
        p = nl ? nl + 1 : p + strlen(p);
    }
    size_t len = strcspn(p, "\r\n");
    if (len >= cap) len = cap - 1;
    memcpy(line, p, len);
    line[len] = '\0';
out:
    sodium_memzero(buf, sizeof buf);
    close(fd);
    return rc;
}

fb_code fb_keyfile_check_private(const char *path, const char *kind, fb_err *err) {
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 077))
        return fb_err_set(err, FB_ERR_USAGE, "%s key file \"%s\" is readable by others (mode %03o); run chmod 600 "
                          "\"%s\"", kind, path, (unsigned)(st.st_mode & 0777), path);
    return FB_OK;
}

fb_code fb_keyfile_hex32(const char *path, const char *kind, const char *hex, unsigned char key[32], fb_err *err) {
    size_t bin_len = 0;
    const char *end = NULL;
    if (sodium_hex2bin(key, 32, hex, strlen(hex), NULL, &bin_len, &end) != 0 || bin_len != 32 || *end)
        return fb_err_set(err, FB_ERR_FORMAT, "\"%s\" is not a fusion-backup %s key file (expected 64 hex digits)",
                          path, kind);
    return FB_OK;
}

fb_code fb_keyfile_pair_paths(const char *prefix, char *pub, char *sec, size_t cap, fb_err *err) {
    if ((size_t)snprintf(pub, cap, "%s.pub", prefix) >= cap || (size_t)snprintf(sec, cap, "%s.key", prefix) >= cap)
        return fb_err_set(err, FB_ERR_USAGE, "key prefix \"%s\" is too long", prefix);
    if (access(pub, F_OK) == 0 || access(sec, F_OK) == 0)
        return fb_err_set(err, FB_ERR_CONFLICT, "\"%s\" or \"%s\" already exists; refusing to overwrite a key "
                          "(choose another --out prefix)", pub, sec);
    return FB_OK;
}
