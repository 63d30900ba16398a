/* arc_manifest: manifest <-> msgpack, driven by one field table per struct. See arc_manifest.h and FORMAT.md.
 *
 * Every struct of the manifest (the manifest, a table, a column, a sequence, the schema archive) has one table of
 * rows below: key, kind, where the value lives in the struct, and whether the key is written only when set. Pack,
 * unpack and free all walk those rows, so a map's size is counted from the rows it writes (it cannot drift from
 * them, as a hand-written `15 + !!t->stored_in + ...` could) and a field added to one direction is in all three.
 * The row order is the wire order: keep it, the golden artifacts and older readers see exactly these bytes.
 *
 * Decoding unpacks into msgpack-c's object tree (bounded by the segment size the reader accepts), looks each key
 * up in the rows of its struct and ignores unknown keys (readers must, FORMAT.md). Absent strings are nil.
 */
#include "artifact/arc_manifest.h"

#include <msgpack.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/fb_json.h"

/* ---------------------------------------------------------------------------------------------------------------
 * the field tables */

typedef enum mf_kind {
    MF_I64,    /* int64_t */
    MF_U64,    /* uint64_t */
    MF_U32,    /* uint32_t */
    MF_COUNT,  /* a size_t written as an int, never read back (n_tables: a reader's cross-check) */
    MF_STR,    /* char *, nil when NULL */
    MF_BOOL,   /* int written as true/false */
    MF_CHAR,   /* char written as a string of 0 or 1 byte */
    MF_HASH,   /* unsigned char[ARC_HASH_BYTES] as bin */
    MF_STRS,   /* char ** with a size_t count */
    MF_LIST,   /* an array of structs of type `sub` with a size_t count */
    MF_SUB,    /* a pointer to one struct of type `sub` (NULL: absent) */
    MF_TREFS,  /* arc_tref * with a size_t count, each as [schema, name] */
    MF_CHUNKS, /* arc_chunk * with a size_t count, each as [id, src, segment, offset, length] */
} mf_kind;

#define MF_ALWAYS 0
#define MF_IF_SET 1 /* written only when set (non-zero, non-NULL, non-empty): fields newer formats added */
#define MF_NONE ((size_t)-1)

typedef struct mf_type mf_type;
typedef struct mf_field {
    const char *key;
    mf_kind kind;
    size_t off;        /* the value */
    size_t aux;        /* lists: the size_t count; MF_HASH: an int set when the key was read (MF_NONE: none) */
    int when;          /* MF_ALWAYS or MF_IF_SET */
    const char *what;  /* the name in "malformed manifest: bad ...": the key unless it needs its context */
    const mf_type *sub;
} mf_field;

struct mf_type {
    const mf_field *rows;
    size_t n_rows;
    size_t size;                         /* sizeof the struct (lists and MF_SUB allocate it) */
    int (*complete)(const void *obj);    /* after reading: 1 when the struct has what it must have */
    const char *incomplete;              /* the "bad ..." name when complete() says no */
};

#define MF_ROW(T, key, kind, field, when, what) {key, kind, offsetof(T, field), MF_NONE, when, what, NULL}
#define MF_ARR(T, key, kind, field, count, when, what, sub) \
    {key, kind, offsetof(T, field), offsetof(T, count), when, what, sub}

static int mf_column_ok(const void *o) { return ((const arc_column *)o)->name != NULL; }
static int mf_seq_ok(const void *o) {
    const arc_sequence *s = o;
    return s->schema && s->name;
}
static int mf_table_ok(const void *o) {
    const arc_table *t = o;
    return t->schema && t->name;
}
static int mf_schema_ok(const void *o) {
    const arc_schema_archive *a = o;
    return a->segment && a->length;
}

static const mf_field mf_column_rows[] = {
    MF_ROW(arc_column, "name", MF_STR, name, MF_ALWAYS, "column name"),
    MF_ROW(arc_column, "type", MF_STR, type, MF_ALWAYS, "column type"),
    MF_ROW(arc_column, "not_null", MF_BOOL, not_null, MF_ALWAYS, NULL),
    MF_ROW(arc_column, "generated", MF_CHAR, generated, MF_ALWAYS, NULL),
    MF_ROW(arc_column, "identity", MF_CHAR, identity, MF_ALWAYS, NULL),
};
static const mf_type mf_column = {mf_column_rows, sizeof mf_column_rows / sizeof mf_column_rows[0],
                                  sizeof(arc_column), mf_column_ok, "column name"};

