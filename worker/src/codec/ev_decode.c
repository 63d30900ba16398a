/* ev_decode: msgpack bytes -> validated ev_event (schemas/SPEC.md).
 *
 * Two passes: ev_scan() proves the bytes are one bounded msgpack object (so msgpack-c never allocates from a
 * hostile count), then msgpack-c unpacks and a walk of the field tables (ev_field.c: the rows the encoder and the
 * JSON writer walk too) checks every rule of the contract. Every error names the field ("field \"job_id\": ...") so
 * a producer's author can fix the sender. Unknown keys are ignored; duplicate keys are rejected (two readers could
 * otherwise disagree on which one counts). Every map is capped at EV_SCAN_MAX_MAP_KEYS by the scan, so the field
 * look-ups (a linear search per known key) and the duplicate check stay cheap whatever a hostile sender packs into
 * 4 MiB.
 */
#include <math.h>
#include <stdlib.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "codec/ev_arena.h"
#include "codec/ev_event.h"
#include "codec/ev_field.h"
#include "codec/ev_scan.h"
#include "common/fb_path.h"
#include "common/fb_utf8.h"


typedef struct dec {
    const msgpack_object_map *map;
    ev_arena *arena;
    fb_err *err;
    const char *where; /* "" at top level, "relations[2]." inside */
} dec;

static fb_code dec_fail(dec *d, const char *key, const char *fmt, const char *detail) {
    char what[256];
    snprintf(what, sizeof what, fmt, detail ? detail : "");
    return fb_err_set(d->err, FB_ERR_INVALID, "invalid event: field \"%s%s\": %s", d->where, key, what);
}

static const msgpack_object *dec_get(const dec *d, const char *key) {
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < d->map->size; i++) {
        const msgpack_object *k = &d->map->ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen && memcmp(k->via.str.ptr, key, klen) == 0)
            return &d->map->ptr[i].val;
    }
    return NULL;
}

/* Fetches a field: returns 1 with *o set when present and not nil; 0 when absent or nil (allowed only when
 * nullable); -1 after setting an error. */
static int dec_field(dec *d, const char *key, int nullable, const msgpack_object **o) {
    *o = dec_get(d, key);
    if (*o && (*o)->type != MSGPACK_OBJECT_NIL) return 1;
    if (nullable) return 0;
    dec_fail(d, key, *o ? "must not be nil" : "is missing", NULL);
    return -1;
}

int ev_utf8_valid(const void *sv, size_t n) {
    const unsigned char *s = sv;
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t extra;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        else if ((c & 0xe0) == 0xc0) { extra = 1; cp = c & 0x1f; }
        else if ((c & 0xf0) == 0xe0) { extra = 2; cp = c & 0x0f; }
        else if ((c & 0xf8) == 0xf0) { extra = 3; cp = c & 0x07; }
        else return 0;
        if (i + extra >= n) return 0;
        for (size_t k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += extra + 1;
    }
    return 1;
}

/* Checks a msgpack str object: type, UTF-8, no NUL, length bounds; copies into the arena. */
static fb_code dec_str_obj(dec *d, const char *key, const msgpack_object *o, size_t min, size_t max, const char **out) {
    if (o->type != MSGPACK_OBJECT_STR) return dec_fail(d, key, "must be a string%s", NULL);
    size_t n = o->via.str.size;
    char range[96];
    snprintf(range, sizeof range, "%zu..%zu bytes, got %zu", min, max, n);
    if (n < min || n > max) return dec_fail(d, key, "length must be %s", range);
    if (memchr(o->via.str.ptr, '\0', n)) return dec_fail(d, key, "must not contain a NUL byte%s", NULL);
    if (!ev_utf8_valid((const unsigned char *)o->via.str.ptr, n)) return dec_fail(d, key, "is not valid UTF-8%s", NULL);
    *out = ev_arena_strndup(d->arena, o->via.str.ptr, n);
    if (!*out) return fb_err_set(d->err, FB_ERR_NOMEM, "out of memory decoding an event");
    return FB_OK;
}

static fb_code dec_str(dec *d, const char *key, int nullable, size_t min, size_t max, const char **out) {
    const msgpack_object *o;
    *out = NULL;
    int r = dec_field(d, key, nullable, &o);
    if (r <= 0) return r < 0 ? FB_ERR_INVALID : FB_OK;
    return dec_str_obj(d, key, o, min, max, out);
}

