/* arc_manifest: manifest <-> msgpack. See arc_manifest.h and FORMAT.md for the field list.
 *
 * Encoding uses msgpack-c's packer; decoding unpacks into msgpack-c's object tree (bounded by the segment size the
 * reader accepts) and copies what it knows into the structs, ignoring unknown keys. Absent strings are nil.
 */
#include "artifact/arc_manifest.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

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

static void mp_key(msgpack_packer *p, const char *k) { mp_str(p, k); }

static void mp_strs(msgpack_packer *p, char *const *v, size_t n) {
    msgpack_pack_array(p, n);
    for (size_t i = 0; i < n; i++) mp_str(p, v[i]);
}

static void mp_table(msgpack_packer *p, const arc_table *t) {
    msgpack_pack_map(p, 15 + !!t->stored_in + !!t->n_chunks + !!t->assembled);
    mp_key(p, "schema"); mp_str(p, t->schema);
    mp_key(p, "name"); mp_str(p, t->name);
    mp_key(p, "columns");
    msgpack_pack_array(p, t->n_cols);
    for (size_t i = 0; i < t->n_cols; i++) {
        const arc_column *c = &t->cols[i];
        char g[2] = {c->generated, 0}, id[2] = {c->identity, 0};
        msgpack_pack_map(p, 5);
        mp_key(p, "name"); mp_str(p, c->name);
        mp_key(p, "type"); mp_str(p, c->type);
        mp_key(p, "not_null"); c->not_null ? msgpack_pack_true(p) : msgpack_pack_false(p);
        mp_key(p, "generated"); mp_str(p, g);
        mp_key(p, "identity"); mp_str(p, id);
    }
    mp_key(p, "create_sql"); mp_str(p, t->create_sql);
    mp_key(p, "index_sql"); mp_strs(p, t->index_sql, t->n_index);
    mp_key(p, "fk_sql"); mp_strs(p, t->fk_sql, t->n_fk);
    mp_key(p, "sequences");
    msgpack_pack_array(p, t->n_seqs);
    for (size_t i = 0; i < t->n_seqs; i++) {
        const arc_sequence *s = &t->seqs[i];
        msgpack_pack_map(p, 8);
        mp_key(p, "schema"); mp_str(p, s->schema);
        mp_key(p, "name"); mp_str(p, s->name);
        mp_key(p, "column"); mp_str(p, s->column);
        mp_key(p, "create_sql"); mp_str(p, s->create_sql);
        mp_key(p, "owned_sql"); mp_str(p, s->owned_sql);
        mp_key(p, "last_value"); msgpack_pack_int64(p, s->last_value);
        mp_key(p, "is_called"); s->is_called ? msgpack_pack_true(p) : msgpack_pack_false(p);
        mp_key(p, "identity"); s->identity ? msgpack_pack_true(p) : msgpack_pack_false(p);
    }
    mp_key(p, "depends_on");
    msgpack_pack_array(p, t->n_deps);
    for (size_t i = 0; i < t->n_deps; i++) {
        msgpack_pack_array(p, 2);
        mp_str(p, t->deps[i].schema);
        mp_str(p, t->deps[i].name);
    }
    mp_key(p, "rows"); msgpack_pack_int64(p, t->rows);
    mp_key(p, "raw_bytes"); msgpack_pack_int64(p, t->raw_bytes);
    mp_key(p, "stored_bytes"); msgpack_pack_int64(p, t->stored_bytes);
    mp_key(p, "segment"); msgpack_pack_uint32(p, t->segment);
    mp_key(p, "offset"); msgpack_pack_uint64(p, t->offset);
    mp_key(p, "length"); msgpack_pack_uint64(p, t->length);
    mp_key(p, "blake2b"); msgpack_pack_bin(p, ARC_HASH_BYTES); msgpack_pack_bin_body(p, t->blake2b, ARC_HASH_BYTES);
    if (t->stored_in) {
        mp_key(p, "stored_in"); mp_str(p, t->stored_in);
    }
    if (t->assembled) {
        mp_key(p, "assembled"); msgpack_pack_true(p);
    }
    if (t->n_chunks) {
        mp_key(p, "chunks");
        msgpack_pack_array(p, t->n_chunks);
        for (size_t i = 0; i < t->n_chunks; i++) {
            const arc_chunk *ck = &t->chunks[i];
            msgpack_pack_array(p, 5);
            msgpack_pack_bin(p, ARC_CHUNK_ID_BYTES);
            msgpack_pack_bin_body(p, ck->id, ARC_CHUNK_ID_BYTES);
            if (ck->src) mp_str(p, ck->src);
            else msgpack_pack_nil(p);
            msgpack_pack_uint32(p, ck->segment);
            msgpack_pack_uint64(p, ck->offset);
            msgpack_pack_uint64(p, ck->length);
        }
    }
}

