/* dmn_ledger: see dmn_ledger.h. */
#include "daemon/dmn_ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/stor.h"

/* First line of an entry: magic, version, the request digest in hex. Version 1 entries had no header. */
#define LEDGER_MAGIC "FBLEDGER 2 "
#define LEDGER_HEADER_LEN (sizeof LEDGER_MAGIC - 1 + 2 * DMN_DIGEST_BYTES + 1)

fb_code dmn_ledger_digest(const ev_event *req, unsigned char digest[DMN_DIGEST_BYTES], fb_err *err) {
    /* The fields that differ between deliveries of one request: when it was made, which attempt, who pressed
     * the button (a replay by an operator is still the same job). Everything else (ids, tables, paths, types)
     * is what the job acts on, so it is in the digest. A shallow copy: ev_encode only reads. */
    ev_event n = *req;
    n.ts = 0;
    n.attempt = 1;
    n.requested_by.has = 0;
    n.requested_by.v = 0;
    unsigned char *buf = NULL;
    size_t len = 0;
    fb_code rc = ev_encode(&n, &buf, &len, err);
    if (rc) return fb_err_prefix(err, "computing the request digest of job %s: ", req->job_id);
    crypto_generichash(digest, DMN_DIGEST_BYTES, buf, len, (const unsigned char *)"fusion ledger v2", 16);
    free(buf);
    return FB_OK;
}

static fb_code dmn_ledger_dir(const char *root, const char *job_id, char *dir, size_t dcap, fb_err *err) {
    if (!root || !*root)
        return fb_err_set(err, FB_ERR_USAGE, "no storage root configured (--storage-root / FB_STORAGE_ROOT)");
    if (!ev_uuid_valid(job_id)) return fb_err_set(err, FB_ERR_INVALID, "job id \"%s\" is not a UUID", job_id);
    snprintf(dir, dcap, "%s/.ledger", root);
    return FB_OK;
}

/* Writes value atomically to path inside dir (temporary, fsync, then stor_posix_publish: rename, fsync of dir). Not
 * stor_create: its temporary name is deterministic (a crashed run's is reused), and job threads bumping one
 * delivery counter at once need one temporary each. */
static fb_code dmn_ledger_write(const char *dir, const char *path, const void *head, size_t head_len,
                                const void *value, size_t len, fb_err *err) {
    char tmp[4400];
    if (mkdir(dir, 0750) != 0 && errno != EEXIST)
        return fb_err_set(err, FB_ERR_IO, "could not create the job ledger folder \"%s\": %s", dir, strerror(errno));
    snprintf(tmp, sizeof tmp, "%s.tmp.%d.%lx", path, (int)getpid(), (unsigned long)pthread_self());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0) return fb_err_set(err, FB_ERR_IO, "could not create \"%s\": %s", tmp, strerror(errno));
    int ok = (head_len == 0 || write(fd, head, head_len) == (ssize_t)head_len) &&
             write(fd, value, len) == (ssize_t)len && fsync(fd) == 0;
    int saved = errno;
    close(fd);
    size_t skip = strlen(dir) + 1; /* tmp and path are dir/NAME */
    fb_code rc = ok ? stor_posix_publish(dir, tmp + skip, path + skip, err)
                    : fb_err_set(err, FB_ERR_IO, "could not write job ledger file \"%s\": %s", path, strerror(saved));
    if (rc) unlink(tmp);
    return rc;
}

/* The ledger's path of a job's success entry, relative to the storage root. */
static fb_code dmn_success_rel(const fb_config *cfg, const char *job_id, char *rel, size_t cap, fb_err *err) {
    if (!cfg->storage_root || !*cfg->storage_root)
        return fb_err_set(err, FB_ERR_USAGE, "no storage root configured (--storage-root / FB_STORAGE_ROOT)");
    if (!ev_uuid_valid(job_id)) return fb_err_set(err, FB_ERR_INVALID, "job id \"%s\" is not a UUID", job_id);
    snprintf(rel, cap, ".ledger/%s.success", job_id);
    return FB_OK;
}