static const mf_field mf_seq_rows[] = {
    MF_ROW(arc_sequence, "schema", MF_STR, schema, MF_ALWAYS, "sequence schema"),
    MF_ROW(arc_sequence, "name", MF_STR, name, MF_ALWAYS, "sequence name"),
    MF_ROW(arc_sequence, "column", MF_STR, column, MF_ALWAYS, "sequence column"),
    MF_ROW(arc_sequence, "create_sql", MF_STR, create_sql, MF_ALWAYS, "sequence create_sql"),
    MF_ROW(arc_sequence, "owned_sql", MF_STR, owned_sql, MF_ALWAYS, "sequence owned_sql"),
    MF_ROW(arc_sequence, "last_value", MF_I64, last_value, MF_ALWAYS, NULL),
    MF_ROW(arc_sequence, "is_called", MF_BOOL, is_called, MF_ALWAYS, NULL),
    MF_ROW(arc_sequence, "identity", MF_BOOL, identity, MF_ALWAYS, NULL),
};
static const mf_type mf_seq = {mf_seq_rows, sizeof mf_seq_rows / sizeof mf_seq_rows[0], sizeof(arc_sequence),
                               mf_seq_ok, "sequence name"};

static const mf_field mf_table_rows[] = {
    MF_ROW(arc_table, "schema", MF_STR, schema, MF_ALWAYS, NULL),
    MF_ROW(arc_table, "name", MF_STR, name, MF_ALWAYS, NULL),
    MF_ARR(arc_table, "columns", MF_LIST, cols, n_cols, MF_ALWAYS, NULL, &mf_column),
    MF_ROW(arc_table, "create_sql", MF_STR, create_sql, MF_ALWAYS, NULL),
    MF_ARR(arc_table, "index_sql", MF_STRS, index_sql, n_index, MF_ALWAYS, NULL, NULL),
    MF_ARR(arc_table, "fk_sql", MF_STRS, fk_sql, n_fk, MF_ALWAYS, NULL, NULL),
    MF_ARR(arc_table, "sequences", MF_LIST, seqs, n_seqs, MF_ALWAYS, NULL, &mf_seq),
    MF_ARR(arc_table, "depends_on", MF_TREFS, deps, n_deps, MF_ALWAYS, NULL, NULL),
    MF_ROW(arc_table, "rows", MF_I64, rows, MF_ALWAYS, NULL),
    MF_ROW(arc_table, "raw_bytes", MF_I64, raw_bytes, MF_ALWAYS, NULL),
    MF_ROW(arc_table, "stored_bytes", MF_I64, stored_bytes, MF_ALWAYS, NULL),
    MF_ROW(arc_table, "segment", MF_U32, segment, MF_ALWAYS, NULL),
    MF_ROW(arc_table, "offset", MF_U64, offset, MF_ALWAYS, NULL),
    MF_ROW(arc_table, "length", MF_U64, length, MF_ALWAYS, NULL),
    MF_ROW(arc_table, "blake2b", MF_HASH, blake2b, MF_ALWAYS, NULL),
    MF_ROW(arc_table, "stored_in", MF_STR, stored_in, MF_IF_SET, NULL),      /* format 2 */
    MF_ROW(arc_table, "assembled", MF_BOOL, assembled, MF_IF_SET, NULL),     /* format 3 */
    MF_ARR(arc_table, "chunks", MF_CHUNKS, chunks, n_chunks, MF_IF_SET, NULL, NULL), /* format 3 */
};
static const mf_type mf_table = {mf_table_rows, sizeof mf_table_rows / sizeof mf_table_rows[0], sizeof(arc_table),
                                 mf_table_ok, "table name"};

static const mf_field mf_schema_rows[] = {
    MF_ROW(arc_schema_archive, "segment", MF_U32, segment, MF_ALWAYS, "schema_archive segment"),
    MF_ROW(arc_schema_archive, "offset", MF_U64, offset, MF_ALWAYS, "schema_archive offset"),
    MF_ROW(arc_schema_archive, "length", MF_U64, length, MF_ALWAYS, "schema_archive length"),
    MF_ROW(arc_schema_archive, "raw_bytes", MF_I64, raw_bytes, MF_ALWAYS, "schema_archive raw_bytes"),
    MF_ROW(arc_schema_archive, "blake2b", MF_HASH, blake2b, MF_ALWAYS, "schema_archive blake2b"),
    MF_ROW(arc_schema_archive, "pg_dump_version", MF_STR, pg_dump_version, MF_ALWAYS, NULL),
    MF_ROW(arc_schema_archive, "all_tables", MF_BOOL, all_tables, MF_ALWAYS, "schema_archive all_tables"),
};
static const mf_type mf_schema = {mf_schema_rows, sizeof mf_schema_rows / sizeof mf_schema_rows[0],
                                  sizeof(arc_schema_archive), mf_schema_ok, "schema_archive segment"};

