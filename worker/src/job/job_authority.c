/* job_authority: the database's answer to "may this request run?" (see job_authority.h for the rules).
 *
 * Every query is PQexecParams with the event's values as parameters: names are data here as everywhere. The
 * checks compare the event with the rows field by field and stop at the first difference, so the message can say
 * exactly which field was refused and what the database holds instead. Table lists are compared as sets of
 * (schema, name) pairs after normalising the wire form ("x" is ["public", "x"]), sorted in C so a list of
 * 10000 tables costs no more than a sort. Anything the check cannot read (the app's tables missing, a permission
 * refused) denies the request: what cannot be checked is not authorised. Only a lost connection is transient.
 */
#include "job/job_authority.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fb_time.h"
#include "pg/pgx.h"

#define JA_DAY_MS 86400000LL
#define JA_NOTHING "; nothing was changed"

int job_authority_system_schema(const char *schema) {
    return strcmp(schema, "pg_catalog") == 0 || strcmp(schema, "information_schema") == 0 ||
           strncmp(schema, "pg_", 3) == 0; /* pg_toast, pg_toast_temp_N, pg_temp_N and any future pg_ schema */
}

const char *job_authority_forbidden_table(const char *schema, const char *name) {
    if (job_authority_system_schema(schema))
        return "is in a system schema (pg_catalog, information_schema, pg_*), which this system never touches";
    if (strncmp(name, JOB_AUTHORITY_PROJECT_PREFIX, strlen(JOB_AUTHORITY_PROJECT_PREFIX)) == 0)
        return "is one of this system's own tables (" JOB_AUTHORITY_PROJECT_PREFIX "*), which it never archives";
    return NULL;
}

/* Runs one query of the check. A failure that is not transient becomes FB_ERR_DENIED: unreadable means
 * unauthorised. *out is the result (caller PQclear()s) on FB_OK. */
static fb_code jau_query(PGconn *c, const char *sql, int n, const char *const *prm, const char *what,
                         const ev_event *req, PGresult **out, fb_err *err) {
    PGresult *r = PQexecParams(c, sql, n, NULL, prm, NULL, NULL, 0);
    fb_code rc = pgx_check(c, r, PGRES_TUPLES_OK, what, err);
    if (rc == FB_OK) {
        *out = r;
        return FB_OK;
    }
    *out = NULL;
    if (rc == FB_ERR_TRANSIENT || rc == FB_ERR_NOMEM) return rc;
    fb_err_prefix(err, "%s refused: the database could not confirm it (is the Django app backup_archive migrated "
                  "to 0003 in this database, and may this role read its tables?): ", ev_type_name(req->type));
    err->code = FB_ERR_DENIED;
    return FB_ERR_DENIED;
}

/* "schema.name" of a table reference, for messages. */
static const char *jau_qname(const char *schema, const char *name, char *out, size_t cap) {
    snprintf(out, cap, "%s.%s", schema, name);
    return out;
}

/* ---- backup.requested ---------------------------------------------------------------------------------------- */

typedef struct jau_tref {
    const char *schema, *name;
} jau_tref;

static int jau_tref_cmp(const void *a, const void *b) {
    const jau_tref *x = a, *y = b;
    int d = strcmp(x->schema, y->schema);
    return d ? d : strcmp(x->name, y->name);
}

/* Sorts and removes duplicates; returns the new count. */
static size_t jau_tref_set(jau_tref *v, size_t n) {
    if (n == 0) return 0;
    qsort(v, n, sizeof *v, jau_tref_cmp);
    size_t k = 1;
    for (size_t i = 1; i < n; i++)
        if (jau_tref_cmp(&v[i], &v[k - 1]) != 0) v[k++] = v[i];
    return k;
}

/* Compares the event's tables with the record's (rows of (schema, name) in r) as sets. On a difference writes
 * the first table one side has and the other lacks into diff and returns 0. */
