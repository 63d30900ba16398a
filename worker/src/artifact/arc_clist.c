/* arc_clist: see arc_clist.h. */
#include "artifact/arc_clist.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "artifact/arc_format.h"

#define ACL_BUF_BYTES 65536
#define ACL_SAME_PLACE 0x01 /* flags: src and segment as the previous record's */
#define ACL_NEXT_OFFSET 0x02 /* flags: offset = the previous record's offset + length */

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

/* --- compact records ---------------------------------------------------------------------------------------- */

static size_t acl_put_varint(unsigned char *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (unsigned char)v;
    return n;
}

/* A minimal LEB128 varint from the n bytes at p: its length, or 0 when truncated, overlong (a last group of 0
 * after the first) or above 64 bits. */
static size_t acl_get_varint(const unsigned char *p, size_t n, uint64_t *v) {
    uint64_t x = 0;
    for (size_t i = 0; i < n && i < 10; i++) {
        if (i == 9 && p[i] > 1) return 0;
        x |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            if (i && !p[i]) return 0;
            *v = x;
            return i + 1;
        }
    }
    return 0;
}

/* Whether r's offset follows prev's chunk (never when prev's end does not fit in 64 bits). */
static int acl_follows(const arc_clist_rec *prev, uint64_t offset) {
    return prev->length <= UINT64_MAX - prev->offset && offset == prev->offset + prev->length;
}

size_t arc_clist_encode_compact(const arc_clist_rec *r, const arc_clist_rec *prev,
                                unsigned char out[ARC_CLIST_COMPACT_MAX]) {
    unsigned char flags = 0;
    size_t n = 1 + ARC_CHUNK_ID_BYTES;
    memcpy(out + 1, r->id, ARC_CHUNK_ID_BYTES);
    if (prev && r->src == prev->src && r->segment == prev->segment) {
        flags |= ACL_SAME_PLACE;
    } else {
        n += acl_put_varint(out + n, r->src);
        n += acl_put_varint(out + n, r->segment);
    }
    if (prev && acl_follows(prev, r->offset)) flags |= ACL_NEXT_OFFSET;
    else n += acl_put_varint(out + n, r->offset);
    n += acl_put_varint(out + n, r->length);
    out[0] = flags;
    return n;
}

/* Strict, so that every accepted record is the one encoding arc_clist_encode_compact gives (fuzz_index_parse
 * checks the round trip): a field the flags could have said is refused when written out. */
size_t arc_clist_decode_compact(const unsigned char *in, size_t n, const arc_clist_rec *prev, arc_clist_rec *r) {
    size_t k = 1 + ARC_CHUNK_ID_BYTES, u;
    uint64_t v = 0;
    if (n < ARC_CLIST_COMPACT_MIN) return 0;
    unsigned char flags = in[0];
    if ((flags & ~(ACL_SAME_PLACE | ACL_NEXT_OFFSET)) || (!prev && flags)) return 0;
    memcpy(r->id, in + 1, ARC_CHUNK_ID_BYTES);
    if (flags & ACL_SAME_PLACE) {
        r->src = prev->src;
        r->segment = prev->segment;
    } else {
        if (!(u = acl_get_varint(in + k, n - k, &v)) || v > UINT32_MAX) return 0;
        r->src = (uint32_t)v;
        k += u;
        if (!(u = acl_get_varint(in + k, n - k, &v)) || v > UINT32_MAX) return 0;
        r->segment = (uint32_t)v;
        k += u;
        if (prev && r->src == prev->src && r->segment == prev->segment) return 0;
    }
    if (flags & ACL_NEXT_OFFSET) {
        if (prev->length > UINT64_MAX - prev->offset) return 0; /* prev's end does not fit in 64 bits */
        r->offset = prev->offset + prev->length;
    } else {
        if (!(u = acl_get_varint(in + k, n - k, &r->offset))) return 0;
        k += u;
        if (prev && acl_follows(prev, r->offset)) return 0;
    }
    if (!(u = acl_get_varint(in + k, n - k, &r->length)) || !r->length) return 0;
    return k + u;
}