int ev_name_valid(const char *s, size_t len, const char **why) {
    const char *w = NULL;
    if (len == 0) w = "a name must not be empty";
    else if (len > EV_NAME_MAX) w = "a name must be at most 63 bytes (PostgreSQL's limit)";
    else if (memchr(s, '\0', len)) w = "a name must not contain a NUL byte";
    else if (!ev_utf8_valid((const unsigned char *)s, len)) w = "a name must be valid UTF-8";
    if (why) *why = w;
    return w == NULL;
}

int ev_path_valid(const char *s, size_t len, const char **why) {
    const char *w = fb_relpath_problem(s, len);
    if (!w && !ev_utf8_valid((const unsigned char *)s, len)) w = "a path must be valid UTF-8";
    if (why) *why = w;
    return w == NULL;
}

const char *ev_worker_name_problem(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n > EV_STR_MAX) return "a worker name must be 1..255 bytes";
    if (!ev_utf8_valid(name, n)) return "a worker name must be valid UTF-8";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return "a worker name must be printable (no control characters such as newlines or tabs)";
    return NULL;
}

size_t ev_text_repair(char *s, size_t max) {
    size_t n = strlen(s), i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (len == 1 || (len && i + len <= n && ev_utf8_valid(s + i, len))) {
            i += len;
        } else {
            s[i++] = '?';
        }
    }
    n = fb_utf8_cut_len(s, n, max);
    s[n] = '\0';
    return n;
}

static fb_code dec_name_obj(dec *d, const char *key, const msgpack_object *o, const char **out) {
    if (o->type != MSGPACK_OBJECT_STR) return dec_fail(d, key, "must be a string%s", NULL);
    const char *why;
    if (!ev_name_valid(o->via.str.ptr, o->via.str.size, &why)) return dec_fail(d, key, "%s", why);
    *out = ev_arena_strndup(d->arena, o->via.str.ptr, o->via.str.size);
    return *out ? FB_OK : fb_err_set(d->err, FB_ERR_NOMEM, "out of memory decoding an event");
}

static fb_code dec_name(dec *d, const char *key, int nullable, const char **out) {
    const msgpack_object *o;
    *out = NULL;
    int r = dec_field(d, key, nullable, &o);
    if (r <= 0) return r < 0 ? FB_ERR_INVALID : FB_OK;
    return dec_name_obj(d, key, o, out);
}

static fb_code dec_path(dec *d, const char *key, int nullable, const char **out) {
    const msgpack_object *o;
    *out = NULL;
    int r = dec_field(d, key, nullable, &o);
    if (r <= 0) return r < 0 ? FB_ERR_INVALID : FB_OK;
    if (o->type != MSGPACK_OBJECT_STR) return dec_fail(d, key, "must be a string%s", NULL);
    const char *why;
    if (!ev_path_valid(o->via.str.ptr, o->via.str.size, &why)) return dec_fail(d, key, "%s", why);
    *out = ev_arena_strndup(d->arena, o->via.str.ptr, o->via.str.size);
    return *out ? FB_OK : fb_err_set(d->err, FB_ERR_NOMEM, "out of memory decoding an event");
}

static fb_code dec_int(dec *d, const char *key, int nullable, int64_t lo, int64_t hi, ev_opt_i64 *out) {
    const msgpack_object *o;
    out->has = 0;
    out->v = 0;
    int r = dec_field(d, key, nullable, &o);
    if (r <= 0) return r < 0 ? FB_ERR_INVALID : FB_OK;
    int64_t v;
    char range[96];
    snprintf(range, sizeof range, "%lld..%lld", (long long)lo, (long long)hi);
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t)INT64_MAX) return dec_fail(d, key, "out of range (must be %s)", range);
        v = (int64_t)o->via.u64;
    } else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        v = o->via.i64;
    } else {
        return dec_fail(d, key, "must be an integer%s", NULL);
    }
    if (v < lo || v > hi) return dec_fail(d, key, "out of range (must be %s)", range);
    out->has = 1;
    out->v = v;
    return FB_OK;
}

