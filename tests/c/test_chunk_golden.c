/* test_chunk_golden: the chunker's boundaries and ids for a fixed input, as golden values, and against the rule
 * FORMAT.md ("Chunks") writes down, re-implemented here from that text alone.
 *
 * FORMAT.md specifies the boundaries exactly, so they are the same in every build: an INCREMENTAL written by one worker reuses
 * the chunks of a FULL written by another, and ids in old chain indexes must keep matching. The values below were
 * taken from the implementation when this test was written. A change that makes this test fail is a FORMAT
 * CHANGE (new gear table, mask, minimum, maximum or cut rule): it needs a new format version and a migration
 * story, not new golden values. Speed work on arc_chunker_feed must keep them exactly.
 *
 * Besides the goldens: boundaries do not depend on how the stream is split into feed calls; every chunk but the
 * last ends a row; sizes stay within the documented bounds; a row longer than ARC_CHUNK_MAX is one chunk; an edit
 * in the middle changes only the chunks around it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact/arc_chunk.h"
#include "tap.h"

#define IN_BYTES (1u << 20)
#define MAX_CHUNKS 4096

typedef struct cuts {
    size_t len[MAX_CHUNKS];
    unsigned char id[MAX_CHUNKS][ARC_CHUNK_ID_BYTES];
    size_t n;
    const unsigned char *in; /* the stream, to check each chunk's bytes when kept */
    size_t at;
    int bad_bytes;
} cuts;

static fb_code on_chunk(void *opaque, const unsigned char id[ARC_CHUNK_ID_BYTES], const void *bytes, size_t len,
                        fb_err *err) {
    cuts *c = opaque;
    if (c->n == MAX_CHUNKS) return fb_err_set(err, FB_ERR_INTERNAL, "more than %d chunks", MAX_CHUNKS);
    if (bytes && memcmp(bytes, c->in + c->at, len) != 0) c->bad_bytes++;
    c->len[c->n] = len;
    memcpy(c->id[c->n], id, ARC_CHUNK_ID_BYTES);
    c->n++;
    c->at += len;
    return FB_OK;
}

/* COPY-text-like rows from a fixed xorshift64 sequence: ids, names, amounts and a note of 0..119 characters. */
static uint64_t next(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}
static size_t make_input(unsigned char *out, size_t cap) {
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,.-";
    uint64_t x = 0x2545F4914F6CDD1Dull;
    size_t n = 0;
    for (int row = 1; n + 200 < cap; row++) {
        uint64_t r = next(&x);
        char note[128];
        int len = (int)(r % 120);
        for (int i = 0; i < len; i++) note[i] = alphabet[next(&x) % (sizeof alphabet - 1)];
        int k = snprintf((char *)out + n, cap - n, "%d\temployee-%08llx\t%llu.%02u\t%.*s\n", row,
                         (unsigned long long)(r >> 32), (unsigned long long)(r % 1000000), (unsigned)(r >> 8) % 100,
                         len, note);
        n += (size_t)k;
    }
    return n;
}

/* Chunks in[0..len) fed in pieces of `piece` bytes (0: one call). */
static void chunk(const unsigned char *in, size_t len, size_t piece, int keep, cuts *c) {
    static const unsigned char index_key[32] = "golden index key, not a secret!";
    unsigned char key[32];
    arc_chunk_key(index_key, key);
    memset(c, 0, sizeof *c);
    c->in = in;
    arc_chunker ch;
    arc_chunker_init(&ch, key, keep, on_chunk, c);
    fb_err err;
    fb_code rc = FB_OK;
    for (size_t off = 0; rc == FB_OK && off < len;) {
        size_t n = piece && len - off > piece ? piece : len - off;
        rc = arc_chunker_feed(&ch, in + off, n, &err);
        off += n;
    }
    if (rc == FB_OK) rc = arc_chunker_finish(&ch, &err);
    CHECKF(rc == FB_OK, "chunking failed: %s", rc ? err.msg : "");
    arc_chunker_clear(&ch);
}

static void hex(const unsigned char *p, size_t n, char *out) {
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", p[i]);
}