static fb_code jau_same_tables(const ev_backup_requested *rq, PGresult *r, int *same, char *diff, size_t cap,
                               fb_err *err) {
    size_t ne = rq->n_tables, nr = (size_t)PQntuples(r);
    jau_tref *e = calloc(ne + 1, sizeof *e), *d = calloc(nr + 1, sizeof *d);
    if (!e || !d) {
        free(e);
        free(d);
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory comparing table lists");
    }
    for (size_t i = 0; i < ne; i++) e[i] = (jau_tref){rq->tables[i].schema ? rq->tables[i].schema : "public",
                                                      rq->tables[i].name};
    for (size_t i = 0; i < nr; i++) d[i] = (jau_tref){PQgetvalue(r, (int)i, 0), PQgetvalue(r, (int)i, 1)};
    ne = jau_tref_set(e, ne);
    nr = jau_tref_set(d, nr);
    size_t i = 0, j = 0;
    *same = 1;
    while (*same && (i < ne || j < nr)) {
        int cmp = i == ne ? 1 : j == nr ? -1 : jau_tref_cmp(&e[i], &d[j]);
        char q[160];
        if (cmp == 0) {
            i++;
            j++;
        } else if (cmp < 0) {
            *same = 0;
            snprintf(diff, cap, "the event names %s, which the record does not list",
                     jau_qname(e[i].schema, e[i].name, q, sizeof q));
        } else {
            *same = 0;
            snprintf(diff, cap, "the record lists %s, which the event leaves out",
                     jau_qname(d[j].schema, d[j].name, q, sizeof q));
        }
    }
    free(e);
    free(d);
    return FB_OK;
}

/* backup.requested, step 1: no named table is in a system schema. */
static fb_code jau_backup_schemas(const ev_backup_requested *rq, fb_err *err) {
    char q[160];
    for (size_t i = 0; i < rq->n_tables; i++) {
        const char *schema = rq->tables[i].schema ? rq->tables[i].schema : "public";
        /* Only the catalogs: the app's own tables may be backed up, named or as part of every table (ArchivedRecord
         * holds the archived rows, which a disaster must not take with it); the Django side agrees
         * (producer/backup_archive/authority.py). */
        const char *why = job_authority_system_schema(schema)
                              ? "is in a system schema (pg_catalog, information_schema, pg_*), which backups never read"
                              : NULL;
        if (why)
            return fb_err_set(err, FB_ERR_DENIED, "backup.requested refused: tables[%zu] %s %s" JA_NOTHING, i,
                              jau_qname(schema, rq->tables[i].name, q, sizeof q), why);
    }
    return FB_OK;
}

/* Step 2: the BackupRecord (record_id) exists and matches the event: configuration, job, an active configuration,
 * a status that may run at this attempt, backup type, storage folder, retention, and a table list. */
