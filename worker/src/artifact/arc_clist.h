/* arc_clist: chunk lists as fixed-size binary records (chain index version 3, artifact format 5; FORMAT.md,
 * "Chunk lists (format 5)").
 *
 * Why: format 3 and 4 kept every chunk of every table in memory while a backup ran and wrote them twice, as text
 * lines in the chain index and as arrays in the manifest. Both grow with the database (~54 bytes per ~4 KiB chunk),
 * so memory grew with it and the 64 MiB index cap failed any database above ~4.6 GiB after the whole dump. In
 * format 5 a chunk is a 40-byte record, appended to an unlinked temporary file (the spool) as the table streams,
 * and copied after the index's text head when the artifact is finished; nothing of it stays in memory. Readers
 * read a table's records as a range of the file, a block at a time, and check them against the BLAKE2b of that
 * range recorded in the (MAC'd, and manifest-hashed) head.
 *
 * Record (little endian): id[16] | u32 src | u32 segment | u64 offset | u64 length. src 0 is the artifact that
 * holds the records; src k >= 1 is the k-th job of the index head's `source` lines. length is never 0.
 */
#ifndef ARC_CLIST_H
#define ARC_CLIST_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>

#include "artifact/arc_chunk.h"
#include "common/fb_err.h"
#include "storage/stor.h"

#define ARC_CLIST_REC_BYTES 40
#define ARC_CLIST_HASH_BYTES 32

typedef struct arc_clist_rec {
    unsigned char id[ARC_CHUNK_ID_BYTES];
    uint32_t src;
    uint32_t segment;
    uint64_t offset, length;
} arc_clist_rec;

void arc_clist_encode(const arc_clist_rec *r, unsigned char out[ARC_CLIST_REC_BYTES]);
void arc_clist_decode(const unsigned char in[ARC_CLIST_REC_BYTES], arc_clist_rec *r);

/* The writer's spool: records appended in order to an unlinked temporary file in $TMPDIR (mode 0600) through a
 * 64 KiB buffer, and per table the BLAKE2b of its range. Memory is constant whatever the number of records. */
typedef struct arc_clist_spool {
    int fd;
    unsigned char *buf;
    size_t used;
    uint64_t n;                   /* records so far */
    uint64_t table_first;         /* first record of the open table */
    crypto_generichash_state hs;  /* of the open table's records */
} arc_clist_spool;

fb_code arc_clist_spool_open(arc_clist_spool *s, fb_err *err);
/* Starts a table's range (records appended from now on are its own). */
void arc_clist_spool_table(arc_clist_spool *s);
fb_code arc_clist_spool_add(arc_clist_spool *s, const arc_clist_rec *r, fb_err *err);
/* Ends the open table's range: its first record, count and BLAKE2b. */
void arc_clist_spool_table_end(arc_clist_spool *s, uint64_t *first, uint64_t *count,
                               unsigned char hash[ARC_CLIST_HASH_BYTES]);
/* Flushes the buffer; afterwards the spool's fd holds n * ARC_CLIST_REC_BYTES bytes from offset 0. */
fb_code arc_clist_spool_flush(arc_clist_spool *s, fb_err *err);
/* A parallel dump: appends every record of src (another connection's spool, no table open) after dst's, no table
 * open either; *first is where they start in dst, so a range [f, f + n) of src is [*first + f, ...) of dst, with
 * the same BLAKE2b. */
fb_code arc_clist_spool_append(arc_clist_spool *dst, arc_clist_spool *src, uint64_t *first, fb_err *err);
void arc_clist_spool_close(arc_clist_spool *s); /* a zeroed spool is ok */

/* Reads one table's range [first, first + count) of the records that start at file offset `at` of f, a block at
 * a time, and checks it against `hash` once the last record was returned. */
typedef struct arc_clist_iter {
    stor_rfile *f;
    uint64_t at, left, total;
    unsigned char want[ARC_CLIST_HASH_BYTES];
    crypto_generichash_state hs;
    unsigned char *buf;
    size_t have, pos;             /* records in buf, next one */
} arc_clist_iter;

fb_code arc_clist_iter_open(arc_clist_iter *it, stor_rfile *f, uint64_t records_at, uint64_t first, uint64_t count,
                            const unsigned char hash[ARC_CLIST_HASH_BYTES], fb_err *err);
/* *got = 0 at the end of the range, after the range's BLAKE2b matched (FB_ERR_CRYPTO when it does not). */
fb_code arc_clist_iter_next(arc_clist_iter *it, arc_clist_rec *r, int *got, fb_err *err);
void arc_clist_iter_close(arc_clist_iter *it); /* a zeroed iterator is ok */

#endif