static fb_code dec_req_int(dec *d, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    ev_opt_i64 o;
    fb_code rc = dec_int(d, key, 0, lo, hi, &o);
    *out = o.v;
    return rc;
}

static fb_code dec_enum(dec *d, const char *key, const char *const *names, int n, int *out) {
    const char *s;
    fb_code rc = dec_str(d, key, 0, 1, EV_STR_MAX, &s);
    if (rc) return rc;
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = i + 1;
            return FB_OK;
        }
    return dec_fail(d, key, "unknown value \"%s\"", s);
}

static fb_code dec_table_obj(dec *d, const char *key, const msgpack_object *o, ev_table *t) {
    if (o->type == MSGPACK_OBJECT_STR) {
        t->schema = "public";
        t->schema_given = 0;
        return dec_name_obj(d, key, o, &t->name);
    }
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2)
        return dec_fail(d, key, "a table must be a name or a [schema, table] array of two names%s", NULL);
    t->schema_given = 1;
    fb_code rc = dec_name_obj(d, key, &o->via.array.ptr[0], &t->schema);
    return rc ? rc : dec_name_obj(d, key, &o->via.array.ptr[1], &t->name);
}

static fb_code dec_array(dec *d, const char *key, size_t max, const msgpack_object **o) {
    int r = dec_field(d, key, 0, o);
    if (r < 0) return FB_ERR_INVALID;
    if ((*o)->type != MSGPACK_OBJECT_ARRAY) return dec_fail(d, key, "must be an array%s", NULL);
    if ((*o)->via.array.size > max) return dec_fail(d, key, "has too many entries%s", NULL);
    return FB_OK;
}

/* Orders key slices by length, then bytes: duplicates end up side by side. */
static int dec_key_cmp(const void *a, const void *b) {
    const msgpack_object_str *x = *(const msgpack_object_str *const *)a, *y = *(const msgpack_object_str *const *)b;
    if (x->size != y->size) return x->size < y->size ? -1 : 1;
    /* msgpack-c leaves ptr NULL for an empty string, and memcmp of NULL is undefined even for 0 bytes (found by
     * fuzz_event_decode: a map with two empty keys). Two empty keys are equal: a duplicate, refused. */
    if (x->size == 0) return 0;
    return memcmp(x->ptr, y->ptr, x->size);
}

/* Keys must be strings and unique, in every map: two readers could otherwise disagree on which value counts.
 * Sorting the key slices finds duplicates in O(n log n) (a pairwise check is quadratic: 80k unknown keys took
 * seconds on the poll thread); ev_scan() already capped the map at EV_SCAN_MAX_MAP_KEYS. */
static fb_code dec_check_keys(dec *d) {
    uint32_t n = d->map->size;
    for (uint32_t i = 0; i < n; i++)
        if (d->map->ptr[i].key.type != MSGPACK_OBJECT_STR)
            return fb_err_set(d->err, FB_ERR_INVALID, "invalid event: field \"%s\": every key must be a string (key %u is not)",
                              d->where, i);
    if (n < 2) return FB_OK;
    const msgpack_object_str *keys[EV_SCAN_MAX_MAP_KEYS];
    if (n > EV_SCAN_MAX_MAP_KEYS)
        return fb_err_set(d->err, FB_ERR_INVALID, "invalid event: field \"%s\": a map of %u keys is over the limit of %d",
                          d->where, n, EV_SCAN_MAX_MAP_KEYS);
    for (uint32_t i = 0; i < n; i++) keys[i] = &d->map->ptr[i].key.via.str;
    qsort(keys, n, sizeof keys[0], dec_key_cmp);
    for (uint32_t i = 1; i < n; i++)
        if (dec_key_cmp(&keys[i - 1], &keys[i]) == 0) {
            /* Unknown keys are not checked for UTF-8: name such a key without its bytes (errors travel as text). */
            const msgpack_object_str *k = keys[i];
            if (k->size > 255 || memchr(k->ptr, '\0', k->size) || !ev_utf8_valid((const unsigned char *)k->ptr, k->size))
                return fb_err_set(d->err, FB_ERR_INVALID, "invalid event: field \"%s\": duplicate key (of %u bytes, "
                                  "not shown: too long or not UTF-8 text)", d->where, k->size);
            return fb_err_set(d->err, FB_ERR_INVALID, "invalid event: field \"%s%.*s\": duplicate key", d->where,
                              (int)k->size, k->ptr);
        }
    return FB_OK;
}