/* --- the writer's spool --------------------------------------------------------------------------------------- */

fb_code arc_clist_spool_open(arc_clist_spool *s, fb_err *err) {
    const char *dir = getenv("TMPDIR");
    char path[4096];
    memset(s, 0, sizeof *s);
    s->fd = -1;
    if (!(s->buf = malloc(ACL_BUF_BYTES))) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
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
    s->table_first = s->bytes;
    s->table_n = s->n;
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
    if (s->used + ARC_CLIST_COMPACT_MAX > ACL_BUF_BYTES) {
        fb_code rc = arc_clist_spool_flush(s, err);
        if (rc) return rc;
    }
    size_t n = arc_clist_encode_compact(r, s->n > s->table_n ? &s->prev : NULL, s->buf + s->used);
    crypto_generichash_update(&s->hs, s->buf + s->used, n);
    s->used += n;
    s->bytes += n;
    s->n++;
    s->prev = *r;
    return FB_OK;
}

void arc_clist_spool_table_end(arc_clist_spool *s, uint64_t *first, uint64_t *count, uint64_t *bytes,
                               unsigned char hash[ARC_CLIST_HASH_BYTES]) {
    *first = s->table_first;
    *count = s->n - s->table_n;
    *bytes = s->bytes - s->table_first;
    crypto_generichash_final(&s->hs, hash, ARC_CLIST_HASH_BYTES);
    arc_clist_spool_table(s);
}

