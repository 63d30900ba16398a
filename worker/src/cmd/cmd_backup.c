/* cmd_backup: `fusion-backup backup CONFIGURATION [--type FULL|INCREMENTAL|DIFFERENTIAL] [--table T ...] [--json]`
 * (CONFIGURATION: a BackupConfiguration's name or id, also as --configuration; `--config` is the config file, as
 * for every command): an ad-hoc backup now, e.g. before a risky migration, on the worker's own path.
 *
 * The database stays the authority. The operator holds database credentials, so the command does what the
 * Django app does when someone asks for a backup (producer/backup_archive/services.py, request_backup): it
 * creates a QUEUED BackupRecord of the configuration with a new job id, the configuration's type (or --type) and
 * its table list (or --table), and builds the backup.requested a worker would receive. Then it runs
 * job_backup_run in this process, which asks the database (job_authority.h) before it writes anything, exactly as
 * in a worker. The outcome goes into the record as the recorder writes it: the same job.status events (RUNNING,
 * then SUCCESS or FAILED) applied with dmn_recorder_apply, so `list --pg`, the admin, `status` and alerts see an
 * ad-hoc backup like any other, and retention, chains and `restore` treat it the same. No broker is involved.
 *
 * A process that dies without a word (kill -9, OOM, a lost machine) cannot write FAILED, and no broker will
 * redeliver its job. So while it runs, the command holds a session advisory lock named after its record (taken in
 * the transaction that makes the record RUNNING, so it is never RUNNING unheld); PostgreSQL drops the lock with
 * the process's connection. Each `backup` first marks FAILED every RUNNING record of this command whose lock is
 * free (cb_sweep_abandoned), saying so, so an abandoned record ends as FAILED, is mailed and can be retried.
 *
 * The record goes where the worker's authority check reads (--authority-pg when set, else --pg). An unknown or
 * inactive configuration is refused before anything is created. A configuration that names Django modules
 * cannot be resolved to tables here (only the app knows its models' tables): --table, or `manage.py
 * backup_request`.
 */
#include <inttypes.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "capture/cap_base.h"
#include "capture/cap_rebase.h"
#include "cmd/cmd.h"
#include "common/fb_config.h"
#include "common/fb_flag.h"
#include "common/fb_json.h"
#include "common/fb_progress.h"
#include "common/fb_time.h"
#include "common/fb_uuid.h"
#include "daemon/dmn_recorder.h"
#include "daemon/dmn_status.h"
#include "job/job_authority.h"
#include "job/job_backup.h"
#include "pg/pgx.h"

#define CB_MAX_TABLES 1024
/* The advisory lock of a running `backup`: (CB_LOCK_CLASS, record id folded into an int4). Two records that fold
 * alike only make a dead one look alive a while longer: the sweep is conservative. */
#define CB_LOCK_CLASS "1178749776" /* "FBKP" */
#define CB_LOCK_KEY "(" CB_LOCK_CLASS ", (%s::bigint & 2147483647)::int)"
/* The `worker` value of this command's records (dmn_recorder writes it), prefix of "...@host:pid". */
#define CB_WORKER_PREFIX "fusion-backup backup@"

static fb_flag cb_abort = 0;

static void cb_on_signal(int sig) {
    (void)sig;
    cb_abort = 1; /* job_backup_run stops at its next safe point and removes its temporary file */
}

/* The configuration named or numbered by `which` (a number is tried as an id first). */
typedef struct cb_config {
    int64_t id, retention_days;
    char name[256], backup_type[17], storage_path[1025];
    int active, has_modules;
} cb_config;