fb_code arc_manifest_pack(const arc_manifest *m, char **out, size_t *out_len, fb_err *err) {
    msgpack_sbuffer sb;
    msgpack_packer p;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&p, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&p, 18 + !!m->has_index_hash + !!m->schema + !!m->capture);
    mp_key(&p, "format"); msgpack_pack_int64(&p, m->format);
    mp_key(&p, "tool"); mp_str(&p, m->tool);
    mp_key(&p, "job_id"); mp_str(&p, m->job_id);
    mp_key(&p, "record_id"); msgpack_pack_int64(&p, m->record_id);
    mp_key(&p, "config_id"); msgpack_pack_int64(&p, m->config_id);
    mp_key(&p, "config_name"); mp_str(&p, m->config_name);
    mp_key(&p, "backup_type"); mp_str(&p, m->backup_type);
    mp_key(&p, "requested_type"); mp_str(&p, m->requested_type);
    mp_key(&p, "base_job"); mp_str(&p, m->base_job);
    mp_key(&p, "database"); mp_str(&p, m->database);
    mp_key(&p, "server_version"); mp_str(&p, m->server_version);
    mp_key(&p, "snapshot_ms"); msgpack_pack_int64(&p, m->snapshot_ms);
    mp_key(&p, "started_ms"); msgpack_pack_int64(&p, m->started_ms);
    mp_key(&p, "completed_ms"); msgpack_pack_int64(&p, m->completed_ms);
    mp_key(&p, "zstd_level"); msgpack_pack_int64(&p, m->zstd_level);
    mp_key(&p, "data_end"); msgpack_pack_uint64(&p, m->data_end);
    mp_key(&p, "n_tables"); msgpack_pack_uint64(&p, m->n_tables);
    if (m->has_index_hash) {
        mp_key(&p, "index_blake2b");
        msgpack_pack_bin(&p, ARC_HASH_BYTES);
        msgpack_pack_bin_body(&p, m->index_blake2b, ARC_HASH_BYTES);
    }
    if (m->schema) {
        const arc_schema_archive *a = m->schema;
        mp_key(&p, "schema_archive");
        msgpack_pack_map(&p, 7);
        mp_key(&p, "segment"); msgpack_pack_uint32(&p, a->segment);
        mp_key(&p, "offset"); msgpack_pack_uint64(&p, a->offset);
        mp_key(&p, "length"); msgpack_pack_uint64(&p, a->length);
        mp_key(&p, "raw_bytes"); msgpack_pack_int64(&p, a->raw_bytes);
        mp_key(&p, "blake2b"); msgpack_pack_bin(&p, ARC_HASH_BYTES); msgpack_pack_bin_body(&p, a->blake2b, ARC_HASH_BYTES);
        mp_key(&p, "pg_dump_version"); mp_str(&p, a->pg_dump_version);
        mp_key(&p, "all_tables"); a->all_tables ? msgpack_pack_true(&p) : msgpack_pack_false(&p);
    }
    if (m->capture) {
        mp_key(&p, "capture_base");
        msgpack_pack_map(&p, 4);
        mp_key(&p, "slot"); mp_str(&p, m->capture->slot);
        mp_key(&p, "stream"); mp_str(&p, m->capture->stream);
        mp_key(&p, "lsn"); msgpack_pack_uint64(&p, m->capture->lsn);
        mp_key(&p, "time_us"); msgpack_pack_int64(&p, m->capture->time_us);
    }
    mp_key(&p, "tables");
    msgpack_pack_array(&p, m->n_tables);
    for (size_t i = 0; i < m->n_tables; i++) mp_table(&p, &m->tables[i]);
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

