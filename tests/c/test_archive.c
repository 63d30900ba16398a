/* test_archive: job_archive_run and job_unarchive_run against a real PostgreSQL with the Fusion schema.
 *
 * Each case gets its own database cloned from a template (Fusion DDL + backup_archive tables, loaded once with
 * psql), seeds rows, runs the job in-process and checks counters and table contents. Cases: notifications by
 * timestamp (batches, idempotent re-run, unarchive gives back the same text), leave_leave with CASCADE children
 * and an unlisted catalog reference, PROTECT / DO_NOTHING on the archived table, "File"/"Tracking" (quoted
 * names) with a nested PROTECT and a SET_NULL, a varchar primary key, relations = nil (referenced rows stay), dry run, re-created rows (conflict), purge,
 * missing columns, lock retries and abort, a SIGKILL of a process in the middle of a large archival, the
 * batch statement's plan in every state of ArchivedRecord's statistics (EXPLAIN, not timed), and the throttle
 * engaging beside a live load and not on a quiet database (asserted on the job's counters, not on timing).
 * Needs FB_TEST_PG (tests/run.sh sets it) and psql (FB_PG_BIN or /usr/lib/postgresql/15/bin).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/fb_flag.h"
#include "common/fb_config.h"
#include "common/fb_time.h"
#include "job/job.h"
#include "job/job_archive.h"
#include "job/job_archive_int.h"
#include "job/job_authority.h"
#include "tap.h"

static const char *ta_base;    /* FB_TEST_PG */
static char ta_tpl[64];
static int ta_seq;
static char ta_made[32][64];
static int ta_n_made;

#define CUTOFF_MS 1704067200000LL /* 2024-01-01 00:00 UTC */

static PGconn *ta_connect(const char *dbname) { return tap_pg_connect(ta_base, dbname); }

static int ta_exec(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok) printf("# SQL failed: %s\n# %s\n", PQerrorMessage(c), sql);
    PQclear(r);
    return ok;
}

static long long ta_int(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    long long v = -999;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    else if (PQresultStatus(r) != PGRES_TUPLES_OK)
        printf("# SQL failed: %s\n# %s\n", PQerrorMessage(c), sql);
    PQclear(r);
    return v;
}

/* The first cell as a malloc'd string ("" for NULL). */
static char *ta_text(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    char *s = strdup(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "<error>");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) printf("# SQL failed: %s\n# %s\n", PQerrorMessage(c), sql);
    PQclear(r);
    return s;
}

static void ta_make_template(void) {
    const char *src = getenv("FB_SOURCE_DIR");
    const char *bin = getenv("FB_PG_BIN");
    char cmd[4096];
    snprintf(ta_tpl, sizeof ta_tpl, "fbh4_tpl_%d", (int)getpid());
    PGconn *adm = ta_connect("postgres");
    snprintf(cmd, sizeof cmd, "DROP DATABASE IF EXISTS %s", ta_tpl);
    ta_exec(adm, cmd);
    snprintf(cmd, sizeof cmd, "CREATE DATABASE %s", ta_tpl);
    ta_exec(adm, cmd);
    PQfinish(adm);
    snprintf(cmd, sizeof cmd,
             "%s/psql -X -q -v ON_ERROR_STOP=1 -d '%s dbname=%s' -f %s/tests/fixtures/fusion/fusion_prod_schema_pg15.sql "
             ">/dev/null && %s/psql -X -q -v ON_ERROR_STOP=1 -d '%s dbname=%s' -f %s/schemas/sql/backup_archive.sql",
             bin ? bin : "/usr/lib/postgresql/15/bin", ta_base, ta_tpl, src ? src : ".",
             bin ? bin : "/usr/lib/postgresql/15/bin", ta_base, ta_tpl, src ? src : ".");
    if (system(cmd) != 0) {
        printf("not ok - could not load the Fusion schema into the template database (%s)\n", cmd);
        exit(1);
    }
}

/* A new database from the template, with two users and a content type; returns its name (static storage). */
static const char *ta_newdb(void) {
    char sql[256];
    char *name = ta_made[ta_n_made++];
    snprintf(name, 64, "fbh4_%d_%d", (int)getpid(), ++ta_seq);
    PGconn *adm = ta_connect("postgres");
    snprintf(sql, sizeof sql, "CREATE DATABASE %s TEMPLATE %s", name, ta_tpl);
    ta_exec(adm, sql);
    PQfinish(adm);
    PGconn *c = ta_connect(name);
    ta_exec(c, "INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name, email, is_staff, "
               "is_active, date_joined) VALUES (1, 'x', false, 'u1', '', '', '', false, true, now()), "
               "(2, 'x', false, 'u2', '', '', '', false, true, now());"
               "INSERT INTO django_content_type (id, app_label, model) VALUES (1, 'notifications', 'notification')");
    PQfinish(c);
    return name;
}

static void ta_dropdbs(void) {
    PGconn *adm = ta_connect("postgres");
    char sql[256];
    for (int i = 0; i < ta_n_made; i++) {
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", ta_made[i]);
        ta_exec(adm, sql);
    }
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", ta_tpl);
    ta_exec(adm, sql);
    PQfinish(adm);
}

/* n notifications, the first n_old of them due (2020), the rest new. Values exercise quoting and NULLs. */
static void ta_seed_notifications(PGconn *c, int n, int n_old) {
    char sql[2048];
    snprintf(sql, sizeof sql,
             "INSERT INTO notifications_notification (level, unread, actor_object_id, verb, description, "
             "target_object_id, action_object_object_id, timestamp, public, action_object_content_type_id, "
             "actor_content_type_id, recipient_id, target_content_type_id, deleted, emailed, data) "
             "SELECT 'info', g %% 2 = 0, g::text, 'verb ' || g, CASE WHEN g %% 3 = 0 THEN NULL ELSE "
             "E'desc \\\\ \"q\" '' ü ' || g END, NULL, NULL, CASE WHEN g <= %d THEN timestamptz "
             "'2020-01-01 10:00:00.123456+05:30' + g * interval '1 minute' ELSE now() END, true, NULL, 1, "
             "1 + g %% 2, NULL, false, false, '{\"k\": ' || g || '}' FROM generate_series(1, %d) g",
             n_old, n);
    CHECK(ta_exec(c, sql));
}

typedef struct ta_job {
    ev_event ev;
    fb_config cfg;
    job_ctx ctx;
    job_result res;
    fb_err err;
    fb_flag abort_flag;
    int abort_after_batches;
} ta_job;

static void ta_progress(void *opaque, const job_result *so_far) {
    ta_job *j = opaque;
    if (j->abort_after_batches && job_result_get(so_far, "batches") >= j->abort_after_batches) j->abort_flag = 1;
}

