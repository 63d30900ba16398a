/* ev_field: the field tables of schemas/SPEC.md (see ev_field.h). */
#include "codec/ev_field.h"

#include <string.h>

#define INT63 INT64_MAX

_Static_assert(sizeof(ev_type) == sizeof(int) && sizeof(ev_backup_type) == sizeof(int) &&
                   sizeof(ev_job_type) == sizeof(int) && sizeof(ev_status) == sizeof(int) &&
                   sizeof(ev_on_delete) == sizeof(int),
               "EVK_ENUM rows store enums as int");

const char *const ev_type_names[4] = {"backup.requested", "backup.verify", "archive.due", "job.status"};
static const char *const ev_backup_type_names[] = {"FULL", "INCREMENTAL", "DIFFERENTIAL"};
static const char *const ev_job_type_names[] = {"backup", "archive", "verify"};
static const char *const ev_status_names[] = {"RUNNING", "SUCCESS", "FAILED"};
static const char *const ev_on_delete_names[] = {"CASCADE", "SET_NULL", "PROTECT", "DO_NOTHING", "SET_DEFAULT"};
static const char *const ev_verify_modes[] = {"integrity", "restore"};

#define NAMES(a) a, (int)(sizeof a / sizeof a[0])
/* A row of ev_event (E) or of ev_relation (R): key, kind, nil allowed, bounds, member. */
#define E(key, kind, nil, lo, hi, m) {key, kind, nil, lo, hi, offsetof(ev_event, m), 0, 0, NULL, 0}
#define EN(key, kind, m, names) {key, kind, 0, 0, 0, offsetof(ev_event, m), 0, 0, NAMES(names)}
#define EL(key, kind, nil, hi, m, n, has) \
    {key, kind, nil, 0, hi, offsetof(ev_event, m), offsetof(ev_event, n), has, NULL, 0}
#define R(key, kind, nil, lo, hi, m) {key, kind, nil, lo, hi, offsetof(ev_relation, m), 0, 0, NULL, 0}

const ev_field ev_common_fields[] = {
    E("v", EVK_VERSION, 0, EV_VERSION, EV_VERSION, v),
    EN("type", EVK_TYPE, type, ev_type_names),
    E("job_id", EVK_UUID, 0, 1, EV_STR_MAX, job_id),
    E("ts", EVK_INT, 0, 0, INT63, ts),
    E("requested_by", EVK_OPT_INT, 1, 1, INT63, requested_by),
    E("attempt", EVK_INT, 0, 1, 1000, attempt),
};
const size_t ev_n_common_fields = sizeof ev_common_fields / sizeof ev_common_fields[0];

static const ev_field ev_backup_fields[] = {
    E("record_id", EVK_INT, 0, 1, INT63, u.backup.record_id),
    E("config_id", EVK_INT, 0, 1, INT63, u.backup.config_id),
    E("config_name", EVK_STR, 0, 1, EV_STR_MAX, u.backup.config_name),
    EN("backup_type", EVK_ENUM, u.backup.backup_type, ev_backup_type_names),
    EL("tables", EVK_TABLES, 0, EV_LIST_MAX, u.backup.tables, u.backup.n_tables, 0),
    EL("modules", EVK_STRS, 0, EV_MODULES_MAX, u.backup.modules, u.backup.n_modules, 0),
    E("storage_path", EVK_PATH, 0, 0, 0, u.backup.storage_path),
    E("retention_days", EVK_INT, 0, 0, 36500, u.backup.retention_days),
};

static const ev_field ev_verify_fields[] = {
    E("config_id", EVK_INT, 0, 1, INT63, u.verify.config_id),
    E("record_id", EVK_INT, 0, 1, INT63, u.verify.record_id),
    EN("mode", EVK_ONE_OF, u.verify.mode, ev_verify_modes),
    E("file_path", EVK_PATH, 1, 0, 0, u.verify.file_path),
};

