/* arc_manifest: what an artifact holds, as data (the manifest segment of FORMAT.md), and its msgpack encoding.
 *
 * The manifest is a msgpack map with string keys (readers ignore unknown keys, so fields can be added without a
 * format version bump). It describes every table: its columns, the SQL to recreate it on an empty database
 * (split into what runs before the data, after it, and last: foreign keys), its owned sequences and their values,
 * where its segment lies in the file, its counts and the BLAKE2b-256 of its plaintext COPY stream.
 * Every string is a malloc'd NUL-terminated copy owned by the manifest; arc_manifest_free() frees it all.
 *
 * Adding a field is one row: put the member in its struct below, then one row in that struct's table in
 * arc_manifest.c (mf_manifest_rows, mf_table_rows, ...): key, kind (MF_I64, MF_STR, MF_BOOL, MF_HASH, a list...),
 * the member, and MF_IF_SET for a field older artifacts do not have (written only when set, so artifacts that do
 * not use it keep their bytes). Packing, unpacking, the map sizes and freeing all follow from that row.
 */
#ifndef ARC_MANIFEST_H
#define ARC_MANIFEST_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "artifact/arc_chunk.h"
#include "artifact/arc_format.h"
#include "common/fb_err.h"

#define ARC_HASH_BYTES 32

typedef struct arc_column {
    char *name;
    char *type;           /* format_type(): "character varying(20)", "timestamp with time zone", ... */
    int not_null;
    char generated;       /* 's': GENERATED ALWAYS AS (...) STORED (not in the COPY stream); 0 otherwise */
    char identity;        /* 'a' (ALWAYS), 'd' (BY DEFAULT), 0 */
} arc_column;

typedef struct arc_sequence {
    char *schema, *name;
    char *column;         /* the owning column */
    char *create_sql;     /* CREATE SEQUENCE ...; NULL for identity sequences (the column creates them) */
    char *owned_sql;      /* ALTER SEQUENCE ... OWNED BY ...; NULL for identity sequences */
    int64_t last_value;
    int is_called;
    int identity;
} arc_sequence;

typedef struct arc_tref {
    char *schema, *name;
} arc_tref;

typedef struct arc_table {
    char *schema, *name;
    arc_column *cols;
    size_t n_cols;
    char *create_sql;     /* CREATE TABLE: columns, types, defaults, NOT NULL, identity, generated, CHECKs */
    char **index_sql;     /* after the data: primary key, unique and exclusion constraints, other indexes */
    size_t n_index;
    char **fk_sql;        /* last: foreign keys */
    size_t n_fk;
    arc_sequence *seqs;
    size_t n_seqs;
    arc_tref *deps;       /* tables this one references (foreign keys), for load order */
    size_t n_deps;
    int64_t rows, raw_bytes, stored_bytes;
    uint64_t offset, length;   /* its segment in the file */
    uint32_t segment;          /* segment id (key derivation); tables are 1..n, the manifest is 0 */
    unsigned char blake2b[ARC_HASH_BYTES];
    char *stored_in;      /* format 2: job id of the artifact that holds this table's data when it is not this one
                           * (unchanged since the base: segment, offset, length are 0); NULL: stored here */
    /* Format 3 (FORMAT.md, "Chunks"): the table's chunks in stream order (absent for a referenced table). When
     * `assembled`, the data is these chunks concatenated, each read from its artifact (src NULL: this one) and
     * segment; segment/offset/length are then this file's segment of the table's new chunks (0 when none).
     * Otherwise the chunks only describe the whole segment, for later backups to reuse. */
    int assembled;
    arc_chunk *chunks;
    size_t n_chunks;
} arc_table;

/* Format 4: the schema archive, `pg_dump -Fc` of everything but the rows of ordinary tables (FORMAT.md, "Schema
 * archive"), in a segment of its own, authenticated like the tables' segments. */
typedef struct arc_schema_archive {
    uint32_t segment;
    uint64_t offset, length;   /* its segment in the file */
    int64_t raw_bytes;         /* plaintext bytes (the pg_dump archive) */
    unsigned char blake2b[ARC_HASH_BYTES];
    char *pg_dump_version;     /* `pg_dump --version` of the dump, e.g. "pg_dump (PostgreSQL) 15.18" */
    int all_tables;            /* the backup holds the rows of every table (no table list was requested): only
                                * then can the archive rebuild the whole database (else foreign keys to tables
                                * whose rows are not in the backup would fail) */
} arc_schema_archive;

/* A FULL taken in a capture slot's exported snapshot (capture/cap_base.h): the base of a change chain. Every
 * transaction committed before lsn is in this backup's rows and every one at or after it is in the chain of
 * `stream`, so restore --until applies the chain from lsn on top of it (no gap, no overlap). */
