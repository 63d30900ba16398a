/* arc_clist: chunk lists as binary records after the chain index's head (index version 3, artifact format 5:
 * fixed 40-byte records; index version 4, artifact format 6: compact records; FORMAT.md, "Chunk lists (format 5)").
 *
 * Why: format 3 and 4 kept every chunk of every table in memory while a backup ran and wrote them twice, as text
 * lines in the chain index and as arrays in the manifest. Both grow with the database (~54 bytes per ~4 KiB chunk),
 * so memory grew with it and the 64 MiB index cap failed any database above ~4.6 GiB after the whole dump. Since
 * format 5 a chunk is a binary record, appended to an unlinked temporary file (the spool) as the table streams,
 * and copied after the index's text head when the artifact is finished; nothing of it stays in memory. Readers
 * read a table's records as a byte range of the file, a block at a time, and check them against the BLAKE2b of
 * that range recorded in the (MAC'd, and manifest-hashed) head.
 *
 * Fixed record (index version 3, and the chunk map's slot, job_chunkmap.h; little endian):
 *   id[16] | u32 src | u32 segment | u64 offset | u64 length.
 * Compact record (index version 4): the 40-byte records were 5 % of a FULL (the ids are random, the rest mostly
 * predictable), so a record says only what the one before it in its table's range does not:
 *   flags (1 byte) | id[16] | [varint src, varint segment] | [varint offset] | varint length
 * flags bit 0: src and segment as the previous record's (the pair is absent); bit 1: offset = the previous
 * record's offset + length (absent). The first record of a range has neither bit; other bits are 0. Varints are
 * LEB128, minimal (no trailing zero groups). A FULL's record is 19 bytes. Each range decodes on its own.
 * src 0 is the artifact that holds the records; src k >= 1 is the k-th job of the index head's `source` lines.
 * length is never 0.
 */
#ifndef ARC_CLIST_H
#define ARC_CLIST_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>

#include "artifact/arc_chunk.h"
#include "common/fb_err.h"
#include "storage/stor.h"

#define ARC_CLIST_REC_BYTES 40         /* a fixed record */
#define ARC_CLIST_COMPACT_MIN 18       /* flags, id, a one-byte length */
#define ARC_CLIST_COMPACT_MAX 47       /* flags, id, 5 + 5 + 10 + 10 bytes of varints */
#define ARC_CLIST_HASH_BYTES 32

typedef struct arc_clist_rec {
    unsigned char id[ARC_CHUNK_ID_BYTES];
    uint32_t src;
    uint32_t segment;
    uint64_t offset, length;
} arc_clist_rec;

void arc_clist_encode(const arc_clist_rec *r, unsigned char out[ARC_CLIST_REC_BYTES]);
void arc_clist_decode(const unsigned char in[ARC_CLIST_REC_BYTES], arc_clist_rec *r);
/* Compact records: prev is the range's previous record, NULL for its first. encode returns the bytes written
 * (<= ARC_CLIST_COMPACT_MAX); decode reads one record from the n bytes at in: the bytes used, or 0 when they are
 * not one well-formed record (too short, a flag bit where it may not be, an overlong or overflowing varint, a
 * src or segment above 32 bits, length 0). */
size_t arc_clist_encode_compact(const arc_clist_rec *r, const arc_clist_rec *prev,
                                unsigned char out[ARC_CLIST_COMPACT_MAX]);
size_t arc_clist_decode_compact(const unsigned char *in, size_t n, const arc_clist_rec *prev, arc_clist_rec *r);

/* The writer's spool: compact records (index version 4) appended in order to an unlinked temporary file in $TMPDIR
 * (mode 0600) through a 64 KiB buffer, and per table the BLAKE2b of its range. Memory is constant whatever the
 * number of records. */
typedef struct arc_clist_spool {
    int fd;
    unsigned char *buf;
    size_t used;
    uint64_t n;                   /* records so far */
    uint64_t bytes;               /* their encoded bytes */
    uint64_t table_first;         /* byte offset of the open table's range */
    uint64_t table_n;             /* records before the open table's */
    arc_clist_rec prev;           /* the open table's last record, when it has one (n > table_n) */
    crypto_generichash_state hs;  /* of the open table's records */
} arc_clist_spool;

fb_code arc_clist_spool_open(arc_clist_spool *s, fb_err *err);
/* Starts a table's range (records appended from now on are its own). */
void arc_clist_spool_table(arc_clist_spool *s);
fb_code arc_clist_spool_add(arc_clist_spool *s, const arc_clist_rec *r, fb_err *err);
/* Ends the open table's range: its byte offset, record count, byte length and BLAKE2b (an index version 4
 * `chunks` line). */
void arc_clist_spool_table_end(arc_clist_spool *s, uint64_t *first, uint64_t *count, uint64_t *bytes,
                               unsigned char hash[ARC_CLIST_HASH_BYTES]);
/* Flushes the buffer; afterwards the spool's fd holds its `bytes` bytes from offset 0. */
fb_code arc_clist_spool_flush(arc_clist_spool *s, fb_err *err);
/* A parallel dump: appends every record of src (another connection's spool, no table open) after dst's, no table
 * open either; *first is the byte offset where they start in dst, so a range at byte f of src is at *first + f of
 * dst, with the same bytes and BLAKE2b (ranges decode on their own). */
fb_code arc_clist_spool_append(arc_clist_spool *dst, arc_clist_spool *src, uint64_t *first, fb_err *err);
void arc_clist_spool_close(arc_clist_spool *s); /* a zeroed spool is ok */

/* One table's range of the records as its index states it: in index version 3, `count` fixed records from record
 * number `first` (bytes is count * 40); in version 4 (compact), `bytes` bytes from byte `first` of the records,
 * holding `count` records. arc_index_table_range (arc_index.h) makes one from an index entry. */
typedef struct arc_clist_range {
    int compact;
    uint64_t first, count, bytes;
    const unsigned char *hash;    /* ARC_CLIST_HASH_BYTES: BLAKE2b of the range's bytes */
} arc_clist_range;

/* Whether `bytes` bytes can hold `count` records: exactly count * 40 fixed ones, or count compact ones of
 * ARC_CLIST_COMPACT_MIN to _MAX bytes each (the index parser and the iterator both check it). */
int arc_clist_range_fits(int compact, uint64_t count, uint64_t bytes);

/* Reads a range of the records that start at file offset `records_at` of f (records_len bytes of them), a block
 * at a time; FB_ERR_FORMAT when the range lies outside them or its bytes cannot hold its count. */
typedef struct arc_clist_iter {
    stor_rfile *f;
    uint64_t at, left;            /* file offset of the next unread byte of the range, bytes not read yet */
    uint64_t n, total;            /* records returned, records in the range */
    int compact;
    arc_clist_rec prev;           /* compact: the last record returned */
    unsigned char want[ARC_CLIST_HASH_BYTES];
    crypto_generichash_state hs;
    unsigned char *buf;
    size_t have, pos;             /* bytes in buf, next one */
} arc_clist_iter;

fb_code arc_clist_iter_open(arc_clist_iter *it, stor_rfile *f, uint64_t records_at, uint64_t records_len,
                            const arc_clist_range *range, fb_err *err);
/* *got = 0 at the end of the range, after the range's BLAKE2b matched (FB_ERR_CRYPTO when it does not). */
fb_code arc_clist_iter_next(arc_clist_iter *it, arc_clist_rec *r, int *got, fb_err *err);
void arc_clist_iter_close(arc_clist_iter *it); /* a zeroed iterator is ok */

#endif