static int mf_capture_ok(const void *o) {
    const arc_capture_base *b = o;
    return b->slot && b->stream && b->lsn;
}

static const mf_field mf_capture_rows[] = {
    MF_ROW(arc_capture_base, "slot", MF_STR, slot, MF_ALWAYS, "capture_base slot"),
    MF_ROW(arc_capture_base, "stream", MF_STR, stream, MF_ALWAYS, "capture_base stream"),
    MF_ROW(arc_capture_base, "lsn", MF_U64, lsn, MF_ALWAYS, "capture_base lsn"),
    MF_ROW(arc_capture_base, "time_us", MF_I64, time_us, MF_ALWAYS, "capture_base time_us"),
};
static const mf_type mf_capture = {mf_capture_rows, sizeof mf_capture_rows / sizeof mf_capture_rows[0],
                                   sizeof(arc_capture_base), mf_capture_ok, "capture_base"};

static int mf_changes_ok(const void *o) {
    const arc_capture_changes *c = o;
    return c->segment && c->length && c->stream && c->slot && c->full_job && c->start_lsn && c->end_lsn >= c->start_lsn;
}

static const mf_field mf_changes_rows[] = {
    MF_ROW(arc_capture_changes, "segment", MF_U32, segment, MF_ALWAYS, "capture_changes segment"),
    MF_ROW(arc_capture_changes, "offset", MF_U64, offset, MF_ALWAYS, "capture_changes offset"),
    MF_ROW(arc_capture_changes, "length", MF_U64, length, MF_ALWAYS, "capture_changes length"),
    MF_ROW(arc_capture_changes, "raw_bytes", MF_I64, raw_bytes, MF_ALWAYS, "capture_changes raw_bytes"),
    MF_ROW(arc_capture_changes, "blake2b", MF_HASH, blake2b, MF_ALWAYS, "capture_changes blake2b"),
    MF_ROW(arc_capture_changes, "stream", MF_STR, stream, MF_ALWAYS, "capture_changes stream"),
    MF_ROW(arc_capture_changes, "slot", MF_STR, slot, MF_ALWAYS, "capture_changes slot"),
    MF_ROW(arc_capture_changes, "full_job", MF_STR, full_job, MF_ALWAYS, "capture_changes full_job"),
    MF_ROW(arc_capture_changes, "full_snapshot_ms", MF_I64, full_snapshot_ms, MF_ALWAYS,
           "capture_changes full_snapshot_ms"),
    MF_ROW(arc_capture_changes, "start_lsn", MF_U64, start_lsn, MF_ALWAYS, "capture_changes start_lsn"),
    MF_ROW(arc_capture_changes, "end_lsn", MF_U64, end_lsn, MF_ALWAYS, "capture_changes end_lsn"),
    MF_ROW(arc_capture_changes, "end_us", MF_I64, end_us, MF_ALWAYS, "capture_changes end_us"),
    MF_ROW(arc_capture_changes, "segments", MF_I64, segments, MF_ALWAYS, "capture_changes segments"),
};
static const mf_type mf_changes = {mf_changes_rows, sizeof mf_changes_rows / sizeof mf_changes_rows[0],
                                   sizeof(arc_capture_changes), mf_changes_ok, "capture_changes"};