static fb_code cb_find_config(PGconn *c, const char *which, cb_config *k, fb_err *err) {
    const char *p[1] = {which};
    PGresult *r = PQexecParams(c,
                               "SELECT id, name, backup_type, storage_path, retention_days, is_active, "
                               "jsonb_typeof(modules) = 'array' AND jsonb_array_length(modules) > 0 "
                               "FROM public.backup_archive_backupconfiguration "
                               "WHERE id::text = $1 OR name = $1 ORDER BY id::text = $1 DESC LIMIT 1",
                               1, NULL, p, NULL, NULL, 0);
    fb_code rc = pgx_check(c, r, PGRES_TUPLES_OK, "reading BackupConfiguration", err);
    if (rc) {
        fb_err_prefix(err, "is the Django app backup_archive migrated in this database, and may this role read it? ");
    } else if (PQntuples(r) == 0) {
        rc = fb_err_set(err, FB_ERR_NOTFOUND,
                        "no backup configuration is named or numbered \"%s\" (`fusion-backup list --pg ...` shows "
                        "every configuration's folder; the admin lists them)", which);
    } else {
        k->id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        snprintf(k->name, sizeof k->name, "%s", PQgetvalue(r, 0, 1));
        snprintf(k->backup_type, sizeof k->backup_type, "%s", PQgetvalue(r, 0, 2));
        snprintf(k->storage_path, sizeof k->storage_path, "%s", PQgetvalue(r, 0, 3));
        k->retention_days = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
        k->active = strcmp(PQgetvalue(r, 0, 5), "t") == 0;
        k->has_modules = strcmp(PQgetvalue(r, 0, 6), "t") == 0;
    }
    PQclear(r);
    return rc;
}

static int cb_backup_type(const char *s, ev_backup_type *out) {
    static const ev_backup_type all[] = {EV_FULL, EV_INCREMENTAL, EV_DIFFERENTIAL};
    for (size_t i = 0; i < 3; i++)
        if (strcmp(s, ev_backup_type_name(all[i])) == 0) {
            *out = all[i];
            return 1;
        }
    return 0;
}

/* Inserts the QUEUED record (as request_backup does) in the caller's open transaction and returns its id. The
 * table list is --table's ("NAME" is public.NAME, "SCHEMA.NAME" a pair) or, without it, the configuration's. */
static fb_code cb_create_record(PGconn *c, const cb_config *k, const char *job_id, const char *btype,
                                const char *const *tables, size_t n_tables, int64_t *record_id, fb_err *err) {
    char cid[32];
    snprintf(cid, sizeof cid, "%" PRId64, k->id);
    const char *p[4] = {job_id, btype, cid, n_tables ? "t" : "f"};
    PGresult *r = PQexecParams(c,
                               "INSERT INTO public.backup_archive_backuprecord (job_id, backup_type, status, "
                               "requested_at, file_path, error_message, attempt, worker, verify_status, "
                               "verify_message, configuration_id, tables) "
                               "SELECT $1::uuid, $2, 'QUEUED', now(), '', '', 1, '', '', '', k.id, "
                               "CASE WHEN $4::boolean THEN '[]'::jsonb ELSE k.tables END "
                               "FROM public.backup_archive_backupconfiguration k WHERE k.id = $3::bigint RETURNING id",
                               4, NULL, p, NULL, NULL, 0);
    fb_code rc = pgx_check(c, r, PGRES_TUPLES_OK, "creating the BackupRecord", err);
    if (!rc && PQntuples(r) != 1)
        rc = fb_err_set(err, FB_ERR_CONFLICT, "configuration %" PRId64 " disappeared while the record was created",
                        k->id);
    if (!rc) *record_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    for (size_t i = 0; !rc && i < n_tables; i++) {
        const char *dot = strchr(tables[i], '.');
        char schema[256] = "";
        if (dot) snprintf(schema, sizeof schema, "%.*s", (int)(dot - tables[i]), tables[i]);
        const char *tp[3] = {job_id, dot ? schema : NULL, dot ? dot + 1 : tables[i]};
        r = PQexecParams(c,
                         "UPDATE public.backup_archive_backuprecord SET tables = tables || CASE WHEN $2::text IS NULL "
                         "THEN jsonb_build_array(to_jsonb($3::text)) ELSE jsonb_build_array(jsonb_build_array($2::text, "
                         "$3::text)) END WHERE job_id = $1::uuid",
                         3, NULL, tp, NULL, NULL, 0);
        rc = pgx_check(c, r, PGRES_COMMAND_OK, "adding a table to the BackupRecord", err);
        PQclear(r);
    }
    return rc;
}

/* The backup.requested for the record, with its tables read back from the record (the wire form, as the
 * authority check reads it). Caller frees with ev_event_free. */