static int mp_is(const msgpack_object_kv *kv, const char *k) {
    size_t n = strlen(k);
    return kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == n && memcmp(kv->key.via.str.ptr, k, n) == 0;
}

static void mp_bad(mp_ctx *c, const char *what) {
    if (c->rc == FB_OK) c->rc = fb_err_set(c->err, FB_ERR_FORMAT, "malformed manifest: bad \"%s\"", what);
}

static char *mp_get_str(mp_ctx *c, const msgpack_object *o, const char *what) {
    if (o->type == MSGPACK_OBJECT_NIL) return NULL;
    if (o->type != MSGPACK_OBJECT_STR) {
        mp_bad(c, what);
        return NULL;
    }
    char *s = malloc(o->via.str.size + 1);
    if (!s) {
        if (c->rc == FB_OK) c->rc = fb_err_set(c->err, FB_ERR_NOMEM, "out of memory reading the manifest");
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

static const msgpack_object_array *mp_get_array(mp_ctx *c, const msgpack_object *o, const char *what) {
    if (o->type != MSGPACK_OBJECT_ARRAY) {
        mp_bad(c, what);
        return NULL;
    }
    return &o->via.array;
}

static char **mp_get_strs(mp_ctx *c, const msgpack_object *o, size_t *n, const char *what) {
    const msgpack_object_array *a = mp_get_array(c, o, what);
    *n = 0;
    if (!a || a->size == 0) return NULL;
    char **v = calloc(a->size, sizeof *v);
    if (!v) {
        mp_bad(c, what);
        return NULL;
    }
    for (size_t i = 0; i < a->size; i++) v[i] = mp_get_str(c, &a->ptr[i], what);
    *n = a->size;
    return v;
}

static void mp_read_column(mp_ctx *c, const msgpack_object *o, arc_column *col) {
    if (o->type != MSGPACK_OBJECT_MAP) return mp_bad(c, "columns");
    for (size_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (mp_is(kv, "name")) col->name = mp_get_str(c, &kv->val, "column name");
        else if (mp_is(kv, "type")) col->type = mp_get_str(c, &kv->val, "column type");
        else if (mp_is(kv, "not_null")) col->not_null = mp_get_bool(c, &kv->val, "not_null");
        else if (mp_is(kv, "generated")) col->generated = mp_get_char(c, &kv->val, "generated");
        else if (mp_is(kv, "identity")) col->identity = mp_get_char(c, &kv->val, "identity");
    }
    if (!col->name) mp_bad(c, "column name");
}

static void mp_read_seq(mp_ctx *c, const msgpack_object *o, arc_sequence *s) {
    if (o->type != MSGPACK_OBJECT_MAP) return mp_bad(c, "sequences");
    for (size_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (mp_is(kv, "schema")) s->schema = mp_get_str(c, &kv->val, "sequence schema");
        else if (mp_is(kv, "name")) s->name = mp_get_str(c, &kv->val, "sequence name");
        else if (mp_is(kv, "column")) s->column = mp_get_str(c, &kv->val, "sequence column");
        else if (mp_is(kv, "create_sql")) s->create_sql = mp_get_str(c, &kv->val, "sequence create_sql");
        else if (mp_is(kv, "owned_sql")) s->owned_sql = mp_get_str(c, &kv->val, "sequence owned_sql");
        else if (mp_is(kv, "last_value")) s->last_value = mp_get_int(c, &kv->val, "last_value");
        else if (mp_is(kv, "is_called")) s->is_called = mp_get_bool(c, &kv->val, "is_called");
        else if (mp_is(kv, "identity")) s->identity = mp_get_bool(c, &kv->val, "identity");
    }
    if (!s->schema || !s->name) mp_bad(c, "sequence name");
}

static void mp_read_table(mp_ctx *c, const msgpack_object *o, arc_table *t) {
    if (o->type != MSGPACK_OBJECT_MAP) return mp_bad(c, "tables");
    for (size_t i = 0; i < o->via.map.size && c->rc == FB_OK; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        const msgpack_object *v = &kv->val;
        if (mp_is(kv, "schema")) t->schema = mp_get_str(c, v, "schema");
        else if (mp_is(kv, "name")) t->name = mp_get_str(c, v, "name");
        else if (mp_is(kv, "create_sql")) t->create_sql = mp_get_str(c, v, "create_sql");
        else if (mp_is(kv, "index_sql")) t->index_sql = mp_get_strs(c, v, &t->n_index, "index_sql");
        else if (mp_is(kv, "fk_sql")) t->fk_sql = mp_get_strs(c, v, &t->n_fk, "fk_sql");
        else if (mp_is(kv, "rows")) t->rows = mp_get_int(c, v, "rows");
        else if (mp_is(kv, "raw_bytes")) t->raw_bytes = mp_get_int(c, v, "raw_bytes");
        else if (mp_is(kv, "stored_bytes")) t->stored_bytes = mp_get_int(c, v, "stored_bytes");
        else if (mp_is(kv, "segment")) t->segment = (uint32_t)mp_get_int(c, v, "segment");
        else if (mp_is(kv, "offset")) t->offset = (uint64_t)mp_get_int(c, v, "offset");
        else if (mp_is(kv, "length")) t->length = (uint64_t)mp_get_int(c, v, "length");
        else if (mp_is(kv, "stored_in")) t->stored_in = v->type == MSGPACK_OBJECT_NIL ? NULL : mp_get_str(c, v, "stored_in");
        else if (mp_is(kv, "assembled")) t->assembled = mp_get_bool(c, v, "assembled");
        else if (mp_is(kv, "chunks")) {
            const msgpack_object_array *a = mp_get_array(c, v, "chunks");
            if (a && a->size) {
                t->chunks = calloc(a->size, sizeof *t->chunks);
                if (!t->chunks) return mp_bad(c, "chunks");
                t->n_chunks = a->size;
                for (size_t j = 0; j < a->size && c->rc == FB_OK; j++) {
                    const msgpack_object *d = &a->ptr[j];
                    arc_chunk *ck = &t->chunks[j];
                    if (d->type != MSGPACK_OBJECT_ARRAY || d->via.array.size != 5 ||
                        d->via.array.ptr[0].type != MSGPACK_OBJECT_BIN ||
                        d->via.array.ptr[0].via.bin.size != ARC_CHUNK_ID_BYTES)
                        return mp_bad(c, "chunks");
                    memcpy(ck->id, d->via.array.ptr[0].via.bin.ptr, ARC_CHUNK_ID_BYTES);
                    const msgpack_object *src = &d->via.array.ptr[1];
                    ck->src = src->type == MSGPACK_OBJECT_NIL ? NULL : mp_get_str(c, src, "chunk source");
                    ck->segment = (uint32_t)mp_get_int(c, &d->via.array.ptr[2], "chunk segment");
                    ck->offset = (uint64_t)mp_get_int(c, &d->via.array.ptr[3], "chunk offset");
                    ck->length = (uint64_t)mp_get_int(c, &d->via.array.ptr[4], "chunk length");
                }
            }
        }
        else if (mp_is(kv, "blake2b")) {
            if (v->type != MSGPACK_OBJECT_BIN || v->via.bin.size != ARC_HASH_BYTES) mp_bad(c, "blake2b");
            else memcpy(t->blake2b, v->via.bin.ptr, ARC_HASH_BYTES);
        } else if (mp_is(kv, "columns")) {
            const msgpack_object_array *a = mp_get_array(c, v, "columns");
            if (a && a->size) {
                t->cols = calloc(a->size, sizeof *t->cols);
                if (!t->cols) return mp_bad(c, "columns");
                t->n_cols = a->size;
                for (size_t j = 0; j < a->size; j++) mp_read_column(c, &a->ptr[j], &t->cols[j]);
            }
        } else if (mp_is(kv, "sequences")) {
            const msgpack_object_array *a = mp_get_array(c, v, "sequences");
            if (a && a->size) {
                t->seqs = calloc(a->size, sizeof *t->seqs);
                if (!t->seqs) return mp_bad(c, "sequences");
                t->n_seqs = a->size;
                for (size_t j = 0; j < a->size; j++) mp_read_seq(c, &a->ptr[j], &t->seqs[j]);
            }
        } else if (mp_is(kv, "depends_on")) {
            const msgpack_object_array *a = mp_get_array(c, v, "depends_on");
            if (a && a->size) {
                t->deps = calloc(a->size, sizeof *t->deps);
                if (!t->deps) return mp_bad(c, "depends_on");
                t->n_deps = a->size;
                for (size_t j = 0; j < a->size; j++) {
                    const msgpack_object *d = &a->ptr[j];
                    if (d->type != MSGPACK_OBJECT_ARRAY || d->via.array.size != 2) return mp_bad(c, "depends_on");
                    t->deps[j].schema = mp_get_str(c, &d->via.array.ptr[0], "depends_on");
                    t->deps[j].name = mp_get_str(c, &d->via.array.ptr[1], "depends_on");
                }
            }
        }
    }
    if (!t->schema || !t->name) mp_bad(c, "table name");
}

static void mp_read_schema(mp_ctx *c, const msgpack_object *o, arc_schema_archive *a) {
    if (o->type != MSGPACK_OBJECT_MAP) return mp_bad(c, "schema_archive");
    for (size_t i = 0; i < o->via.map.size && c->rc == FB_OK; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        const msgpack_object *v = &kv->val;
        if (mp_is(kv, "segment")) a->segment = (uint32_t)mp_get_int(c, v, "schema_archive segment");
        else if (mp_is(kv, "offset")) a->offset = (uint64_t)mp_get_int(c, v, "schema_archive offset");
        else if (mp_is(kv, "length")) a->length = (uint64_t)mp_get_int(c, v, "schema_archive length");
        else if (mp_is(kv, "raw_bytes")) a->raw_bytes = mp_get_int(c, v, "schema_archive raw_bytes");
        else if (mp_is(kv, "all_tables")) a->all_tables = mp_get_bool(c, v, "schema_archive all_tables");
        else if (mp_is(kv, "pg_dump_version"))
            a->pg_dump_version = v->type == MSGPACK_OBJECT_NIL ? NULL : mp_get_str(c, v, "pg_dump_version");
        else if (mp_is(kv, "blake2b")) {
            if (v->type != MSGPACK_OBJECT_BIN || v->via.bin.size != ARC_HASH_BYTES) mp_bad(c, "schema_archive blake2b");
            else memcpy(a->blake2b, v->via.bin.ptr, ARC_HASH_BYTES);
        }
    }
    if (!a->segment || !a->length) mp_bad(c, "schema_archive segment");
}

static void mp_read_capture(mp_ctx *c, const msgpack_object *o, arc_capture_base *b) {
    if (o->type != MSGPACK_OBJECT_MAP) return mp_bad(c, "capture_base");
    for (size_t i = 0; i < o->via.map.size && c->rc == FB_OK; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        const msgpack_object *v = &kv->val;
        if (mp_is(kv, "slot")) b->slot = mp_get_str(c, v, "capture_base slot");
        else if (mp_is(kv, "stream")) b->stream = mp_get_str(c, v, "capture_base stream");
        else if (mp_is(kv, "lsn")) b->lsn = (uint64_t)mp_get_int(c, v, "capture_base lsn");
        else if (mp_is(kv, "time_us")) b->time_us = mp_get_int(c, v, "capture_base time_us");
    }
    if (c->rc == FB_OK && (!b->slot || !b->stream || !b->lsn)) mp_bad(c, "capture_base");
}

fb_code arc_manifest_unpack(const void *buf, size_t len, arc_manifest **out, fb_err *err) {
    msgpack_unpacked u;
    size_t off = 0;
    mp_ctx c = {err, FB_OK};
    arc_manifest *m = calloc(1, sizeof *m);
    *out = NULL;
    if (!m) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        mp_bad(&c, "manifest");
        goto out;
    }
    const msgpack_object_map *map = &u.data.via.map;
    for (size_t i = 0; i < map->size && c.rc == FB_OK; i++) {
        const msgpack_object_kv *kv = &map->ptr[i];
        const msgpack_object *v = &kv->val;
        if (mp_is(kv, "format")) m->format = mp_get_int(&c, v, "format");
        else if (mp_is(kv, "tool")) m->tool = mp_get_str(&c, v, "tool");
        else if (mp_is(kv, "job_id")) m->job_id = mp_get_str(&c, v, "job_id");
        else if (mp_is(kv, "record_id")) m->record_id = mp_get_int(&c, v, "record_id");
        else if (mp_is(kv, "config_id")) m->config_id = mp_get_int(&c, v, "config_id");
        else if (mp_is(kv, "config_name")) m->config_name = mp_get_str(&c, v, "config_name");
        else if (mp_is(kv, "backup_type")) m->backup_type = mp_get_str(&c, v, "backup_type");
        else if (mp_is(kv, "requested_type")) m->requested_type = mp_get_str(&c, v, "requested_type");
        else if (mp_is(kv, "base_job")) m->base_job = v->type == MSGPACK_OBJECT_NIL ? NULL : mp_get_str(&c, v, "base_job");
        else if (mp_is(kv, "database")) m->database = mp_get_str(&c, v, "database");
        else if (mp_is(kv, "server_version")) m->server_version = mp_get_str(&c, v, "server_version");
        else if (mp_is(kv, "snapshot_ms")) m->snapshot_ms = mp_get_int(&c, v, "snapshot_ms");
        else if (mp_is(kv, "started_ms")) m->started_ms = mp_get_int(&c, v, "started_ms");
        else if (mp_is(kv, "completed_ms")) m->completed_ms = mp_get_int(&c, v, "completed_ms");
        else if (mp_is(kv, "zstd_level")) m->zstd_level = mp_get_int(&c, v, "zstd_level");
        else if (mp_is(kv, "data_end")) m->data_end = (uint64_t)mp_get_int(&c, v, "data_end");
        else if (mp_is(kv, "index_blake2b")) {
            if (v->type != MSGPACK_OBJECT_BIN || v->via.bin.size != ARC_HASH_BYTES) mp_bad(&c, "index_blake2b");
            else {
                memcpy(m->index_blake2b, v->via.bin.ptr, ARC_HASH_BYTES);
                m->has_index_hash = 1;
            }
        }
        else if (mp_is(kv, "schema_archive")) {
            if (!m->schema && !(m->schema = calloc(1, sizeof *m->schema))) mp_bad(&c, "schema_archive");
            else mp_read_schema(&c, v, m->schema);
        }
        else if (mp_is(kv, "capture_base")) {
            if (!m->capture && !(m->capture = calloc(1, sizeof *m->capture))) mp_bad(&c, "capture_base");
            else mp_read_capture(&c, v, m->capture);
        }
        else if (mp_is(kv, "tables")) {
            const msgpack_object_array *a = mp_get_array(&c, v, "tables");
            if (a && a->size) {
                m->tables = calloc(a->size, sizeof *m->tables);
                if (!m->tables) {
                    mp_bad(&c, "tables");
                    break;
                }
                m->n_tables = a->size;
                for (size_t j = 0; j < a->size && c.rc == FB_OK; j++) mp_read_table(&c, &a->ptr[j], &m->tables[j]);
            }
        }
    }
out:
    msgpack_unpacked_destroy(&u);
    if (c.rc != FB_OK) {
        arc_manifest_free(m);
        return c.rc;
    }
    *out = m;
    return FB_OK;
}

void arc_table_clear(arc_table *t) {
    if (!t) return;
    free(t->stored_in);
    for (size_t i = 0; i < t->n_chunks; i++) free(t->chunks[i].src);
    free(t->chunks);
    free(t->schema);
    free(t->name);
    for (size_t i = 0; i < t->n_cols; i++) {
        free(t->cols[i].name);
        free(t->cols[i].type);
    }
    free(t->cols);
    free(t->create_sql);
    for (size_t i = 0; i < t->n_index; i++) free(t->index_sql[i]);
    free(t->index_sql);
    for (size_t i = 0; i < t->n_fk; i++) free(t->fk_sql[i]);
    free(t->fk_sql);
    for (size_t i = 0; i < t->n_seqs; i++) {
        free(t->seqs[i].schema);
        free(t->seqs[i].name);
        free(t->seqs[i].column);
        free(t->seqs[i].create_sql);
        free(t->seqs[i].owned_sql);
    }
    free(t->seqs);
    for (size_t i = 0; i < t->n_deps; i++) {
        free(t->deps[i].schema);
        free(t->deps[i].name);
    }
    free(t->deps);
    memset(t, 0, sizeof *t);
}

void arc_manifest_free(arc_manifest *m) {
    if (!m) return;
    arc_manifest_clear(m);
    free(m);
}

void arc_manifest_clear(arc_manifest *m) {
    for (size_t i = 0; i < m->n_tables; i++) arc_table_clear(&m->tables[i]);
    free(m->tables);
    free(m->tool);
    free(m->job_id);
    free(m->config_name);
    free(m->backup_type);
    free(m->requested_type);
    free(m->base_job);
    free(m->database);
    free(m->server_version);
    if (m->schema) free(m->schema->pg_dump_version);
    free(m->schema);
    if (m->capture) {
        free(m->capture->slot);
        free(m->capture->stream);
    }
    free(m->capture);
    memset(m, 0, sizeof *m);
}

int arc_table_is_ref(const arc_manifest *m, const arc_table *t) {
    return t->stored_in && *t->stored_in && !(m->job_id && strcmp(m->job_id, t->stored_in) == 0);
}

arc_table *arc_manifest_find(const arc_manifest *m, const char *schema, const char *name) {
    for (size_t i = 0; i < m->n_tables; i++)
        if (strcmp(m->tables[i].schema, schema) == 0 && strcmp(m->tables[i].name, name) == 0) return &m->tables[i];
    return NULL;
}

/* ---------------------------------------------------------------------------------------------------------------
 * JSON */

static void json_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        switch (ch) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (ch < 0x20) fprintf(f, "\\u%04x", ch);
            else fputc(ch, f);
        }
    }
    fputc('"', f);
}

static void json_obj(FILE *f, const msgpack_object *o, int depth) {
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: fputs("null", f); break;
    case MSGPACK_OBJECT_BOOLEAN: fputs(o->via.boolean ? "true" : "false", f); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: fprintf(f, "%llu", (unsigned long long)o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: fprintf(f, "%lld", (long long)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: fprintf(f, "%.17g", o->via.f64); break;
    case MSGPACK_OBJECT_STR: json_str(f, o->via.str.ptr, o->via.str.size); break;
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
            if (k->type == MSGPACK_OBJECT_STR) json_str(f, k->via.str.ptr, k->via.str.size);
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