static const mf_field mf_manifest_rows[] = {
    MF_ROW(arc_manifest, "format", MF_I64, format, MF_ALWAYS, NULL),
    MF_ROW(arc_manifest, "tool", MF_STR, tool, MF_ALWAYS, NULL),
    MF_ROW(arc_manifest, "job_id", MF_STR, job_id, MF_ALWAYS, NULL),
    MF_ROW(arc_manifest, "record_id", MF_I64, record_id, MF_ALWAYS, NULL),
    MF_ROW(arc_manifest, "config_id", MF_I64, config_id, MF_ALWAYS, NULL),
    MF_ROW(arc_manifest, "config_name", MF_STR, config_name, MF_ALWAYS, NULL),
    MF_ROW(arc_manifest, "backup_type", MF_STR, backup_type, MF_ALWAYS, NULL),
    MF_ROW(arc_manifest, "requested_type", MF_STR, requested_type, MF_ALWAYS, NULL),
    MF_ROW(arc_manifest, "base_job", MF_STR, base_job, MF_ALWAYS, NULL),
    MF_ROW(arc_manifest, "database", MF_STR, database, MF_ALWAYS, NULL),
    MF_ROW(arc_manifest, "server_version", MF_STR, server_version, MF_ALWAYS, NULL),
    MF_ROW(arc_manifest, "snapshot_ms", MF_I64, snapshot_ms, MF_ALWAYS, NULL),
    MF_ROW(arc_manifest, "started_ms", MF_I64, started_ms, MF_ALWAYS, NULL),
    MF_ROW(arc_manifest, "completed_ms", MF_I64, completed_ms, MF_ALWAYS, NULL),
    MF_ROW(arc_manifest, "zstd_level", MF_I64, zstd_level, MF_ALWAYS, NULL),
    MF_ROW(arc_manifest, "data_end", MF_U64, data_end, MF_ALWAYS, NULL),
    MF_ROW(arc_manifest, "n_tables", MF_COUNT, n_tables, MF_ALWAYS, NULL),
    {"index_blake2b", MF_HASH, offsetof(arc_manifest, index_blake2b), offsetof(arc_manifest, has_index_hash),
     MF_IF_SET, NULL, NULL},                                                  /* format 2 */
    {"schema_archive", MF_SUB, offsetof(arc_manifest, schema), MF_NONE, MF_IF_SET, NULL, &mf_schema}, /* format 4 */
    {"capture_base", MF_SUB, offsetof(arc_manifest, capture), MF_NONE, MF_IF_SET, NULL, &mf_capture}, /* a capture base */
    {"capture_changes", MF_SUB, offsetof(arc_manifest, changes), MF_NONE, MF_IF_SET, NULL, &mf_changes}, /* cap_incr */
    MF_ARR(arc_manifest, "tables", MF_LIST, tables, n_tables, MF_ALWAYS, NULL, &mf_table),
};
static const mf_type mf_manifest = {mf_manifest_rows, sizeof mf_manifest_rows / sizeof mf_manifest_rows[0],
                                    sizeof(arc_manifest), NULL, NULL};

/* Typed views of a row's value in struct obj. */
#define MF_AT(obj, off, T) ((T *)((char *)(obj) + (off)))
#define MF_CAT(obj, off, T) ((T const *)((const char *)(obj) + (off)))

/* ---------------------------------------------------------------------------------------------------------------
 * packing */

static void mp_str(msgpack_packer *p, const char *s) {
    if (!s) {
        msgpack_pack_nil(p);
        return;
    }
    size_t n = strlen(s);
    msgpack_pack_str(p, n);
    msgpack_pack_str_body(p, s, n);
}

static void mp_bool(msgpack_packer *p, int v) { v ? msgpack_pack_true(p) : msgpack_pack_false(p); }

static void mp_bin(msgpack_packer *p, const unsigned char *b, size_t n) {
    msgpack_pack_bin(p, n);
    msgpack_pack_bin_body(p, b, n);
}

/* Whether a MF_IF_SET row has something to write. */
static int mf_is_set(const mf_field *f, const void *obj) {
    switch (f->kind) {
    case MF_STR: return *MF_CAT(obj, f->off, char *) != NULL;
    case MF_BOOL: return *MF_CAT(obj, f->off, int) != 0;
    case MF_SUB: return *MF_CAT(obj, f->off, void *) != NULL;
    case MF_HASH: return f->aux == MF_NONE || *MF_CAT(obj, f->aux, int) != 0;
    case MF_STRS: case MF_LIST: case MF_TREFS: case MF_CHUNKS: return *MF_CAT(obj, f->aux, size_t) != 0;
    default: return 1;
    }
}

static void mf_pack(msgpack_packer *p, const mf_type *t, const void *obj);

static void mf_pack_chunk(msgpack_packer *p, const arc_chunk *ck) {
    msgpack_pack_array(p, 5);
    mp_bin(p, ck->id, ARC_CHUNK_ID_BYTES);
    mp_str(p, ck->src);
    msgpack_pack_uint32(p, ck->segment);
    msgpack_pack_uint64(p, ck->offset);
    msgpack_pack_uint64(p, ck->length);
}