static const ev_field ev_archive_fields[] = {
    E("policy_id", EVK_INT, 0, 1, INT63, u.archive.policy_id),
    E("module", EVK_STR, 0, 1, EV_STR_MAX, u.archive.module),
    E("model_name", EVK_STR, 0, 1, EV_STR_MAX, u.archive.model_name),
    E("table", EVK_TABLE, 0, 0, 0, u.archive.table),
    E("pk_column", EVK_NAME, 0, 0, 0, u.archive.pk_column),
    E("timestamp_column", EVK_NAME, 0, 0, 0, u.archive.timestamp_column),
    E("cutoff", EVK_INT, 0, 0, INT63, u.archive.cutoff),
    E("batch_size", EVK_INT, 0, 1, 100000, u.archive.batch_size),
    E("max_rows", EVK_OPT_INT, 1, 1, INT63, u.archive.max_rows),
    E("purge_before", EVK_OPT_INT, 1, 0, INT63, u.archive.purge_before),
    E("archived_by", EVK_OPT_INT, 1, 1, INT63, u.archive.archived_by),
    E("dry_run", EVK_BOOL, 0, 0, 0, u.archive.dry_run),
    EL("relations", EVK_RELATIONS, 1, EV_LIST_MAX, u.archive.relations, u.archive.n_relations,
       offsetof(ev_event, u.archive.has_relations)),
};

static const ev_field ev_status_fields[] = {
    EN("job_type", EVK_ENUM, u.status.job_type, ev_job_type_names),
    EN("status", EVK_ENUM, u.status.status, ev_status_names),
    E("worker", EVK_STR, 0, 1, EV_STR_MAX, u.status.worker),
    E("started_at", EVK_OPT_INT, 1, 0, INT63, u.status.started_at),
    E("completed_at", EVK_OPT_INT, 1, 0, INT63, u.status.completed_at),
    E("record_id", EVK_OPT_INT, 1, 1, INT63, u.status.record_id),
    E("config_id", EVK_OPT_INT, 1, 1, INT63, u.status.config_id),
    E("policy_id", EVK_OPT_INT, 1, 1, INT63, u.status.policy_id),
    E("file_path", EVK_PATH, 1, 0, 0, u.status.file_path),
    E("file_size", EVK_OPT_INT, 1, 0, INT63, u.status.file_size),
    E("error", EVK_STR, 1, 0, EV_ERROR_MAX, u.status.error),
    EL("stats", EVK_STATS, 1, EV_STATS_MAX, u.status.stats, u.status.n_stats, offsetof(ev_event, u.status.has_stats)),
    EL("request", EVK_BIN, 1, EV_REQUEST_MAX, u.status.request, u.status.request_len, 0),
};

const ev_field ev_relation_fields[] = {
    R("table", EVK_TABLE, 0, 0, 0, table),
    R("column", EVK_NAME, 0, 0, 0, column),
    R("references", EVK_TABLE, 0, 0, 0, references),
    {"on_delete", EVK_ENUM, 0, 0, 0, offsetof(ev_relation, on_delete), 0, 0, NAMES(ev_on_delete_names)},
    R("to_column", EVK_NAME, 1, 0, 0, to_column),
    R("module", EVK_STR, 1, 1, EV_STR_MAX, module),
    R("model_name", EVK_STR, 1, 1, EV_STR_MAX, model_name),
    R("pk_column", EVK_NAME, 1, 0, 0, pk_column),
};
const size_t ev_n_relation_fields = sizeof ev_relation_fields / sizeof ev_relation_fields[0];

#define ROWS(a) (*n = sizeof a / sizeof a[0], a)

const ev_field *ev_type_fields(ev_type t, size_t *n) {
    switch (t) {
    case EV_BACKUP_REQUESTED: return ROWS(ev_backup_fields);
    case EV_BACKUP_VERIFY: return ROWS(ev_verify_fields);
    case EV_ARCHIVE_DUE: return ROWS(ev_archive_fields);
    case EV_JOB_STATUS: return ROWS(ev_status_fields);
    }
    *n = 0;
    return NULL;
}

int ev_table_long_form(const ev_table *t) { return t->schema_given || (t->schema && strcmp(t->schema, "public") != 0); }

static const char *ev_name_of(const char *const *names, int n, int v) { return v >= 1 && v <= n ? names[v - 1] : "?"; }

const char *ev_type_name(ev_type t) { return ev_name_of(NAMES(ev_type_names), (int)t); }
const char *ev_backup_type_name(ev_backup_type t) { return ev_name_of(NAMES(ev_backup_type_names), (int)t); }
const char *ev_job_type_name(ev_job_type t) { return ev_name_of(NAMES(ev_job_type_names), (int)t); }
const char *ev_status_name(ev_status s) { return ev_name_of(NAMES(ev_status_names), (int)s); }
const char *ev_on_delete_name(ev_on_delete x) { return ev_name_of(NAMES(ev_on_delete_names), (int)x); }