static fb_code cb_build_request(PGconn *c, const cb_config *k, const char *job_id, int64_t record_id,
                                ev_backup_type type, ev_event **out, fb_err *err) {
    char rid[32];
    snprintf(rid, sizeof rid, "%" PRId64, record_id);
    const char *p[1] = {rid};
    PGresult *r = PQexecParams(c,
                               "SELECT CASE jsonb_typeof(e) WHEN 'string' THEN NULL ELSE e->>0 END, "
                               "CASE jsonb_typeof(e) WHEN 'string' THEN e#>>'{}' ELSE e->>1 END "
                               "FROM public.backup_archive_backuprecord r, jsonb_array_elements(r.tables) e "
                               "WHERE r.id = $1::bigint",
                               1, NULL, p, NULL, NULL, 0);
    fb_code rc = pgx_check(c, r, PGRES_TUPLES_OK, "reading the record's tables", err);
    ev_event *ev = rc ? NULL : ev_event_new(EV_BACKUP_REQUESTED);
    if (!rc && !ev) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    if (!rc) {
        ev->v = EV_VERSION;
        snprintf(ev->job_id, sizeof ev->job_id, "%s", job_id);
        ev->ts = fb_now_ms();
        ev->attempt = 1;
        ev_backup_requested *b = &ev->u.backup;
        b->record_id = record_id;
        b->config_id = k->id;
        b->config_name = ev_strdup(ev, k->name);
        b->backup_type = type;
        b->storage_path = ev_strdup(ev, k->storage_path);
        b->retention_days = k->retention_days;
        b->n_tables = (size_t)PQntuples(r);
        b->tables = ev_alloc(ev, sizeof(ev_table) * (b->n_tables + 1));
        if (!b->tables || !b->config_name || !b->storage_path) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        for (size_t i = 0; !rc && i < b->n_tables; i++) {
            int given = !PQgetisnull(r, (int)i, 0);
            b->tables[i] = (ev_table){ev_strdup(ev, given ? PQgetvalue(r, (int)i, 0) : "public"),
                                      ev_strdup(ev, PQgetvalue(r, (int)i, 1)), given};
        }
    }
    PQclear(r);
    if (rc) ev_event_free(ev);
    else *out = ev;
    return rc;
}

/* Writes one job.status into the record exactly as the recorder would apply it from the completion topic. */
static fb_code cb_record(PGconn *c, const dmn_pub *pub, const ev_event *req, const unsigned char *raw,
                         size_t raw_len, ev_status st, int64_t started, const job_result *res, const char *error,
                         fb_err *err) {
    int applied = 0;
    fb_code rc;
    ev_event *s = dmn_status_build(pub, req, raw, raw_len, st, started, res, error);
    if (!s) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory recording %s", ev_status_name(st));
    else if ((rc = dmn_recorder_apply(c, s, &applied, err)))
        fb_err_prefix(err, "could not record %s on the BackupRecord: ", ev_status_name(st));
    else if (!applied)
        rc = fb_err_set(err, FB_ERR_CONFLICT, "the BackupRecord did not take %s (changed by someone else?)",
                        ev_status_name(st));
    ev_event_free(s);
    return rc;
}

/* Marks FAILED every RUNNING record of this command whose process is gone (its advisory lock is free: the lock
 * dies with the connection), and says which. Runs in its own transaction before the new record. */