static void mf_pack_value(msgpack_packer *p, const mf_field *f, const void *obj) {
    size_t n = f->aux != MF_NONE && f->kind != MF_HASH ? *MF_CAT(obj, f->aux, size_t) : 0;
    switch (f->kind) {
    case MF_I64: msgpack_pack_int64(p, *MF_CAT(obj, f->off, int64_t)); break;
    case MF_U64: msgpack_pack_uint64(p, *MF_CAT(obj, f->off, uint64_t)); break;
    case MF_U32: msgpack_pack_uint32(p, *MF_CAT(obj, f->off, uint32_t)); break;
    case MF_COUNT: msgpack_pack_uint64(p, *MF_CAT(obj, f->off, size_t)); break;
    case MF_STR: mp_str(p, *MF_CAT(obj, f->off, char *)); break;
    case MF_BOOL: mp_bool(p, *MF_CAT(obj, f->off, int)); break;
    case MF_CHAR: {
        char s[2] = {*MF_CAT(obj, f->off, char), 0};
        mp_str(p, s);
        break;
    }
    case MF_HASH: mp_bin(p, MF_CAT(obj, f->off, unsigned char), ARC_HASH_BYTES); break;
    case MF_STRS: {
        char *const *v = *MF_CAT(obj, f->off, char **);
        msgpack_pack_array(p, n);
        for (size_t i = 0; i < n; i++) mp_str(p, v[i]);
        break;
    }
    case MF_LIST: {
        const char *v = *MF_CAT(obj, f->off, char *);
        msgpack_pack_array(p, n);
        for (size_t i = 0; i < n; i++) mf_pack(p, f->sub, v + i * f->sub->size);
        break;
    }
    case MF_SUB: mf_pack(p, f->sub, *MF_CAT(obj, f->off, void *)); break;
    case MF_TREFS: {
        const arc_tref *v = *MF_CAT(obj, f->off, arc_tref *);
        msgpack_pack_array(p, n);
        for (size_t i = 0; i < n; i++) {
            msgpack_pack_array(p, 2);
            mp_str(p, v[i].schema);
            mp_str(p, v[i].name);
        }
        break;
    }
    case MF_CHUNKS: {
        const arc_chunk *v = *MF_CAT(obj, f->off, arc_chunk *);
        msgpack_pack_array(p, n);
        for (size_t i = 0; i < n; i++) mf_pack_chunk(p, &v[i]);
        break;
    }
    }
}

/* One map: its size is the number of rows written, counted by the same test that writes them. */
static void mf_pack(msgpack_packer *p, const mf_type *t, const void *obj) {
    size_t n = 0;
    for (size_t i = 0; i < t->n_rows; i++) n += t->rows[i].when == MF_ALWAYS || mf_is_set(&t->rows[i], obj);
    msgpack_pack_map(p, n);
    for (size_t i = 0; i < t->n_rows; i++) {
        const mf_field *f = &t->rows[i];
        if (f->when == MF_IF_SET && !mf_is_set(f, obj)) continue;
        mp_str(p, f->key);
        mf_pack_value(p, f, obj);
    }
}

fb_code arc_manifest_pack(const arc_manifest *m, char **out, size_t *out_len, fb_err *err) {
    msgpack_sbuffer sb;
    msgpack_packer p;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&p, &sb, msgpack_sbuffer_write);
    mf_pack(&p, &mf_manifest, m);
    if (!sb.data) {
        msgpack_sbuffer_destroy(&sb);
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory encoding the manifest");
    }
    *out = sb.data;
    *out_len = sb.size;
    return FB_OK;
}

/* ---------------------------------------------------------------------------------------------------------------
 * unpacking */

typedef struct mp_ctx {
    fb_err *err;
    fb_code rc;
} mp_ctx;

static void mp_bad(mp_ctx *c, const char *what) {
    if (c->rc == FB_OK) c->rc = fb_err_set(c->err, FB_ERR_FORMAT, "malformed manifest: bad \"%s\"", what);
}

static void mp_nomem(mp_ctx *c) {
    if (c->rc == FB_OK) c->rc = fb_err_set(c->err, FB_ERR_NOMEM, "out of memory reading the manifest");
}

