/* arc_reader: reads an artifact (FORMAT.md): header, sealed data key, manifest, and any table segment on its own.
 *
 * arc_reader_open checks the magic and version and (format 5) the signatures, opens the data key with the secret
 * key, reads the trailer and authenticates and decodes the manifest and the chain index's head; from then on any
 * table can be read by itself (random access: restoring one table decrypts only its segment).
 * arc_reader_read_table streams the table's plaintext COPY text to a sink (each segment through arc_stream.h)
 * and checks, in order: every message's tag, the final tag at exactly the segment's end, the zstd frame's end, the
 * byte count and the BLAKE2b against the manifest. Data handed to the sink before a failure is NOT authenticated
 * as a whole: callers that load it somewhere must be able to undo that (restore runs in one transaction).
 */
#ifndef ARC_READER_H
#define ARC_READER_H

#include <stddef.h>
#include <stdint.h>

#include "artifact/arc_manifest.h"
#include "artifact/arc_sign.h"
#include "common/fb_err.h"
#include "storage/stor.h"

typedef struct arc_reader arc_reader;

/* Opens the artifact of job `job_id` for a table that an INCREMENTAL or DIFFERENTIAL artifact only references
 * (FORMAT.md, "Chains"). On success *out is a new file the reader closes. FB_ERR_NOTFOUND when there is none:
 * the message should say where it looked. Called from the reading thread (dups call it from theirs). */
typedef fb_code (*arc_resolve_fn)(void *opaque, const char *job_id, stor_rfile **out, fb_err *err);

/* Receives plaintext pieces of a table's COPY stream. A non-zero return stops reading and is passed up. */
typedef fb_code (*arc_sink_fn)(void *opaque, const void *buf, size_t len, fb_err *err);

/* f is borrowed and must outlive the reader. sk/pk: the key pair (pk derived from sk by arc_key_load_secret).
 * trust (required; its keyring is borrowed for the reader's life, job_id only during the call): who may have
 * written it (arc_sign.h). Format 5: both signatures are checked against trust->signers, and the signed job id
 * against trust->job_id, before the data key is unsealed; every artifact the chain leads to is checked the same
 * way with the job id that references it. Format <= 4: refused unless trust->allow_unsigned (then a warning).
 * Errors: FB_ERR_FORMAT (not an artifact, unknown version, truncated), FB_ERR_UNTRUSTED (unsigned, unknown key,
 * bad signature), FB_ERR_VERIFY (another job's artifact), FB_ERR_CRYPTO (wrong key, tampered). */
fb_code arc_reader_open(stor_rfile *f, const unsigned char *sk, const unsigned char *pk, const arc_trust *trust,
                        arc_reader **out, fb_err *err);
/* Who signed it (state ARC_SIG_UNSIGNED for format <= 4 read with allow_unsigned). */
const arc_sig_status *arc_reader_signature(const arc_reader *r);
/* Lets the reader follow references to other artifacts. With opaque_free, the reader owns opaque and frees it
 * in arc_reader_free; otherwise it is borrowed. Dups and the artifacts opened through it use the same resolver
 * (borrowed). Without a resolver, reading a referenced table fails with FB_ERR_NOTFOUND and
 * arc_reader_verify_all checks only this file. */
void arc_reader_set_resolver(arc_reader *r, arc_resolve_fn fn, void *opaque, void (*opaque_free)(void *));

/* Reads only the plaintext header fields (no key needed): format version. */
fb_code arc_reader_peek_version(stor_rfile *f, int *version, fb_err *err);

/* Reads the plaintext chain index of a format-2 artifact without any key (arc_index.h says how it is
 * authenticated). *out is malloc'd (NUL-terminated; caller frees). FB_ERR_NOTFOUND for format 1 (no index) or
 * an empty one; FB_ERR_FORMAT when the trailer is damaged. */
fb_code arc_reader_peek_index(stor_rfile *f, char **out, size_t *len, fb_err *err);
/* The same, and where the whole index is in the file (a version-3 index: *out is its head only, and its chunk
 * records are the rest of [*index_off, *index_off + *index_len)). index_off, index_len may be NULL. */
fb_code arc_reader_peek_index_at(stor_rfile *f, char **out, size_t *len, uint64_t *index_off, uint64_t *index_len,
                                 fb_err *err);

/* The decoded manifest (owned by the reader) and its raw msgpack bytes (for JSON output). */
const arc_manifest *arc_reader_manifest(const arc_reader *r);
const void *arc_reader_manifest_raw(const arc_reader *r, size_t *len);
/* Format 5: the head of the chain index, authenticated through the manifest (owned by the reader); NULL before. */
const struct arc_index *arc_reader_index(const arc_reader *r);

/* Streams table t (from the manifest) to sink (NULL: only check it). An assembled table (format 3) is read chunk
 * by chunk from the segments of this and other artifacts (through the resolver): each source segment is
 * decompressed once into an unlinked temporary file in $TMPDIR (disk, about the table's size; memory stays at one
 * 64 KiB copy buffer whatever the table's size), and the result must match t's byte count and BLAKE2b. A table
 * stored in another artifact (t->stored_in) is read from there through the resolver, after checking that the
 * other artifact is the job it should be and records the same byte count and BLAKE2b for the table: nothing
 * reaches the sink otherwise. */
fb_code arc_reader_read_table(arc_reader *r, const arc_table *t, arc_sink_fn sink, void *opaque, fb_err *err);

/* Streams the schema archive (format 4, FORMAT.md "Schema archive") to sink (NULL: only check it), checking its
 * tags, byte count and BLAKE2b as for a table. FB_ERR_NOTFOUND when the artifact has none (format <= 3). */
fb_code arc_reader_read_schema(arc_reader *r, arc_sink_fn sink, void *opaque, fb_err *err);

/* Streams the captured changes of an INCREMENTAL/DIFFERENTIAL from captured changes (manifest `capture_changes`,
 * capture/cap_incr.h: the packed change segments) to sink (NULL: only check it), checked as the schema archive is.
 * FB_ERR_NOTFOUND when the artifact has none. */
fb_code arc_reader_read_changes(arc_reader *r, arc_sink_fn sink, void *opaque, fb_err *err);
/* Checks every table segment, the schema archive and the captured changes (authenticates, decompresses, re-hashes), that segments tile
 * the file and (format 5) every table's chunk records against the index head; with a resolver, also every
 * referenced or assembled table through the artifacts that hold its data (the chain). */
fb_code arc_reader_verify_all(arc_reader *r, fb_err *err);

/* A second reader of the same open artifact for another thread: own buffers and decompressor, the same file,
 * key and manifest (borrowed: free the dup before the original). Readers are not thread-safe; dups are. */
fb_code arc_reader_dup(const arc_reader *r, arc_reader **out, fb_err *err);

void arc_reader_free(arc_reader *r);

#endif