static fb_code jau_backup_record(PGconn *c, const ev_event *req, const char *rid, fb_err *err) {
    const ev_backup_requested *rq = &req->u.backup;
    const char *p1[1] = {rid};
    PGresult *r = NULL;
    fb_code rc;
    if ((rc = jau_query(c,
                        "SELECT r.configuration_id, r.job_id::text, r.status, r.attempt, r.backup_type, "
                        "r.tables IS NULL, jsonb_typeof(r.tables) = 'array', k.is_active, k.storage_path, "
                        "k.retention_days, k.name "
                        "FROM public.backup_archive_backuprecord r "
                        "JOIN public.backup_archive_backupconfiguration k ON k.id = r.configuration_id "
                        "WHERE r.id = $1::bigint",
                        1, p1, "reading the BackupRecord of a backup request", req, &r, err)))
        return rc;
    if (PQntuples(r) == 0) {
        rc = fb_err_set(err, FB_ERR_DENIED,
                        "backup.requested refused: record_id %s names no BackupRecord (Django creates the record "
                        "before it publishes the request: request the backup from Fusion)" JA_NOTHING, rid);
        goto out;
    }
    int64_t cfg_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10), attempt = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
    const char *job = PQgetvalue(r, 0, 1), *status = PQgetvalue(r, 0, 2), *btype = PQgetvalue(r, 0, 4);
    const char *path = PQgetvalue(r, 0, 8), *cname = PQgetvalue(r, 0, 10);
    int64_t keep = strtoll(PQgetvalue(r, 0, 9), NULL, 10);
    if (cfg_id != rq->config_id) {
        rc = fb_err_set(err, FB_ERR_DENIED,
                        "backup.requested refused: record %s belongs to configuration %" PRId64
                        ", the event names config_id %" PRId64 JA_NOTHING, rid, cfg_id, rq->config_id);
    } else if (strcmp(job, req->job_id) != 0) {
        rc = fb_err_set(err, FB_ERR_DENIED,
                        "backup.requested refused: record %s is job %s, the event names job_id %s (a job id "
                        "without its own record is not a request Fusion made)" JA_NOTHING, rid, job, req->job_id);
    } else if (strcmp(PQgetvalue(r, 0, 7), "t") != 0) {
        rc = fb_err_set(err, FB_ERR_DENIED,
                        "backup.requested refused: configuration %" PRId64 " (\"%s\") is not active (activate it in "
                        "the admin to run its backups)" JA_NOTHING, cfg_id, cname);
    } else if (!(strcmp(status, "QUEUED") == 0 || strcmp(status, "RUNNING") == 0 ||
                 (strcmp(status, "FAILED") == 0 && req->attempt > attempt))) {
        rc = fb_err_set(err, FB_ERR_DENIED,
                        "backup.requested refused: record %s is %s at attempt %" PRId64 ", the event is attempt %"
                        PRId64 " (only a QUEUED or RUNNING record runs, or a FAILED one replayed with a later "
                        "attempt)" JA_NOTHING, rid, status, attempt, req->attempt);
    } else if (strcmp(btype, ev_backup_type_name(rq->backup_type)) != 0) {
        rc = fb_err_set(err, FB_ERR_DENIED,
                        "backup.requested refused: record %s is a %s backup, the event asks for backup_type %s"
                        JA_NOTHING, rid, btype, ev_backup_type_name(rq->backup_type));
    } else if (strcmp(path, rq->storage_path) != 0) {
        rc = fb_err_set(err, FB_ERR_DENIED,
                        "backup.requested refused: configuration %" PRId64 " keeps its backups in storage_path "
                        "\"%s\", the event names \"%s\" (retention acts only on the configuration's own folder)"
                        JA_NOTHING, cfg_id, path, rq->storage_path);
    } else if (keep != rq->retention_days) {
        rc = fb_err_set(err, FB_ERR_DENIED,
                        "backup.requested refused: configuration %" PRId64 " keeps backups retention_days %" PRId64
                        ", the event says %" PRId64 JA_NOTHING, cfg_id, keep, rq->retention_days);
    } else if (strcmp(PQgetvalue(r, 0, 5), "t") == 0 || strcmp(PQgetvalue(r, 0, 6), "t") != 0) {
        rc = fb_err_set(err, FB_ERR_DENIED,
                        "backup.requested refused: record %s has no table list (a record from before migration "
                        "0003, or not written by Django): request a new backup from Fusion" JA_NOTHING, rid);
    }
out:
    PQclear(r);
    return rc;
}

/* Step 3: the record's table list is well formed and names exactly the event's tables. */
static fb_code jau_backup_tables(PGconn *c, const ev_event *req, const char *rid, fb_err *err) {
    const ev_backup_requested *rq = &req->u.backup;
    const char *p1[1] = {rid};
    PGresult *tr = NULL;
    fb_code rc;
    if ((rc = jau_query(c,
                        "SELECT CASE jsonb_typeof(e) WHEN 'string' THEN 'public' ELSE e->>0 END, "
                        "CASE jsonb_typeof(e) WHEN 'string' THEN e#>>'{}' ELSE e->>1 END, "
                        "jsonb_typeof(e) = 'string' OR (jsonb_typeof(e) = 'array' AND jsonb_array_length(e) = 2 "
                        "AND jsonb_typeof(e->0) = 'string' AND jsonb_typeof(e->1) = 'string') "
                        "FROM public.backup_archive_backuprecord r, jsonb_array_elements(r.tables) e "
                        "WHERE r.id = $1::bigint",
                        1, p1, "reading the table list of a BackupRecord", req, &tr, err)))
        return rc;
    for (int i = 0; i < PQntuples(tr); i++)
        if (strcmp(PQgetvalue(tr, i, 2), "t") != 0) {
            rc = fb_err_set(err, FB_ERR_DENIED,
                            "backup.requested refused: the table list of record %s is malformed at entry %d (a "
                            "name or a [schema, table] pair expected)" JA_NOTHING, rid, i);
            goto out;
        }
    int same = 0;
    char diff[300] = "";
    if ((rc = jau_same_tables(rq, tr, &same, diff, sizeof diff, err))) goto out;
    if (!same)
        rc = fb_err_set(err, FB_ERR_DENIED, "backup.requested refused: tables differ from record %s: %s" JA_NOTHING,
                        rid, diff);
out:
    PQclear(tr);
    return rc;
}

