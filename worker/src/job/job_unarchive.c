/* job_unarchive: unarchive, the inverse of job_archive_run (see job_archive.h).
 *
 * One transaction: lock the selected ArchivedRecords (FOR UPDATE), group them by the table named in their data
 * envelope, and per table run one statement that rebuilds each row with json_populate_record(NULL::table, row),
 * inserts those whose primary key is free (column list from the catalog without generated columns; OVERRIDING
 * SYSTEM VALUE so identity columns get their old values back) and deletes their ArchivedRecords. Rows whose key is
 * taken again stay archived and are reported. Foreign keys in Fusion are DEFERRABLE INITIALLY DEFERRED, so the
 * order of tables does not matter inside the transaction; a restored child whose parent is still archived fails
 * at COMMIT with a message saying so (unarchive the parent model first).
 * Known limit: a jsonb/json column holding the JSON value null (not SQL NULL) comes back as SQL NULL, because
 * row_to_json writes both the same way; Django stores None as SQL NULL, so Fusion's data is not affected.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fb_log.h"
#include "job/job_archive.h"
#include "job/job_archive_int.h"
#include "pg/pgx.h"

/* Appends s as an element of a PostgreSQL array literal ("..." with \ and " escaped). */
static void ju_array_elem(fb_sbuf *b, const char *s, int first) {
    fb_sbuf_printf(b, "%s\"", first ? "" : ",");
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\') fb_sbuf_printf(b, "\\");
        fb_sbuf_printf(b, "%c", *p);
    }
    fb_sbuf_printf(b, "\"");
}

static fb_code ju_add_conflict(job_unarchive_result *res, const char *id, fb_err *err) {
    char **c = realloc(res->conflicts, (res->n_conflicts + 1) * sizeof *c);
    if (!c) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    res->conflicts = c;
    if (!(c[res->n_conflicts] = strdup(id))) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    res->n_conflicts++;
    return FB_OK;
}

/* Restores the records `ids` (an int8[] literal) that all belong to schema.table with primary key pk. */
static fb_code ju_restore_table(PGconn *c, const char *schema, const char *table, const char *pk, const char *ids,
                                job_unarchive_result *res, fb_err *err) {
    fb_sbuf sql = {0}, cols = {0}, vals = {0};
    PGresult *r = NULL;
    fb_code rc = FB_OK;
    const char *p2[2] = {schema, table};
    r = PQexecParams(c,
                     "SELECT a.attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
                     "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 "
                     "AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum",
                     2, NULL, p2, NULL, NULL, 0);
    if ((rc = pgx_check(c, r, PGRES_TUPLES_OK, "reading the columns of the table to restore into", err))) {
        r = NULL;
        goto out;
    }
    if (PQntuples(r) == 0) {
        rc = fb_err_set(err, FB_ERR_NOTFOUND,
                        "table \"%s\".\"%s\" named in the ArchivedRecords does not exist (any more): re-create it "
                        "(run the Django migrations) before unarchiving",
                        schema, table);
        goto out;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        fb_sbuf_printf(&cols, "%s", i ? ", " : "");
        pgx_sb_ident(&cols, PQgetvalue(r, i, 0));
        fb_sbuf_printf(&vals, "%s(ok.r).", i ? ", " : "");
        pgx_sb_ident(&vals, PQgetvalue(r, i, 0));
    }
    PQclear(r);
    r = NULL;
    if (cols.oom || vals.oom) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }

    fb_sbuf_printf(&sql, "WITH src AS MATERIALIZED (SELECT a.id AS aid, json_populate_record(NULL::");
    pgx_sb_qualified(&sql, schema, table);
    fb_sbuf_printf(&sql, ", (a.data::json)->'row') AS r FROM public." JOB_ARCHIVE_TABLE " a WHERE a.id = ANY ($1::bigint[])),\n"
                       "ok AS MATERIALIZED (SELECT s.aid, s.r FROM src s WHERE NOT EXISTS (SELECT 1 FROM ");
    pgx_sb_qualified(&sql, schema, table);
    fb_sbuf_printf(&sql, " t WHERE t.");
    pgx_sb_ident(&sql, pk);
    fb_sbuf_printf(&sql, " = (s.r).");
    pgx_sb_ident(&sql, pk);
    fb_sbuf_printf(&sql, ")),\nins AS (INSERT INTO ");
    pgx_sb_qualified(&sql, schema, table);
    fb_sbuf_printf(&sql, " (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM ok RETURNING 1),\n", cols.p, vals.p);
    fb_sbuf_printf(&sql, "del AS (DELETE FROM public." JOB_ARCHIVE_TABLE " a USING ok WHERE a.id = ok.aid RETURNING 1)\n"
                       "SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM del)");
    if (sql.oom) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }
    char what[300];
    snprintf(what, sizeof what, "restoring archived rows into \"%s\".\"%s\"", schema, table);
    const char *p1[1] = {ids};
    r = PQexecParams(c, sql.p, 1, NULL, p1, NULL, NULL, 0);
    if ((rc = pgx_check(c, r, PGRES_TUPLES_OK, what, err))) {
        r = NULL;
        goto out;
    }
    int64_t ins = strtoll(PQgetvalue(r, 0, 0), NULL, 10), del = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    PQclear(r);
    r = NULL;
    if (ins != del) {
        rc = fb_err_set(err, FB_ERR_INTERNAL, "%s: inserted %" PRId64 " rows but removed %" PRId64
                        " ArchivedRecords; rolled back", what, ins, del);
        goto out;
    }
    res->restored += ins;
    /* What is still archived among these ids had its primary key taken. */
    r = PQexecParams(c, "SELECT original_id FROM public." JOB_ARCHIVE_TABLE " WHERE id = ANY ($1::bigint[]) "
                        "ORDER BY original_id", 1, NULL, p1, NULL, NULL, 0);
    if ((rc = pgx_check(c, r, PGRES_TUPLES_OK, "listing rows that could not be restored", err))) {
        r = NULL;
        goto out;
    }
    for (int i = 0; i < PQntuples(r) && rc == FB_OK; i++) rc = ju_add_conflict(res, PQgetvalue(r, i, 0), err);