static fb_code cb_sweep_abandoned(PGconn *c, fb_err *err) {
    PGresult *r = PQexec(c,
                         "UPDATE public.backup_archive_backuprecord SET status = 'FAILED', completed_at = now(), "
                         "error_message = 'the process that ran it (' || worker || ') ended without recording an "
                         "outcome (killed or lost); found by a later fusion-backup backup: run the backup again' "
                         "WHERE status = 'RUNNING' AND worker LIKE '" CB_WORKER_PREFIX "%' "
                         "AND pg_catalog.pg_try_advisory_xact_lock(" CB_LOCK_CLASS ", (id & 2147483647)::int) "
                         "RETURNING id, job_id::text, worker");
    fb_code rc = pgx_check(c, r, PGRES_TUPLES_OK, "marking abandoned backup records FAILED", err);
    for (int i = 0; !rc && i < PQntuples(r); i++)
        fprintf(stderr, "fusion-backup backup: record %s (job %s) was left RUNNING by %s, which ended without an "
                "outcome: marked FAILED\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2));
    PQclear(r);
    return rc;
}

/* Holds this process's lock on its record until the connection closes (session level, taken in the caller's
 * transaction). */
static fb_code cb_hold_record(PGconn *c, int64_t record_id, fb_err *err) {
    char rid[32], sql[200];
    snprintf(rid, sizeof rid, "%" PRId64, record_id);
    snprintf(sql, sizeof sql, "SELECT pg_catalog.pg_advisory_lock" CB_LOCK_KEY, rid);
    return pgx_exec(c, sql, "locking the BackupRecord for this process", err);
}

/* The backup's progress, from job_backup_run's counters (tables done of total, rows and bytes so far). */
static void cb_progress(void *opaque, const job_result *so_far) {
    fb_progress_update(opaque, job_result_get(so_far, "done_rows"), job_result_get(so_far, "done_bytes"),
                       job_result_get(so_far, "done_tables"), job_result_get(so_far, "total_tables"));
}

/* --capture-base (capture/cap_base.h): the slot is created, its snapshot kept, before the record exists, so a
 * refused slot creates nothing; the FULL then imports the snapshot. */
static fb_code cb_capture_base_begin(const fb_config *cfg, const cb_config *k, ev_backup_type type, cap_base *b,
                                     job_snapshot_import *im, fb_err *err) {
    stor *st = NULL;
    if (type != EV_FULL) return fb_err_set(err, FB_ERR_USAGE, "--capture-base takes a FULL backup (--type FULL)");
    fb_code rc = stor_open_location(cfg->storage_root, cfg, &st, err);
    if (!rc) rc = cap_base_begin(cfg, st, k->storage_path, b, err);
    stor_free(st);
    if (rc) return rc;
    *im = (job_snapshot_import){.snapshot = b->info.snapshot, .slot = b->info.slot, .stream = b->stream,
                                .lsn = b->info.consistent_lsn};
    return FB_OK;
}

static const char cb_usage[] =
    "usage: fusion-backup backup CONFIGURATION [--type FULL|INCREMENTAL|DIFFERENTIAL] [--table T ...] [--json]\n"
    "                            --pg CONNINFO --storage-root R --public-key FILE\n"
    "  CONFIGURATION: a BackupConfiguration's name or id (also --configuration NAME|ID)\n"
    "  backs up now, in this process, what a worker would for that configuration: creates its\n"
    "  BackupRecord (as Fusion does), records RUNNING and SUCCESS or FAILED on it, prints the artifact,\n"
    "  its size and the time taken. --table T (public.T) or SCHEMA.T, repeatable: only those tables\n"
    "  (default: the configuration's). --type: default the configuration's.\n"
    "  --capture-base: create the capture slot --capture-slot and take this FULL in its snapshot, the\n"
    "  base of the change chain `fusion-backup capture` then streams (restore --until starts from it).\n";

/* ---- cmd_backup's steps ------------------------------------------------------------------------------------- */

/* One ad-hoc backup: what the steps below share. */
typedef struct cb_run {
    fb_config cfg;
    const char *which, *type_s; /* the configuration asked for; --type, or NULL for the configuration's */
    ev_backup_type type;
    const char *const *tables;  /* --table */
    size_t n_tables;
    PGconn *c;
    cb_config k;
    char job_id[37], worker[300];
    int64_t record_id, started;
    dmn_pub pub;
    ev_event *req;              /* the backup.requested a worker would receive */
    unsigned char *raw;
    size_t raw_len;
    cap_base base;              /* --capture-base: the slot whose snapshot the FULL imports */
    job_snapshot_import import;
} cb_run;

/* Step 1: the arguments: which configuration, which type, where the backup goes. */
static fb_code cb_parse(cb_run *b, int argc, char **argv, fb_err *err) {
    fb_config *cfg = &b->cfg;
    b->tables = (const char *const *)cfg->table.v;
    b->n_tables = cfg->table.n;
    if (*cfg->configuration) b->which = cfg->configuration;
    if (*cfg->backup_type) b->type_s = cfg->backup_type;
    b->type = EV_FULL;
    if (b->n_tables > CB_MAX_TABLES)
        return fb_err_set(err, FB_ERR_USAGE, "at most %d --table (give the configuration those tables instead)",
                          CB_MAX_TABLES);
    if (argc > 1 && !b->which) b->which = argv[1];
    else if (argc > 1) return fb_err_set(err, FB_ERR_USAGE, "unexpected argument \"%s\" (see backup --help)", argv[1]);
    if (argc > 2) return fb_err_set(err, FB_ERR_USAGE, "unexpected argument \"%s\" (see backup --help)", argv[2]);
    if (!b->which)
        return fb_err_set(err, FB_ERR_USAGE, "backup needs the configuration: its name or id (fusion-backup backup NAME)");
    if (b->type_s && !cb_backup_type(b->type_s, &b->type))
        return fb_err_set(err, FB_ERR_USAGE, "--type must be FULL, INCREMENTAL or DIFFERENTIAL, got \"%s\"", b->type_s);
    if (!cfg->storage_root || !*cfg->storage_root)
        return fb_err_set(err, FB_ERR_USAGE, "backup needs --storage-root (the workers' storage root, a folder or "
                          "s3://BUCKET/PREFIX)");
    if (!cfg->public_key || !*cfg->public_key)
        return fb_err_set(err, FB_ERR_USAGE, "backup needs --public-key (the workers' backup.pub)");
    return FB_OK;
}

/* Step 2: the database that holds the records, and the configuration in it: active, resolvable to tables here,
 * of a known type. */
static fb_code cb_open_config(cb_run *b, fb_err *err) {
    const char *conninfo = job_authority_conninfo(&b->cfg, EV_BACKUP_REQUESTED);
    if (!conninfo || !*conninfo)
        return fb_err_set(err, FB_ERR_USAGE, "backup needs --pg (the Fusion database, where its records are)");
    if (!(b->c = pgx_connect(conninfo, "fusion-backup backup", err))) return err->code;
    cb_config *k = &b->k;
    fb_code rc = cb_find_config(b->c, b->which, k, err);
    if (rc) return rc;
    if (!k->active)
        return fb_err_set(err, FB_ERR_DENIED, "configuration %" PRId64 " (\"%s\") is not active: activate it in the "
                          "admin to back it up; nothing was created", k->id, k->name);
    if (k->has_modules && !b->n_tables)
        return fb_err_set(err, FB_ERR_USAGE, "configuration \"%s\" names Django modules, whose tables only the app can "
                          "resolve: name the tables with --table, or run `manage.py backup_request %s`; nothing was "
                          "created", k->name, k->name);
    if (!b->type_s && !cb_backup_type(k->backup_type, &b->type))
        return fb_err_set(err, FB_ERR_INVALID, "configuration \"%s\" has backup_type \"%s\", which is none of FULL, "
                          "INCREMENTAL, DIFFERENTIAL", k->name, k->backup_type);
    return FB_OK;
}

/* Step 3: the record, created and moved to RUNNING in one transaction: nobody ever sees it QUEUED, so Fusion's
 * republish sweep (services.republish_queued) cannot send it to a worker while this process runs it. Abandoned
 * records of earlier runs are marked FAILED first. */
static fb_code cb_start(cb_run *b, fb_err *err) {
    PGconn *c = b->c;
    fb_code rc = cb_sweep_abandoned(c, err);
    if (!rc) rc = pgx_exec(c, "BEGIN", "starting the record's transaction", err);
    if (!rc)
        rc = cb_create_record(c, &b->k, b->job_id, ev_backup_type_name(b->type), b->tables, b->n_tables, &b->record_id,
                              err);
    if (!rc) rc = cb_build_request(c, &b->k, b->job_id, b->record_id, b->type, &b->req, err);
    if (!rc) rc = ev_encode(b->req, &b->raw, &b->raw_len, err);
    if (!rc) rc = cb_hold_record(c, b->record_id, err);
    if (!rc) rc = cb_record(c, &b->pub, b->req, b->raw, b->raw_len, EV_RUNNING, b->started, NULL, NULL, err);
    if (!rc) rc = pgx_exec(c, "COMMIT", "committing the BackupRecord", err);
    if (rc) {
        if (PQtransactionStatus(c) != PQTRANS_IDLE) PQclear(PQexec(c, "ROLLBACK"));
        if (b->record_id) fb_err_prefix(err, "nothing was created: ");
    }
    return rc;
}

/* Step 4: the job, in this process, as a worker runs it (SIGINT and SIGTERM abort it); *took is its duration. */
static fb_code cb_run_job(cb_run *b, job_result *res, int64_t *took, fb_err *err) {
    struct sigaction sa = {.sa_handler = cb_on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    fb_progress *prog = fb_progress_new(&b->cfg, "backup", "tables", b->cfg.json != 0);
    job_ctx ctx = {&b->cfg, b->req, b->worker, &cb_abort, cb_progress, prog, b->cfg.capture_base ? &b->import : NULL};
    fb_code rc = job_backup_run(&ctx, res, err);
    cap_base_end(&b->base, rc == FB_OK);
    fb_progress_done(prog, rc == FB_OK);
    fb_progress_free(prog);
    *took = fb_now_ms() - b->started;
    if (job_result_get(res, "duration_ms") == 0) job_result_set(res, "duration_ms", *took);
    return rc;
}

/* Step 5: the outcome (rc, the job's) written into the record. A record that cannot be written fails the command
 * even when the backup succeeded: the record is the truth. */
static fb_code cb_finish(cb_run *b, const job_result *res, fb_code rc, fb_err *err) {
    fb_err rerr;
    fb_code recorded = cb_record(b->c, &b->pub, b->req, b->raw, b->raw_len, rc ? EV_FAILED : EV_SUCCESS, b->started,
                                 res, rc ? err->msg : NULL, &rerr);
    if (recorded) {
        /* The artifact may well be fine; the record says RUNNING. Say both, and fail. */
        fprintf(stderr, "fusion-backup backup: %s\n", rerr.msg);
        if (!rc) {
            *err = rerr;
            fb_err_prefix(err, "the backup %s was written but its record %" PRId64 " stays RUNNING: ", res->file_path,
                          b->record_id);
            return recorded;
        }
    }
    if (rc) fb_err_prefix(err, "record %" PRId64 " (job %s) is FAILED: ", b->record_id, b->job_id);
    return rc;
}

/* A new capture base the job took by itself (job/job_rebase.h): which slot generation replaced which, and why. */
static void cb_print_rebase(const cb_run *b, const job_result *res) {
    int64_t why = job_result_get(res, "capture_rebase");
    char slot[CAP_NAME_MAX + 1] = "?", old[CAP_NAME_MAX + 1] = "?";
    fb_err e;
    if (!why) return;
    unsigned gen = (unsigned)job_result_get(res, "capture_generation");
    unsigned old_gen = (unsigned)job_result_get(res, "capture_old_generation");
    (void)cap_rebase_slot_name(b->cfg.capture_slot, gen, slot, &e);
    (void)cap_rebase_slot_name(b->cfg.capture_slot, old_gen, old, &e);
    const char *reason = cap_rebase_reason_name((cap_rebase_reason)why);
    int dropped = job_result_get(res, "capture_old_slot_dropped") != 0;
    uint64_t lsn = (uint64_t)job_result_get(res, "capture_base_lsn");
    if (b->cfg.json)
        printf(",\"ran_as\":\"FULL\",\"capture_rebase\":{\"reason\":\"%s\",\"slot\":\"%s\",\"generation\":%u,"
               "\"old_slot\":\"%s\",\"old_generation\":%u,\"old_slot_dropped\":%s,\"lsn\":\"" CAP_LSN_FMT "\"}", reason,
               slot, gen, old, old_gen, dropped ? "true" : "false", CAP_LSN_ARGS(lsn));
    else
        printf("  NEW CAPTURE BASE: the chain of slot %s could not continue (%s): this backup ran as a FULL in the "
               "snapshot of new slot %s (generation %u); the workers' capture follows it%s\n", old, reason, slot, gen,
               dropped ? "; old slot dropped" : "");
}

/* Step 6: what was written, as JSON or as text. */
static void cb_print(const cb_run *b, const job_result *res, int64_t took) {
    const char *root = b->cfg.storage_root;
    const char *type = ev_backup_type_name(b->type);
    size_t rl = strlen(root);
    char path[2200];
    snprintf(path, sizeof path, "%s%s%s", root, rl && root[rl - 1] == '/' ? "" : "/", res->file_path);
    if (b->cfg.json) {
        printf("{\"job_id\":\"%s\",\"record_id\":%" PRId64 ",\"config_id\":%" PRId64 ",\"config\":", b->job_id,
               b->record_id, b->k.id);
        fb_json_string(stdout, b->k.name);
        printf(",\"type\":\"%s\",\"ran_as_full\":%s,\"status\":\"SUCCESS\",\"artifact\":", type,
               job_result_get(res, "ran_as_full") ? "true" : "false");
        fb_json_string(stdout, path);
        printf(",\"file_path\":");
        fb_json_string(stdout, res->file_path);
        printf(",\"size\":%" PRId64 ",\"tables\":%" PRId64 ",\"rows\":%" PRId64 ",\"duration_ms\":%" PRId64,
               res->file_size, job_result_get(res, "tables"), job_result_get(res, "rows"), took);
        if (b->cfg.capture_base)
            printf(",\"capture_base\":{\"slot\":\"%s\",\"stream\":\"%s\",\"lsn\":\"" CAP_LSN_FMT "\"}",
                   b->import.slot, b->import.stream, CAP_LSN_ARGS(b->import.lsn));
        if (job_result_get(res, "captured_changes") || job_result_get(res, "capture_fallback"))
            printf(",\"captured_changes\":{\"segments\":%" PRId64 ",\"transactions\":%" PRId64 ",\"bytes\":%" PRId64
                   ",\"wait_ms\":%" PRId64 ",\"fallback\":%s}", job_result_get(res, "capture_segments"),
                   job_result_get(res, "capture_transactions"), job_result_get(res, "capture_bytes"),
                   job_result_get(res, "capture_wait_ms"), job_result_get(res, "capture_fallback") ? "true" : "false");
        cb_print_rebase(b, res);
        printf("}\n");
        return;
    }
    char sz[32];
    printf("SUCCESS %s backup of \"%s\" (record %" PRId64 ", job %s)%s\n  artifact %s\n  size %s (%" PRId64
           " bytes), %" PRId64 " tables, %" PRId64 " rows, %.2f s\n",
           type, b->k.name, b->record_id, b->job_id,
           b->type != EV_FULL && job_result_get(res, "ran_as_full")
               ? (job_result_get(res, "capture_rebase") ? ", ran as FULL (new capture base)" : ", ran as FULL (no base yet)")
               : "", path,
           fb_size_format(res->file_size, sz, sizeof sz), res->file_size, job_result_get(res, "tables"),
           job_result_get(res, "rows"), (double)took / 1000.0);
    if (job_result_get(res, "captured_changes"))
        printf("  made of captured changes: %" PRId64 " change segments, %" PRId64 " transactions, no table read\n",
               job_result_get(res, "capture_segments"), job_result_get(res, "capture_transactions"));
    cb_print_rebase(b, res);
    if (b->cfg.capture_base)
        printf("  capture base: slot %s, chain %s from " CAP_LSN_FMT " (start `fusion-backup capture "
               "--capture-slot %s` to stream it)\n", b->import.slot, b->import.stream, CAP_LSN_ARGS(b->import.lsn),
               b->import.slot);
}

int cmd_backup(int argc, char **argv) {
    cb_run b = {0};
    fb_err err;
    int help = 0;
    char host[256] = "localhost";
    fb_code rc = cmd_args(&b.cfg, &argc, argv, FB_CMD_BACKUP, cb_usage, &help, &err);
    if (help) {
        fb_config_free(&b.cfg);
        return FB_OK;
    }
    if (!rc) rc = cb_parse(&b, argc, argv, &err);
    if (!rc) rc = cb_open_config(&b, &err);
    /* The slot is created, its snapshot kept, before the record exists: a refused slot creates nothing. */
    if (!rc && b.cfg.capture_base) rc = cb_capture_base_begin(&b.cfg, &b.k, b.type, &b.base, &b.import, &err);
    fb_uuid_random(b.job_id);
    gethostname(host, sizeof host - 1);
    snprintf(b.worker, sizeof b.worker, CB_WORKER_PREFIX "%s:%d", host, (int)getpid());
    b.pub = (dmn_pub){.cfg = &b.cfg, .worker_name = b.worker};
    b.started = fb_now_ms();
    if (!rc) rc = cb_start(&b, &err);
    if (!rc) {
        /* From here on the outcome is written into the record. */
        job_result res;
        int64_t took = 0;
        job_result_init(&res);
        rc = cb_finish(&b, &res, cb_run_job(&b, &res, &took, &err), &err);
        if (!rc) cb_print(&b, &res, took);
    }
    cap_base_end(&b.base, 0); /* a slot whose FULL never ran or failed: dropped (nothing once ended) */
    if (rc) fprintf(stderr, "fusion-backup backup: %s\n", err.msg);
    free(b.raw);
    ev_event_free(b.req);
    if (b.c) PQfinish(b.c);
    fb_config_free(&b.cfg);
    return rc;
}