/* BLAKE2b-256 of all chunk lengths (as 8-byte little-endian) and ids, in hex: one value for all boundaries. */
static void digest(const cuts *c, char out[65]) {
    crypto_generichash_state hs;
    crypto_generichash_init(&hs, NULL, 0, 32);
    for (size_t i = 0; i < c->n; i++) {
        unsigned char le[8];
        for (int b = 0; b < 8; b++) le[b] = (unsigned char)((uint64_t)c->len[i] >> (8 * b));
        crypto_generichash_update(&hs, le, 8);
        crypto_generichash_update(&hs, c->id[i], ARC_CHUNK_ID_BYTES);
    }
    unsigned char d[32];
    crypto_generichash_final(&hs, d, 32);
    hex(d, 32, out);
}

/* The golden values (see the top of the file: changing them is a format change). */
#define GOLDEN_INPUT_BYTES 1048410 /* the generator's, so a changed generator is told apart from a changed chunker */
#define GOLDEN_CHUNKS 345
static const size_t golden_first[] = {4128, 2867, 3337, 1583, 3809, 5371, 1813, 1177,
                                      2854, 2294, 1567, 1360, 1097, 1787, 3451, 1755};
#define GOLDEN_FIRST_ID "deee91661569dc6339f5b9d534dc7d18"
#define GOLDEN_DIGEST "6d7456654b1f8e218b5ce7c42a1caf849beb3d0eab6abe0e1be9204b5a71c748"

static void goldens(const unsigned char *in, size_t len) {
    static cuts c;
    chunk(in, len, 0, 0, &c);
    char d[65], id[2 * ARC_CHUNK_ID_BYTES + 1];
    digest(&c, d);
    hex(c.id[0], ARC_CHUNK_ID_BYTES, id);
    if (getenv("FB_CHUNK_GOLDEN_PRINT")) { /* to read the values off, never to update them silently */
        printf("# input %zu bytes, %zu chunks, first id %s, digest %s\n# first lengths:", len, c.n, id, d);
        for (size_t i = 0; i < 16 && i < c.n; i++) printf(" %zu,", c.len[i]);
        printf("\n");
    }
    CHECK_EQ_INT(len, GOLDEN_INPUT_BYTES);
    CHECK_EQ_INT(c.n, GOLDEN_CHUNKS);
    for (size_t i = 0; i < sizeof golden_first / sizeof golden_first[0]; i++)
        CHECKF(i < c.n && c.len[i] == golden_first[i], "chunk %zu is %zu bytes, golden %zu", i, i < c.n ? c.len[i] : 0,
               golden_first[i]);
    CHECK_EQ_STR(id, GOLDEN_FIRST_ID);
    CHECK_EQ_STR(d, GOLDEN_DIGEST);
}

/* FORMAT.md, "Chunks", read literally: gear = 256 splitmix64 values from the seed 0x46424b4348554e4b; h = (h << 1)
 * + gear[byte] over every byte; once the chunk has 1024 bytes a byte with h & 0x7ff == 0 arms a cut; the chunk
 * ends after the next '\n'; at 65536 bytes it ends at its next '\n' whatever h is; the stream's end ends the last.
 * Written from the text, not from arc_chunk.c, so the two can only agree if the code does what the format says. */
static size_t spec_boundaries(const unsigned char *in, size_t len, size_t *out, size_t max) {
    uint64_t gear[256], seed = 0x46424b4348554e4bull;
    for (int i = 0; i < 256; i++) {
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        gear[i] = z ^ (z >> 31);
    }
    uint64_t h = 0;
    size_t n = 0, clen = 0;
    int armed = 0;
    for (size_t i = 0; i < len && n < max; i++) {
        h = (h << 1) + gear[in[i]];
        clen++;
        if (in[i] == '\n' && (armed || clen >= 65536)) {
            out[n++] = clen;
            clen = 0;
            armed = 0;
        } else if (in[i] != '\n' && !armed && clen >= 1024 && (h & 0x7ff) == 0) {
            armed = 1;
        }
    }
    if (clen && n < max) out[n++] = clen;
    return n;
}