static void ta_job_init(ta_job *j, const char *db, const char *module, const char *model, const char *table,
                        const char *pk, const char *ts, int64_t batch) {
    static char ci[1024];
    memset(j, 0, sizeof *j);
    fb_err e;
    fb_config_init(&j->cfg, &e);
    snprintf(ci, sizeof ci, "%s dbname=%s", ta_base, db);
    free(j->cfg.pg);
    j->cfg.pg = strdup(ci);
    j->cfg.lock_timeout_ms = 2000;
    j->cfg.batch_pause_ms = 0;
    /* The test's own connections would look like a live load (smaller batches, pauses): the cases count batches of
     * batch_size; test_throttle_follows_live_load turns the live throttle on. */
    j->cfg.archive_live_window_ms = 0;
    j->ev.v = 1;
    j->ev.type = EV_ARCHIVE_DUE;
    snprintf(j->ev.job_id, sizeof j->ev.job_id, "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f");
    j->ev.attempt = 1;
    ev_archive_due *a = &j->ev.u.archive;
    a->policy_id = 1;
    a->module = module;
    a->model_name = model;
    a->table.schema = "public";
    a->table.name = table;
    a->pk_column = pk;
    a->timestamp_column = ts;
    a->cutoff = CUTOFF_MS;
    a->batch_size = batch;
    a->archived_by.has = 1;
    a->archived_by.v = 1;
    a->has_relations = 1; /* with an empty list unless a case sets relations */
    j->ctx.cfg = &j->cfg;
    j->ctx.ev = &j->ev;
    j->ctx.worker_name = "test";
    j->ctx.abort = &j->abort_flag;
    j->ctx.progress = ta_progress;
    j->ctx.progress_opaque = j;
}

/* The ArchivePolicy Django would hold for j's request (job_authority.h): same id, model, table and keys, as many
 * archive_after_days as the cutoff lies in the past, and delete_after_days 0 when the request purges. */
static void ta_authorise(ta_job *j) {
    const ev_archive_due *a = &j->ev.u.archive;
    char id[32], after[32];
    snprintf(id, sizeof id, "%lld", (long long)a->policy_id);
    long long days = (fb_now_ms() - a->cutoff) / 86400000LL;
    snprintf(after, sizeof after, "%lld", days > 0 ? days : 0);
    const char *p[9] = {id, a->module, a->model_name, a->timestamp_column, after,
                        a->purge_before.has ? "0" : NULL, a->table.schema, a->table.name, a->pk_column};
    PGconn *c = PQconnectdb(j->cfg.pg);
    PGresult *r = PQexecParams(c, "DELETE FROM backup_archive_archivepolicy WHERE id = $1::bigint OR (module = $2 "
                               "AND model_name = $3)", 3, NULL, p, NULL, NULL, 0);
    CHECKF(PQresultStatus(r) == PGRES_COMMAND_OK, "policy delete: %s", PQerrorMessage(c));
    PQclear(r);
    r = PQexecParams(c, "INSERT INTO backup_archive_archivepolicy (id, module, model_name, timestamp_column, "
                     "archive_after_days, delete_after_days, batch_size, max_rows_per_run, schedule, is_active, "
                     "db_schema, db_table, pk_column) VALUES ($1::bigint, $2, $3, $4, $5::int, $6::int, 100, NULL, '', "
                     "true, $7, $8, $9)", 9, NULL, p, NULL, NULL, 0);
    CHECKF(PQresultStatus(r) == PGRES_COMMAND_OK, "policy insert: %s", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

static fb_code ta_run(ta_job *j) {
    ta_authorise(j);
    job_result_init(&j->res);
    fb_err_clear(&j->err);
    fb_code rc = job_archive_run(&j->ctx, &j->res, &j->err);
    if (rc) printf("# job returned %d: %s\n", rc, j->err.msg);
    return rc;
}

static void ta_job_free(ta_job *j) { fb_config_free(&j->cfg); }

#define STAT(j, k) job_result_get(&(j)->res, k)

static ev_relation ta_rel(const char *table, const char *column, const char *references, ev_on_delete d,
                          const char *module, const char *model) {
    ev_relation r;
    memset(&r, 0, sizeof r);
    r.table.schema = "public";
    r.table.name = table;
    r.column = column;
    r.references.schema = "public";
    r.references.name = references;
    r.on_delete = d;
    r.module = module;
    r.model_name = model;
    return r;
}

/* ---------------------------------------------------------------------------------------------------------- */

static void test_notifications_batches_idempotent_and_unarchive(void) {
    const char *db = ta_newdb();
    PGconn *c = ta_connect(db);
    ta_seed_notifications(c, 2500, 2000);
    char *before = ta_text(c, "SELECT string_agg(t::text, E'\\n' ORDER BY id) FROM notifications_notification t "
                              "WHERE timestamp < '2024-01-01'");
    ta_job j;
    ta_job_init(&j, db, "notifications", "Notification", "notifications_notification", "id", "timestamp", 300);
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "archived"), 2000);
    CHECK_EQ_INT(STAT(&j, "batches"), 7);
    CHECK_EQ_INT(STAT(&j, "total_due"), 2000);
    CHECK_EQ_INT(STAT(&j, "cascaded"), 0);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM notifications_notification"), 500);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord WHERE module = 'notifications' AND "
                           "model_name = 'Notification' AND archived_by_id = 1 AND "
                           "job_id = '6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f'"),
                 2000);
    char *env = ta_text(c, "SELECT (data::json)->'table'::text || ' ' || (data::json->>'pk') FROM "
                           "backup_archive_archivedrecord WHERE original_id = '7'");
    CHECK_EQ_STR(env, "[\"public\", \"notifications_notification\"] id");
    free(env);

    /* Redelivery: nothing moves twice. */
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "archived"), 0);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord"), 2000);

    /* Unarchive two by id, then the rest by time: the text form equals the original. */
    job_unarchive_opts o = {0};
    job_unarchive_result ur;
    fb_err err;
    const char *ids[] = {"5", "6", "999999"};
    o.conninfo = j.cfg.pg;
    o.module = "notifications";
    o.model_name = "Notification";
    o.ids = ids;
    o.n_ids = 3;
    o.lock_timeout_ms = 2000;
    o.dry_run = 1;
    CHECK_EQ_INT(job_unarchive_run(&o, &ur, &err), FB_OK);
    CHECK_EQ_INT(ur.restored, 2);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM notifications_notification"), 500); /* dry: nothing changed */
    job_unarchive_result_free(&ur);
    o.dry_run = 0;
    CHECK_EQ_INT(job_unarchive_run(&o, &ur, &err), FB_OK);
    CHECK_EQ_INT(ur.restored, 2);
    CHECK_EQ_INT(ur.not_found, 1);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM notifications_notification"), 502);
    job_unarchive_result_free(&ur);
    o.n_ids = 0;
    o.archived_before = "infinity";
    CHECK_EQ_INT(job_unarchive_run(&o, &ur, &err), FB_OK);
    CHECK_EQ_INT(ur.restored, 1998);
    CHECK_EQ_INT(ur.n_conflicts, 0);
    job_unarchive_result_free(&ur);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord"), 0);
    char *after = ta_text(c, "SELECT string_agg(t::text, E'\\n' ORDER BY id) FROM notifications_notification t "
                             "WHERE timestamp < '2024-01-01'");
    CHECKF(strcmp(before, after) == 0, "restored rows differ from the originals:\n%.300s\nvs\n%.300s", before, after);
    free(before);
    free(after);

    /* Archive once more, then re-create one row by hand: a conflict leaves it live, never overwrites. */
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "archived"), 2000);
    CHECK(ta_exec(c, "INSERT INTO notifications_notification (id, level, unread, actor_object_id, verb, timestamp, "
                     "public, actor_content_type_id, recipient_id, deleted, emailed) VALUES (42, 'x', true, 'a', "
                     "'re-created', '2019-01-01', true, 1, 1, false, false)"));
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "archived"), 0);
    CHECK_EQ_INT(STAT(&j, "skipped_conflict"), 1);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM notifications_notification WHERE id = 42"), 1);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord WHERE original_id = '42' AND "
                           "data LIKE '%re-created%'"), 0);
    /* Unarchive of 42 now meets the live row: reported, not overwritten. */
    const char *id42[] = {"42"};
    o.ids = id42;
    o.n_ids = 1;
    o.archived_before = NULL;
    CHECK_EQ_INT(job_unarchive_run(&o, &ur, &err), FB_OK);
    CHECK_EQ_INT(ur.restored, 0);
    CHECK_EQ_INT(ur.n_conflicts, 1);
    CHECK(ur.n_conflicts == 1 && strcmp(ur.conflicts[0], "42") == 0);
    job_unarchive_result_free(&ur);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM notifications_notification WHERE id = 42 AND verb = 're-created'"), 1);

    /* Purge: everything of this model archived before now goes (the policy allows it: delete_after_days 0); dry
     * run counts only. */
    j.ev.u.archive.purge_before.has = 1;
    j.ev.u.archive.purge_before.v = fb_now_ms();
    j.ev.u.archive.dry_run = 1;
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "purged"), 2000);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord"), 2000);
    j.ev.u.archive.dry_run = 0;
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "purged"), 2000);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord"), 0);
    ta_job_free(&j);
    PQfinish(c);
}

