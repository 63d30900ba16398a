/* ev_json: see ev_json.h. */
#include "codec/ev_json.h"

#include <inttypes.h>
#include <math.h>

#include "common/fb_json.h"

static void js_key(FILE *out, const char *k, int *first) {
    if (!*first) fputc(',', out);
    *first = 0;
    fb_json_string(out, k);
    fputc(':', out);
}

static void js_str(FILE *out, const char *k, const char *v, int *first) {
    js_key(out, k, first);
    fb_json_string(out, v);
}

static void js_int(FILE *out, const char *k, int64_t v, int *first) {
    js_key(out, k, first);
    fprintf(out, "%" PRId64, v);
}

static void js_opt(FILE *out, const char *k, ev_opt_i64 v, int *first) {
    js_key(out, k, first);
    if (v.has) fprintf(out, "%" PRId64, v.v);
    else fputs("null", out);
}

static void js_table(FILE *out, const ev_table *t) {
    if (t->schema_given) {
        fputc('[', out);
        fb_json_string(out, t->schema);
        fputc(',', out);
        fb_json_string(out, t->name);
        fputc(']', out);
    } else {
        fb_json_string(out, t->name);
    }
}

void ev_json_write(FILE *out, const ev_event *ev) {
    int first = 1;
    fputc('{', out);
    js_int(out, "v", ev->v, &first);
    js_str(out, "type", ev_type_name(ev->type), &first);
    js_str(out, "job_id", ev->job_id, &first);
    js_int(out, "ts", ev->ts, &first);
    js_opt(out, "requested_by", ev->requested_by, &first);
    js_int(out, "attempt", ev->attempt, &first);
    switch (ev->type) {
    case EV_BACKUP_REQUESTED: {
        const ev_backup_requested *b = &ev->u.backup;
        js_int(out, "record_id", b->record_id, &first);
        js_int(out, "config_id", b->config_id, &first);
        js_str(out, "config_name", b->config_name, &first);
        js_str(out, "backup_type", ev_backup_type_name(b->backup_type), &first);
        js_key(out, "tables", &first);
        fputc('[', out);
        for (size_t i = 0; i < b->n_tables; i++) {
            if (i) fputc(',', out);
            js_table(out, &b->tables[i]);
        }
        fputc(']', out);
        js_key(out, "modules", &first);
        fputc('[', out);
        for (size_t i = 0; i < b->n_modules; i++) {
            if (i) fputc(',', out);
            fb_json_string(out, b->modules[i]);
        }
        fputc(']', out);
        js_str(out, "storage_path", b->storage_path, &first);
        js_int(out, "retention_days", b->retention_days, &first);
        break;
    }
    case EV_BACKUP_VERIFY:
        js_int(out, "config_id", ev->u.verify.config_id, &first);
        js_int(out, "record_id", ev->u.verify.record_id, &first);
        js_str(out, "mode", ev->u.verify.mode, &first);
        js_str(out, "file_path", ev->u.verify.file_path, &first);
        break;
    case EV_ARCHIVE_DUE: {
        const ev_archive_due *a = &ev->u.archive;
        js_int(out, "policy_id", a->policy_id, &first);
        js_str(out, "module", a->module, &first);
        js_str(out, "model_name", a->model_name, &first);
        js_key(out, "table", &first);
        js_table(out, &a->table);
        js_str(out, "pk_column", a->pk_column, &first);
        js_str(out, "timestamp_column", a->timestamp_column, &first);
        js_int(out, "cutoff", a->cutoff, &first);
        js_int(out, "batch_size", a->batch_size, &first);
        js_opt(out, "max_rows", a->max_rows, &first);
        js_opt(out, "purge_before", a->purge_before, &first);
        js_opt(out, "archived_by", a->archived_by, &first);
        js_key(out, "dry_run", &first);
        fputs(a->dry_run ? "true" : "false", out);
        js_key(out, "relations", &first);
        if (!a->has_relations) {
            fputs("null", out);
            break;
        }
        fputc('[', out);
        for (size_t i = 0; i < a->n_relations; i++) {
            const ev_relation *r = &a->relations[i];
            int f2 = 1;
            if (i) fputc(',', out);
            fputc('{', out);
            js_key(out, "table", &f2);
            js_table(out, &r->table);
            js_str(out, "column", r->column, &f2);
            js_key(out, "references", &f2);
            js_table(out, &r->references);
            js_str(out, "on_delete", ev_on_delete_name(r->on_delete), &f2);
            js_str(out, "to_column", r->to_column, &f2);
            js_str(out, "module", r->module, &f2);
            js_str(out, "model_name", r->model_name, &f2);
            js_str(out, "pk_column", r->pk_column, &f2);
            fputc('}', out);
        }
        fputc(']', out);
        break;
    }
    case EV_JOB_STATUS: {
        const ev_job_status *s = &ev->u.status;
        js_str(out, "job_type", ev_job_type_name(s->job_type), &first);
        js_str(out, "status", ev_status_name(s->status), &first);
        js_str(out, "worker", s->worker, &first);
        js_opt(out, "started_at", s->started_at, &first);
        js_opt(out, "completed_at", s->completed_at, &first);
        js_opt(out, "record_id", s->record_id, &first);
        js_opt(out, "config_id", s->config_id, &first);
        js_opt(out, "policy_id", s->policy_id, &first);
        js_str(out, "file_path", s->file_path, &first);
        js_opt(out, "file_size", s->file_size, &first);
        js_str(out, "error", s->error, &first);
        js_key(out, "stats", &first);
        if (!s->has_stats) {
            fputs("null", out);
        } else {
            int f2 = 1;
            fputc('{', out);
            for (size_t i = 0; i < s->n_stats; i++) {
                js_key(out, s->stats[i].key, &f2);
                if (!s->stats[i].is_float) fprintf(out, "%" PRId64, s->stats[i].i);
                else if (isfinite(s->stats[i].f)) fprintf(out, "%.17g", s->stats[i].f);
                else fputs("null", out);
            }
            fputc('}', out);
        }
        js_key(out, "request", &first);
        if (!s->request) {
            fputs("null", out);
        } else {
            fputs("{\"$bin\":\"", out);
            for (size_t i = 0; i < s->request_len; i++) fprintf(out, "%02x", s->request[i]);
            fputs("\"}", out);
        }
        break;
    }
    }
    fputc('}', out);
}