static void matches_the_format_text(const unsigned char *in, size_t len) {
    static cuts c;
    static size_t spec[MAX_CHUNKS];
    chunk(in, len, 0, 0, &c);
    size_t n = spec_boundaries(in, len, spec, MAX_CHUNKS);
    size_t first_diff = 0;
    while (first_diff < n && first_diff < c.n && spec[first_diff] == c.len[first_diff]) first_diff++;
    CHECKF(n == c.n && first_diff == n, "arc_chunk cuts %zu chunks, FORMAT.md's rule %zu; first difference at "
           "chunk %zu", c.n, n, first_diff);
    /* And a long row, where the 65536-byte rule decides. */
    size_t big = 3 * ARC_CHUNK_MAX + 10;
    unsigned char *b = malloc(big);
    if (!b) return;
    for (size_t i = 0; i < big; i++) b[i] = i % 100 == 99 ? '\n' : (unsigned char)('a' + i % 7);
    chunk(b, big, 0, 0, &c);
    n = spec_boundaries(b, big, spec, MAX_CHUNKS);
    first_diff = 0;
    while (first_diff < n && first_diff < c.n && spec[first_diff] == c.len[first_diff]) first_diff++;
    CHECKF(n == c.n && first_diff == n, "periodic input: arc_chunk %zu chunks, FORMAT.md %zu", c.n, n);
    free(b);
}

/* Splitting the stream differently changes nothing, and kept bytes are the stream's own. */
static void independent_of_feed_sizes(const unsigned char *in, size_t len) {
    static cuts whole, other;
    chunk(in, len, 0, 0, &whole);
    static const size_t pieces[] = {1, 7, 1000, 4096, 65537};
    for (size_t p = 0; p < sizeof pieces / sizeof pieces[0]; p++) {
        chunk(in, len, pieces[p], 1, &other);
        int same = other.n == whole.n;
        for (size_t i = 0; same && i < whole.n; i++)
            same = other.len[i] == whole.len[i] && memcmp(other.id[i], whole.id[i], ARC_CHUNK_ID_BYTES) == 0;
        CHECKF(same, "fed %zu bytes at a time: %zu chunks, or different ones, vs %zu", pieces[p], other.n, whole.n);
        CHECKF(other.bad_bytes == 0, "fed %zu at a time: %d chunks handed wrong bytes", pieces[p], other.bad_bytes);
    }
}

/* Every chunk but the last ends with '\n'; each is at least ARC_CHUNK_MIN bytes (but the last) and, rows here
 * being short, at most ARC_CHUNK_MAX plus one row. The lengths add up to the input. */
static void bounds(const unsigned char *in, size_t len) {
    static cuts c;
    chunk(in, len, 0, 0, &c);
    size_t at = 0, bad_end = 0, bad_size = 0;
    for (size_t i = 0; i < c.n; i++) {
        at += c.len[i];
        if (i + 1 < c.n && in[at - 1] != '\n') bad_end++;
        if ((i + 1 < c.n && c.len[i] < ARC_CHUNK_MIN) || c.len[i] > ARC_CHUNK_MAX + 220) bad_size++;
    }
    CHECK_EQ_INT(at, len);
    CHECK_EQ_INT(bad_end, 0);
    CHECK_EQ_INT(bad_size, 0);
    /* Average near ARC_CHUNK_MIN + 2^ARC_CHUNK_MASK_BITS (arc_chunk.h), within a factor of two. */
    size_t avg = len / c.n, expect = ARC_CHUNK_MIN + (1u << ARC_CHUNK_MASK_BITS);
    CHECKF(avg > expect / 2 && avg < expect * 2, "average chunk %zu bytes, expected about %zu", avg, expect);
}

/* A row longer than ARC_CHUNK_MAX becomes one chunk of its own length (the cut waits for the row's end). */
static void long_row(void) {
    size_t n = 3 * ARC_CHUNK_MAX;
    unsigned char *in = malloc(n + 2);
    if (!in) return;
    memset(in, 'x', n);
    in[n] = '\n';
    static cuts c;
    chunk(in, n + 1, 0, 0, &c);
    CHECK_EQ_INT(c.n, 1);
    CHECK_EQ_INT(c.len[0], n + 1);
    free(in);
}