static void ta_seed_leave(PGconn *c) {
    CHECK(ta_exec(c,
                  "INSERT INTO leave_leave (id, purpose, status, timestamp, extra_info, applicant_id) "
                  "SELECT g, 'purpose ' || g, 'accepted', CASE WHEN g <= 10 THEN timestamptz '2021-03-04 05:06:07+00' "
                  "ELSE now() END, NULL, 1 FROM generate_series(1, 12) g;"
                  "INSERT INTO leave_leavesegment (document, start_date, start_half, end_date, end_half, address, "
                  "leave_id, leave_type_id) SELECT 'doc', date '2021-03-01' + g, false, date '2021-03-02' + g, true, "
                  "NULL, (g + 1) / 2, NULL FROM generate_series(1, 24) g;"
                  "INSERT INTO leave_replacementsegment (replacement_type, start_date, end_date, status, remark, "
                  "leave_id, replacer_id) SELECT 'academic', '2021-03-01', '2021-03-05', 'pending', NULL, g, 2 "
                  "FROM generate_series(1, 12) g;"));
    /* leave 3 is also referenced from leave_leaverequest, which the relations below do not list. */
    CHECK(ta_exec(c, "SET session_replication_role = replica; INSERT INTO leave_leaverequest (id, remark, "
                     "permission, status, leave_id, requested_from_id) VALUES (1, NULL, 'x', 'pending', 3, 1); "
                     "SET session_replication_role = origin"));
}

static void test_leave_cascade(void) {
    const char *db = ta_newdb();
    PGconn *c = ta_connect(db);
    ta_seed_leave(c);
    char *before = ta_text(c, "SELECT (SELECT string_agg(t::text, ',' ORDER BY id) FROM leave_leave t) || '|' || "
                              "(SELECT string_agg(t::text, ',' ORDER BY id) FROM leave_leavesegment t) || '|' || "
                              "(SELECT string_agg(t::text, ',' ORDER BY id) FROM leave_replacementsegment t)");
    ev_relation rels[2] = {
        ta_rel("leave_leavesegment", "leave_id", "leave_leave", EV_CASCADE, NULL, "LeaveSegment"),
        ta_rel("leave_replacementsegment", "leave_id", "leave_leave", EV_CASCADE, "leave", "ReplacementSegment"),
    };
    ta_job j;
    ta_job_init(&j, db, "leave", "Leave", "leave_leave", "id", "timestamp", 4);
    j.ev.u.archive.relations = rels;
    j.ev.u.archive.n_relations = 2;

    j.ev.u.archive.dry_run = 1;
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "archived"), 9);
    CHECK_EQ_INT(STAT(&j, "cascaded"), 27);
    CHECK_EQ_INT(STAT(&j, "skipped_referenced"), 1);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM leave_leave"), 12);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord"), 0);

    j.ev.u.archive.dry_run = 0;
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "archived"), 9);
    CHECK_EQ_INT(STAT(&j, "cascaded"), 27);
    CHECK_EQ_INT(STAT(&j, "skipped_referenced"), 1);
    CHECK_EQ_INT(STAT(&j, "skipped_protected"), 0);
    CHECK_EQ_INT(STAT(&j, "batches"), 3);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM leave_leave"), 3);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM leave_leavesegment"), 6);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM leave_replacementsegment"), 3);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM leave_leave WHERE id = 3"), 1);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord WHERE module = 'leave' AND "
                           "model_name = 'LeaveSegment'"), 18);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord WHERE module = 'leave' AND "
                           "model_name = 'ReplacementSegment'"), 9);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord WHERE model_name = 'Leave'"), 9);

    /* Unarchive the parents first, then the children: everything is back as it was. */
    static const char *const models[] = {"Leave", "LeaveSegment", "ReplacementSegment"};
    for (int i = 0; i < 3; i++) {
        job_unarchive_opts o = {0};
        job_unarchive_result ur;
        fb_err err;
        o.conninfo = j.cfg.pg;
        o.module = "leave";
        o.model_name = models[i];
        o.archived_before = "infinity";
        CHECKF(job_unarchive_run(&o, &ur, &err) == FB_OK, "unarchive %s: %s", models[i], err.msg);
        job_unarchive_result_free(&ur);
    }
    char *after = ta_text(c, "SELECT (SELECT string_agg(t::text, ',' ORDER BY id) FROM leave_leave t) || '|' || "
                             "(SELECT string_agg(t::text, ',' ORDER BY id) FROM leave_leavesegment t) || '|' || "
                             "(SELECT string_agg(t::text, ',' ORDER BY id) FROM leave_replacementsegment t)");
    CHECKF(strcmp(before, after) == 0, "leave tables differ after unarchive:\n%.300s\nvs\n%.300s", before, after);
    free(before);
    free(after);
    ta_job_free(&j);
    PQfinish(c);
}

static void test_no_relations_keeps_referenced_rows(void) {
    const char *db = ta_newdb();
    PGconn *c = ta_connect(db);
    ta_seed_leave(c);
    CHECK(ta_exec(c, "DELETE FROM leave_leavesegment WHERE leave_id IN (1, 2); "
                     "DELETE FROM leave_replacementsegment WHERE leave_id = 1"));
    ta_job j;
    /* Batches of 4 over ids 1..10: the last batch is {9, 10}, whose last key must be 10 by the key's own order
     * (not "9" by text order), or row 10 would be examined twice. */
    ta_job_init(&j, db, "leave", "Leave", "leave_leave", "id", "timestamp", 4);
    j.ev.u.archive.has_relations = 0;
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "batches"), 3);
    CHECK_EQ_INT(STAT(&j, "done_rows"), 10);
    CHECK_EQ_INT(STAT(&j, "archived"), 1); /* only leave 1 has no referencing row at all */
    CHECK_EQ_INT(STAT(&j, "skipped_referenced"), 9);
    CHECK_EQ_INT(STAT(&j, "cascaded"), 0);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM leave_leave"), 11);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM leave_leave WHERE id = 1"), 0);
    ta_job_free(&j);
    PQfinish(c);
}