/* backup.requested: authorised when the named tables are outside the system schemas and the record Django wrote
 * for this job matches the event in every field the worker acts on. */
static fb_code jau_backup(PGconn *c, const ev_event *req, fb_err *err) {
    char rid[32];
    fb_code rc;
    if ((rc = jau_backup_schemas(&req->u.backup, err))) return rc;
    snprintf(rid, sizeof rid, "%" PRId64, req->u.backup.record_id);
    if ((rc = jau_backup_record(c, req, rid, err))) return rc;
    return jau_backup_tables(c, req, rid, err);
}

/* ---- backup.verify ------------------------------------------------------------------------------------------- */

static fb_code jau_verify(PGconn *c, const ev_event *req, fb_err *err) {
    const ev_backup_verify *rq = &req->u.verify;
    char rid[32];
    PGresult *r = NULL;
    snprintf(rid, sizeof rid, "%" PRId64, rq->record_id);
    const char *p[1] = {rid};
    fb_code rc = jau_query(c,
                           "SELECT configuration_id, status, coalesce(verify_job_id::text, ''), file_path "
                           "FROM public.backup_archive_backuprecord WHERE id = $1::bigint",
                           1, p, "reading the BackupRecord of a verify request", req, &r, err);
    if (rc) return rc;
    if (PQntuples(r) == 0) {
        rc = fb_err_set(err, FB_ERR_DENIED, "backup.verify refused: record_id %s names no BackupRecord" JA_NOTHING,
                        rid);
        goto out;
    }
    int64_t cfg_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    const char *status = PQgetvalue(r, 0, 1), *vjob = PQgetvalue(r, 0, 2), *path = PQgetvalue(r, 0, 3);
    if (cfg_id != rq->config_id)
        rc = fb_err_set(err, FB_ERR_DENIED,
                        "backup.verify refused: record %s belongs to configuration %" PRId64 ", the event names "
                        "config_id %" PRId64 JA_NOTHING, rid, cfg_id, rq->config_id);
    else if (strcmp(status, "SUCCESS") != 0)
        rc = fb_err_set(err, FB_ERR_DENIED,
                        "backup.verify refused: record %s is %s; only a SUCCESS backup can be verified" JA_NOTHING,
                        rid, status);
    else if (strcmp(vjob, req->job_id) != 0)
        rc = fb_err_set(err, FB_ERR_DENIED,
                        "backup.verify refused: record %s asked for verification job %s, the event is job_id %s "
                        "(ask for a verification from Fusion)" JA_NOTHING, rid, *vjob ? vjob : "(none)", req->job_id);
    else if (!rq->file_path || strcmp(path, rq->file_path) != 0)
        rc = fb_err_set(err, FB_ERR_DENIED,
                        "backup.verify refused: record %s's artifact is file_path \"%s\", the event names \"%s\""
                        JA_NOTHING, rid, path, rq->file_path ? rq->file_path : "(none)");
out:
    PQclear(r);
    return rc;
}

/* ---- archive.due --------------------------------------------------------------------------------------------- */

/* Is rel a foreign key in the catalog of c: rel->table.column -> rel->references.(to_column, or its single-column
 * primary key)? */
static fb_code jau_relation_is_fk(PGconn *c, const ev_event *req, const ev_relation *rel, int *is_fk, fb_err *err) {
    const char *p[6] = {rel->table.schema, rel->table.name, rel->column, rel->references.schema, rel->references.name,
                        rel->to_column};
    PGresult *r = NULL;
    fb_code rc = jau_query(
        c,
        "SELECT 1 FROM pg_catalog.pg_constraint con "
        "JOIN pg_catalog.pg_class cc ON cc.oid = con.conrelid "
        "JOIN pg_catalog.pg_namespace cn ON cn.oid = cc.relnamespace "
        "JOIN pg_catalog.pg_class pc ON pc.oid = con.confrelid "
        "JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace "
        "JOIN pg_catalog.pg_attribute ca ON ca.attrelid = con.conrelid AND ca.attnum = con.conkey[1] "
        "JOIN pg_catalog.pg_attribute pa ON pa.attrelid = con.confrelid AND pa.attnum = con.confkey[1] "
        "WHERE con.contype = 'f' AND pg_catalog.array_length(con.conkey, 1) = 1 "
        "AND cn.nspname = $1 AND cc.relname = $2 AND ca.attname = $3 AND pn.nspname = $4 AND pc.relname = $5 "
        "AND CASE WHEN $6::text IS NULL THEN EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = "
        "con.confrelid AND i.indisprimary AND i.indnkeyatts = 1 AND i.indkey[0] = con.confkey[1]) "
        "ELSE pa.attname = $6 END LIMIT 1",
        6, p, "looking up a relation's foreign key in the catalog", req, &r, err);
    if (rc) return rc;
    *is_fk = PQntuples(r) > 0;
    PQclear(r);
    return FB_OK;
}