/* Changing one byte in the middle changes one or two chunks: the others keep their ids (this is what an
 * INCREMENTAL saves). */
static void local_edit(unsigned char *in, size_t len) {
    static cuts a, b;
    chunk(in, len, 0, 0, &a);
    size_t mid = len / 2;
    while (in[mid] == '\n' || in[mid] == '\t') mid++;
    in[mid] ^= 0x01;
    chunk(in, len, 0, 0, &b);
    in[mid] ^= 0x01;
    size_t changed = 0;
    for (size_t i = 0; i < b.n; i++) {
        int found = 0;
        for (size_t j = 0; !found && j < a.n; j++) found = memcmp(b.id[i], a.id[j], ARC_CHUNK_ID_BYTES) == 0;
        changed += !found;
    }
    CHECKF(changed >= 1 && changed <= 2, "one byte changed %zu of %zu chunks", changed, b.n);
    CHECKF(b.n + 1 >= a.n && b.n <= a.n + 1, "chunk count went from %zu to %zu", a.n, b.n);
}

/* arc_chunker_feed skips a chunk's first ARC_CHUNK_MIN - 64 bytes unhashed and looks only for '\n' once a cut is
 * armed (arc_chunk.c): inputs built to hit its edges, fed in random pieces, against FORMAT.md's rule. Rows of 1 to
 * 3 bytes (a '\n' in every window the hash warms up in), rows around ARC_CHUNK_MIN and ARC_CHUNK_MAX, rows longer
 * than the maximum, and no '\n' at all for a long stretch. */
static void fast_path_edges(void) {
    static cuts c;
    static size_t spec[MAX_CHUNKS];
    size_t cap = 4 * ARC_CHUNK_MAX + 200000;
    unsigned char *in = malloc(cap);
    if (!in) return;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int round = 0; round < 24; round++) {
        size_t n = 0;
        while (n + 3 * ARC_CHUNK_MAX < cap) {
            uint64_t r = next(&x);
            size_t row;
            switch (round % 6) {
            case 0: row = 1 + r % 3; break;
            case 1: row = ARC_CHUNK_MIN - 70 + r % 140; break;
            case 2: row = ARC_CHUNK_MAX - 3 + r % 7; break;
            case 3: row = r % 4 == 0 ? ARC_CHUNK_MAX + r % 5000 : 1 + r % 300; break;
            case 4: row = r % 50 == 0 ? 2 * ARC_CHUNK_MAX : 20 + r % 60; break;
            default: row = 1 + r % 2500; break;
            }
            for (size_t k = 0; k + 1 < row; k++) {
                unsigned char v = (unsigned char)(next(&x) % 255 + 1);
                in[n++] = v == '\n' ? 'n' : v;
            }
            in[n++] = '\n';
        }
        size_t piece = round < 6 ? 0 : 1 + next(&x) % (round < 12 ? 64 : 70000);
        chunk(in, n, piece, round & 1, &c);
        size_t m = spec_boundaries(in, n, spec, MAX_CHUNKS), d = 0;
        while (d < m && d < c.n && spec[d] == c.len[d]) d++;
        CHECKF(m == c.n && d == m && c.bad_bytes == 0, "round %d (rows of kind %d, pieces of %zu): arc_chunk %zu "
               "chunks, FORMAT.md %zu, first difference at chunk %zu", round, round % 6, piece, c.n, m, d);
    }
    free(in);
}

int main(void) {
    unsigned char *in = malloc(IN_BYTES);
    if (!in) return 1;
    size_t len = make_input(in, IN_BYTES);
    goldens(in, len);
    matches_the_format_text(in, len);
    independent_of_feed_sizes(in, len);
    bounds(in, len);
    long_row();
    local_edit(in, len);
    fast_path_edges();
    free(in);
    return tap_done();
}