/* ---- the walk of the field tables (ev_field.h) ---- */

static fb_code dec_rows(dec *d, const ev_field *rows, size_t n, void *base);

static fb_code dec_version(dec *d, const ev_field *f, void *base) {
    const msgpack_object *o = dec_get(d, f->key);
    if (!o) return dec_fail(d, f->key, "is missing (the contract's major version)%s", NULL);
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return dec_fail(d, f->key, "must be a positive integer%s", NULL);
    if (o->via.u64 != EV_VERSION) {
        char got[32];
        snprintf(got, sizeof got, "%llu", (unsigned long long)o->via.u64);
        return dec_fail(d, f->key, "unsupported major version %s (this worker reads version 1; upgrade the worker)", got);
    }
    *EV_AT(base, f, int) = EV_VERSION;
    return FB_OK;
}

static fb_code dec_uuid(dec *d, const ev_field *f, void *base) {
    const char *s;
    fb_code rc = dec_str(d, f->key, 0, (size_t)f->lo, (size_t)f->hi, &s);
    if (rc) return rc;
    if (!ev_uuid_valid(s)) return dec_fail(d, f->key, "must be a canonical lowercase UUID, got \"%s\"", s);
    memcpy(EV_AT(base, f, char), s, 37);
    return FB_OK;
}

/* A string that must be one of f->names: `must be "a" or "b", got "x"`. */
static fb_code dec_one_of(dec *d, const ev_field *f, void *base) {
    const char **out = EV_AT(base, f, const char *);
    fb_code rc = dec_str(d, f->key, 0, 1, EV_STR_MAX, out);
    if (rc) return rc;
    char fmt[256] = "must be ";
    for (int i = 0; i < f->n_names; i++) {
        if (strcmp(*out, f->names[i]) == 0) return FB_OK;
        size_t k = strlen(fmt);
        snprintf(fmt + k, sizeof fmt - k, "%s\"%s\"", i ? " or " : "", f->names[i]);
    }
    size_t k = strlen(fmt);
    snprintf(fmt + k, sizeof fmt - k, ", got \"%%s\"");
    return dec_fail(d, f->key, fmt, *out);
}

static fb_code dec_bool(dec *d, const ev_field *f, void *base) {
    const msgpack_object *o;
    if (dec_field(d, f->key, 0, &o) < 0) return FB_ERR_INVALID;
    if (o->type != MSGPACK_OBJECT_BOOLEAN) return dec_fail(d, f->key, "must be true or false%s", NULL);
    *EV_AT(base, f, int) = o->via.boolean;
    return FB_OK;
}

/* Room for the n entries of a list row, stored in base with its count (and has-flag): NULL on out of memory. */
static void *dec_place(dec *d, const ev_field *f, void *base, size_t n, size_t size) {
    void *p = ev_arena_alloc(d->arena, size * (n ? n : 1));
    if (!p) {
        fb_err_set(d->err, FB_ERR_NOMEM, "out of memory decoding an event");
        return NULL;
    }
    *EV_AT(base, f, void *) = p;
    *(size_t *)((char *)base + f->count) = n;
    if (f->has) *(int *)((char *)base + f->has) = 1;
    return p;
}

static fb_code dec_list(dec *d, const ev_field *f, void *base) {
    const msgpack_object *o;
    fb_code rc = dec_array(d, f->key, (size_t)f->hi, &o);
    if (rc) return rc;
    size_t n = o->via.array.size, size = f->kind == EVK_TABLES ? sizeof(ev_table) : sizeof(char *);
    char *arr = dec_place(d, f, base, n, size);
    if (!arr) return FB_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        if (f->kind == EVK_TABLES) rc = dec_table_obj(d, f->key, &o->via.array.ptr[i], (ev_table *)(void *)(arr + i * size));
        else rc = dec_str_obj(d, f->key, &o->via.array.ptr[i], 1, EV_STR_MAX, (const char **)(void *)(arr + i * size));
        if (rc) return rc;
    }
    return FB_OK;
}

