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

/* The gear hash's low ARC_CHUNK_MASK_BITS bits, the only ones a cut looks at, depend on the last 64 bytes only
 * (each byte's term is shifted out after 64 more), and no byte before the chunk's ARC_CHUNK_MIN-th can arm a cut
 * or cut (ARC_CHUNK_MIN < ARC_CHUNK_MAX). So a chunk's first ARC_CHUNK_MIN - 64 bytes are skipped without hashing,
 * the 64 before its ARC_CHUNK_MIN-th warm the hash up (h is then exactly what hashing every byte would give), and
 * once a cut is armed (or the chunk reached ARC_CHUNK_MAX) the hash no longer matters either: only the next '\n'
 * does, found by memchr. The boundaries are those of the rule in FORMAT.md byte for byte (tests/c/test_chunk_golden.c
 * compares them with that rule written out naively), at about half the per-byte work. */
#define AC_WARM_FROM (ARC_CHUNK_MIN - 64u)
_Static_assert(ARC_CHUNK_MIN >= 64u && ARC_CHUNK_MIN < ARC_CHUNK_MAX, "the skipped prefix needs MIN >= 64 < MAX");

/* Hashes p[i..len) of a chunk that has clen bytes before p[i] (clen >= AC_WARM_FROM, not armed), until a byte arms
 * a cut or the chunk reaches ARC_CHUNK_MAX - 1 bytes; returns the index after the last byte hashed. A '\n' before
 * that never cuts (not armed, below the maximum) and never arms. */
static size_t ac_scan(arc_chunker *c, const unsigned char *p, size_t i, size_t len, size_t clen) {
    uint64_t h = c->h;
    size_t room = ARC_CHUNK_MAX - 1 - clen, end = len - i < room ? len : i + room;
    for (; i < end && clen + 1 < ARC_CHUNK_MIN; i++, clen++) h = (h << 1) + ac_gear[p[i]];
    for (; i < end; i++) {
        unsigned char b = p[i];
        h = (h << 1) + ac_gear[b];
        if ((h & ARC_CHUNK_MASK) == 0 && b != '\n') {
            c->armed = 1;
            i++;
            break;
        }
    }
    c->h = h;
    return i;
}

fb_code arc_chunker_feed(arc_chunker *c, const void *buf, size_t len, fb_err *err) {
    const unsigned char *p = buf;
    size_t i = 0, start = 0; /* p[start..i) belongs to the current chunk and is not appended yet */
    fb_code rc;
    while (i < len) {
        size_t clen = c->len + (i - start); /* bytes of the current chunk before p[i] */
        if (c->armed || clen + 1 >= ARC_CHUNK_MAX) {
            const unsigned char *nl = memchr(p + i, '\n', len - i);
            if (!nl) break;
            i = (size_t)(nl - p) + 1;
            if ((rc = ac_append(c, p + start, i - start, err)) || (rc = ac_cut(c, err))) return rc;
            start = i;
        } else if (clen < AC_WARM_FROM) {
            size_t skip = AC_WARM_FROM - clen;
            i += skip < len - i ? skip : len - i;
        } else {
            i = ac_scan(c, p, i, len, clen);
        }
    }
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
