/* job_chunkmap: where the chain already holds a chunk, for a backup on a base (job_backup.c), on disk.
 *
 * Why on disk: the chain's chunks are ~1 per 4 KiB of table data, so a table of them in memory grows with the
 * database (format 3/4 held ~56 bytes per chunk: ~80 MB for 6 GB). This is an open-addressing hash table of
 * 40-byte slots (the arc_clist record: id, source, segment, offset, length; length 0 = empty) in an unlinked
 * temporary file in $TMPDIR, read and written with pread/pwrite: memory stays at a few hundred bytes, the kernel's
 * page cache (not the worker's resident memory) keeps the hot part, and the file is about 2 x 40 bytes per chunk
 * (~80 MB for 6 GB; sparse until filled). Ids are keyed BLAKE2b hashes, so their first 8 bytes index uniformly.
 * It doubles (rehashing into a new file) when half full. The first place recorded for an id wins.
 */
#ifndef JOB_CHUNKMAP_H
#define JOB_CHUNKMAP_H

#include <stdint.h>

#include "artifact/arc_clist.h"
#include "common/fb_err.h"

typedef struct job_chunkmap job_chunkmap;

/* expect: how many chunks will probably go in (sizes the file; it grows past that). *out: free with
 * job_chunkmap_free. */
fb_code job_chunkmap_new(uint64_t expect, job_chunkmap **out, fb_err *err);
/* Records where chunk r->id is (r->length > 0), unless the map has it already. */
fb_code job_chunkmap_put(job_chunkmap *m, const arc_clist_rec *r, fb_err *err);
/* *found = 1 and *out filled when the map has id. */
fb_code job_chunkmap_get(job_chunkmap *m, const unsigned char id[ARC_CHUNK_ID_BYTES], arc_clist_rec *out, int *found,
                         fb_err *err);
uint64_t job_chunkmap_count(const job_chunkmap *m);
void job_chunkmap_free(job_chunkmap *m); /* NULL ok */

#endif
