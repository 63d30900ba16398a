/* arc_chunk: see arc_chunk.h. The gear table is derived from a fixed seed (splitmix64), so boundaries are the
 * same in every build: chunks of a FULL written by one worker are reused by an INCREMENTAL of another. */
#include "artifact/arc_chunk.h"

#include <stdlib.h>
#include <string.h>
#include <threads.h>

#define AC_DERIVE "fusion-backup chunk id v1"

/* Built once per process, on the first arc_chunker_init: job threads start chunkers concurrently, so the build is
 * a call_once (a plain "ready" flag let two threads write the table while a third read it half-built). */
static uint64_t ac_gear[256];
static once_flag ac_gear_once = ONCE_FLAG_INIT;

static void ac_gear_init(void) {
    uint64_t s = 0x46424b4348554e4bull; /* "FBKCHUNK" */
    for (int i = 0; i < 256; i++) {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        ac_gear[i] = z ^ (z >> 31);
    }
}

void arc_chunk_key(const unsigned char index_key[32], unsigned char chunk_key[32]) {
    crypto_generichash(chunk_key, 32, (const unsigned char *)AC_DERIVE, sizeof AC_DERIVE - 1, index_key, 32);
}

void arc_chunker_init(arc_chunker *c, const unsigned char chunk_key[32], int keep, arc_chunk_fn fn, void *opaque) {
    call_once(&ac_gear_once, ac_gear_init);
    memset(c, 0, sizeof *c);
    memcpy(c->key, chunk_key, 32);
    c->keep = keep;
    c->fn = fn;
    c->opaque = opaque;
    crypto_generichash_init(&c->hs, c->key, 32, ARC_CHUNK_ID_BYTES);
}

static fb_code ac_append(arc_chunker *c, const unsigned char *p, size_t n, fb_err *err) {
    if (!n) return FB_OK;
    crypto_generichash_update(&c->hs, p, n);
    if (c->keep) {
        if (c->len + n > c->cap) {
            size_t cap = c->cap ? c->cap : 2 * ARC_CHUNK_MAX;
            while (cap < c->len + n) cap *= 2;
            unsigned char *b = realloc(c->buf, cap);
            if (!b) return fb_err_set(err, FB_ERR_NOMEM, "out of memory buffering a chunk of %zu bytes", c->len + n);
            c->buf = b;
            c->cap = cap;
        }
        memcpy(c->buf + c->len, p, n);
    }
    c->len += n;
    return FB_OK;
}

static fb_code ac_cut(arc_chunker *c, fb_err *err) {
    unsigned char id[ARC_CHUNK_ID_BYTES];
    crypto_generichash_final(&c->hs, id, sizeof id);
    fb_code rc = c->fn(c->opaque, id, c->keep ? c->buf : NULL, c->len, err);
    c->len = 0;
    c->armed = 0;
    crypto_generichash_init(&c->hs, c->key, 32, ARC_CHUNK_ID_BYTES);
    return rc;
}

fb_code arc_chunker_feed(arc_chunker *c, const void *buf, size_t len, fb_err *err) {
    const unsigned char *p = buf;
    size_t start = 0;
    uint64_t h = c->h;
    size_t clen = c->len; /* length the current chunk will have up to and including byte i */
    fb_code rc = FB_OK;
    for (size_t i = 0; i < len; i++) {
        unsigned char b = p[i];
        h = (h << 1) + ac_gear[b];
        clen++;
        if (b == '\n') {
            if (c->armed || clen >= ARC_CHUNK_MAX) {
                c->h = h;
                if ((rc = ac_append(c, p + start, i + 1 - start, err))) return rc;
                if ((rc = ac_cut(c, err))) return rc;
                start = i + 1;
                clen = 0;
            }
        } else if (!c->armed && clen >= ARC_CHUNK_MIN && (h & ARC_CHUNK_MASK) == 0) {
            c->armed = 1;
        }
    }
    c->h = h;
    return ac_append(c, p + start, len - start, err);
}

fb_code arc_chunker_finish(arc_chunker *c, fb_err *err) {
    if (c->len == 0) return FB_OK;
    return ac_cut(c, err);
}

void arc_chunker_clear(arc_chunker *c) {
    free(c->buf);
    sodium_memzero(c->key, sizeof c->key);
    c->buf = NULL;
    c->cap = 0;
}