fb_code arc_clist_spool_append(arc_clist_spool *dst, arc_clist_spool *src, uint64_t *first, fb_err *err) {
    fb_code rc = arc_clist_spool_flush(dst, err);
    if (!rc) rc = arc_clist_spool_flush(src, err);
    if (rc) return rc;
    *first = dst->bytes;
    for (uint64_t off = 0; off < src->bytes;) {
        size_t n = src->bytes - off < ACL_BUF_BYTES ? (size_t)(src->bytes - off) : ACL_BUF_BYTES;
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
    dst->bytes += src->bytes;
    arc_clist_spool_table(dst);
    return FB_OK;
}

void arc_clist_spool_close(arc_clist_spool *s) {
    if (s->buf && s->fd >= 0) close(s->fd);
    free(s->buf);
    memset(s, 0, sizeof *s);
}

/* --- the reader's iterator ------------------------------------------------------------------------------------ */

int arc_clist_range_fits(int compact, uint64_t count, uint64_t bytes) {
    if (!compact) return count <= UINT64_MAX / ARC_CLIST_REC_BYTES && bytes == count * ARC_CLIST_REC_BYTES;
    /* count <= bytes / MIN first, so that count * MAX cannot overflow */
    return count <= bytes / ARC_CLIST_COMPACT_MIN && bytes <= count * ARC_CLIST_COMPACT_MAX;
}

/* The range's place in bytes from the start of the records, checked against records_len before any product is
 * taken (the numbers come from the index head: authenticated, but a reader does not overflow on them either). */
static int acl_range_bytes(const arc_clist_range *g, uint64_t records_len, uint64_t *off, uint64_t *bytes) {
    if (!g->compact) {
        uint64_t all = records_len / ARC_CLIST_REC_BYTES;
        if (g->count > all || g->first > all - g->count) return 0;
        *off = g->first * ARC_CLIST_REC_BYTES;
        *bytes = g->count * ARC_CLIST_REC_BYTES;
        return 1;
    }
    if (g->first > records_len || g->bytes > records_len - g->first) return 0;
    if (!arc_clist_range_fits(1, g->count, g->bytes)) return 0;
    *off = g->first;
    *bytes = g->bytes;
    return 1;
}

fb_code arc_clist_iter_open(arc_clist_iter *it, stor_rfile *f, uint64_t records_at, uint64_t records_len,
                            const arc_clist_range *range, fb_err *err) {
    uint64_t off = 0, bytes = 0;
    memset(it, 0, sizeof *it);
    if (records_at > f->size || records_len > f->size - records_at || !acl_range_bytes(range, records_len, &off, &bytes))
        return fb_err_set(err, FB_ERR_FORMAT, "\"%s\": a chunk list range (%llu records from %s %llu) lies outside the "
                          "file's records or cannot hold them: it is truncated or its index was altered", f->name,
                          (unsigned long long)range->count, range->compact ? "byte" : "record",
                          (unsigned long long)range->first);
    if (!(it->buf = malloc(ACL_BUF_BYTES))) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    it->f = f;
    it->compact = range->compact;
    it->at = records_at + off;
    it->left = bytes;
    it->total = range->count;
    memcpy(it->want, range->hash, ARC_CLIST_HASH_BYTES);
    crypto_generichash_init(&it->hs, NULL, 0, ARC_CLIST_HASH_BYTES);
    return FB_OK;
}

/* Keeps at least `need` bytes (or all that is left of the range) in the buffer from pos on. */
static fb_code acl_fill(arc_clist_iter *it, size_t need, fb_err *err) {
    if (it->have - it->pos >= need || !it->left) return FB_OK;
    memmove(it->buf, it->buf + it->pos, it->have - it->pos);
    it->have -= it->pos;
    it->pos = 0;
    size_t n = ACL_BUF_BYTES - it->have;
    if (it->left < n) n = (size_t)it->left;
    fb_code rc = stor_rfile_pread(it->f, it->buf + it->have, n, it->at, err);
    if (rc) return rc;
    crypto_generichash_update(&it->hs, it->buf + it->have, n);
    it->at += n;
    it->left -= n;
    it->have += n;
    return FB_OK;
}

fb_code arc_clist_iter_next(arc_clist_iter *it, arc_clist_rec *r, int *got, fb_err *err) {
    *got = 0;
    if (it->n == it->total) {
        unsigned char h[ARC_CLIST_HASH_BYTES];
        if (it->left || it->pos != it->have)
            return fb_err_set(err, FB_ERR_FORMAT, "\"%s\": a chunk list has %llu bytes after the last of its %llu "
                              "records: the index was altered", it->f->name,
                              (unsigned long long)(it->left + (it->have - it->pos)), (unsigned long long)it->total);
        crypto_generichash_final(&it->hs, h, sizeof h);
        crypto_generichash_init(&it->hs, NULL, 0, ARC_CLIST_HASH_BYTES); /* a second call at the end fails */
        if (sodium_memcmp(h, it->want, sizeof h) != 0)
            return fb_err_set(err, FB_ERR_CRYPTO, "\"%s\": a chunk list (%llu records) does not match the BLAKE2b "
                              "its chain index records: the file was altered", it->f->name,
                              (unsigned long long)it->total);
        return FB_OK;
    }
    fb_code rc = acl_fill(it, it->compact ? ARC_CLIST_COMPACT_MAX : ARC_CLIST_REC_BYTES, err);
    if (rc) return rc;
    size_t avail = it->have - it->pos, used = 0;
    if (it->compact) {
        used = arc_clist_decode_compact(it->buf + it->pos, avail, it->n ? &it->prev : NULL, r);
    } else if (avail >= ARC_CLIST_REC_BYTES) {
        arc_clist_decode(it->buf + it->pos, r);
        used = r->length ? ARC_CLIST_REC_BYTES : 0;
    }
    if (!used)
        return fb_err_set(err, FB_ERR_FORMAT, "\"%s\": chunk record %llu of a list of %llu is malformed (cut short, "
                          "a length of 0, or a field out of range): the index was altered", it->f->name,
                          (unsigned long long)it->n + 1, (unsigned long long)it->total);
    it->pos += used;
    it->n++;
    it->prev = *r;
    *got = 1;
    return FB_OK;
}

void arc_clist_iter_close(arc_clist_iter *it) {
    free(it->buf);
    memset(it, 0, sizeof *it);
}