static char *mp_get_str(mp_ctx *c, const msgpack_object *o, const char *what) {
    if (o->type == MSGPACK_OBJECT_NIL) return NULL;
    if (o->type != MSGPACK_OBJECT_STR) {
        mp_bad(c, what);
        return NULL;
    }
    char *s = malloc(o->via.str.size + 1);
    if (!s) {
        mp_nomem(c);
        return NULL;
    }
    memcpy(s, o->via.str.ptr, o->via.str.size);
    s[o->via.str.size] = '\0';
    if (memchr(s, '\0', o->via.str.size)) mp_bad(c, what);
    return s;
}

static int64_t mp_get_int(mp_ctx *c, const msgpack_object *o, const char *what) {
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t)INT64_MAX) mp_bad(c, what);
        return (int64_t)o->via.u64;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) return o->via.i64;
    mp_bad(c, what);
    return 0;
}

static int mp_get_bool(mp_ctx *c, const msgpack_object *o, const char *what) {
    if (o->type != MSGPACK_OBJECT_BOOLEAN) {
        mp_bad(c, what);
        return 0;
    }
    return o->via.boolean;
}

static char mp_get_char(mp_ctx *c, const msgpack_object *o, const char *what) {
    if (o->type != MSGPACK_OBJECT_STR || o->via.str.size > 1) {
        mp_bad(c, what);
        return 0;
    }
    return o->via.str.size ? o->via.str.ptr[0] : 0;
}

/* An array of n elements of size each: *out is calloc'd (NULL for none). 0 after an error. */
static int mp_get_array(mp_ctx *c, const msgpack_object *o, size_t size, void **out, size_t *n, const char *what) {
    *out = NULL;
    *n = 0;
    if (o->type != MSGPACK_OBJECT_ARRAY) {
        mp_bad(c, what);
        return 0;
    }
    if (o->via.array.size == 0) return 1;
    if (!(*out = calloc(o->via.array.size, size))) {
        mp_bad(c, what);
        return 0;
    }
    *n = o->via.array.size;
    return 1;
}

static void mf_read(mp_ctx *c, const mf_type *t, const msgpack_object *o, void *obj, const char *what);
static void mf_free_value(const mf_field *f, void *obj);

static void mf_read_tref(mp_ctx *c, const msgpack_object *d, arc_tref *r, const char *what) {
    if (d->type != MSGPACK_OBJECT_ARRAY || d->via.array.size != 2) return mp_bad(c, what);
    r->schema = mp_get_str(c, &d->via.array.ptr[0], what);
    r->name = mp_get_str(c, &d->via.array.ptr[1], what);
}

static void mf_read_chunk(mp_ctx *c, const msgpack_object *d, arc_chunk *ck, const char *what) {
    if (d->type != MSGPACK_OBJECT_ARRAY || d->via.array.size != 5 || d->via.array.ptr[0].type != MSGPACK_OBJECT_BIN ||
        d->via.array.ptr[0].via.bin.size != ARC_CHUNK_ID_BYTES)
        return mp_bad(c, what);
    const msgpack_object *e = d->via.array.ptr;
    memcpy(ck->id, e[0].via.bin.ptr, ARC_CHUNK_ID_BYTES);
    ck->src = mp_get_str(c, &e[1], "chunk source");
    ck->segment = (uint32_t)mp_get_int(c, &e[2], "chunk segment");
    ck->offset = (uint64_t)mp_get_int(c, &e[3], "chunk offset");
    ck->length = (uint64_t)mp_get_int(c, &e[4], "chunk length");
}

static void mf_read_list(mp_ctx *c, const mf_field *f, const msgpack_object *v, void *obj, const char *what) {
    static const size_t elem[] = {[MF_STRS] = sizeof(char *), [MF_TREFS] = sizeof(arc_tref), [MF_CHUNKS] = sizeof(arc_chunk)};
    size_t size = f->kind == MF_LIST ? f->sub->size : elem[f->kind], n;
    void *arr;
    if (!mp_get_array(c, v, size, &arr, &n, what)) return;
    *MF_AT(obj, f->off, void *) = arr;
    *MF_AT(obj, f->aux, size_t) = n;
    for (size_t i = 0; i < n && c->rc == FB_OK; i++) {
        const msgpack_object *e = &v->via.array.ptr[i];
        char *slot = (char *)arr + i * size;
        if (f->kind == MF_STRS) *(char **)slot = mp_get_str(c, e, what);
        else if (f->kind == MF_TREFS) mf_read_tref(c, e, (arc_tref *)slot, what);
        else if (f->kind == MF_CHUNKS) mf_read_chunk(c, e, (arc_chunk *)slot, what);
        else mf_read(c, f->sub, e, slot, what);
    }
}

