/* arc_clist: see arc_clist.h. */
#include "artifact/arc_clist.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "artifact/arc_format.h"

#define ACL_BUF_RECORDS 1638 /* ~64 KiB */

void arc_clist_encode(const arc_clist_rec *r, unsigned char out[ARC_CLIST_REC_BYTES]) {
    memcpy(out, r->id, ARC_CHUNK_ID_BYTES);
    arc_put_u32(out + 16, r->src);
    arc_put_u32(out + 20, r->segment);
    arc_put_u64(out + 24, r->offset);
    arc_put_u64(out + 32, r->length);
}

void arc_clist_decode(const unsigned char in[ARC_CLIST_REC_BYTES], arc_clist_rec *r) {
    memcpy(r->id, in, ARC_CHUNK_ID_BYTES);
    r->src = arc_get_u32(in + 16);
    r->segment = arc_get_u32(in + 20);
    r->offset = arc_get_u64(in + 24);
    r->length = arc_get_u64(in + 32);
}

fb_code arc_clist_spool_open(arc_clist_spool *s, fb_err *err) {
    const char *dir = getenv("TMPDIR");
    char path[4096];
    memset(s, 0, sizeof *s);
    s->fd = -1;
    if (!(s->buf = malloc(ACL_BUF_RECORDS * ARC_CLIST_REC_BYTES))) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/fusion-backup-chunks-XXXXXX", dir && *dir ? dir : "/tmp");
    s->fd = mkstemp(path);
    if (s->fd < 0)
        return fb_err_set(err, FB_ERR_IO, "could not create the chunk list's temporary file in \"%s\": %s (set "
                          "TMPDIR to a writable folder)", dir && *dir ? dir : "/tmp", strerror(errno));
    unlink(path); /* freed when closed, whatever happens to the job */
    crypto_generichash_init(&s->hs, NULL, 0, ARC_CLIST_HASH_BYTES);
    return FB_OK;
}

void arc_clist_spool_table(arc_clist_spool *s) {
    s->table_first = s->n;
    crypto_generichash_init(&s->hs, NULL, 0, ARC_CLIST_HASH_BYTES);
}

