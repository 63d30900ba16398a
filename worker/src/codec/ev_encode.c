/* ev_encode: ev_event -> msgpack bytes, a walk of the field tables (ev_field.h).
 *
 * Keys are written in the order of the tables (schemas/SPEC.md's), common fields first, every key of the table
 * present (nil where unset), integers in their smallest form: the Python codec does the same, so both produce
 * identical bytes for the same event (the golden vectors check it). A map's size is the number of rows of its
 * tables, so it is what is written. The result is decoded again before it is returned, so the worker can never
 * publish what a reader would reject.
 */
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "codec/ev_event.h"
#include "codec/ev_field.h"

typedef struct enc {
    msgpack_packer pk;
    msgpack_sbuffer sb;
} enc;

static void enc_str(enc *e, const char *s) {
    if (!s) {
        msgpack_pack_nil(&e->pk);
        return;
    }
    size_t n = strlen(s);
    msgpack_pack_str(&e->pk, n);
    msgpack_pack_str_body(&e->pk, s, n);
}

static void enc_int(enc *e, int64_t v) { msgpack_pack_int64(&e->pk, v); }

static void enc_table(enc *e, const ev_table *t) {
    if (ev_table_long_form(t)) {
        msgpack_pack_array(&e->pk, 2);
        enc_str(e, t->schema);
    }
    enc_str(e, t->name ? t->name : "");
}

static void enc_rows(enc *e, const ev_field *rows, size_t n, const void *base);

static void enc_stats(enc *e, const ev_stat *st, size_t n) {
    msgpack_pack_map(&e->pk, n);
    for (size_t i = 0; i < n; i++) {
        enc_str(e, st[i].key);
        if (st[i].is_float) msgpack_pack_double(&e->pk, st[i].f);
        else enc_int(e, st[i].i);
    }
}

static void enc_value(enc *e, const ev_field *f, const void *base) {
    switch (f->kind) {
    case EVK_VERSION: enc_int(e, EV_VERSION); break;
    case EVK_TYPE: case EVK_ENUM: {
        int v = *EV_CAT(base, f, int);
        enc_str(e, v >= 1 && v <= f->n_names ? f->names[v - 1] : "?");
        break;
    }
    case EVK_UUID: enc_str(e, EV_CAT(base, f, char)); break;
    case EVK_INT: enc_int(e, *EV_CAT(base, f, int64_t)); break;
    case EVK_OPT_INT: {
        const ev_opt_i64 *o = EV_CAT(base, f, ev_opt_i64);
        if (o->has) enc_int(e, o->v);
        else msgpack_pack_nil(&e->pk);
        break;
    }
    case EVK_STR: case EVK_NAME: case EVK_PATH: case EVK_ONE_OF: enc_str(e, *EV_CAT(base, f, char *)); break;
    case EVK_BOOL:
        if (*EV_CAT(base, f, int)) msgpack_pack_true(&e->pk);
        else msgpack_pack_false(&e->pk);
        break;
    case EVK_TABLE: enc_table(e, EV_CAT(base, f, ev_table)); break;
    case EVK_TABLES: {
        const ev_table *t = *EV_CAT(base, f, ev_table *);
        msgpack_pack_array(&e->pk, EV_CCOUNT(base, f));
        for (size_t i = 0; i < EV_CCOUNT(base, f); i++) enc_table(e, &t[i]);
        break;
    }
    case EVK_STRS: {
        const char *const *s = *EV_CAT(base, f, const char **);
        msgpack_pack_array(&e->pk, EV_CCOUNT(base, f));
        for (size_t i = 0; i < EV_CCOUNT(base, f); i++) enc_str(e, s[i]);
        break;
    }
    case EVK_RELATIONS: {
        const ev_relation *r = *EV_CAT(base, f, ev_relation *);
        if (!*(const int *)((const char *)base + f->has)) {
            msgpack_pack_nil(&e->pk);
            break;
        }
        msgpack_pack_array(&e->pk, EV_CCOUNT(base, f));
        for (size_t i = 0; i < EV_CCOUNT(base, f); i++) {
            msgpack_pack_map(&e->pk, ev_n_relation_fields);
            enc_rows(e, ev_relation_fields, ev_n_relation_fields, &r[i]);
        }
        break;
    }
    case EVK_STATS:
        if (*(const int *)((const char *)base + f->has)) enc_stats(e, *EV_CAT(base, f, ev_stat *), EV_CCOUNT(base, f));
        else msgpack_pack_nil(&e->pk);
        break;
    case EVK_BIN: {
        const unsigned char *b = *EV_CAT(base, f, unsigned char *);
        if (b) {
            msgpack_pack_bin(&e->pk, EV_CCOUNT(base, f));
            msgpack_pack_bin_body(&e->pk, b, EV_CCOUNT(base, f));
        } else {
            msgpack_pack_nil(&e->pk);
        }
        break;
    }
    }
}

static void enc_rows(enc *e, const ev_field *rows, size_t n, const void *base) {
    for (size_t i = 0; i < n; i++) {
        enc_str(e, rows[i].key);
        enc_value(e, &rows[i], base);
    }
}

fb_code ev_encode(const ev_event *ev, unsigned char **out, size_t *out_len, fb_err *err) {
    *out = NULL;
    *out_len = 0;
    size_t n;
    const ev_field *rows = ev_type_fields(ev->type, &n);
    if (!rows) return fb_err_set(err, FB_ERR_INTERNAL, "cannot encode an event of unknown type %d", (int)ev->type);
    enc e;
    msgpack_sbuffer_init(&e.sb);
    msgpack_packer_init(&e.pk, &e.sb, msgpack_sbuffer_write);
    msgpack_pack_map(&e.pk, ev_n_common_fields + n);
    enc_rows(&e, ev_common_fields, ev_n_common_fields, ev);
    enc_rows(&e, rows, n, ev);
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