static void mf_read_value(mp_ctx *c, const mf_field *f, const msgpack_object *v, void *obj) {
    const char *what = f->what ? f->what : f->key;
    mf_free_value(f, obj); /* a key given twice: the last one counts, the first one is not leaked */
    switch (f->kind) {
    case MF_I64: *MF_AT(obj, f->off, int64_t) = mp_get_int(c, v, what); break;
    case MF_U64: *MF_AT(obj, f->off, uint64_t) = (uint64_t)mp_get_int(c, v, what); break;
    case MF_U32: *MF_AT(obj, f->off, uint32_t) = (uint32_t)mp_get_int(c, v, what); break;
    case MF_COUNT: break; /* derived from the list itself */
    case MF_STR: *MF_AT(obj, f->off, char *) = mp_get_str(c, v, what); break;
    case MF_BOOL: *MF_AT(obj, f->off, int) = mp_get_bool(c, v, what); break;
    case MF_CHAR: *MF_AT(obj, f->off, char) = mp_get_char(c, v, what); break;
    case MF_HASH:
        if (v->type != MSGPACK_OBJECT_BIN || v->via.bin.size != ARC_HASH_BYTES) return mp_bad(c, what);
        memcpy(MF_AT(obj, f->off, unsigned char), v->via.bin.ptr, ARC_HASH_BYTES);
        if (f->aux != MF_NONE) *MF_AT(obj, f->aux, int) = 1;
        break;
    case MF_SUB: {
        void *sub = calloc(1, f->sub->size);
        if (!sub) return mp_bad(c, what);
        *MF_AT(obj, f->off, void *) = sub;
        mf_read(c, f->sub, v, sub, what);
        break;
    }
    case MF_STRS: case MF_LIST: case MF_TREFS: case MF_CHUNKS: mf_read_list(c, f, v, obj, what); break;
    }
}

/* One map into obj: each known key through its row, unknown keys ignored; then the struct's own check. */
static void mf_read(mp_ctx *c, const mf_type *t, const msgpack_object *o, void *obj, const char *what) {
    if (o->type != MSGPACK_OBJECT_MAP) return mp_bad(c, what);
    for (size_t i = 0; i < o->via.map.size && c->rc == FB_OK; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR) continue;
        for (size_t r = 0; r < t->n_rows; r++) {
            const mf_field *f = &t->rows[r];
            if (strlen(f->key) == kv->key.via.str.size && memcmp(f->key, kv->key.via.str.ptr, kv->key.via.str.size) == 0) {
                mf_read_value(c, f, &kv->val, obj);
                break;
            }
        }
    }
    if (t->complete && !t->complete(obj)) mp_bad(c, t->incomplete);
}

fb_code arc_manifest_unpack(const void *buf, size_t len, arc_manifest **out, fb_err *err) {
    msgpack_unpacked u;
    size_t off = 0;
    mp_ctx c = {err, FB_OK};
    arc_manifest *m = calloc(1, sizeof *m);
    *out = NULL;
    if (!m) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len)
        mp_bad(&c, "manifest");
    else
        mf_read(&c, &mf_manifest, &u.data, m, "manifest");
    msgpack_unpacked_destroy(&u);
    if (c.rc != FB_OK) {
        arc_manifest_free(m);
        return c.rc;
    }
    *out = m;
    return FB_OK;
}

/* ---------------------------------------------------------------------------------------------------------------
 * freeing: the same rows */

static void mf_clear(const mf_type *t, void *obj);

static void mf_free_value(const mf_field *f, void *obj) {
    size_t n = f->aux != MF_NONE && f->kind != MF_HASH ? *MF_AT(obj, f->aux, size_t) : 0;
    void **slot = MF_AT(obj, f->off, void *);
    switch (f->kind) {
    case MF_STR: break;
    case MF_SUB:
        if (*slot) mf_clear(f->sub, *slot);
        break;
    case MF_STRS:
        for (size_t i = 0; i < n; i++) free(((char **)*slot)[i]);
        break;
    case MF_LIST:
        for (size_t i = 0; i < n; i++) mf_clear(f->sub, (char *)*slot + i * f->sub->size);
        break;
    case MF_TREFS:
        for (size_t i = 0; i < n; i++) free(((arc_tref *)*slot)[i].schema), free(((arc_tref *)*slot)[i].name);
        break;
    case MF_CHUNKS:
        for (size_t i = 0; i < n; i++) free(((arc_chunk *)*slot)[i].src);
        break;
    default: return; /* values, not pointers */
    }
    free(*slot);
    *slot = NULL;
    if (f->aux != MF_NONE) *MF_AT(obj, f->aux, size_t) = 0;
}