fb_code dmn_ledger_get(const fb_config *cfg, const char *job_id, const unsigned char digest[DMN_DIGEST_BYTES],
                       unsigned char **out, size_t *len, int *digest_match, fb_err *err) {
    char rel[128];
    stor *st = NULL;
    stor_rfile *f = NULL;
    unsigned char *buf = NULL;
    *out = NULL;
    *len = 0;
    *digest_match = 0;
    fb_code rc = dmn_success_rel(cfg, job_id, rel, sizeof rel, err);
    if (!rc) rc = stor_open_location(cfg->storage_root, cfg, &st, err);
    if (!rc) {
        fb_err e2;
        rc = stor_open(st, rel, &f, &e2);
        if (rc == FB_ERR_NOTFOUND) goto out; /* never succeeded: no message needed */
        if (rc) {
            if (err) *err = e2;
            fb_err_prefix(err, "reading the job ledger: ");
        }
    }
    if (!rc && (f->size == 0 || f->size > (1u << 22)))
        rc = fb_err_set(err, FB_ERR_IO, "job ledger entry \"%s\" is empty or too large: remove it to rerun the job",
                        f->name);
    if (!rc && !(buf = malloc((size_t)f->size))) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    if (!rc) rc = stor_rfile_pread(f, buf, (size_t)f->size, 0, err);
    if (!rc) {
        size_t n = (size_t)f->size, skip = 0;
        if (n > LEDGER_HEADER_LEN && memcmp(buf, LEDGER_MAGIC, sizeof LEDGER_MAGIC - 1) == 0 &&
            buf[LEDGER_HEADER_LEN - 1] == '\n') {
            char hex[2 * DMN_DIGEST_BYTES + 1];
            sodium_bin2hex(hex, sizeof hex, digest, DMN_DIGEST_BYTES);
            *digest_match = memcmp(buf + sizeof LEDGER_MAGIC - 1, hex, 2 * DMN_DIGEST_BYTES) == 0;
            skip = LEDGER_HEADER_LEN;
        }
        memmove(buf, buf + skip, n - skip);
        *out = buf;
        *len = n - skip;
        buf = NULL;
    }
out:
    free(buf);
    stor_rfile_close(f);
    stor_free(st);
    return rc;
}

fb_code dmn_ledger_put(const fb_config *cfg, const char *job_id, const unsigned char digest[DMN_DIGEST_BYTES],
                       const unsigned char *value, size_t len, fb_err *err) {
    char rel[128], head[LEDGER_HEADER_LEN + 1];
    stor *st = NULL;
    stor_wfile *wf = NULL;
    memcpy(head, LEDGER_MAGIC, sizeof LEDGER_MAGIC - 1);
    sodium_bin2hex(head + sizeof LEDGER_MAGIC - 1, 2 * DMN_DIGEST_BYTES + 1, digest, DMN_DIGEST_BYTES);
    head[LEDGER_HEADER_LEN - 1] = '\n';
    fb_code rc = dmn_success_rel(cfg, job_id, rel, sizeof rel, err);
    if (!rc) rc = stor_open_location(cfg->storage_root, cfg, &st, err);
    if (!rc) {
        /* A folder replaces an older entry atomically (temporary, fsync, rename); an object store never
         * overwrites: an entry already there stays (a digest mismatch then makes the next delivery run again,
         * whose own authority check decides). */
        rc = stor_create(st, rel, &wf, err);
        if (rc == FB_ERR_CONFLICT) rc = FB_OK;
        else if (!rc) {
            rc = stor_wfile_write(wf, head, LEDGER_HEADER_LEN, err);
            if (!rc) rc = stor_wfile_write(wf, value, len, err);
            if (rc) stor_wfile_abort(wf);
            else rc = stor_wfile_commit(wf, err);
        }
    }
    if (rc) fb_err_prefix(err, "recording the job's success in the ledger: ");
    stor_free(st);
    return rc;
}

/* ---- delivery counters ---- */

/* The counter's name: job, attempt and the first 16 hex digits of the digest (a decoy under the same id has
 * its own count, so it cannot use up the real request's deliveries). */
static void dmn_delivery_name(const char *job_id, int64_t attempt, const unsigned char digest[DMN_DIGEST_BYTES],
                              char *out, size_t cap) {
    char hex[17];
    sodium_bin2hex(hex, sizeof hex, digest, 8);
    snprintf(out, cap, "%s.%" PRId64 ".%s.deliveries", job_id, attempt, hex);
}