static fb_code jau_archive(PGconn *c, const ev_event *req, int64_t now_ms, int64_t skew_ms, fb_err *err) {
    const ev_archive_due *a = &req->u.archive;
    char pid[32], q[160], q2[160], t1[32], t2[32];
    const char *why;
    PGresult *r = NULL;
    fb_code rc = FB_OK;
    if ((why = job_authority_forbidden_table(a->table.schema, a->table.name)))
        return fb_err_set(err, FB_ERR_DENIED, "archive.due refused: table %s %s" JA_NOTHING,
                          jau_qname(a->table.schema, a->table.name, q, sizeof q), why);
    for (size_t i = 0; i < a->n_relations; i++) {
        const ev_relation *rel = &a->relations[i];
        if ((why = job_authority_forbidden_table(rel->table.schema, rel->table.name)))
            return fb_err_set(err, FB_ERR_DENIED, "archive.due refused: relations[%zu].table %s %s" JA_NOTHING, i,
                              jau_qname(rel->table.schema, rel->table.name, q, sizeof q), why);
        if ((why = job_authority_forbidden_table(rel->references.schema, rel->references.name)))
            return fb_err_set(err, FB_ERR_DENIED, "archive.due refused: relations[%zu].references %s %s" JA_NOTHING,
                              i, jau_qname(rel->references.schema, rel->references.name, q, sizeof q), why);
    }
    snprintf(pid, sizeof pid, "%" PRId64, a->policy_id);
    const char *p[1] = {pid};
    if ((rc = jau_query(c,
                        "SELECT module, model_name, db_schema, db_table, pk_column, timestamp_column, is_active, "
                        "archive_after_days, delete_after_days IS NOT NULL, coalesce(delete_after_days, 0) "
                        "FROM public.backup_archive_archivepolicy WHERE id = $1::bigint",
                        1, p, "reading the ArchivePolicy of an archive request", req, &r, err)))
        return rc;
    if (PQntuples(r) == 0) {
        rc = fb_err_set(err, FB_ERR_DENIED, "archive.due refused: policy_id %s names no ArchivePolicy" JA_NOTHING,
                        pid);
        goto out;
    }
    const char *mod = PQgetvalue(r, 0, 0), *model = PQgetvalue(r, 0, 1), *schema = PQgetvalue(r, 0, 2),
               *table = PQgetvalue(r, 0, 3), *pk = PQgetvalue(r, 0, 4), *ts = PQgetvalue(r, 0, 5);
    int64_t after = strtoll(PQgetvalue(r, 0, 7), NULL, 10), del = strtoll(PQgetvalue(r, 0, 9), NULL, 10);
    int has_del = strcmp(PQgetvalue(r, 0, 8), "t") == 0;
    if (strcmp(PQgetvalue(r, 0, 6), "t") != 0) {
        rc = fb_err_set(err, FB_ERR_DENIED, "archive.due refused: policy %s (%s.%s) is not active (activate it in "
                        "the admin to archive its rows)" JA_NOTHING, pid, mod, model);
    } else if (!*table || !*schema || !*pk) {
        rc = fb_err_set(err, FB_ERR_DENIED, "archive.due refused: policy %s (%s.%s) has no resolved table (it has "
                        "not been saved since migration 0003: open and save it in the admin)" JA_NOTHING, pid, mod,
                        model);
    } else if (strcmp(mod, a->module) != 0 || strcmp(model, a->model_name) != 0 || strcmp(schema, a->table.schema) != 0 ||
               strcmp(table, a->table.name) != 0) {
        rc = fb_err_set(err, FB_ERR_DENIED, "archive.due refused: policy %s is %s.%s on %s, the event names %s.%s on %s"
                        JA_NOTHING, pid, mod, model, jau_qname(schema, table, q, sizeof q), a->module, a->model_name,
                        jau_qname(a->table.schema, a->table.name, q2, sizeof q2));
    } else if (strcmp(pk, a->pk_column) != 0 || strcmp(ts, a->timestamp_column) != 0) {
        rc = fb_err_set(err, FB_ERR_DENIED, "archive.due refused: policy %s keys %s on pk_column \"%s\" and "
                        "timestamp_column \"%s\", the event names \"%s\" and \"%s\"" JA_NOTHING, pid,
                        jau_qname(schema, table, q, sizeof q), pk, ts, a->pk_column, a->timestamp_column);
    } else if (a->cutoff > now_ms - after * JA_DAY_MS + skew_ms) {
        rc = fb_err_set(err, FB_ERR_DENIED, "archive.due refused: cutoff %s is later than policy %s allows "
                        "(archive_after_days %" PRId64 ": rows older than %s)" JA_NOTHING, fb_time_format(a->cutoff,
                        t1, sizeof t1), pid, after, fb_time_format(now_ms - after * JA_DAY_MS, t2, sizeof t2));
    } else if (a->purge_before.has && !has_del) {
        rc = fb_err_set(err, FB_ERR_DENIED, "archive.due refused: purge_before is set but policy %s (%s.%s) has no "
                        "delete_after_days, so its ArchivedRecords are kept forever" JA_NOTHING, pid, mod, model);
    } else if (a->purge_before.has && a->purge_before.v > now_ms - del * JA_DAY_MS + skew_ms) {
        rc = fb_err_set(err, FB_ERR_DENIED, "archive.due refused: purge_before %s is later than policy %s allows "
                        "(delete_after_days %" PRId64 ": archived before %s)" JA_NOTHING,
                        fb_time_format(a->purge_before.v, t1, sizeof t1), pid, del,
                        fb_time_format(now_ms - del * JA_DAY_MS, t2, sizeof t2));
    }
    if (rc) goto out;
    for (size_t i = 0; i < a->n_relations; i++) {
        const ev_relation *rel = &a->relations[i];
        int is_fk = 0;
        if ((rc = jau_relation_is_fk(c, req, rel, &is_fk, err))) goto out;
        if (!is_fk) {
            rc = fb_err_set(err, FB_ERR_DENIED, "archive.due refused: relations[%zu] %s.%s -> %s.%s is not a foreign "
                            "key in this database's catalog" JA_NOTHING, i,
                            jau_qname(rel->table.schema, rel->table.name, q, sizeof q), rel->column,
                            jau_qname(rel->references.schema, rel->references.name, q2, sizeof q2),
                            rel->to_column ? rel->to_column : "(its primary key)");
            goto out;
        }
    }
out:
    PQclear(r);
    return rc;
}