fb_code arc_clist_spool_flush(arc_clist_spool *s, fb_err *err) {
    const unsigned char *p = s->buf;
    size_t left = s->used;
    while (left) {
        ssize_t w = write(s->fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return fb_err_set(err, FB_ERR_IO, "could not write the chunk list's temporary file: %s (free space in "
                              "$TMPDIR, or point TMPDIR elsewhere)", w < 0 ? strerror(errno) : "no progress");
        p += w;
        left -= (size_t)w;
    }
    s->used = 0;
    return FB_OK;
}

fb_code arc_clist_spool_add(arc_clist_spool *s, const arc_clist_rec *r, fb_err *err) {
    if (s->used + ARC_CLIST_REC_BYTES > ACL_BUF_RECORDS * ARC_CLIST_REC_BYTES) {
        fb_code rc = arc_clist_spool_flush(s, err);
        if (rc) return rc;
    }
    arc_clist_encode(r, s->buf + s->used);
    crypto_generichash_update(&s->hs, s->buf + s->used, ARC_CLIST_REC_BYTES);
    s->used += ARC_CLIST_REC_BYTES;
    s->n++;
    return FB_OK;
}

void arc_clist_spool_table_end(arc_clist_spool *s, uint64_t *first, uint64_t *count,
                               unsigned char hash[ARC_CLIST_HASH_BYTES]) {
    *first = s->table_first;
    *count = s->n - s->table_first;
    crypto_generichash_final(&s->hs, hash, ARC_CLIST_HASH_BYTES);
    arc_clist_spool_table(s);
}

fb_code arc_clist_spool_append(arc_clist_spool *dst, arc_clist_spool *src, uint64_t *first, fb_err *err) {
    fb_code rc = arc_clist_spool_flush(dst, err);
    if (!rc) rc = arc_clist_spool_flush(src, err);
    if (rc) return rc;
    *first = dst->n;
    uint64_t len = src->n * ARC_CLIST_REC_BYTES, cap = ACL_BUF_RECORDS * ARC_CLIST_REC_BYTES;
    for (uint64_t off = 0; off < len;) {
        size_t n = len - off < cap ? (size_t)(len - off) : (size_t)cap;
        ssize_t got = pread(src->fd, dst->buf, n, (off_t)off);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            return fb_err_set(err, FB_ERR_IO, "could not read back a chunk list's temporary file: %s",
                              got < 0 ? strerror(errno) : "it is shorter than written");
        dst->used = (size_t)got;
        if ((rc = arc_clist_spool_flush(dst, err))) return rc;
        off += (uint64_t)got;
    }
    dst->n += src->n;
    arc_clist_spool_table(dst);
    return FB_OK;
}

void arc_clist_spool_close(arc_clist_spool *s) {
    if (s->buf && s->fd >= 0) close(s->fd);
    free(s->buf);
    memset(s, 0, sizeof *s);
}

fb_code arc_clist_iter_open(arc_clist_iter *it, stor_rfile *f, uint64_t records_at, uint64_t first, uint64_t count,
                            const unsigned char hash[ARC_CLIST_HASH_BYTES], fb_err *err) {
    memset(it, 0, sizeof *it);
    if (records_at > f->size || count > (f->size - records_at) / ARC_CLIST_REC_BYTES ||
        first > (f->size - records_at) / ARC_CLIST_REC_BYTES - count)
        return fb_err_set(err, FB_ERR_FORMAT, "\"%s\": a chunk list range (%llu records from %llu) lies outside the "
                          "file: it is truncated or its index was altered", f->name, (unsigned long long)count,
                          (unsigned long long)first);
    if (!(it->buf = malloc(ACL_BUF_RECORDS * ARC_CLIST_REC_BYTES))) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    it->f = f;
    it->at = records_at + first * ARC_CLIST_REC_BYTES;
    it->left = it->total = count;
    memcpy(it->want, hash, ARC_CLIST_HASH_BYTES);
    crypto_generichash_init(&it->hs, NULL, 0, ARC_CLIST_HASH_BYTES);
    return FB_OK;
}

fb_code arc_clist_iter_next(arc_clist_iter *it, arc_clist_rec *r, int *got, fb_err *err) {
    *got = 0;
    if (it->pos == it->have) {
        if (!it->left) {
            unsigned char h[ARC_CLIST_HASH_BYTES];
            crypto_generichash_final(&it->hs, h, sizeof h);
            crypto_generichash_init(&it->hs, NULL, 0, ARC_CLIST_HASH_BYTES); /* a second call at the end fails */
            if (sodium_memcmp(h, it->want, sizeof h) != 0)
                return fb_err_set(err, FB_ERR_CRYPTO, "\"%s\": a chunk list (%llu records) does not match the BLAKE2b "
                                  "its chain index records: the file was altered", it->f->name,
                                  (unsigned long long)it->total);
            return FB_OK;
        }
        size_t n = it->left < ACL_BUF_RECORDS ? (size_t)it->left : ACL_BUF_RECORDS;
        fb_code rc = stor_rfile_pread(it->f, it->buf, n * ARC_CLIST_REC_BYTES, it->at, err);
        if (rc) return rc;
        crypto_generichash_update(&it->hs, it->buf, n * ARC_CLIST_REC_BYTES);
        it->at += (uint64_t)n * ARC_CLIST_REC_BYTES;
        it->left -= n;
        it->have = n;
        it->pos = 0;
    }
    arc_clist_decode(it->buf + it->pos++ * ARC_CLIST_REC_BYTES, r);
    if (!r->length)
        return fb_err_set(err, FB_ERR_FORMAT, "\"%s\": a chunk record of length 0: the chunk list is malformed",
                          it->f->name);
    *got = 1;
    return FB_OK;
}

void arc_clist_iter_close(arc_clist_iter *it) {
    free(it->buf);
    memset(it, 0, sizeof *it);
}