static void test_protect_and_do_nothing_on_the_archived_table(void) {
    const char *db = ta_newdb();
    PGconn *c = ta_connect(db);
    ta_seed_leave(c); /* every leave has a replacement segment; leave 3 also a leave request */
    ev_relation rels[3] = {
        ta_rel("leave_leavesegment", "leave_id", "leave_leave", EV_CASCADE, NULL, "LeaveSegment"),
        ta_rel("leave_replacementsegment", "leave_id", "leave_leave", EV_DO_NOTHING, NULL, "ReplacementSegment"),
        ta_rel("leave_leaverequest", "leave_id", "leave_leave", EV_PROTECT, NULL, "LeaveRequest"),
    };
    rels[2].to_column = "id";
    ta_job j;
    ta_job_init(&j, db, "leave", "Leave", "leave_leave", "id", "timestamp", 3);
    j.ev.u.archive.relations = rels;
    j.ev.u.archive.n_relations = 3;
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "archived"), 0);
    CHECK_EQ_INT(STAT(&j, "skipped_protected"), 10);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM leave_leavesegment"), 24);
    /* Without their live DO_NOTHING references, leaves 1, 2, 4, 5 go; 3 stays PROTECTed by its request. */
    CHECK(ta_exec(c, "DELETE FROM leave_replacementsegment WHERE leave_id <= 5"));
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "archived"), 4);
    CHECK_EQ_INT(STAT(&j, "cascaded"), 8);
    CHECK_EQ_INT(STAT(&j, "skipped_protected"), 6);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM leave_leave WHERE id IN (3, 6, 7, 8, 9, 10, 11, 12)"), 8);
    ta_job_free(&j);
    PQfinish(c);
}

static void test_file_tracking_protect_set_null(void) {
    const char *db = ta_newdb();
    PGconn *c = ta_connect(db);
    CHECK(ta_exec(c,
                  "SET session_replication_role = replica;"
                  "INSERT INTO \"File\" (id, subject, description, upload_date, upload_file, is_read, src_module, "
                  "src_object_id, \"file_extra_JSON\", designation_id, uploader_id) SELECT g, 'subject ' || g, NULL, "
                  "CASE WHEN g <= 6 THEN timestamptz '2022-02-02 02:02:02+00' ELSE now() END, 'f.pdf', false, "
                  "'filetracking', NULL, '{\"n\": [1, 2.50, null], \"s\": \"x\"}', NULL, 'roll' || g "
                  "FROM generate_series(1, 8) g;"
                  "INSERT INTO \"Tracking\" (id, receive_date, forward_date, remarks, upload_file, is_read, "
                  "\"tracking_extra_JSON\", current_design_id, current_id_id, file_id_id, receive_design_id, "
                  "receiver_id_id) VALUES (1, now(), now(), 'r', '', false, NULL, NULL, 'roll1', 1, NULL, 1), "
                  "(2, now(), now(), 'r', '', false, NULL, NULL, 'roll1', 1, NULL, 1), "
                  "(3, now(), now(), 'r', '', false, NULL, NULL, 'roll2', 2, NULL, 1);"
                  /* Tracking 3 (of File 2) is referenced by a Registrar_response: PROTECT blocks File 2. */
                  "INSERT INTO \"Registrar_response\" (id, remark, status, track_id_id) VALUES (1, 'ok', 'x', 3);"
                  /* File 3 is referenced by a requisition (SET_NULL below) and File 4 by an IndentFile (unlisted). */
                  "INSERT INTO office_module_requisitions (id, req_date, title, department, building, description, "
                  "tag, assign_file_id, userid_id) VALUES (1, now(), 't', 'd', 'b', 'x', 0, 3, 'roll1');"
                  "INSERT INTO \"IndentFile\" (file_info_id, item_name, quantity, present_stock, purpose, "
                  "specification, item_type, item_subtype, nature, indigenous, replaced, budgetary_head, "
                  "expected_delivery, sources_of_supply, head_approval, director_approval, financial_approval, "
                  "purchased) VALUES (4, 'i', 1, 0, 'p', 's', 't', 'st', true, true, false, 'b', '2022-01-01', 's', "
                  "false, false, false, false);"
                  "SET session_replication_role = origin"));
    ev_relation rels[3] = {
        ta_rel("Tracking", "file_id_id", "File", EV_CASCADE, "filetracking", "Tracking"),
        ta_rel("Registrar_response", "track_id_id", "Tracking", EV_PROTECT, "filetracking", "Registrar_response"),
        ta_rel("office_module_requisitions", "assign_file_id", "File", EV_SET_NULL, "office_module", "Requisitions"),
    };
    ta_job j;
    ta_job_init(&j, db, "filetracking", "File", "File", "id", "upload_date", 2);
    j.ev.u.archive.relations = rels;
    j.ev.u.archive.n_relations = 3;
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "archived"), 4);          /* Files 1, 3, 5, 6 */
    CHECK_EQ_INT(STAT(&j, "cascaded"), 2);          /* Trackings 1, 2 */
    CHECK_EQ_INT(STAT(&j, "skipped_protected"), 1); /* File 2 */
    CHECK_EQ_INT(STAT(&j, "skipped_referenced"), 1);/* File 4 */
    CHECK_EQ_INT(STAT(&j, "nulled"), 1);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM \"File\" WHERE id IN (2, 4, 7, 8)"), 4);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM \"File\""), 4);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM \"Tracking\""), 1);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM office_module_requisitions WHERE assign_file_id IS NULL"), 1);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord WHERE model_name = 'Tracking' AND "
                           "data LIKE '%\"table\" : [\"public\", \"Tracking\"]%'"), 2);
    char *js = ta_text(c, "SELECT ((data::json)->'row'->>'file_extra_JSON') FROM backup_archive_archivedrecord "
                          "WHERE model_name = 'File' AND original_id = '1'");
    CHECK_EQ_STR(js, "{\"n\": [1, 2.50, null], \"s\": \"x\"}");
    free(js);
    ta_job_free(&j);
    PQfinish(c);
}

