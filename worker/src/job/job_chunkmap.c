/* job_chunkmap: see job_chunkmap.h. */
#include "job/job_chunkmap.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define JCM_SLOT ARC_CLIST_REC_BYTES
#define JCM_MIN_CAP 4096u

struct job_chunkmap {
    int fd;
    uint64_t cap, n;  /* slots (a power of two), used slots */
};

static fb_code jcm_file(int *fd, uint64_t cap, fb_err *err) {
    const char *dir = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/fusion-backup-chunkmap-XXXXXX", dir && *dir ? dir : "/tmp");
    *fd = mkstemp(path);
    if (*fd < 0)
        return fb_err_set(err, FB_ERR_IO, "could not create the chunk map's temporary file in \"%s\": %s (set "
                          "TMPDIR to a writable folder)", dir && *dir ? dir : "/tmp", strerror(errno));
    unlink(path);
    if (ftruncate(*fd, (off_t)(cap * JCM_SLOT)) != 0) { /* sparse: empty slots read as zeros */
        int e = errno;
        close(*fd);
        *fd = -1;
        return fb_err_set(err, FB_ERR_IO, "could not size the chunk map's temporary file (%llu bytes) in \"%s\": %s",
                          (unsigned long long)(cap * JCM_SLOT), dir && *dir ? dir : "/tmp", strerror(e));
    }
    return FB_OK;
}

static fb_code jcm_pread(int fd, void *buf, size_t len, uint64_t off, fb_err *err) {
    while (len) {
        ssize_t got = pread(fd, buf, len, (off_t)off);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            return fb_err_set(err, FB_ERR_IO, "could not read the chunk map's temporary file: %s",
                              got < 0 ? strerror(errno) : "short read");
        buf = (char *)buf + got;
        len -= (size_t)got;
        off += (uint64_t)got;
    }
    return FB_OK;
}

static fb_code jcm_pwrite(int fd, const void *buf, size_t len, uint64_t off, fb_err *err) {
    while (len) {
        ssize_t put = pwrite(fd, buf, len, (off_t)off);
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0)
            return fb_err_set(err, FB_ERR_IO, "could not write the chunk map's temporary file: %s (free space in "
                              "$TMPDIR, or point TMPDIR elsewhere)", put < 0 ? strerror(errno) : "no progress");
        buf = (const char *)buf + put;
        len -= (size_t)put;
        off += (uint64_t)put;
    }
    return FB_OK;
}

/* The slot holding id, or the empty slot where it would go; *rec is that slot's content. */
static fb_code jcm_find(const job_chunkmap *m, const unsigned char *id, uint64_t *slot, arc_clist_rec *rec, fb_err *err) {
    uint64_t h;
    unsigned char raw[JCM_SLOT];
    memcpy(&h, id, sizeof h);
    for (uint64_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        fb_code rc = jcm_pread(m->fd, raw, sizeof raw, i * JCM_SLOT, err);
        if (rc) return rc;
        arc_clist_decode(raw, rec);
        if (!rec->length || memcmp(rec->id, id, ARC_CHUNK_ID_BYTES) == 0) {
            *slot = i;
            return FB_OK;
        }
    }
}

static fb_code jcm_insert(job_chunkmap *m, const arc_clist_rec *r, fb_err *err) {
    uint64_t slot;
    arc_clist_rec have;
    unsigned char raw[JCM_SLOT];
    fb_code rc = jcm_find(m, r->id, &slot, &have, err);
    if (rc || have.length) return rc;
    arc_clist_encode(r, raw);
    if ((rc = jcm_pwrite(m->fd, raw, sizeof raw, slot * JCM_SLOT, err))) return rc;
    m->n++;
    return FB_OK;
}

fb_code job_chunkmap_new(uint64_t expect, job_chunkmap **out, fb_err *err) {
    job_chunkmap *m = calloc(1, sizeof *m);
    *out = NULL;
    if (!m) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    m->cap = JCM_MIN_CAP;
    while (m->cap < 2 * expect) m->cap *= 2;
    fb_code rc = jcm_file(&m->fd, m->cap, err);
    if (rc) {
        free(m);
        return rc;
    }
    *out = m;
    return FB_OK;
}

/* Doubles the table: every used slot of the old file, read in blocks, goes into a new file. */
static fb_code jcm_grow(job_chunkmap *m, fb_err *err) {
    job_chunkmap old = *m;
    enum { block = 1024 };
    unsigned char *buf = malloc(block * JCM_SLOT);
    if (!buf) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    m->cap *= 2;
    m->n = 0;
    fb_code rc = jcm_file(&m->fd, m->cap, err);
    for (uint64_t i = 0; !rc && i < old.cap; i += block) {
        size_t k = old.cap - i < block ? (size_t)(old.cap - i) : block;
        rc = jcm_pread(old.fd, buf, k * JCM_SLOT, i * JCM_SLOT, err);
        for (size_t j = 0; !rc && j < k; j++) {
            arc_clist_rec r;
            arc_clist_decode(buf + j * JCM_SLOT, &r);
            if (r.length) rc = jcm_insert(m, &r, err);
        }
    }
    free(buf);
    if (rc) {
        if (m->fd >= 0) close(m->fd);
        *m = old;
        return rc;
    }
    close(old.fd);
    return FB_OK;
}

fb_code job_chunkmap_put(job_chunkmap *m, const arc_clist_rec *r, fb_err *err) {
    if (!r->length) return fb_err_set(err, FB_ERR_INTERNAL, "job_chunkmap_put: a chunk of length 0");
    if ((m->n + 1) * 2 > m->cap) {
        fb_code rc = jcm_grow(m, err);
        if (rc) return rc;
    }
    return jcm_insert(m, r, err);
}

fb_code job_chunkmap_get(job_chunkmap *m, const unsigned char id[ARC_CHUNK_ID_BYTES], arc_clist_rec *out, int *found,
                         fb_err *err) {
    uint64_t slot;
    fb_code rc = jcm_find(m, id, &slot, out, err);
    *found = !rc && out->length != 0;
    return rc;
}

uint64_t job_chunkmap_count(const job_chunkmap *m) { return m->n; }

void job_chunkmap_free(job_chunkmap *m) {
    if (!m) return;
    if (m->fd >= 0) close(m->fd);
    free(m);
}