static fb_code dec_relation(dec *parent, size_t idx, const msgpack_object *o, ev_relation *r) {
    char where[64];
    snprintf(where, sizeof where, "relations[%zu].", idx);
    if (o->type != MSGPACK_OBJECT_MAP) {
        dec tmp = *parent;
        tmp.where = where;
        return dec_fail(&tmp, "", "a relation must be a map%s", NULL);
    }
    dec d = {&o->via.map, parent->arena, parent->err, where};
    fb_code rc = dec_check_keys(&d);
    return rc ? rc : dec_rows(&d, ev_relation_fields, ev_n_relation_fields, r);
}

static fb_code dec_relations(dec *d, const ev_field *f, void *base) {
    const msgpack_object *o;
    if (dec_field(d, f->key, 1, &o) == 0) return FB_OK;
    if (o->type != MSGPACK_OBJECT_ARRAY) return dec_fail(d, f->key, "must be an array or nil%s", NULL);
    if (o->via.array.size > (uint64_t)f->hi) return dec_fail(d, f->key, "has too many entries%s", NULL);
    size_t n = o->via.array.size;
    ev_relation *rel = dec_place(d, f, base, n, sizeof *rel);
    if (!rel) return FB_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        fb_code rc = dec_relation(d, i, &o->via.array.ptr[i], &rel[i]);
        if (rc) return rc;
    }
    return FB_OK;
}

static fb_code dec_stat(dec *d, const ev_field *f, const msgpack_object_kv *kv, ev_stat *e, const ev_stat *before,
                        size_t n_before) {
    fb_code rc = dec_str_obj(d, f->key, &kv->key, 1, 64, &e->key);
    if (rc) return rc;
    for (size_t j = 0; j < n_before; j++)
        if (strcmp(before[j].key, e->key) == 0) return dec_fail(d, f->key, "duplicate key \"%s\"", e->key);
    if (kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (kv->val.via.u64 > (uint64_t)INT64_MAX) return dec_fail(d, f->key, "value of \"%s\" out of range", e->key);
        e->i = (int64_t)kv->val.via.u64;
    } else if (kv->val.type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        e->i = kv->val.via.i64;
    } else if (kv->val.type == MSGPACK_OBJECT_FLOAT64 || kv->val.type == MSGPACK_OBJECT_FLOAT32) {
        e->is_float = 1;
        e->f = kv->val.via.f64;
        if (!isfinite(e->f)) return dec_fail(d, f->key, "value of \"%s\" must be a finite number", e->key);
    } else {
        return dec_fail(d, f->key, "value of \"%s\" must be a number", e->key);
    }
    return FB_OK;
}

static fb_code dec_stats(dec *d, const ev_field *f, void *base) {
    const msgpack_object *o;
    if (dec_field(d, f->key, 1, &o) <= 0) return FB_OK;
    if (o->type != MSGPACK_OBJECT_MAP) return dec_fail(d, f->key, "must be a map or nil%s", NULL);
    if (o->via.map.size > (uint64_t)f->hi) return dec_fail(d, f->key, "has more than 64 entries%s", NULL);
    size_t n = o->via.map.size;
    ev_stat *st = dec_place(d, f, base, n, sizeof *st);
    if (!st) return FB_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        fb_code rc = dec_stat(d, f, &o->via.map.ptr[i], &st[i], st, i);
        if (rc) return rc;
    }
    return FB_OK;
}

static fb_code dec_bin(dec *d, const ev_field *f, void *base) {
    const msgpack_object *o;
    if (dec_field(d, f->key, 1, &o) <= 0) return FB_OK;
    if (o->type != MSGPACK_OBJECT_BIN) return dec_fail(d, f->key, "must be binary (msgpack bin) or nil%s", NULL);
    if (o->via.bin.size > (uint64_t)f->hi) return dec_fail(d, f->key, "is larger than 1 MiB%s", NULL);
    unsigned char *copy = dec_place(d, f, base, o->via.bin.size, 1);
    if (!copy) return FB_ERR_NOMEM;
    if (o->via.bin.size) memcpy(copy, o->via.bin.ptr, o->via.bin.size);
    return FB_OK;
}

