/* arc_stream: see arc_stream.h. */
#include "artifact/arc_stream.h"

#include <stdlib.h>
#include <string.h>

#include "artifact/arc_format.h"

void arc_stream_bufs_free(arc_stream_bufs *b) {
    if (!b) return;
    if (b->plain) sodium_memzero(b->plain, b->cap);
    free(b->cipher);
    free(b->plain);
    b->cipher = b->plain = NULL;
    b->cap = 0;
}

/* [off, off + len) of the file, from the cache when it covers the range. */
static fb_code as_read(const arc_stream *s, void *buf, size_t len, uint64_t off, fb_err *err) {
    const arc_stream_cache *c = s->cache;
    if (c && c->p && off >= c->off && len <= c->len && off - c->off <= c->len - len) {
        memcpy(buf, c->p + (off - c->off), len);
        return FB_OK;
    }
    return stor_rfile_pread(s->f, buf, len, off, err);
}

fb_code arc_stream_open(arc_stream *s, stor_rfile *f, const arc_stream_cache *cache, const unsigned char *data_key,
                        uint32_t segment, uint64_t off, uint64_t len, const unsigned char *ad, size_t ad_len,
                        const char *what, arc_stream_bufs *bufs, fb_err *err) {
    unsigned char key[crypto_secretstream_xchacha20poly1305_KEYBYTES];
    unsigned char hdr[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
    memset(s, 0, sizeof *s);
    s->f = f;
    s->cache = cache;
    s->ad = ad;
    s->ad_len = ad_len;
    s->what = what;
    s->bufs = bufs;
    s->pos = off;
    s->end = off + len;
    if (len < sizeof hdr || s->end < off || s->end > f->size)
        return fb_err_set(err, FB_ERR_FORMAT, "%s: segment at %llu+%llu lies outside the file (%llu bytes): truncated?",
                          what, (unsigned long long)off, (unsigned long long)len, (unsigned long long)f->size);
    crypto_kdf_derive_from_key(key, sizeof key, segment, ARC_KDF_CONTEXT, data_key);
    fb_code rc = as_read(s, hdr, sizeof hdr, s->pos, err);
    if (rc == FB_OK && crypto_secretstream_xchacha20poly1305_init_pull(&s->st, hdr, key) != 0)
        rc = fb_err_set(err, FB_ERR_CRYPTO, "%s: bad stream header: the artifact was altered", what);
    sodium_memzero(key, sizeof key);
    s->pos += sizeof hdr;
    return rc;
}

/* Room for a message of clen bytes in both buffers. */
static fb_code as_reserve(arc_stream *s, size_t clen, fb_err *err) {
    arc_stream_bufs *b = s->bufs;
    if (clen <= b->cap) return FB_OK;
    unsigned char *c = realloc(b->cipher, clen), *p = realloc(b->plain, clen);
    if (c) b->cipher = c;
    if (p) b->plain = p;
    if (!c || !p) return fb_err_set(err, FB_ERR_NOMEM, "out of memory reading %s", s->what);
    b->cap = clen;
    return FB_OK;
}

fb_code arc_stream_next(arc_stream *s, const unsigned char **plain, size_t *plen, unsigned char *tag, fb_err *err) {
    unsigned char lb[4];
    if (s->pos + 4 > s->end)
        return fb_err_set(err, FB_ERR_CRYPTO, "%s: data ends before the final tag: the artifact is truncated or altered",
                          s->what);
    fb_code rc = as_read(s, lb, 4, s->pos, err);
    if (rc) return rc;
    s->pos += 4;
    uint32_t clen = arc_get_u32(lb);
    if (clen < crypto_secretstream_xchacha20poly1305_ABYTES || clen > ARC_MESSAGE_MAX || s->pos + clen > s->end)
        return fb_err_set(err, FB_ERR_CRYPTO, "%s: bad message length %u at offset %llu: the artifact is truncated or "
                          "altered", s->what, clen, (unsigned long long)(s->pos - 4));
    if ((rc = as_reserve(s, clen, err)) || (rc = as_read(s, s->bufs->cipher, clen, s->pos, err))) return rc;
    s->pos += clen;
    unsigned long long pl = 0;
    if (crypto_secretstream_xchacha20poly1305_pull(&s->st, s->bufs->plain, &pl, tag, s->bufs->cipher, clen, s->ad,
                                                   s->ad_len) != 0)
        return fb_err_set(err, FB_ERR_CRYPTO,
                          "%s: authentication failed at offset %llu: the artifact was altered or is damaged", s->what,
                          (unsigned long long)(s->pos - clen));
    if (*tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL) {
        s->final = 1;
        if (s->pos != s->end)
            return fb_err_set(err, FB_ERR_CRYPTO, "%s: final tag before the segment's end: the artifact was altered",
                              s->what);
    }
    *plain = s->bufs->plain;
    *plen = (size_t)pl;
    return FB_OK;
}

void arc_stream_close(arc_stream *s) { sodium_memzero(&s->st, sizeof s->st); }

void arc_stream_out_open(arc_stream_out *o, const unsigned char *data_key, uint32_t segment, const unsigned char *ad,
                         size_t ad_len, unsigned char hdr[crypto_secretstream_xchacha20poly1305_HEADERBYTES]) {
    unsigned char key[crypto_secretstream_xchacha20poly1305_KEYBYTES];
    crypto_kdf_derive_from_key(key, sizeof key, segment, ARC_KDF_CONTEXT, data_key);
    crypto_secretstream_xchacha20poly1305_init_push(&o->st, hdr, key);
    sodium_memzero(key, sizeof key);
    o->ad = ad;
    o->ad_len = ad_len;
}

size_t arc_stream_out_seal(arc_stream_out *o, const unsigned char *plain, size_t n, unsigned char tag,
                           unsigned char *out) {
    unsigned long long clen = 0;
    crypto_secretstream_xchacha20poly1305_push(&o->st, out + 4, &clen, plain, n, o->ad, o->ad_len, tag);
    arc_put_u32(out, (uint32_t)clen);
    return 4 + (size_t)clen;
}

void arc_stream_out_close(arc_stream_out *o) { sodium_memzero(&o->st, sizeof o->st); }