/* Frees what obj holds (not obj itself) and zeroes it. */
static void mf_clear(const mf_type *t, void *obj) {
    for (size_t i = 0; i < t->n_rows; i++) mf_free_value(&t->rows[i], obj);
    memset(obj, 0, t->size);
}

void arc_table_clear(arc_table *t) {
    if (t) mf_clear(&mf_table, t);
}

void arc_manifest_free(arc_manifest *m) {
    if (!m) return;
    arc_manifest_clear(m);
    free(m);
}

void arc_manifest_clear(arc_manifest *m) { mf_clear(&mf_manifest, m); }

void arc_hasher_init(arc_hasher *h) {
    crypto_generichash_init(&h->st, NULL, 0, ARC_HASH_BYTES);
    h->bytes = 0;
}

arc_table_kind arc_table_kind_of(const arc_manifest *m, const arc_table *t) {
    if (t->stored_in && *t->stored_in && !(m->job_id && strcmp(m->job_id, t->stored_in) == 0))
        return ARC_TABLE_REFERENCED;
    return t->assembled ? ARC_TABLE_ASSEMBLED : ARC_TABLE_WHOLE;
}

fb_code arc_hasher_put(void *opaque, const void *buf, size_t len, fb_err *err) {
    arc_hasher *h = opaque;
    crypto_generichash_update(&h->st, buf, len);
    h->bytes += (int64_t)len;
    return FB_OK;
}

void arc_hasher_final(arc_hasher *h, unsigned char out[ARC_HASH_BYTES]) { crypto_generichash_final(&h->st, out, ARC_HASH_BYTES); }

arc_table *arc_manifest_find(const arc_manifest *m, const char *schema, const char *name) {
    for (size_t i = 0; i < m->n_tables; i++)
        if (strcmp(m->tables[i].schema, schema) == 0 && strcmp(m->tables[i].name, name) == 0) return &m->tables[i];
    return NULL;
}

/* ---------------------------------------------------------------------------------------------------------------
 * JSON */

static void json_obj(FILE *f, const msgpack_object *o, int depth) {
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: fputs("null", f); break;
    case MSGPACK_OBJECT_BOOLEAN: fputs(o->via.boolean ? "true" : "false", f); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: fprintf(f, "%llu", (unsigned long long)o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: fprintf(f, "%lld", (long long)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: fprintf(f, "%.17g", o->via.f64); break;
    case MSGPACK_OBJECT_STR: fb_json_put(f, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN:
        fputc('"', f);
        for (size_t i = 0; i < o->via.bin.size; i++) fprintf(f, "%02x", (unsigned char)o->via.bin.ptr[i]);
        fputc('"', f);
        break;
    case MSGPACK_OBJECT_ARRAY:
        fputc('[', f);
        for (size_t i = 0; i < o->via.array.size; i++) {
            if (i) fputc(',', f);
            json_obj(f, &o->via.array.ptr[i], depth + 1);
        }
        fputc(']', f);
        break;
    case MSGPACK_OBJECT_MAP:
        fputc('{', f);
        for (size_t i = 0; i < o->via.map.size; i++) {
            if (i) fputc(',', f);
            if (depth < 3) fprintf(f, "\n%*s", 2 * (depth + 1), "");
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (k->type == MSGPACK_OBJECT_STR) fb_json_put(f, k->via.str.ptr, k->via.str.size);
            else fputs("\"?\"", f);
            fputc(':', f);
            json_obj(f, &o->via.map.ptr[i].val, depth + 1);
        }
        if (depth < 3 && o->via.map.size) fprintf(f, "\n%*s", 2 * depth, "");
        fputc('}', f);
        break;
    default: fputs("null", f); break;
    }
}

fb_code arc_manifest_print_json(const void *buf, size_t len, FILE *out, fb_err *err) {
    msgpack_unpacked u;
    size_t off = 0;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS) {
        msgpack_unpacked_destroy(&u);
        return fb_err_set(err, FB_ERR_FORMAT, "malformed manifest");
    }
    json_obj(out, &u.data, 0);
    fputc('\n', out);
    msgpack_unpacked_destroy(&u);
    return FB_OK;
}