typedef struct arc_capture_base {
    char *slot;                /* the logical replication slot */
    char *stream;              /* the chain's stream id ("DBNAME/SLOT"); its folder is capture/<stream> beside
                                * the artifact */
    uint64_t lsn;              /* the slot's consistent point: the chain's first segment starts here */
    int64_t time_us;           /* every transaction in this backup's rows committed before this (Unix epoch
                                * microseconds): the first moment restore --until TIME may name */
} arc_capture_base;

/* An INCREMENTAL or DIFFERENTIAL from captured changes (capture/cap_incr.h, FORMAT.md "Incrementals from captured
 * changes"): no table rows, but copies of the change segments of `stream` covering [start_lsn, end_lsn), packed
 * into one segment of this artifact, on top of the capture base FULL `full_job`. Restoring it is restoring that
 * FULL and applying the chain from the FULL's consistent point up to end_lsn: this artifact's segments and those
 * of the backups between it and the FULL (an INCREMENTAL's start is its base's end; a DIFFERENTIAL's is the
 * FULL's consistent point). */
typedef struct arc_capture_changes {
    uint32_t segment;
    uint64_t offset, length;   /* the packed segments in this file */
    int64_t raw_bytes;         /* plaintext bytes of the pack */
    unsigned char blake2b[ARC_HASH_BYTES];
    char *stream, *slot;
    char *full_job;            /* the capture base FULL under the chain */
    int64_t full_snapshot_ms;  /* that FULL's snapshot_ms: with its job id, stream and consistent point (the
                                * first range's start), which capture base exactly; unlike its index's bytes it
                                * survives rekey */
    uint64_t start_lsn, end_lsn;
    int64_t end_us;            /* the last commit time among its transactions' (0: it holds none) */
    int64_t segments;          /* change segments packed */
} arc_capture_changes;

typedef struct arc_manifest {
    int64_t format;
    char *tool;
    char *job_id;
    int64_t record_id, config_id;
    char *config_name;
    char *backup_type;       /* what ran: "FULL", "INCREMENTAL" or "DIFFERENTIAL" */
    char *requested_type;    /* what was asked (an INCREMENTAL without a valid base runs as FULL) */
    char *base_job;          /* format 2: the base's job id (INCREMENTAL / DIFFERENTIAL); NULL for a FULL */
    char *database, *server_version;
    int64_t snapshot_ms, started_ms, completed_ms;
    int64_t zstd_level;
    uint64_t data_end;       /* first byte after the last table segment = offset of the manifest segment */
    int has_index_hash;      /* format 2: index_blake2b is the BLAKE2b-256 of the plaintext chain index */
    unsigned char index_blake2b[ARC_HASH_BYTES];
    arc_table *tables;
    size_t n_tables;
    arc_schema_archive *schema;  /* format 4; NULL when the artifact has none (restore --create then uses each
                                  * table's create_sql, index_sql and fk_sql) */
    arc_capture_base *capture;   /* NULL unless this FULL is the base of a change chain */
    arc_capture_changes *changes; /* NULL unless this INCREMENTAL/DIFFERENTIAL is made of captured changes */
} arc_manifest;

/* The BLAKE2b-256 and length of a table's plaintext COPY stream, as a table's blake2b and raw_bytes record them: the
 * backup computes them while it reads a table (change detection), restore's check while it re-reads one. */
typedef struct arc_hasher {
    crypto_generichash_state st;
    int64_t bytes;
} arc_hasher;
void arc_hasher_init(arc_hasher *h);
/* A sink (the shape of the artifact's stream callbacks): hashes and counts buf; opaque is the arc_hasher. */
fb_code arc_hasher_put(void *opaque, const void *buf, size_t len, fb_err *err);
void arc_hasher_final(arc_hasher *h, unsigned char out[ARC_HASH_BYTES]);

/* Encodes m into a new malloc'd buffer the caller free()s. */
fb_code arc_manifest_pack(const arc_manifest *m, char **out, size_t *out_len, fb_err *err);
/* Decodes a manifest; *out is new, free with arc_manifest_free(). FB_ERR_FORMAT when malformed. */
fb_code arc_manifest_unpack(const void *buf, size_t len, arc_manifest **out, fb_err *err);
void arc_manifest_free(arc_manifest *m);
/* Frees what m holds (not m itself) and zeroes it: for manifests built on the stack. */
void arc_manifest_clear(arc_manifest *m);
/* Frees the contents of one table (for builders that fill tables one by one). */
void arc_table_clear(arc_table *t);

/* Writes the manifest as JSON (generic msgpack -> JSON; bin values as hex strings). */
fb_code arc_manifest_print_json(const void *buf, size_t len, FILE *out, fb_err *err);

/* Which kind t is (arc_format.h): REFERENCED when t->stored_in names a job other than m->job_id, else ASSEMBLED
 * when t->assembled, else WHOLE. */
arc_table_kind arc_table_kind_of(const arc_manifest *m, const arc_table *t);

/* Finds a table by schema and name; NULL when absent. */
arc_table *arc_manifest_find(const arc_manifest *m, const char *schema, const char *name);

#endif