out:
    PQclear(r);
    fb_sbuf_free(&sql);
    fb_sbuf_free(&cols);
    fb_sbuf_free(&vals);
    return rc;
}

/* The selected ArchivedRecords, locked (FOR UPDATE), with their envelope's version, table and primary key,
 * ordered by (schema, table, pk); *out is the result, the caller PQclear()s it. */
static fb_code ju_select(PGconn *c, const job_unarchive_opts *o, PGresult **out, fb_err *err) {
    fb_sbuf idlist = {0}, sel = {0};
    const char *prm[3] = {o->module, o->model_name, NULL};
    fb_code rc = FB_OK;
    *out = NULL;
    fb_sbuf_printf(&sel, "SELECT a.id, a.original_id, (a.data::json)->>'v', (a.data::json)->'table'->>0, "
                       "(a.data::json)->'table'->>1, (a.data::json)->>'pk' FROM public." JOB_ARCHIVE_TABLE " a "
                       "WHERE a.module = $1 AND a.model_name = $2 AND ");
    if (o->n_ids) {
        fb_sbuf_printf(&idlist, "{");
        for (size_t i = 0; i < o->n_ids; i++) ju_array_elem(&idlist, o->ids[i], i == 0);
        fb_sbuf_printf(&idlist, "}");
        fb_sbuf_printf(&sel, "a.original_id = ANY ($3::text[])");
        prm[2] = idlist.p;
    } else {
        fb_sbuf_printf(&sel, "a.archived_at < $3::timestamptz");
        prm[2] = o->archived_before;
    }
    fb_sbuf_printf(&sel, " ORDER BY 4, 5, 6, a.id FOR UPDATE OF a");
    if (sel.oom || idlist.oom) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }
    PGresult *r = PQexecParams(c, sel.p, 3, NULL, prm, NULL, NULL, 0);
    if ((rc = pgx_check(c, r, PGRES_TUPLES_OK, "selecting the ArchivedRecords to restore", err))) goto out;
    *out = r;
out:
    fb_sbuf_free(&idlist);
    fb_sbuf_free(&sel);
    return rc;
}

/* Every selected record has a version-1 data envelope; else nothing is changed. */
static fb_code ju_check_envelopes(const job_unarchive_opts *o, PGresult *r, fb_err *err) {
    for (int i = 0; i < PQntuples(r); i++)
        if (PQgetisnull(r, i, 2) || strcmp(PQgetvalue(r, i, 2), "1") != 0 || PQgetisnull(r, i, 3) ||
            PQgetisnull(r, i, 4) || PQgetisnull(r, i, 5))
            return fb_err_set(err, FB_ERR_FORMAT,
                              "ArchivedRecord %s (%s.%s, original_id %s) has no version-1 data envelope "
                              "{\"v\":1,\"table\":[schema,table],\"pk\":...,\"row\":{...}}: it was not written by "
                              "this archiver and cannot be restored automatically; nothing was changed",
                              PQgetvalue(r, i, 0), o->module, o->model_name, PQgetvalue(r, i, 1));
    return FB_OK;
}