static void test_varchar_pk_session(void) {
    const char *db = ta_newdb();
    PGconn *c = ta_connect(db);
    CHECK(ta_exec(c, "INSERT INTO django_session (session_key, session_data, expire_date) SELECT md5(g::text), "
                     "repeat('d', g), CASE WHEN g % 4 = 0 THEN now() ELSE timestamptz '2023-05-05' END "
                     "FROM generate_series(1, 400) g"));
    char *before = ta_text(c, "SELECT string_agg(t::text, ',' ORDER BY session_key) FROM django_session t "
                              "WHERE expire_date < '2024-01-01'");
    ta_job j;
    ta_job_init(&j, db, "sessions", "Session", "django_session", "session_key", "expire_date", 64);
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "archived"), 300);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM django_session"), 100);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord a JOIN generate_series(1, 400) g "
                           "ON a.original_id = md5(g::text)"), 300);
    /* max_rows bounds one job. */
    job_unarchive_opts o = {0};
    job_unarchive_result ur;
    fb_err err;
    o.conninfo = j.cfg.pg;
    o.module = "sessions";
    o.model_name = "Session";
    o.archived_before = "infinity";
    CHECK_EQ_INT(job_unarchive_run(&o, &ur, &err), FB_OK);
    CHECK_EQ_INT(ur.restored, 300);
    job_unarchive_result_free(&ur);
    char *after = ta_text(c, "SELECT string_agg(t::text, ',' ORDER BY session_key) FROM django_session t "
                             "WHERE expire_date < '2024-01-01'");
    CHECK(strcmp(before, after) == 0);
    free(before);
    free(after);
    j.ev.u.archive.max_rows.has = 1;
    j.ev.u.archive.max_rows.v = 100;
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "archived"), 100);
    CHECK_EQ_INT(STAT(&j, "batches"), 2);
    ta_job_free(&j);
    PQfinish(c);
}

static void test_missing_names_are_notfound(void) {
    const char *db = ta_newdb();
    ta_job j;
    ta_job_init(&j, db, "notifications", "Notification", "notifications_notification", "id", "created", 10);
    CHECK_EQ_INT(ta_run(&j), FB_ERR_NOTFOUND);
    CHECKF(strstr(j.err.msg, "\"created\"") && strstr(j.err.msg, "notifications_notification"), "message: %s",
           j.err.msg);
    j.ev.u.archive.timestamp_column = "timestamp";
    j.ev.u.archive.table.name = "Cpda Applications";
    CHECK_EQ_INT(ta_run(&j), FB_ERR_NOTFOUND);
    CHECKF(strstr(j.err.msg, "\"Cpda Applications\""), "message: %s", j.err.msg);
    j.ev.u.archive.table.name = "notifications_notification";
    j.ev.u.archive.pk_column = "verb";
    CHECK_EQ_INT(ta_run(&j), FB_ERR_INVALID); /* not unique */
    j.ev.u.archive.pk_column = "id";
    ev_relation bad = ta_rel("leave_leave", "no_such_column", "notifications_notification", EV_CASCADE, NULL, NULL);
    j.ev.u.archive.relations = &bad;
    j.ev.u.archive.n_relations = 1;
    CHECK_EQ_INT(ta_run(&j), FB_ERR_DENIED); /* a relation that is no foreign key is never applied */
    CHECKF(strstr(j.err.msg, "no_such_column") && strstr(j.err.msg, "not a foreign key"), "message: %s",
           j.err.msg);
    ta_job_free(&j);
}

/* A partitioned table: its partitions' rows share ctids ((0,1) is the first row of each), so a batch that named
 * rows by ctid alone on the parent would also delete rows of other partitions that are not due. Only the due
 * rows move, the other partition's rows all stay, and the job succeeds. */
static void test_partitioned_table_moves_only_due_rows(void) {
    const char *db = ta_newdb();
    PGconn *c = ta_connect(db);
    CHECK(ta_exec(c, "CREATE TABLE parted_log (id int PRIMARY KEY, created timestamptz NOT NULL, note text) "
                     "PARTITION BY RANGE (id); "
                     "CREATE TABLE parted_log_old PARTITION OF parted_log FOR VALUES FROM (1) TO (1001); "
                     "CREATE TABLE parted_log_new PARTITION OF parted_log FOR VALUES FROM (1001) TO (2001); "
                     "INSERT INTO parted_log SELECT g, timestamptz '2023-05-05', 'old ' || g FROM generate_series(1, 30) g; "
                     "INSERT INTO parted_log SELECT g, now(), 'new ' || g FROM generate_series(1001, 1030) g"));
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM parted_log_old o JOIN parted_log_new n ON o.ctid = n.ctid"), 30);
    ta_job j;
    ta_job_init(&j, db, "logs", "PartedLog", "parted_log", "id", "created", 8);
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "archived"), 30);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM parted_log_old"), 0);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM parted_log_new"), 30);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord WHERE module = 'logs' AND "
                           "original_id::int BETWEEN 1 AND 30"), 30);
    ta_job_free(&j);
    PQfinish(c);
}

/* Runs j as it stands against the policy authorised for `policy_of` (another request), so the two can differ. */
static fb_code ta_run_against(ta_job *j, ta_job *policy_of) {
    ta_authorise(policy_of);
    job_result_init(&j->res);
    fb_err_clear(&j->err);
    return job_archive_run(&j->ctx, &j->res, &j->err);
}

/* The database is the authority: forbidden tables, a policy that does not match, a cutoff or purge the policy
 * does not allow are FB_ERR_DENIED with a message naming what was refused, and no row moves. */
static void test_authority_refuses_and_changes_nothing(void) {
    const char *db = ta_newdb();
    PGconn *c = ta_connect(db);
    ta_seed_notifications(c, 50, 50);
    ta_job good, j;
    ta_job_init(&good, db, "notifications", "Notification", "notifications_notification", "id", "timestamp", 10);
    ta_job_init(&j, db, "notifications", "Notification", "notifications_notification", "id", "timestamp", 10);

    CHECK(job_authority_forbidden_table("pg_catalog", "pg_authid") != NULL);
    CHECK(job_authority_forbidden_table("information_schema", "tables") != NULL);
    CHECK(job_authority_forbidden_table("pg_toast", "pg_toast_1255") != NULL);
    CHECK(job_authority_forbidden_table("public", "backup_archive_archivedrecord") != NULL);
    CHECK(job_authority_forbidden_table("public", "leave_leave") == NULL);
    CHECK(job_authority_forbidden_table("pgx", "t") == NULL);

    j.ev.u.archive.table.schema = "pg_catalog";
    j.ev.u.archive.table.name = "pg_authid";
    CHECK_EQ_INT(ta_run(&j), FB_ERR_DENIED);
    CHECKF(strstr(j.err.msg, "pg_catalog.pg_authid") && strstr(j.err.msg, "system schema"), "message: %s", j.err.msg);
    j.ev.u.archive.table.schema = "public";
    j.ev.u.archive.table.name = JOB_ARCHIVE_TABLE;
    CHECK_EQ_INT(ta_run(&j), FB_ERR_DENIED);
    CHECKF(strstr(j.err.msg, "own tables"), "message: %s", j.err.msg);
    j.ev.u.archive.table.name = "notifications_notification";

    j.ev.u.archive.cutoff = fb_now_ms() + 86400000LL; /* tomorrow */
    CHECK_EQ_INT(ta_run(&j), FB_ERR_DENIED);
    CHECKF(strstr(j.err.msg, "cutoff"), "message: %s", j.err.msg);
    j.ev.u.archive.cutoff = CUTOFF_MS;

    j.ev.u.archive.timestamp_column = "created"; /* the policy says "timestamp" */
    CHECK_EQ_INT(ta_run_against(&j, &good), FB_ERR_DENIED);
    CHECKF(strstr(j.err.msg, "timestamp_column") && strstr(j.err.msg, "\"created\""), "message: %s", j.err.msg);
    j.ev.u.archive.timestamp_column = "timestamp";

    j.ev.u.archive.purge_before.has = 1; /* the policy has no delete_after_days */
    j.ev.u.archive.purge_before.v = CUTOFF_MS;
    CHECK_EQ_INT(ta_run_against(&j, &good), FB_ERR_DENIED);
    CHECKF(strstr(j.err.msg, "delete_after_days"), "message: %s", j.err.msg);
    j.ev.u.archive.purge_before.has = 0;

    j.ev.u.archive.policy_id = 999;
    CHECK_EQ_INT(ta_run_against(&j, &good), FB_ERR_DENIED);
    CHECKF(strstr(j.err.msg, "policy_id 999"), "message: %s", j.err.msg);
    j.ev.u.archive.policy_id = 1;

    CHECK(ta_exec(c, "UPDATE backup_archive_archivepolicy SET is_active = false"));
    job_result_init(&j.res);
    CHECK_EQ_INT(job_archive_run(&j.ctx, &j.res, &j.err), FB_ERR_DENIED);
    CHECKF(strstr(j.err.msg, "not active"), "message: %s", j.err.msg);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM notifications_notification"), 50);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord"), 0);
    CHECK_EQ_INT(ta_run(&good), FB_OK); /* the genuine request still runs */
    CHECK_EQ_INT(STAT(&good, "archived"), 50);
    ta_job_free(&good);
    ta_job_free(&j);
    PQfinish(c);
}

