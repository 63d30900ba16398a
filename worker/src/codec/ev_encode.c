/* ev_encode: ev_event -> msgpack bytes.
 *
 * Keys are written in the order of schemas/SPEC.md's tables, common fields first, every key of the table present
 * (nil where unset), integers in their smallest form: the Python codec does the same, so both produce identical
 * bytes for the same event (the golden vectors check it). The result is decoded again before it is returned, so
 * the worker can never publish what a reader would reject.
 */
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "codec/ev_event.h"

typedef struct enc {
    msgpack_packer pk;
    msgpack_sbuffer sb;
} enc;

static void enc_str(enc *e, const char *s) {
    size_t n = strlen(s);
    msgpack_pack_str(&e->pk, n);
    msgpack_pack_str_body(&e->pk, s, n);
}

static void enc_key(enc *e, const char *k) { enc_str(e, k); }

static void enc_kv_str(enc *e, const char *k, const char *v) {
    enc_key(e, k);
    if (v) enc_str(e, v);
    else msgpack_pack_nil(&e->pk);
}

static void enc_kv_int(enc *e, const char *k, int64_t v) {
    enc_key(e, k);
    msgpack_pack_int64(&e->pk, v);
}

static void enc_kv_opt(enc *e, const char *k, ev_opt_i64 v) {
    enc_key(e, k);
    if (v.has) msgpack_pack_int64(&e->pk, v.v);
    else msgpack_pack_nil(&e->pk);
}

static void enc_table(enc *e, const ev_table *t) {
    if (t->schema_given || (t->schema && strcmp(t->schema, "public") != 0)) {
        msgpack_pack_array(&e->pk, 2);
        enc_str(e, t->schema);
        enc_str(e, t->name ? t->name : "");
    } else {
        enc_str(e, t->name ? t->name : "");
    }
}

static size_t enc_common_size(void) { return 6; }

static void enc_common(enc *e, const ev_event *ev) {
    enc_kv_int(e, "v", EV_VERSION);
    enc_kv_str(e, "type", ev_type_name(ev->type));
    enc_kv_str(e, "job_id", ev->job_id);
    enc_kv_int(e, "ts", ev->ts);
    enc_kv_opt(e, "requested_by", ev->requested_by);
    enc_kv_int(e, "attempt", ev->attempt);
}

static void enc_backup(enc *e, const ev_event *ev) {
    const ev_backup_requested *b = &ev->u.backup;
    msgpack_pack_map(&e->pk, enc_common_size() + 8);
    enc_common(e, ev);
    enc_kv_int(e, "record_id", b->record_id);
    enc_kv_int(e, "config_id", b->config_id);
    enc_kv_str(e, "config_name", b->config_name);
    enc_kv_str(e, "backup_type", ev_backup_type_name(b->backup_type));
    enc_key(e, "tables");
    msgpack_pack_array(&e->pk, b->n_tables);
    for (size_t i = 0; i < b->n_tables; i++) enc_table(e, &b->tables[i]);
    enc_key(e, "modules");
    msgpack_pack_array(&e->pk, b->n_modules);
    for (size_t i = 0; i < b->n_modules; i++) enc_str(e, b->modules[i]);
    enc_kv_str(e, "storage_path", b->storage_path);
    enc_kv_int(e, "retention_days", b->retention_days);
}

static void enc_verify(enc *e, const ev_event *ev) {
    const ev_backup_verify *v = &ev->u.verify;
    msgpack_pack_map(&e->pk, enc_common_size() + 4);
    enc_common(e, ev);
    enc_kv_int(e, "config_id", v->config_id);
    enc_kv_int(e, "record_id", v->record_id);
    enc_kv_str(e, "mode", v->mode);
    enc_kv_str(e, "file_path", v->file_path);
}

