/* arc_index: the chain index, a plaintext block inside each format-2 artifact, between the manifest segment and the
 * trailer (FORMAT.md), readable without any key (arc_reader_peek_index). Since format 5 (index version 3) it is a
 * text head whose size depends only on the number of tables, followed by the binary chunk records (arc_clist.h),
 * which this module never holds: arc_index_parse gets the head alone.
 *
 * Why: a worker holds only the public key, so it cannot read the manifests of earlier backups; to make an
 * INCREMENTAL or DIFFERENTIAL it needs, per table of the base, a fingerprint of the content and which artifact
 * holds the data, and retention needs each artifact's type, time and references. The index carries exactly that,
 * in text lines, and ends with a MAC line: BLAKE2b-256 keyed with the index key over every byte before it.
 *
 * The table fingerprint is not the manifest's BLAKE2b of the COPY stream (that would let anyone holding the file
 * test guesses of a table's content) but a tag: BLAKE2b-256 keyed with the index key of that hash. Equal tags mean
 * equal content; nothing else can be learnt without the key. The index key is a 32-byte secret the workers share
 * (--index-key FILE); without one, it is derived from the public key, which then protects only against accidental
 * damage (FORMAT.md, "Chains", says what each choice means). Correctness never depends on the index: the
 * artifact's own authenticated manifest records the real hash of every referenced table, and restore checks it
 * against the artifact that holds the data; a lying index can only make a backup unrestorable, which the verify
 * job detects, never silently wrong.
 *
 * Strings are percent-encoded (bytes <= 0x20, '%', 0x7f and above); everything is owned by the arc_index.
 */
#ifndef ARC_INDEX_H
#define ARC_INDEX_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "artifact/arc_chunk.h"
#include "artifact/arc_clist.h"
#include "artifact/arc_format.h"
#include "common/fb_err.h"

#define ARC_INDEX_KEY_BYTES 32
#define ARC_ARTIFACT_SUFFIX ".fbak"

/* Where job job_id's artifact is in folder dir: "<dir>/<job_id>.fbak" ("<job_id>.fbak" when dir is ""), into out.
 * The one rule every chain resolver and chain reader uses: a job id named by a manifest, an index or a chunk
 * record must be one path component (never "..", "/" or empty), else FB_ERR_FORMAT; FB_ERR_INVALID when it does not
 * fit in cap. */
fb_code arc_artifact_name(const char *dir, const char *job_id, char *out, size_t cap, fb_err *err);

typedef struct arc_index_table {
    char *schema, *name;
    unsigned char tag[32];    /* BLAKE2b(key = index key, message = BLAKE2b of the COPY stream) */
    char *stored_in;          /* job id of the artifact holding the data (this job when stored here) */
    int64_t rows, raw_bytes;
    /* Index version 2 (artifact format 3): the table's chunks, in stream order, when this artifact holds or
     * assembles its data (none for a table only referenced: its holder's index lists them). assembled: the data
     * is put together from chunks (some possibly in other artifacts) rather than stored whole in one segment. */
    int assembled;
    arc_chunk *chunks;        /* src NULL: this artifact */
    size_t n_chunks;
    /* Index version 3 (artifact format 5, arc_clist.h): the chunks are not in memory but a range of the binary
     * records after the head: [rec_first, rec_first + rec_count), whose BLAKE2b is rec_blake2b. Version 4
     * (format 6, compact records): rec_first is the range's byte offset in the records and rec_bytes its length
     * (set to rec_count * 40 when a version-3 index is parsed). arc_index_table_range reads either. */
    uint64_t rec_first, rec_count, rec_bytes;
    unsigned char rec_blake2b[32];
    /* The other artifacts holding some of its chunks (every version; borrowed: from chunks[].src in version 2,
     * from the index's sources in version 3), so retention and listings need no chunk list. */
    const char **deps;
    size_t n_deps;
} arc_index_table;