/* ---- entry points -------------------------------------------------------------------------------------------- */

fb_code job_authority_check(PGconn *c, const ev_event *req, int64_t now_ms, int64_t skew_ms, fb_err *err) {
    switch (req->type) {
    case EV_BACKUP_REQUESTED: return jau_backup(c, req, err);
    case EV_BACKUP_VERIFY: return jau_verify(c, req, err);
    case EV_ARCHIVE_DUE: return jau_archive(c, req, now_ms, skew_ms, err);
    default: break;
    }
    return fb_err_set(err, FB_ERR_INTERNAL, "job_authority_check: a %s event is not a request",
                      ev_type_name(req->type));
}

const char *job_authority_conninfo(const fb_config *cfg, ev_type t) {
    if (t != EV_ARCHIVE_DUE && cfg->authority_pg && *cfg->authority_pg) return cfg->authority_pg;
    return cfg->pg;
}

fb_code job_authority_authorise(const fb_config *cfg, const ev_event *req, fb_err *err) {
    const char *ci = job_authority_conninfo(cfg, req->type);
    if (!ci || !*ci)
        return fb_err_set(err, FB_ERR_USAGE, "cannot check %s %s against the database: no --pg (or --authority-pg) "
                          "given, and nothing runs unchecked", ev_type_name(req->type), req->job_id);
    PGconn *c = pgx_connect(ci, "fusion-backup authority", err);
    if (!c) return err->code;
    fb_code rc = job_authority_check(c, req, fb_now_ms(), cfg->authority_skew_ms, err);
    PQfinish(c);
    return rc;
}