static void enc_archive(enc *e, const ev_event *ev) {
    const ev_archive_due *a = &ev->u.archive;
    msgpack_pack_map(&e->pk, enc_common_size() + 13);
    enc_common(e, ev);
    enc_kv_int(e, "policy_id", a->policy_id);
    enc_kv_str(e, "module", a->module);
    enc_kv_str(e, "model_name", a->model_name);
    enc_key(e, "table");
    enc_table(e, &a->table);
    enc_kv_str(e, "pk_column", a->pk_column);
    enc_kv_str(e, "timestamp_column", a->timestamp_column);
    enc_kv_int(e, "cutoff", a->cutoff);
    enc_kv_int(e, "batch_size", a->batch_size);
    enc_kv_opt(e, "max_rows", a->max_rows);
    enc_kv_opt(e, "purge_before", a->purge_before);
    enc_kv_opt(e, "archived_by", a->archived_by);
    enc_key(e, "dry_run");
    if (a->dry_run) msgpack_pack_true(&e->pk);
    else msgpack_pack_false(&e->pk);
    enc_key(e, "relations");
    if (!a->has_relations) {
        msgpack_pack_nil(&e->pk);
        return;
    }
    msgpack_pack_array(&e->pk, a->n_relations);
    for (size_t i = 0; i < a->n_relations; i++) {
        const ev_relation *r = &a->relations[i];
        msgpack_pack_map(&e->pk, 8);
        enc_key(e, "table");
        enc_table(e, &r->table);
        enc_kv_str(e, "column", r->column);
        enc_key(e, "references");
        enc_table(e, &r->references);
        enc_kv_str(e, "on_delete", ev_on_delete_name(r->on_delete));
        enc_kv_str(e, "to_column", r->to_column);
        enc_kv_str(e, "module", r->module);
        enc_kv_str(e, "model_name", r->model_name);
        enc_kv_str(e, "pk_column", r->pk_column);
    }
}

static void enc_status(enc *e, const ev_event *ev) {
    const ev_job_status *s = &ev->u.status;
    msgpack_pack_map(&e->pk, enc_common_size() + 13);
    enc_common(e, ev);
    enc_kv_str(e, "job_type", ev_job_type_name(s->job_type));
    enc_kv_str(e, "status", ev_status_name(s->status));
    enc_kv_str(e, "worker", s->worker);
    enc_kv_opt(e, "started_at", s->started_at);
    enc_kv_opt(e, "completed_at", s->completed_at);
    enc_kv_opt(e, "record_id", s->record_id);
    enc_kv_opt(e, "config_id", s->config_id);
    enc_kv_opt(e, "policy_id", s->policy_id);
    enc_kv_str(e, "file_path", s->file_path);
    enc_kv_opt(e, "file_size", s->file_size);
    enc_kv_str(e, "error", s->error);
    enc_key(e, "stats");
    if (!s->has_stats) {
        msgpack_pack_nil(&e->pk);
    } else {
        msgpack_pack_map(&e->pk, s->n_stats);
        for (size_t i = 0; i < s->n_stats; i++) {
            enc_str(e, s->stats[i].key);
            if (s->stats[i].is_float) msgpack_pack_double(&e->pk, s->stats[i].f);
            else msgpack_pack_int64(&e->pk, s->stats[i].i);
        }
    }
    enc_key(e, "request");
    if (s->request) {
        msgpack_pack_bin(&e->pk, s->request_len);
        msgpack_pack_bin_body(&e->pk, s->request, s->request_len);
    } else {
        msgpack_pack_nil(&e->pk);
    }
}

fb_code ev_encode(const ev_event *ev, unsigned char **out, size_t *out_len, fb_err *err) {
    *out = NULL;
    *out_len = 0;
    enc e;
    msgpack_sbuffer_init(&e.sb);
    msgpack_packer_init(&e.pk, &e.sb, msgpack_sbuffer_write);
    switch (ev->type) {
    case EV_BACKUP_REQUESTED: enc_backup(&e, ev); break;
    case EV_BACKUP_VERIFY: enc_verify(&e, ev); break;
    case EV_ARCHIVE_DUE: enc_archive(&e, ev); break;
    case EV_JOB_STATUS: enc_status(&e, ev); break;
    default:
        msgpack_sbuffer_destroy(&e.sb);
        return fb_err_set(err, FB_ERR_INTERNAL, "cannot encode an event of unknown type %d", (int)ev->type);
    }
    /* Validate by decoding: the same rules as every reader. */
    ev_event *check = NULL;
    fb_code rc = ev_decode(e.sb.data, e.sb.size, &check, err);
    ev_event_free(check);
    if (rc) {
        msgpack_sbuffer_destroy(&e.sb);
        return fb_err_prefix(err, "refusing to publish an event that breaks the contract: ");
    }
    *out = (unsigned char *)e.sb.data; /* sbuffer memory is malloc'd: the caller free()s it */
    *out_len = e.sb.size;
    return FB_OK;
}