static void test_locks_retry_then_transient_and_abort(void) {
    const char *db = ta_newdb();
    PGconn *c = ta_connect(db);
    ta_seed_leave(c);
    PGconn *other = ta_connect(db);
    /* Another session holds a child row: the cascade cannot get its lock. */
    CHECK(ta_exec(other, "BEGIN; SELECT * FROM leave_leavesegment WHERE leave_id = 1 FOR UPDATE"));
    ev_relation rels[2] = {
        ta_rel("leave_leavesegment", "leave_id", "leave_leave", EV_CASCADE, NULL, "LeaveSegment"),
        ta_rel("leave_replacementsegment", "leave_id", "leave_leave", EV_CASCADE, NULL, "ReplacementSegment"),
    };
    ta_job j;
    ta_job_init(&j, db, "leave", "Leave", "leave_leave", "id", "timestamp", 100);
    j.ev.u.archive.relations = rels;
    j.ev.u.archive.n_relations = 2;
    j.cfg.lock_timeout_ms = 50;
    CHECK_EQ_INT(ta_run(&j), FB_ERR_TRANSIENT);
    CHECK_EQ_INT(STAT(&j, "lock_retries"), JOB_ARCHIVE_LOCK_RETRIES);
    CHECKF(strstr(j.err.msg, "55P03") != NULL, "message: %s", j.err.msg);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM leave_leave"), 12);
    CHECK(ta_exec(other, "ROLLBACK"));
    /* A locked parent row is skipped (SKIP LOCKED), the others move. */
    CHECK(ta_exec(other, "BEGIN; SELECT * FROM leave_leave WHERE id = 2 FOR UPDATE"));
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "archived"), 8);
    CHECK(ta_exec(other, "ROLLBACK"));
    PQfinish(other);
    /* Abort after the first batch: that batch stays, the job says ABORTED. */
    ta_seed_notifications(c, 1000, 1000);
    ta_job k;
    ta_job_init(&k, db, "notifications", "Notification", "notifications_notification", "id", "timestamp", 100);
    k.abort_after_batches = 1;
    CHECK_EQ_INT(ta_run(&k), FB_ERR_ABORTED);
    CHECK_EQ_INT(STAT(&k, "batches"), 1);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM notifications_notification"), 900);
    ta_job_free(&j);
    ta_job_free(&k);
    PQfinish(c);
}

/* A table nothing references is archived with the fast statement (no row lock before the DELETE, no conflict
 * probe). A due row another session holds makes its batch fail after JA_FAST_LOCK_MS, not after lock_timeout;
 * the job then goes on with the statement that skips held rows (SKIP LOCKED), so the held row stays, every other
 * row moves, and no lock retry is spent. The conflict case (a re-created row) is in
 * test_notifications_batches_idempotent_and_unarchive. */
static void test_fast_statement_skips_held_rows_by_falling_back(void) {
    const char *db = ta_newdb();
    PGconn *c = ta_connect(db);
    ta_seed_notifications(c, 3000, 3000);
    PGconn *other = ta_connect(db);
    CHECK(ta_exec(other, "BEGIN; SELECT * FROM notifications_notification WHERE id IN (10, 2600) FOR UPDATE"));
    ta_job j;
    ta_job_init(&j, db, "notifications", "Notification", "notifications_notification", "id", "timestamp", 500);
    j.cfg.lock_timeout_ms = 60000; /* a batch that waited for the held row this long would show in duration_ms */
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "archived"), 2998);
    CHECK_EQ_INT(STAT(&j, "batches"), 6);
    CHECK_EQ_INT(STAT(&j, "lock_retries"), 0);
    CHECKF(STAT(&j, "duration_ms") < 30000, "the job took %lld ms: it waited for the held row",
           (long long)STAT(&j, "duration_ms"));
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM notifications_notification"), 2);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord WHERE original_id IN ('10', '2600')"),
                 0);
    CHECK_EQ_INT(ta_int(c, "SELECT count(DISTINCT original_id) FROM backup_archive_archivedrecord"), 2998);
    CHECK(ta_exec(other, "ROLLBACK"));
    PQfinish(other);
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "archived"), 2);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM notifications_notification"), 0);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord"), 3000);
    ta_job_free(&j);
    PQfinish(c);
}

/* Two jobs archive the same table at the same moment (a redelivered request beside the first, or two workers):
 * each takes only rows the other does not hold, neither waits for the other's locks (no lock retry, no failure),
 * and every row ends in ArchivedRecord exactly once, by one of the two jobs. */
static void test_two_jobs_on_one_table(void) {
    const int N = 40000;
    const char *db = ta_newdb();
    PGconn *c = ta_connect(db);
    ta_seed_notifications(c, N, N);
    ta_job policy;
    ta_job_init(&policy, db, "notifications", "Notification", "notifications_notification", "id", "timestamp", 200);
    ta_authorise(&policy); /* the children share it: neither rewrites the policy row while the other runs */
    ta_job_free(&policy);
    int go[2];
    CHECK(pipe(go) == 0);
    fflush(stdout);
    pid_t pid[2];
    for (int w = 0; w < 2; w++) {
        if ((pid[w] = fork()) == 0) {
            close(go[1]);
            ta_job j;
            ta_job_init(&j, db, "notifications", "Notification", "notifications_notification", "id", "timestamp", 200);
            snprintf(j.ev.job_id, sizeof j.ev.job_id, "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5%d", w);
            j.cfg.lock_timeout_ms = 60000;
            job_result_init(&j.res);
            char b;
            if (read(go[0], &b, 1) < 0) _exit(3); /* both start when the parent closes the pipe */
            fb_code rc = job_archive_run(&j.ctx, &j.res, &j.err);
            if (rc != FB_OK) printf("# job %d returned %d: %s\n", w, rc, j.err.msg);
            _exit(rc != FB_OK ? 1 : STAT(&j, "lock_retries") != 0 ? 2 : 0);
        }
    }
    close(go[0]);
    close(go[1]);
    for (int w = 0; w < 2; w++) {
        int status = 0;
        waitpid(pid[w], &status, 0);
        CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "job %d: exit %d (1: failed, 2: lock retries, i.e. it waited for the other's locks)", w,
               WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM notifications_notification"), 0);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord"), N);
    CHECK_EQ_INT(ta_int(c, "SELECT count(DISTINCT original_id) FROM backup_archive_archivedrecord"), N);
    printf("# rows archived by each job: %lld and %lld\n",
           ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord WHERE job_id::text LIKE '%0'"),
           ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord WHERE job_id::text LIKE '%1'"));
    PQfinish(c);
}