/* One statement per (schema, table, pk) group of the selected records (r is ordered by it). */
static fb_code ju_restore_groups(PGconn *c, PGresult *r, job_unarchive_result *res, fb_err *err) {
    int n = PQntuples(r);
    for (int i = 0; i < n;) {
        int j = i;
        fb_sbuf ids = {0};
        fb_code rc;
        fb_sbuf_printf(&ids, "{");
        while (j < n && strcmp(PQgetvalue(r, j, 3), PQgetvalue(r, i, 3)) == 0 &&
               strcmp(PQgetvalue(r, j, 4), PQgetvalue(r, i, 4)) == 0 &&
               strcmp(PQgetvalue(r, j, 5), PQgetvalue(r, i, 5)) == 0) {
            fb_sbuf_printf(&ids, "%s%s", j > i ? "," : "", PQgetvalue(r, j, 0));
            j++;
        }
        fb_sbuf_printf(&ids, "}");
        if (ids.oom) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        else rc = ju_restore_table(c, PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), PQgetvalue(r, i, 5), ids.p, res, err);
        fb_sbuf_free(&ids);
        if (rc) return rc;
        i = j;
    }
    return FB_OK;
}

/* COMMIT (a dry run: ROLLBACK); deferred foreign keys are checked here. */
static fb_code ju_end(PGconn *c, const job_unarchive_opts *o, fb_err *err) {
    if (o->dry_run) return pgx_exec(c, "ROLLBACK", "rolling back the dry run", err);
    fb_code rc = pgx_exec(c, "COMMIT", "committing the unarchive", err);
    if (rc) {
        fb_err_prefix(err, "nothing was restored: ");
        if (strcmp(err->sqlstate, PGX_FOREIGN_KEY_VIOLATION) == 0)
            snprintf(err->msg + strlen(err->msg), sizeof err->msg - strlen(err->msg),
                     " (a restored row references a row that is still archived or gone: unarchive the referenced "
                     "model first, then this one)");
    }
    return rc;
}

fb_code job_unarchive_run(const job_unarchive_opts *o, job_unarchive_result *res, fb_err *err) {
    PGconn *c = NULL;
    PGresult *r = NULL;
    fb_code rc = FB_OK;
    memset(res, 0, sizeof *res);
    if (!o->module || !o->model_name || (!o->n_ids && !o->archived_before))
        return fb_err_set(err, FB_ERR_USAGE, "unarchive needs --module, --model and either --id or --archived-before");
    /* 1. One session, one transaction. */
    if (!(c = pgx_connect(o->conninfo, "fusion-backup unarchive", err))) return err->code;
    if ((rc = ja_session_setup(c, (long long)o->lock_timeout_ms, (long long)o->statement_timeout_ms, err)) ||
        (rc = pgx_exec(c, "BEGIN", "starting the unarchive transaction", err)))
        goto out;
    /* 2. The selected records, locked, each with a data envelope this archiver wrote. */
    if ((rc = ju_select(c, o, &r, err))) goto out;
    if (o->n_ids && (size_t)PQntuples(r) < o->n_ids) res->not_found = (int64_t)o->n_ids - PQntuples(r);
    if ((rc = ju_check_envelopes(o, r, err))) goto out;
    /* 3. Their rows back, table by table. */
    if ((rc = ju_restore_groups(c, r, res, err))) goto out;
    /* 4. Commit. */
    if ((rc = ju_end(c, o, err))) goto out;
    FB_INFO("unarchive%s %s.%s: %" PRId64 " restored, %zu left archived because their key is taken, %" PRId64
            " not found", o->dry_run ? " (dry run)" : "", o->module, o->model_name, res->restored, res->n_conflicts,
            res->not_found);
out:
    PQclear(r);
    if (PQtransactionStatus(c) == PQTRANS_INERROR) PQclear(PQexec(c, "ROLLBACK"));
    PQfinish(c);
    return rc;
}

void job_unarchive_result_free(job_unarchive_result *res) {
    if (!res) return;
    for (size_t i = 0; i < res->n_conflicts; i++) free(res->conflicts[i]);
    free(res->conflicts);
    memset(res, 0, sizeof *res);
}