static fb_code dec_row(dec *d, const ev_field *f, void *base) {
    const msgpack_object *o;
    switch (f->kind) {
    case EVK_VERSION: return dec_version(d, f, base);
    case EVK_TYPE: case EVK_ENUM: return dec_enum(d, f->key, f->names, f->n_names, EV_AT(base, f, int));
    case EVK_UUID: return dec_uuid(d, f, base);
    case EVK_INT: return dec_req_int(d, f->key, f->lo, f->hi, EV_AT(base, f, int64_t));
    case EVK_OPT_INT: return dec_int(d, f->key, 1, f->lo, f->hi, EV_AT(base, f, ev_opt_i64));
    case EVK_STR: return dec_str(d, f->key, f->nullable, (size_t)f->lo, (size_t)f->hi, EV_AT(base, f, const char *));
    case EVK_NAME: return dec_name(d, f->key, f->nullable, EV_AT(base, f, const char *));
    case EVK_PATH: return dec_path(d, f->key, f->nullable, EV_AT(base, f, const char *));
    case EVK_ONE_OF: return dec_one_of(d, f, base);
    case EVK_BOOL: return dec_bool(d, f, base);
    case EVK_TABLE:
        if (dec_field(d, f->key, 0, &o) < 0) return FB_ERR_INVALID;
        return dec_table_obj(d, f->key, o, EV_AT(base, f, ev_table));
    case EVK_TABLES: case EVK_STRS: return dec_list(d, f, base);
    case EVK_RELATIONS: return dec_relations(d, f, base);
    case EVK_STATS: return dec_stats(d, f, base);
    case EVK_BIN: return dec_bin(d, f, base);
    }
    return fb_err_set(d->err, FB_ERR_INTERNAL, "unhandled field kind %d", (int)f->kind);
}

/* The rows in order: the first that fails is the error reported (the same field the Python codec names). */
static fb_code dec_rows(dec *d, const ev_field *rows, size_t n, void *base) {
    for (size_t i = 0; i < n; i++) {
        fb_code rc = dec_row(d, &rows[i], base);
        if (rc) return rc;
    }
    return FB_OK;
}

static fb_code dec_event(dec *d, ev_event *ev) {
    fb_code rc;
    if ((rc = dec_check_keys(d)) || (rc = dec_rows(d, ev_common_fields, ev_n_common_fields, ev))) return rc;
    size_t n;
    const ev_field *rows = ev_type_fields(ev->type, &n);
    if (!rows) return fb_err_set(d->err, FB_ERR_INTERNAL, "unhandled event type");
    return dec_rows(d, rows, n, ev);
}

fb_code ev_decode(const void *buf, size_t len, ev_event **out, fb_err *err) {
    *out = NULL;
    const char *why = NULL;
    if (len > EV_MESSAGE_MAX)
        return fb_err_set(err, FB_ERR_INVALID, "invalid event: message of %zu bytes is larger than 4 MiB", len);
    if (ev_scan(buf, len, &why) != 0) return fb_err_set(err, FB_ERR_INVALID, "invalid event: %s", why);
    const unsigned char *p = buf;
    if (!((p[0] >= 0x80 && p[0] <= 0x8f) || p[0] == 0xde || p[0] == 0xdf))
        return fb_err_set(err, FB_ERR_INVALID, "invalid event: the message is not a map: it must be a msgpack map with string keys");

    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    fb_code rc = FB_OK;
    ev_event *ev = NULL;
    msgpack_unpack_return ur = msgpack_unpack_next(&up, buf, len, &off);
    if (ur != MSGPACK_UNPACK_SUCCESS || up.data.type != MSGPACK_OBJECT_MAP) {
        rc = fb_err_set(err, ur == MSGPACK_UNPACK_NOMEM_ERROR ? FB_ERR_NOMEM : FB_ERR_INVALID,
                        "invalid event: could not unpack msgpack (code %d)", (int)ur);
        goto out;
    }
    ev = ev_event_new(EV_JOB_STATUS);
    if (!ev) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory decoding an event");
        goto out;
    }
    dec d = {&up.data.via.map, ev->arena_, err, ""};
    rc = dec_event(&d, ev);
out:
    msgpack_unpacked_destroy(&up);
    if (rc) {
        ev_event_free(ev);
        return rc;
    }
    *out = ev;
    return FB_OK;
}