/* A child process runs a large archival; we SIGKILL it mid-way, check the invariant, re-run, check again. */
static void test_sigkill_mid_archival(void) {
    const int N = 200000;
    const char *db = ta_newdb();
    PGconn *c = ta_connect(db);
    ta_seed_notifications(c, N, N);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        ta_job j;
        ta_job_init(&j, db, "notifications", "Notification", "notifications_notification", "id", "timestamp", 500);
        ta_authorise(&j);
        job_result_init(&j.res);
        job_archive_run(&j.ctx, &j.res, &j.err);
        _exit(0);
    }
    long long archived = 0;
    for (int i = 0; i < 600 && archived < N / 4; i++) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
        archived = ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord");
    }
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    /* The server notices the dead client and rolls its open batch back; wait until its backend is gone. */
    for (int i = 0; i < 100 && ta_int(c, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                                         "'fusion-backup archive%' AND datname = current_database()") > 0; i++) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    long long live = ta_int(c, "SELECT count(*) FROM notifications_notification");
    long long arch = ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord");
    CHECKF(live + arch == N && arch > 0 && live > 0, "after SIGKILL: %lld live + %lld archived != %d (or not mid-way)",
           live, arch, N);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM notifications_notification n JOIN backup_archive_archivedrecord a "
                           "ON a.original_id = n.id::text"), 0);
    ta_job j;
    ta_job_init(&j, db, "notifications", "Notification", "notifications_notification", "id", "timestamp", 5000);
    CHECK_EQ_INT(ta_run(&j), FB_OK);
    CHECK_EQ_INT(STAT(&j, "archived"), live);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM notifications_notification"), 0);
    CHECK_EQ_INT(ta_int(c, "SELECT count(DISTINCT original_id) FROM backup_archive_archivedrecord"), N);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord"), N);
    ta_job_free(&j);
    PQfinish(c);
}

/* The batch statement's plan as EXPLAIN (COSTS OFF) prints it: nodes, tables, indexes and conditions, no
 * estimates. malloc'd. */
static char *ta_batch_plan(PGconn *c, const char *sql, const ja_params *q) {
    size_t n = strlen(sql) + 32;
    char *ex = malloc(n);
    snprintf(ex, n, "EXPLAIN (COSTS OFF) %s", sql);
    PGresult *r = PQexecParams(c, ex, (int)q->n, q->types, q->prm, NULL, NULL, 0);
    free(ex);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        printf("# EXPLAIN failed: %s", PQerrorMessage(c));
        PQclear(r);
        return strdup("<error>");
    }
    size_t len = 1;
    for (int i = 0; i < PQntuples(r); i++) len += strlen(PQgetvalue(r, i, 0)) + 1;
    char *out = malloc(len), *o = out;
    for (int i = 0; i < PQntuples(r); i++) o += sprintf(o, "%s\n", PQgetvalue(r, i, 0));
    *o = 0;
    PQclear(r);
    return out;
}

/* Issue 17: with statistics taken while ArchivedRecord was small, the conflict check was planned as a hashed
 * SubPlan reading every ArchivedRecord of the model in every batch (a job's cost quadratic in its rows, and fast
 * or slow depending on when autovacuum had analysed the table). The batch statement (both variants) must be
 * planned the same, with one index probe per row, whether ArchivedRecord is empty or large, never analysed,
 * freshly analysed, or analysed while empty and large since. */
static void test_batch_plan_does_not_depend_on_archivedrecord_statistics(void) {
    const char *db = ta_newdb();
    PGconn *c = ta_connect(db);
    ta_seed_notifications(c, 3000, 2000);
    CHECK(ta_exec(c, "VACUUM ANALYZE notifications_notification"));
    /* Autovacuum must not analyse behind the test's back: the states below are the test's. */
    CHECK(ta_exec(c, "ALTER TABLE backup_archive_archivedrecord SET (autovacuum_enabled = false)"));
    ta_job j;
    ta_job_init(&j, db, "notifications", "Notification", "notifications_notification", "id", "timestamp", 500);
    fb_err err;
    ja_plan plan = {0};
    fb_sbuf first = {0}, next = {0}, fast_first = {0}, fast_next = {0};
    ja_params q = {0};
    CHECK_EQ_INT(ja_session_setup(c, 2000, 60000, &err), FB_OK);
    CHECK_EQ_INT(ja_plan_build(c, &j.ev, &plan, &err), FB_OK);
    CHECK_EQ_INT(ja_sql_batch(&plan, 0, 1, &first, &err), FB_OK);
    CHECK_EQ_INT(ja_sql_batch(&plan, 0, 0, &next, &err), FB_OK);
    /* The fast statement the job runs on this table (nothing references notifications) until it falls back. */
    CHECK_EQ_INT(ja_sql_fast_fits(&plan), 1);
    CHECK_EQ_INT(ja_sql_fast(&plan, 1, &fast_first, &err), FB_OK);
    CHECK_EQ_INT(ja_sql_fast(&plan, 0, &fast_next, &err), FB_OK);
    static const char *const variant[4] = {"first", "later", "fast first", "fast later"};
    const char *sqls[4] = {first.p, next.p, fast_first.p, fast_next.p};
    CHECK_EQ_INT(ja_params_init(&plan, &j.ev, &q, &err), FB_OK);

    static const char *const insert_large =
        "INSERT INTO backup_archive_archivedrecord (module, model_name, original_id, data, archived_at) "
        "SELECT 'notifications', 'Notification', 'old-' || g, '{}', now() FROM generate_series(1, 150000) g";
    static const struct {
        const char *state, *sql;
    } steps[] = {
        {"empty, never analysed", NULL},
        {"large, never analysed", insert_large},
        {"large, freshly analysed", "ANALYZE backup_archive_archivedrecord"},
        {"empty, freshly analysed", "TRUNCATE backup_archive_archivedrecord; ANALYZE backup_archive_archivedrecord"},
        {"large, analysed while empty", insert_large},
    };
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM pg_class WHERE oid = 'backup_archive_archivedrecord'::regclass "
                           "AND reltuples < 0 AND NOT EXISTS (SELECT 1 FROM pg_stats WHERE tablename = "
                           "'backup_archive_archivedrecord')"),
                 1);
    char *want[4] = {NULL, NULL, NULL, NULL};
    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
        if (steps[s].sql) CHECK(ta_exec(c, steps[s].sql));
        for (int v = 0; v < 4; v++) {
            ja_params_batch(&q, v % 2 ? "1000" : NULL, 500);
            char *got = ta_batch_plan(c, sqls[v], &q);
            if (!want[v]) {
                want[v] = got;
                /* The fast statement has no conflict check: the unique index refuses a conflict. */
                if (v < 2)
                    CHECKF(strstr(got, "Index Scan using backup_archive_archivedrecord_uniq") && !strstr(got, "hashed"),
                           "%s batch, %s: the conflict check is not one probe of the unique index per row",
                           variant[v], steps[s].state);
                else
                    CHECKF(!strstr(got, "backup_archive_archivedrecord_uniq") && !strstr(got, "hashed"),
                           "%s batch, %s: the fast statement reads ArchivedRecord", variant[v], steps[s].state);
                CHECKF(!strstr(got, "Seq Scan"), "%s batch, %s: a sequential scan in the batch statement",
                       variant[v], steps[s].state);
                continue;
            }
            int same = strcmp(got, want[v]) == 0;
            if (!same) printf("# plan when %s:\n%s# plan when %s:\n%s", steps[0].state, want[v], steps[s].state, got);
            CHECKF(same, "%s batch: the plan when ArchivedRecord is %s differs from the plan when it is %s",
                   variant[v], steps[s].state, steps[0].state);
            free(got);
        }
    }
    for (int v = 0; v < 4; v++) free(want[v]);
    ja_params_free(&q);
    fb_sbuf_free(&first);
    fb_sbuf_free(&next);
    fb_sbuf_free(&fast_first);
    fb_sbuf_free(&fast_next);
    ja_plan_free(&plan);
    ta_job_free(&j);
    PQfinish(c);
}

