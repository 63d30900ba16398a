/* ev_field: the event contract as data, one table of rows per event type (schemas/SPEC.md's tables), which the
 * encoder (ev_encode.c), the decoder (ev_decode.c) and the JSON writer (ev_json.c) all walk, as the Python codec's
 * `_FIELDS` do: the three cannot disagree on a key, its order, its kind or its bounds. Row order is wire order: the
 * golden vectors hold both codecs to it byte for byte. Private to codec/.
 *
 * Adding a field: a member in its struct (ev_event.h), one row here in SPEC order; a new kind only when the value is
 * of a shape no row has yet (then one case in each of the three walkers). */
#ifndef EV_FIELD_H
#define EV_FIELD_H

#include <stddef.h>
#include <stdint.h>

#include "codec/ev_event.h"

/* SPEC.md's "Limits" table. */
#define EV_STR_MAX 255               /* config_name, module, model_name, worker, mode, job_id */
#define EV_ERROR_MAX 16384           /* error */
#define EV_LIST_MAX 10000            /* tables, relations */
#define EV_MODULES_MAX 1000          /* modules */
#define EV_STATS_MAX 64              /* stats entries */
#define EV_REQUEST_MAX (1u << 20)    /* request */

typedef enum ev_kind {
    EVK_VERSION,   /* int v: the contract's major version, always EV_VERSION on the wire */
    EVK_TYPE,      /* ev_type type, by name */
    EVK_UUID,      /* char job_id[37]: canonical lowercase UUID */
    EVK_INT,       /* int64_t in lo..hi */
    EVK_OPT_INT,   /* ev_opt_i64 in lo..hi, or nil */
    EVK_STR,       /* const char *, lo..hi bytes of UTF-8 without NUL */
    EVK_NAME,      /* const char *, a PostgreSQL name (ev_name_valid) */
    EVK_PATH,      /* const char *, relative to the storage root (ev_path_valid) */
    EVK_ENUM,      /* an enum stored as int: names[v - 1] on the wire */
    EVK_ONE_OF,    /* const char * that must be one of names (verify's mode) */
    EVK_BOOL,      /* int, true/false */
    EVK_TABLE,     /* ev_table: "name" or [schema, name] */
    EVK_TABLES,    /* ev_table * with a size_t count, at most hi */
    EVK_STRS,      /* const char ** with a size_t count, at most EV_MODULES_MAX, each 1..255 bytes */
    EVK_RELATIONS, /* ev_relation * with a count and a has-flag (nil: 0), each a map of ev_relation_fields */
    EVK_STATS,     /* ev_stat * with a count and a has-flag: a map of numbers */
    EVK_BIN,       /* const unsigned char * with a size_t length (nil: NULL), at most hi bytes */
} ev_kind;

typedef struct ev_field {
    const char *key;
    ev_kind kind;
    int nullable;              /* nil (or absent) is allowed */
    int64_t lo, hi;            /* ints: the range; strings: bytes; lists: entries (hi) */
    size_t off;                /* the value, from the start of the struct the table describes */
    size_t count;              /* lists: the size_t count; EVK_BIN: the length */
    size_t has;                /* EVK_RELATIONS, EVK_STATS: the int set when the value is not nil; 0: none (offset 0
                                * of ev_event and ev_relation is never a flag) */
    const char *const *names;  /* EVK_TYPE, EVK_ENUM, EVK_ONE_OF */
    int n_names;
} ev_field;

/* The rows every event starts with (offsets into ev_event). */
extern const ev_field ev_common_fields[];
extern const size_t ev_n_common_fields;
/* The rows of one event type (offsets into ev_event, through its union member); NULL for an unknown type. */
const ev_field *ev_type_fields(ev_type t, size_t *n);
/* The rows of one archive.due relation (offsets into ev_relation). */
extern const ev_field ev_relation_fields[];
extern const size_t ev_n_relation_fields;

/* Names, as the rows use them. */
extern const char *const ev_type_names[4];

/* The [schema, name] form is written when the event used it or the schema is not "public" (else the name alone). */
int ev_table_long_form(const ev_table *t);

/* Typed views of a row's value in the struct at base. */
#define EV_AT(base, f, T) ((T *)((char *)(base) + (f)->off))
#define EV_CAT(base, f, T) ((T const *)((const char *)(base) + (f)->off))
#define EV_CCOUNT(base, f) (*(const size_t *)((const char *)(base) + (f)->count))

#endif
