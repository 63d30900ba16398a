/* ev_event: the decoded form of the event contract (schemas/SPEC.md) and its msgpack codec.
 *
 * Decoding validates everything the contract says (types, ranges, UUIDs, name and path rules) and never reads
 * out of bounds: a message that breaks the contract is rejected with FB_ERR_INVALID and a message naming the
 * field and what was wrong. Strings in a decoded event are NUL-terminated copies owned by the event (one arena
 * freed by ev_event_free); names are data, never SQL: quote them with pgx_quote_ident()/pgx_qualified().
 */
#ifndef EV_EVENT_H
#define EV_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "common/fb_err.h"

#define EV_VERSION 1
#define EV_NAME_MAX 63          /* PostgreSQL NAMEDATALEN - 1, in bytes */
#define EV_MESSAGE_MAX (4u << 20)

typedef enum ev_type {
    EV_BACKUP_REQUESTED = 1,
    EV_BACKUP_VERIFY = 2,
    EV_ARCHIVE_DUE = 3,
    EV_JOB_STATUS = 4,
} ev_type;

typedef enum ev_backup_type { EV_FULL = 1, EV_INCREMENTAL = 2, EV_DIFFERENTIAL = 3 } ev_backup_type;
typedef enum ev_job_type { EV_JOB_BACKUP = 1, EV_JOB_ARCHIVE = 2, EV_JOB_VERIFY = 3 } ev_job_type;
typedef enum ev_status { EV_RUNNING = 1, EV_SUCCESS = 2, EV_FAILED = 3 } ev_status;
typedef enum ev_on_delete {
    EV_CASCADE = 1, EV_SET_NULL = 2, EV_PROTECT = 3, EV_DO_NOTHING = 4, EV_SET_DEFAULT = 5
} ev_on_delete;

/* A table reference: schema is "public" when the event gave a plain name. */
typedef struct ev_table {
    const char *schema;
    const char *name;
    int schema_given;  /* 1 when the event used the [schema, table] form (kept so re-encoding is faithful) */
} ev_table;

typedef struct ev_relation {
    ev_table table;          /* the referencing (child) table */
    const char *column;      /* its FK column */
    ev_table references;     /* the referenced (parent) table */
    ev_on_delete on_delete;
    const char *to_column;   /* NULL: the parent's primary key */
    const char *module;      /* NULL: the job's module */
    const char *model_name;  /* NULL: the child's table name */
    const char *pk_column;   /* NULL: from the catalog */
} ev_relation;

typedef struct ev_stat {
    const char *key;
    int is_float;
    int64_t i;
    double f;
} ev_stat;

/* An optional int64: has == 0 means nil / absent. */
typedef struct ev_opt_i64 {
    int has;
    int64_t v;
} ev_opt_i64;

typedef struct ev_backup_requested {
    int64_t record_id, config_id;
    const char *config_name;
    ev_backup_type backup_type;
    ev_table *tables;
    size_t n_tables;
    const char **modules;
    size_t n_modules;
    const char *storage_path;
    int64_t retention_days;
} ev_backup_requested;

typedef struct ev_backup_verify {
    int64_t config_id, record_id;
    const char *mode;        /* "integrity" or "restore" */
    const char *file_path;   /* NULL when absent */
} ev_backup_verify;

typedef struct ev_archive_due {
    int64_t policy_id;
    const char *module, *model_name;
    ev_table table;
    const char *pk_column, *timestamp_column;
    int64_t cutoff;
    int64_t batch_size;
    ev_opt_i64 max_rows, purge_before, archived_by;
    int dry_run;
    int has_relations;       /* 0: nil (use the catalog, never delete a referenced row) */
    ev_relation *relations;
    size_t n_relations;
} ev_archive_due;

typedef struct ev_job_status {
    ev_job_type job_type;
    ev_status status;
    const char *worker;
    ev_opt_i64 started_at, completed_at, record_id, config_id, policy_id, file_size;
    const char *file_path;   /* NULL when absent */
    const char *error;       /* NULL when absent */
    ev_stat *stats;
    size_t n_stats;
    int has_stats;
    const unsigned char *request; /* NULL when absent */
    size_t request_len;
} ev_job_status;

typedef struct ev_event {
    int v;
    ev_type type;
    char job_id[37];
    int64_t ts;
    ev_opt_i64 requested_by;
    int64_t attempt;
    union {
        ev_backup_requested backup;
        ev_backup_verify verify;
        ev_archive_due archive;
        ev_job_status status;
    } u;
    void *arena_; /* private: owns every string and array above */
} ev_event;

/* Decodes one message value. On success *out is a new event the caller frees with ev_event_free().
 * On failure returns FB_ERR_INVALID (or FB_ERR_NOMEM) and *out is NULL. */
fb_code ev_decode(const void *buf, size_t len, ev_event **out, fb_err *err);

/* Encodes ev into a new malloc'd buffer (*out, *out_len) that the caller free()s. Validates as ev_decode does,
 * so a worker can never publish what a reader would reject. */
fb_code ev_encode(const ev_event *ev, unsigned char **out, size_t *out_len, fb_err *err);

void ev_event_free(ev_event *ev);

/* A new, zeroed event of the given type with its own arena, for building events to encode.
 * ev_strdup/ev_alloc allocate inside that arena (freed with the event). NULL on out of memory. */
ev_event *ev_event_new(ev_type type);
const char *ev_strdup(ev_event *ev, const char *s);
void *ev_alloc(ev_event *ev, size_t size);

/* Names and ids. */
const char *ev_type_name(ev_type t);             /* "backup.requested", ... */
const char *ev_backup_type_name(ev_backup_type t);/* "FULL", ... */
const char *ev_job_type_name(ev_job_type t);     /* "backup", ... */
const char *ev_status_name(ev_status s);         /* "RUNNING", ... */
const char *ev_on_delete_name(ev_on_delete d);   /* "CASCADE", ... */
int ev_uuid_valid(const char *s);                /* canonical lowercase 8-4-4-4-12 */
/* A new job id and the wall clock are fb_uuid_random (common/fb_uuid.h) and fb_now_ms (common/fb_time.h). */

/* Validation shared with the rest of the worker (same rules as the decoder). Return 1 if valid, else 0 and
 * a reason in why (may be NULL). */
int ev_name_valid(const char *s, size_t len, const char **why);
int ev_path_valid(const char *s, size_t len, const char **why);
/* 1 when s[0..n) is valid UTF-8 as the contract means it (no overlong forms, no surrogates, at most U+10FFFF). */
int ev_utf8_valid(const void *s, size_t n);
/* Why a worker name would be refused in status events (NULL: it is fine): 1..255 bytes, valid UTF-8, no control
 * characters. */
const char *ev_worker_name_problem(const char *name);
/* Makes NUL-terminated text fit a contract string of at most max bytes, in place: every byte that does not
 * belong to a valid UTF-8 sequence becomes '?', then the text is cut at a character boundary. For error texts
 * assembled from pieces cut elsewhere (a snprintf into a small buffer may end inside a character), which the
 * encoder would otherwise refuse. Returns the new length. */
size_t ev_text_repair(char *s, size_t max);

#endif
