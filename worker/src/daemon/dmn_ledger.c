/* dmn_ledger: see dmn_ledger.h. */
#include "daemon/dmn_ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codec/ev_event.h"

static fb_code dmn_ledger_path(const char *root, const char *job_id, char *dir, size_t dcap, char *path, size_t pcap,
                               fb_err *err) {
    if (!root || !*root)
        return fb_err_set(err, FB_ERR_USAGE, "no storage root configured (--storage-root / FB_STORAGE_ROOT)");
    if (!ev_uuid_valid(job_id)) return fb_err_set(err, FB_ERR_INVALID, "job id \"%s\" is not a UUID", job_id);
    snprintf(dir, dcap, "%s/.ledger", root);
    snprintf(path, pcap, "%s/%s.success", dir, job_id);
    return FB_OK;
}

fb_code dmn_ledger_get(const char *storage_root, const char *job_id, unsigned char **out, size_t *len, fb_err *err) {
    char dir[4096], path[4200];
    *out = NULL;
    *len = 0;
    fb_code rc = dmn_ledger_path(storage_root, job_id, dir, sizeof dir, path, sizeof path, err);
    if (rc) return rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT) return FB_ERR_NOTFOUND;
        return fb_err_set(err, FB_ERR_IO, "could not open job ledger entry \"%s\": %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size <= 0 || st.st_size > (1 << 22)) {
        close(fd);
        return fb_err_set(err, FB_ERR_IO, "job ledger entry \"%s\" is empty or too large: remove it to rerun the job",
                          path);
    }
    unsigned char *buf = malloc((size_t)st.st_size);
    ssize_t n = buf ? read(fd, buf, (size_t)st.st_size) : -1;
    close(fd);
    if (n != st.st_size) {
        free(buf);
        return fb_err_set(err, FB_ERR_IO, "could not read job ledger entry \"%s\"", path);
    }
    *out = buf;
    *len = (size_t)n;
    return FB_OK;
}

fb_code dmn_ledger_put(const char *storage_root, const char *job_id, const unsigned char *value, size_t len,
                       fb_err *err) {
    char dir[4096], path[4200], tmp[4300];
    fb_code rc = dmn_ledger_path(storage_root, job_id, dir, sizeof dir, path, sizeof path, err);
    if (rc) return rc;
    if (mkdir(dir, 0750) != 0 && errno != EEXIST)
        return fb_err_set(err, FB_ERR_IO, "could not create the job ledger folder \"%s\": %s", dir, strerror(errno));
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0) return fb_err_set(err, FB_ERR_IO, "could not create \"%s\": %s", tmp, strerror(errno));
    ssize_t w = write(fd, value, len);
    int ok = w == (ssize_t)len && fsync(fd) == 0;
    int saved = errno;
    close(fd);
    if (!ok || rename(tmp, path) != 0) {
        if (ok) saved = errno;
        unlink(tmp);
        return fb_err_set(err, FB_ERR_IO, "could not write job ledger entry \"%s\": %s", path, strerror(saved));
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return FB_OK;
}