/* The in-memory fallback: a small table, oldest entry replaced when full. */
#define DMN_MEM_COUNTERS 256
static struct {
    char name[96];
    int64_t count;
} dmn_mem[DMN_MEM_COUNTERS];
static size_t dmn_mem_next;
static pthread_mutex_t dmn_mem_mu = PTHREAD_MUTEX_INITIALIZER;

/* op: 0 count one more, 1 forget, 2 only read. Returns the count (after the operation). */
static int64_t dmn_mem_op(const char *name, int op) {
    pthread_mutex_lock(&dmn_mem_mu);
    size_t i = 0;
    while (i < DMN_MEM_COUNTERS && strcmp(dmn_mem[i].name, name) != 0) i++;
    int64_t c = 0;
    if (op == 1) {
        if (i < DMN_MEM_COUNTERS) dmn_mem[i].name[0] = '\0';
    } else if (op == 2) {
        c = i < DMN_MEM_COUNTERS ? dmn_mem[i].count : 0;
    } else {
        if (i == DMN_MEM_COUNTERS) {
            i = dmn_mem_next++ % DMN_MEM_COUNTERS;
            snprintf(dmn_mem[i].name, sizeof dmn_mem[i].name, "%s", name);
            dmn_mem[i].count = 0;
        }
        c = ++dmn_mem[i].count;
    }
    pthread_mutex_unlock(&dmn_mem_mu);
    return c;
}

/* Reads the count of a counter file (0 when there is none). */
static fb_code dmn_delivery_read(const char *path, int64_t *count, fb_err *err) {
    *count = 0;
    FILE *f = fopen(path, "re");
    if (f) {
        if (fscanf(f, "%" SCNd64, count) != 1 || *count < 0) *count = 0;
        fclose(f);
    } else if (errno != ENOENT) {
        return fb_err_set(err, FB_ERR_IO, "could not read the delivery counter \"%s\": %s", path, strerror(errno));
    }
    return FB_OK;
}

/* Counts (count_one = 1) or only reads the counter of (job_id, attempt, digest): in memory without a root. */
static fb_code dmn_delivery_op(const char *storage_root, const char *job_id, int64_t attempt,
                               const unsigned char digest[DMN_DIGEST_BYTES], int count_one, int64_t *count,
                               fb_err *err) {
    char name[96], dir[4096], path[4200];
    *count = 0;
    if (!ev_uuid_valid(job_id)) return fb_err_set(err, FB_ERR_INVALID, "job id \"%s\" is not a UUID", job_id);
    dmn_delivery_name(job_id, attempt, digest, name, sizeof name);
    if (!storage_root || !*storage_root) {
        *count = dmn_mem_op(name, count_one ? 0 : 2);
        return FB_OK;
    }
    fb_code rc = dmn_ledger_dir(storage_root, job_id, dir, sizeof dir, err);
    if (rc) return rc;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int64_t prev = 0;
    if ((rc = dmn_delivery_read(path, &prev, err)) || !count_one) {
        *count = prev;
        return rc;
    }
    char text[32];
    int n = snprintf(text, sizeof text, "%" PRId64 "\n", prev + 1);
    if ((rc = dmn_ledger_write(dir, path, NULL, 0, text, (size_t)n, err))) return rc;
    *count = prev + 1;
    return FB_OK;
}

fb_code dmn_ledger_delivery_count(const char *storage_root, const char *job_id, int64_t attempt,
                                  const unsigned char digest[DMN_DIGEST_BYTES], int64_t *count, fb_err *err) {
    return dmn_delivery_op(storage_root, job_id, attempt, digest, 0, count, err);
}

fb_code dmn_ledger_delivery(const char *storage_root, const char *job_id, int64_t attempt,
                            const unsigned char digest[DMN_DIGEST_BYTES], int64_t *count, fb_err *err) {
    return dmn_delivery_op(storage_root, job_id, attempt, digest, 1, count, err);
}

void dmn_ledger_delivery_clear(const char *storage_root, const char *job_id, int64_t attempt,
                               const unsigned char digest[DMN_DIGEST_BYTES]) {
    char name[96], path[4200];
    dmn_delivery_name(job_id, attempt, digest, name, sizeof name);
    if (!storage_root || !*storage_root) {
        dmn_mem_op(name, 1);
        return;
    }
    if (!ev_uuid_valid(job_id)) return;
    snprintf(path, sizeof path, "%s/.ledger/%s", storage_root, name);
    unlink(path);
}
