/* arc_chunk: content-defined chunking of a table's COPY text stream, with keyed chunk ids (format 3).
 *
 * Why: change detection per table stores a changed table whole; a large table with a few changed rows then costs
 * as much as in a FULL. Cutting the stream into chunks whose boundaries depend only on nearby content means an
 * update, insert or delete changes only the chunks around it; an INCREMENTAL or DIFFERENTIAL stores the chunks the
 * chain does not hold yet and references the others (FORMAT.md, "Chunks").
 *
 * Boundaries: a gear rolling hash (h = (h << 1) + gear[byte], so h depends on the last 64 bytes only) runs over
 * every byte. Once a chunk has ARC_CHUNK_MIN bytes, a byte where (h & ARC_CHUNK_MASK) == 0 arms a cut, and the cut
 * is made after the next '\n' (the end of a row: in COPY text format a newline inside a value is escaped as "\n",
 * so every raw '\n' ends a row). A chunk that reaches ARC_CHUNK_MAX bytes is cut at its next '\n'. So chunks are
 * whole rows, ARC_CHUNK_MIN + ~2^ARC_CHUNK_MASK_BITS bytes on average, and a row longer than ARC_CHUNK_MAX makes a
 * chunk of its own size.
 *
 * Ids: BLAKE2b-128 of the chunk's bytes keyed with a chunk key derived from the index key (arc_index_key), so the
 * ids in the plaintext chain index show only which chunks are equal, nothing about their content, to anyone
 * without the index key. Correctness never rests on ids: restore checks each assembled table against the BLAKE2b
 * of the whole COPY stream recorded in the authenticated manifest.
 */
#ifndef ARC_CHUNK_H
#define ARC_CHUNK_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>

#include "common/fb_err.h"

#define ARC_CHUNK_ID_BYTES 16
#define ARC_CHUNK_MIN 1024u
#define ARC_CHUNK_MASK_BITS 11
#define ARC_CHUNK_MASK ((1ull << ARC_CHUNK_MASK_BITS) - 1)
#define ARC_CHUNK_MAX (64u * 1024u)

/* Where a chunk's bytes are: job `src` (NULL: the artifact whose manifest or index lists it), segment `segment`,
 * [offset, offset + length) of that segment's decompressed stream. src is owned by whoever owns the list. */
typedef struct arc_chunk {
    unsigned char id[ARC_CHUNK_ID_BYTES];
    char *src;
    uint32_t segment;
    uint64_t offset, length;
} arc_chunk;

/* Called for each chunk, in order: its id, its bytes (NULL unless the chunker keeps them) and its length. */
typedef fb_code (*arc_chunk_fn)(void *opaque, const unsigned char id[ARC_CHUNK_ID_BYTES], const void *bytes,
                                size_t len, fb_err *err);

typedef struct arc_chunker {
    unsigned char key[32];
    crypto_generichash_state hs;
    uint64_t h;
    size_t len;        /* bytes in the current chunk */
    int armed;
    int keep;          /* hand the bytes of each chunk to the callback (buffers up to a chunk) */
    unsigned char *buf;
    size_t cap;
    arc_chunk_fn fn;
    void *opaque;
} arc_chunker;

/* The chunk key: BLAKE2b-256(key = index key, "fusion-backup chunk id v1"). */
void arc_chunk_key(const unsigned char index_key[32], unsigned char chunk_key[32]);
/* keep: buffer each chunk's bytes for fn. Free with arc_chunker_clear. */
void arc_chunker_init(arc_chunker *c, const unsigned char chunk_key[32], int keep, arc_chunk_fn fn, void *opaque);
fb_code arc_chunker_feed(arc_chunker *c, const void *buf, size_t len, fb_err *err);
/* Ends the last chunk (the stream's end is always a boundary). */
fb_code arc_chunker_finish(arc_chunker *c, fb_err *err);
void arc_chunker_clear(arc_chunker *c);

#endif