/* A child process that stands for the live ERP: one persistent connection (application_name ta-live-load)
 * inserting a fresh notification (not due) every 5 ms until it is killed. Returns its pid once it is connected. */
static pid_t ta_start_live_load(const char *db, PGconn *watch) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        char ci[1024];
        snprintf(ci, sizeof ci, "%s dbname=%s application_name=ta-live-load", ta_base, db);
        PGconn *l = PQconnectdb(ci);
        for (;;) {
            PQclear(PQexec(l, "INSERT INTO notifications_notification (level, unread, actor_object_id, verb, "
                              "timestamp, public, actor_content_type_id, recipient_id, deleted, emailed, data) "
                              "VALUES ('info', true, '1', 'live', now(), true, 1, 1, false, false, '{}')"));
            struct timespec ts = {0, 5 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    for (int i = 0; i < 100 && ta_int(watch, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                             "'ta-live-load' AND datname = current_database()") == 0; i++) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return pid;
}

/* The job takes full batches and never pauses when nothing else runs in the database, and small batches with
 * pauses while another session works beside it; what it saw is in its counters (the progress event's
 * throttle_live_batches, live_sessions, throttle_ms). Asserted on counts, not on timing. */
static void test_throttle_follows_live_load(void) {
    const int N = 6000;
    const char *db = ta_newdb();
    PGconn *c = ta_connect(db);
    ta_seed_notifications(c, N, N);
    /* Quiet: our own connection idle for longer than the window, the policy's connection closed. */
    ta_job j;
    ta_job_init(&j, db, "notifications", "Notification", "notifications_notification", "id", "timestamp", 1000);
    j.cfg.archive_live_window_ms = 300;
    j.cfg.archive_live_batch_rows = 200;
    ta_authorise(&j);
    struct timespec quiet = {0, 800 * 1000000L};
    nanosleep(&quiet, NULL);
    job_result_init(&j.res);
    CHECK_EQ_INT(job_archive_run(&j.ctx, &j.res, &j.err), FB_OK);
    CHECK_EQ_INT(STAT(&j, "archived"), N);
    CHECK_EQ_INT(STAT(&j, "batches"), N / 1000);
    CHECK_EQ_INT(STAT(&j, "throttle_live_batches"), 0);
    CHECK_EQ_INT(STAT(&j, "live_sessions"), 0);
    CHECK_EQ_INT(STAT(&j, "throttle_ms"), 0);
    /* Beside a live load: batches of archive-live-batch-rows, each followed by a pause. */
    CHECK(ta_exec(c, "DELETE FROM backup_archive_archivedrecord"));
    ta_seed_notifications(c, N, N);
    pid_t load = ta_start_live_load(db, c);
    ta_job k;
    ta_job_init(&k, db, "notifications", "Notification", "notifications_notification", "id", "timestamp", 1000);
    k.cfg.archive_live_window_ms = 300;
    k.cfg.archive_live_batch_rows = 200;
    k.cfg.archive_live_sleep_pct = 50;
    CHECK_EQ_INT(ta_run(&k), FB_OK);
    kill(load, SIGKILL);
    waitpid(load, NULL, 0);
    CHECK_EQ_INT(STAT(&k, "archived"), N);
    CHECK_EQ_INT(STAT(&k, "batches"), N / 200);
    CHECKF(STAT(&k, "throttle_live_batches") >= N / 200 - 1, "live batches %lld of %d",
           (long long)STAT(&k, "throttle_live_batches"), N / 200);
    CHECKF(STAT(&k, "live_sessions") >= 1, "live_sessions %lld", (long long)STAT(&k, "live_sessions"));
    CHECKF(STAT(&k, "throttle_ms") > 0, "throttle_ms %lld", (long long)STAT(&k, "throttle_ms"));
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM notifications_notification WHERE timestamp < '2024-01-01'"), 0);
    CHECK_EQ_INT(ta_int(c, "SELECT count(*) FROM backup_archive_archivedrecord"), N);
    /* archive-live-window-ms 0: the live load is not looked for. */
    CHECK(ta_exec(c, "DELETE FROM backup_archive_archivedrecord"));
    ta_seed_notifications(c, N, N);
    load = ta_start_live_load(db, c);
    ta_job m;
    ta_job_init(&m, db, "notifications", "Notification", "notifications_notification", "id", "timestamp", 1000);
    m.cfg.archive_live_window_ms = 0;
    CHECK_EQ_INT(ta_run(&m), FB_OK);
    kill(load, SIGKILL);
    waitpid(load, NULL, 0);
    CHECK_EQ_INT(STAT(&m, "batches"), N / 1000);
    CHECK_EQ_INT(STAT(&m, "throttle_live_batches"), 0);
    ta_job_free(&j);
    ta_job_free(&k);
    ta_job_free(&m);
    PQfinish(c);
}

int main(void) {
    ta_base = tap_need_env("FB_TEST_PG");
    ta_make_template();
    test_notifications_batches_idempotent_and_unarchive();
    test_leave_cascade();
    test_no_relations_keeps_referenced_rows();
    test_protect_and_do_nothing_on_the_archived_table();
    test_file_tracking_protect_set_null();
    test_varchar_pk_session();
    test_missing_names_are_notfound();
    test_partitioned_table_moves_only_due_rows();
    test_authority_refuses_and_changes_nothing();
    test_locks_retry_then_transient_and_abort();
    test_fast_statement_skips_held_rows_by_falling_back();
    test_two_jobs_on_one_table();
    test_sigkill_mid_archival();
    test_batch_plan_does_not_depend_on_archivedrecord_statistics();
    test_throttle_follows_live_load();
    ta_dropdbs();
    return tap_done();
}
