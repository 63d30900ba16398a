/* arc_reader: reads an artifact (FORMAT.md): header, sealed data key, manifest, and any table segment on its own.
 *
 * arc_reader_open checks the magic and version, opens the data key with the secret key, reads the trailer and
 * authenticates and decodes the manifest; from then on any table can be read by itself (random access: restoring
 * one table decrypts only its segment). arc_reader_read_table streams the table's plaintext COPY text to a sink
 * and checks, in order: every message's tag, the final tag at exactly the segment's end, the zstd frame's end, the
 * byte count and the BLAKE2b against the manifest. Data handed to the sink before a failure is NOT authenticated
 * as a whole: callers that load it somewhere must be able to undo that (restore runs in one transaction).
 */
#ifndef ARC_READER_H
#define ARC_READER_H

#include <stddef.h>
#include <stdint.h>

#include "artifact/arc_manifest.h"
#include "common/fb_err.h"
#include "storage/stor.h"

typedef struct arc_reader arc_reader;

/* Receives plaintext pieces of a table's COPY stream. A non-zero return stops reading and is passed up. */
typedef fb_code (*arc_sink_fn)(void *opaque, const void *buf, size_t len, fb_err *err);

/* f is borrowed and must outlive the reader. sk/pk: the key pair (pk derived from sk by arc_key_load_secret).
 * Errors: FB_ERR_FORMAT (not an artifact, unknown version, truncated), FB_ERR_CRYPTO (wrong key, tampered). */
fb_code arc_reader_open(stor_rfile *f, const unsigned char *sk, const unsigned char *pk, arc_reader **out,
                        fb_err *err);
/* Reads only the plaintext header fields (no key needed): format version. */
fb_code arc_reader_peek_version(stor_rfile *f, int *version, fb_err *err);

/* The decoded manifest (owned by the reader) and its raw msgpack bytes (for JSON output). */
const arc_manifest *arc_reader_manifest(const arc_reader *r);
const void *arc_reader_manifest_raw(const arc_reader *r, size_t *len);

/* Streams table t (from the manifest) to sink (NULL: only check it). *raw_bytes (may be NULL) gets the count. */
fb_code arc_reader_read_table(arc_reader *r, const arc_table *t, arc_sink_fn sink, void *opaque, fb_err *err);

/* Checks every table segment (authenticates, decompresses, re-hashes) and that segments tile the file. */
fb_code arc_reader_verify_all(arc_reader *r, fb_err *err);

/* A second reader of the same open artifact for another thread: own buffers and decompressor, the same file,
 * key and manifest (borrowed: free the dup before the original). Readers are not thread-safe; dups are. */
fb_code arc_reader_dup(const arc_reader *r, arc_reader **out, fb_err *err);

void arc_reader_free(arc_reader *r);

#endif