typedef struct arc_index {
    char *job_id;
    int64_t config_id;
    char *type;               /* what ran: FULL, INCREMENTAL, DIFFERENTIAL */
    char *base_job;           /* NULL for a FULL */
    int64_t snapshot_ms, completed_ms;
    arc_index_table *tables;
    size_t n_tables;
    int version;              /* 1 to 4; arc_index_format writes 3 or 4 when so, else 2 */
    /* Version >= 3: the jobs chunk records name (record src k >= 1 is sources[k - 1]), the number of records and
     * their bytes (version 3: set to n_records * 40 by arc_index_parse), and where they start, in bytes from the
     * start of the index (= the head's length; set by arc_index_parse). */
    char **sources;
    size_t n_sources;
    uint64_t n_records, n_record_bytes;
    uint64_t records_at;
    /* Version 3, optional: the backup's place on a change chain (capture/cap_incr.h), so that a worker, which
     * cannot read manifests, finds where the next INCREMENTAL from captured changes starts. Line `capture STREAM
     * FULL_JOB START END` after the sources (LSNs as 16 hex digits): a capture base FULL has itself as FULL_JOB
     * and START = END = its consistent point; an INCREMENTAL/DIFFERENTIAL from changes holds [START, END).
     * cap_stream NULL: none. The manifest (capture_base, capture_changes) says the same, authenticated. */
    char *cap_stream, *cap_full;
    uint64_t cap_start, cap_end;
} arc_index;

/* The index key: 32 bytes from a key file (the format of `fusion-backup keygen`'s .key, mode 0600), or, when
 * key_file is NULL or empty, BLAKE2b(key = "fusion-backup chain index v1", pk). key is the caller's to erase. */
fb_code arc_index_key(const char *key_file, const unsigned char pk[32], unsigned char key[ARC_INDEX_KEY_BYTES],
                      fb_err *err);
/* tag = BLAKE2b-256(key, content_hash). */
void arc_index_tag(const unsigned char key[ARC_INDEX_KEY_BYTES], const unsigned char content_hash[32],
                   unsigned char tag[32]);

/* Encodes ix as text with its MAC line; *out is malloc'd (caller frees). Version 2 (ix->version < 3): with chunk
 * lines. Version 3 and 4: only the head; the caller writes the ix->n_records records (arc_clist; version 4:
 * ix->n_record_bytes bytes of compact ones) right after it, and each table's deps must be among ix->sources. */
fb_code arc_index_format(const arc_index *ix, const unsigned char key[ARC_INDEX_KEY_BYTES], char **out, size_t *len,
                         fb_err *err);
/* Parses and authenticates. FB_ERR_CRYPTO: the MAC does not match (altered, or another index key);
 * FB_ERR_FORMAT: malformed. *out is new: free with arc_index_free. buf is the whole index of version 1 or 2, or
 * the head of version 3 (arc_index_head_len). key NULL: the MAC is not checked, for a caller that authenticated
 * the bytes otherwise (a reader holding the manifest, which records their BLAKE2b). */
fb_code arc_index_parse(const char *buf, size_t len, const unsigned char key[ARC_INDEX_KEY_BYTES], arc_index **out,
                        fb_err *err);
void arc_index_free(arc_index *ix);

/* Bytes of the first lines of a version-3 index that give the head's length. */
#define ARC_INDEX_PEEK_BYTES 50
/* The length of the head of a version-3 index from its first ARC_INDEX_PEEK_BYTES bytes (*head_len = 0: the index
 * is of version 1 or 2, which is all head). FB_ERR_FORMAT when malformed. */
fb_code arc_index_head_len(const char *first, size_t len, uint64_t *head_len, fb_err *err);

/* The chain index version an artifact of format `format` holds when it holds one of version >= 3: 3 in format 5,
 * 4 since format 6 (0 before 5: version 1 or 2). Writers use it for ARC_FORMAT_VERSION; readers refuse the other. */
static inline int arc_index_version_of(int format) { return format >= 6 ? 4 : format == 5 ? 3 : 0; }

/* The range of table t's records in ix (version >= 3), for arc_clist_iter_open. */
static inline arc_clist_range arc_index_table_range(const arc_index *ix, const arc_index_table *t) {
    arc_clist_range g = {ix->version >= 4, t->rec_first, t->rec_count, t->rec_bytes, t->rec_blake2b};
    return g;
}

/* The index entry of a table; NULL when absent. */
const arc_index_table *arc_index_find(const arc_index *ix, const char *schema, const char *name);

/* Which kind t, a table of ix, is (arc_format.h): REFERENCED when another artifact holds its data (t->stored_in is
 * not ix->job_id), else ASSEMBLED when t->assembled, else WHOLE. The manifest's counterpart is arc_table_kind_of. */
static inline arc_table_kind arc_index_table_kind(const arc_index *ix, const arc_index_table *t) {
    if (t->stored_in && ix->job_id && strcmp(t->stored_in, ix->job_id) != 0) return ARC_TABLE_REFERENCED;
    return t->assembled ? ARC_TABLE_ASSEMBLED : ARC_TABLE_WHOLE;
}

#endif
