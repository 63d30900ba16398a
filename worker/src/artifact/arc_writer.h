/* arc_writer: writes an artifact (FORMAT.md) to a storage file, one segment at a time.
 *
 * Use: arc_writer_new (writes the header, seals a fresh data key to the public key), then for each table
 * arc_writer_begin / arc_writer_write (plaintext COPY text, any sizes) / arc_writer_end, then arc_writer_finish with
 * the encoded manifest, then commit the storage file. The caller's thread hashes (BLAKE2b) and copies into 1 MiB
 * blocks; a writer thread compresses (zstd), encrypts (secretstream) and writes, so reading COPY data overlaps with
 * compression. Memory is bounded: four blocks plus the zstd context, whatever the table size.
 */
#ifndef ARC_WRITER_H
#define ARC_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "artifact/arc_manifest.h"
#include "common/fb_err.h"
#include "common/fb_sign.h"
#include "storage/stor.h"

typedef struct arc_writer arc_writer;

/* What arc_writer_end reports about the segment just written. */
typedef struct arc_seg_info {
    uint32_t segment;
    uint64_t offset, length;   /* bytes of the segment in the file (its stored size) */
    int64_t raw_bytes;         /* plaintext bytes */
    unsigned char blake2b[ARC_HASH_BYTES];
} arc_seg_info;

/* out is borrowed (the caller commits or aborts it after arc_writer_free). pk: the recipient public key. */
fb_code arc_writer_new(stor_wfile *out, const unsigned char *pk, int zstd_level, arc_writer **w, fb_err *err);
/* The same, writing format `version` (2 to ARC_FORMAT_VERSION; tests write older ones): a backup with no assembled table (FORMAT.md, "Chunks") is written
 * as format 2 so that readers of format 2 still read it. */
fb_code arc_writer_new_version(stor_wfile *out, const unsigned char *pk, int zstd_level, int version,
                               arc_writer **w, fb_err *err);
/* Starts the next table segment (ids 1, 2, ...). */
fb_code arc_writer_begin(arc_writer *w, uint32_t *segment, fb_err *err);
fb_code arc_writer_write(arc_writer *w, const void *buf, size_t len, fb_err *err);
/* Ends the segment: waits until it is fully written and fills info. */
fb_code arc_writer_end(arc_writer *w, arc_seg_info *info, fb_err *err);
/* File offset where the next segment starts (after arc_writer_end: the end of the data so far). */
uint64_t arc_writer_offset(const arc_writer *w);
/* The chain index (plaintext, arc_index.h) to write after the manifest; copied. Call before arc_writer_finish. */
fb_code arc_writer_set_index(arc_writer *w, const void *index, size_t len, fb_err *err);
/* Compresses in n zstd threads besides the writer thread (0: in the writer thread, the default of a new writer), so
 * that on a backup reading COPY, hashing and chunking (the caller), compression (zstd) and encryption and output
 * (the writer thread) overlap. Call before the first segment. FB_ERR_USAGE when libzstd has no threads. */
fb_code arc_writer_set_zstd_workers(arc_writer *w, int n, fb_err *err);
/* Format 5: the chain index's chunk records, the first len bytes of fd (arc_clist spool), copied right after the
 * index set above when finishing; fd is borrowed and must stay open until arc_writer_finish returns. */
void arc_writer_set_index_records(arc_writer *w, int fd, uint64_t len);
/* Format 5 (FORMAT.md "Signatures (format 5)"): the key that signs the manifest and the index of job job_id
 * (copied); s is borrowed until arc_writer_finish returns. Required before finishing a format-5 artifact. */
fb_code arc_writer_set_signer(arc_writer *w, const fb_signer *s, const char *job_id, fb_err *err);
/* Writes the manifest segment, the chain index (empty when none was set) and its records, the signature block (format 5) and the
 * trailer. */
fb_code arc_writer_finish(arc_writer *w, const void *manifest, size_t len, fb_err *err);
/* A lane, for a parallel dump (several connections on one snapshot): a second writer with w's header, data key,
 * zstd settings and segment numbering (ids from w's counter), whose segments go to an unlinked temporary file in
 * $TMPDIR instead of w's output; it has two 256 KiB blocks and compresses in its own writer thread
 * (no zstd worker), and frees one of w's 1 MiB blocks (w keeps at least two), so a lane adds ~3.5 MB. Create
 * lanes while w has no segment open. A segment's ciphertext depends only on its id and the data key, not on where it
 * lies, so a finished segment of the lane is copied into w, between w's own segments, by arc_writer_import.
 * Used from one thread (its own writer thread aside) like any writer; free it before w. Never finished. */
fb_code arc_writer_new_lane(arc_writer *w, arc_writer **lane, fb_err *err);
/* Copies the lane's finished segment `in` (as its arc_writer_end reported it) into w's output at w's current
 * offset (*at), then frees its space in the temporary file. Only between w's segments. */
fb_code arc_writer_import(arc_writer *w, const arc_writer *lane, const arc_seg_info *in, uint64_t *at, fb_err *err);
/* Stops the writer thread and erases keys. NULL ok. */
void arc_writer_free(arc_writer *w);

#endif
