/* ev_json: see ev_json.h. A walk of the same field tables as the encoder (ev_field.h), so the JSON has the keys,
 * order and forms the wire has. */
#include "codec/ev_json.h"

#include <inttypes.h>
#include <math.h>

#include "codec/ev_field.h"
#include "common/fb_json.h"

static void js_table(FILE *out, const ev_table *t) {
    if (ev_table_long_form(t)) {
        fputc('[', out);
        fb_json_string(out, t->schema);
        fputc(',', out);
    }
    fb_json_string(out, t->name);
    if (ev_table_long_form(t)) fputc(']', out);
}

static void js_rows(FILE *out, const ev_field *rows, size_t n, const void *base, int *first);

static void js_stats(FILE *out, const ev_stat *st, size_t n) {
    fputc('{', out);
    for (size_t i = 0; i < n; i++) {
        if (i) fputc(',', out);
        fb_json_string(out, st[i].key);
        fputc(':', out);
        if (!st[i].is_float) fprintf(out, "%" PRId64, st[i].i);
        else if (isfinite(st[i].f)) fprintf(out, "%.17g", st[i].f);
        else fputs("null", out);
    }
    fputc('}', out);
}

static void js_value(FILE *out, const ev_field *f, const void *base) {
    switch (f->kind) {
    case EVK_VERSION: fprintf(out, "%d", *EV_CAT(base, f, int)); break;
    case EVK_TYPE: case EVK_ENUM: {
        int v = *EV_CAT(base, f, int);
        fb_json_string(out, v >= 1 && v <= f->n_names ? f->names[v - 1] : "?");
        break;
    }
    case EVK_UUID: fb_json_string(out, EV_CAT(base, f, char)); break;
    case EVK_INT: fprintf(out, "%" PRId64, *EV_CAT(base, f, int64_t)); break;
    case EVK_OPT_INT: {
        const ev_opt_i64 *o = EV_CAT(base, f, ev_opt_i64);
        if (o->has) fprintf(out, "%" PRId64, o->v);
        else fputs("null", out);
        break;
    }
    case EVK_STR: case EVK_NAME: case EVK_PATH: case EVK_ONE_OF: fb_json_string(out, *EV_CAT(base, f, char *)); break;
    case EVK_BOOL: fputs(*EV_CAT(base, f, int) ? "true" : "false", out); break;
    case EVK_TABLE: js_table(out, EV_CAT(base, f, ev_table)); break;
    case EVK_TABLES: case EVK_STRS: case EVK_RELATIONS: {
        if (f->kind == EVK_RELATIONS && !*(const int *)((const char *)base + f->has)) {
            fputs("null", out);
            break;
        }
        fputc('[', out);
        for (size_t i = 0; i < EV_CCOUNT(base, f); i++) {
            if (i) fputc(',', out);
            if (f->kind == EVK_TABLES) js_table(out, &(*EV_CAT(base, f, ev_table *))[i]);
            else if (f->kind == EVK_STRS) fb_json_string(out, (*EV_CAT(base, f, const char **))[i]);
            else {
                int first = 1;
                fputc('{', out);
                js_rows(out, ev_relation_fields, ev_n_relation_fields, &(*EV_CAT(base, f, ev_relation *))[i], &first);
                fputc('}', out);
            }
        }
        fputc(']', out);
        break;
    }
    case EVK_STATS:
        if (*(const int *)((const char *)base + f->has)) js_stats(out, *EV_CAT(base, f, ev_stat *), EV_CCOUNT(base, f));
        else fputs("null", out);
        break;
    case EVK_BIN: {
        const unsigned char *b = *EV_CAT(base, f, unsigned char *);
        if (!b) {
            fputs("null", out);
            break;
        }
        fputs("{\"$bin\":\"", out);
        for (size_t i = 0; i < EV_CCOUNT(base, f); i++) fprintf(out, "%02x", b[i]);
        fputs("\"}", out);
        break;
    }
    }
}

static void js_rows(FILE *out, const ev_field *rows, size_t n, const void *base, int *first) {
    for (size_t i = 0; i < n; i++) {
        if (!*first) fputc(',', out);
        *first = 0;
        fb_json_string(out, rows[i].key);
        fputc(':', out);
        js_value(out, &rows[i], base);
    }
}

void ev_json_write(FILE *out, const ev_event *ev) {
    int first = 1;
    size_t n;
    const ev_field *rows = ev_type_fields(ev->type, &n);
    fputc('{', out);
    js_rows(out, ev_common_fields, ev_n_common_fields, ev, &first);
    if (rows) js_rows(out, rows, n, ev, &first);
    fputc('}', out);
}
