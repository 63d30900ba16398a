/* job_archive: runs one `archive.due` event (see job_archive.h for the behaviour and the data envelope).
 *
 * The story of a run: connect, pin the session (timeouts, output formats), build and check the plan against the
 * catalog (nothing is changed before that succeeds), count what is due, then loop over batches. Each batch is
 * BEGIN, the one statement of job_archive_sql.c, a consistency check (rows deleted == ArchivedRecords written),
 * COMMIT. A table nothing references starts with the fast statement and falls back to the general one, for the
 * rest of the job, the first time a batch meets a held row or a conflict (ja_fast_fell_back). The loop walks the
 * primary key upwards (keyset), so skipped rows are passed over and every job ends.
 * A batch refused for locks or for a reference that appeared meanwhile is rolled back and retried after a growing
 * pause. Between batches the job reports progress (with the last batch's duration and the throttling so far; at
 * most once a second, each time after a synchronous COMMIT: batches commit asynchronously, see the comment at
 * "SET synchronous_commit"), honours abort, looks at the database and pauses as long as its load asks
 * (ja_throttle); beside a live load it also takes smaller batches (ja_batch_rows). Purging old
 * ArchivedRecords comes last. A dry run executes the read-only variant of the same statement inside a READ ONLY
 * transaction, so it counts exactly and cannot change anything.
 */
#include "job/job_archive.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fb_log.h"
#include "job/job_archive_int.h"
#include "job/job_authority.h"
#include "pg/pgx.h"

#define JA_PROGRESS_MS 1000      /* progress reports (each after a synchronous COMMIT) at most this often */
#define JA_DURABLE_WAIT_MS 10000 /* ja_wait_durable gives up after this */

typedef struct ja_counts {
    int64_t archived, cascaded, nulled, prot, ref, conf, purged, batches, retries, done, total_due, total_rows;
    int64_t batch_ms;        /* the last batch's statement + COMMIT */
    int64_t throttle_ms;     /* paused by ja_throttle, in total */
    int64_t lock_waits;      /* batches after which other sessions were seen waiting for a lock */
    int64_t lag_waits;       /* batches after which a replica's replay lag held the job */
    int64_t live_batches;    /* batches after which a live load was seen (smaller batches, longer pauses) */
    int64_t live_sessions;   /* other sessions seen busy at the last look (-1: never looked) */
    int live;                /* a live load was present at the last look */
    int unflushed;           /* batches committed (asynchronously) since the last flush (ja_batch's synchronous COMMIT, ja_wait_durable) */
} ja_counts;

/* The database's load between two batches, as ja_load reads it. */
typedef struct ja_dbload {
    int64_t lock_waiters;    /* sessions of this database waiting for a lock */
    int64_t lag_ms;          /* largest replica replay lag, -1: none or not visible */
    int64_t live_sessions;   /* other sessions of this database busy within archive-live-window-ms */
} ja_dbload;

static int64_t ja_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps ms milliseconds in short slices; returns early (1) when the job is aborted. */
static int ja_pause(const job_ctx *ctx, int64_t ms) {
    int64_t end = ja_now_ms() + ms;
    while (!job_aborted(ctx)) {
        int64_t left = end - ja_now_ms();
        if (left <= 0) return 0;
        if (left > 100) left = 100;
        struct timespec ts = {0, (long)left * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 1;
}

static void ja_publish(job_result *res, const ja_counts *k, int64_t started) {
    job_result_set(res, "archived", k->archived);
    job_result_set(res, "cascaded", k->cascaded);
    job_result_set(res, "nulled", k->nulled);
    job_result_set(res, "skipped_protected", k->prot);
    job_result_set(res, "skipped_referenced", k->ref);
    job_result_set(res, "skipped_conflict", k->conf);
    job_result_set(res, "purged", k->purged);
    job_result_set(res, "batches", k->batches);
    job_result_set(res, "lock_retries", k->retries);
    job_result_set(res, "total_due", k->total_due);
    job_result_set(res, "done_rows", k->done);
    job_result_set(res, "total_rows", k->total_rows);
    job_result_set(res, "batch_ms", k->batch_ms);
    job_result_set(res, "throttle_ms", k->throttle_ms);
    job_result_set(res, "throttle_lock_waits", k->lock_waits);
    job_result_set(res, "throttle_lag_waits", k->lag_waits);
    job_result_set(res, "throttle_live_batches", k->live_batches);
    job_result_set(res, "live_sessions", k->live_sessions);
    job_result_set(res, "duration_ms", ja_now_ms() - started);
}

/* What the database says about the load between two batches: sessions of this database waiting for a lock, other
 * client sessions busy now or within window_ms (a live load: the ERP's requests; not this system's own sessions
 * that exist because of archival: other archive jobs, the recorder writing their progress, the policy check),
 * and the largest replay lag of a streaming replica (-1: none, or not visible to this role: replay_lag needs
 * pg_read_all_stats). pg_stat_activity is the backends' live status, not the cumulative statistics that reach
 * pg_stat_database up to a second late, so a load is seen as soon as it starts. A session whose state this role may
 * not see (state NULL without pg_read_all_stats) counts as busy: unknown is treated as live. One cheap query; when
 * it fails the job is not throttled by it, the failure is logged. */
static void ja_load(PGconn *c, const job_ctx *ctx, int64_t window_ms, ja_dbload *l) {
    char win[32];
    snprintf(win, sizeof win, "%" PRId64, window_ms);
    const char *prm[1] = {win};
    l->lock_waiters = l->live_sessions = 0;
    l->lag_ms = -1;
    PGresult *r = PQexecParams(
        c, "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'), "
           "count(*) FILTER (WHERE backend_type = 'client backend' AND "
           "coalesce(application_name, '') NOT LIKE 'fusion-backup archive %' AND "
           "coalesce(application_name, '') NOT IN ('fusion-backup-recorder', 'fusion-backup authority') AND "
           "(state IS DISTINCT FROM 'idle' OR state_change > clock_timestamp() - $1::bigint * interval '1 ms')), "
           "(SELECT coalesce(max(extract(epoch FROM replay_lag) * 1000)::bigint, -1) FROM pg_stat_replication) "
           "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        1, NULL, prm, NULL, NULL, 0);
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        l->lock_waiters = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        l->live_sessions = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
        l->lag_ms = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    } else {
        FB_WARN("job=%s could not read the database's load for throttling: %s", ctx->ev->job_id,
                PQerrorMessage(c));
    }
    PQclear(r);
}

/* Looks at the database and decides whether the next batch runs beside a live load (k->live). */
static void ja_sense(PGconn *c, const job_ctx *ctx, ja_counts *k, ja_dbload *l) {
    int64_t window = ctx->cfg->archive_live_window_ms;
    ja_load(c, ctx, window > 0 ? window : 0, l);
    k->live_sessions = l->live_sessions;
    k->live = window > 0 && l->live_sessions > 0;
}

/* The rows the next batch may take: the request's batch_size, at most archive-live-batch-rows beside a live load.
 * A big batch is cheapest alone (one statement's worth of work and one WAL flush per batch_size rows, which is
 * how the worker keeps up with a single INSERT ... DELETE); beside a live load it is a burst of CPU and WAL that
 * the live transactions' commits queue behind, so the job takes small bites then. */
static int64_t ja_batch_rows(const job_ctx *ctx, const ja_counts *k) {
    int64_t want = ctx->ev->u.archive.batch_size;
    if (k->live && ctx->cfg->archive_live_batch_rows < want) want = ctx->cfg->archive_live_batch_rows;
    return want;
}

/* The pause after a batch that took batch_ms, as pt-archiver does it: the database sets the pace, not a fixed
 * sleep. The pause is the largest of batch_pause_ms (fixed), archive_sleep_pct of the batch's own duration (a
 * busier server makes batches slower, so the job backs off by itself), archive_live_sleep_pct of it while a live
 * load is present, and archive_lock_wait_pct of it when sessions are waiting for a lock; then, while a replica's
 * replay lag is above archive_max_replica_lag_ms, the job waits in steps of a second. Alone on the database (the
 * defaults: sleep-pct 0) the job does not pause at all. Returns 1 when aborted meanwhile. */
static int ja_throttle(PGconn *c, const job_ctx *ctx, int64_t batch_ms, ja_counts *k) {
    const fb_config *cfg = ctx->cfg;
    ja_dbload l;
    int64_t pause = cfg->batch_pause_ms;
    if (batch_ms * cfg->archive_sleep_pct / 100 > pause) pause = batch_ms * cfg->archive_sleep_pct / 100;
    ja_sense(c, ctx, k, &l);
    int64_t t0 = ja_now_ms();
    if (k->live) {
        k->live_batches++;
        if (batch_ms * cfg->archive_live_sleep_pct / 100 > pause) pause = batch_ms * cfg->archive_live_sleep_pct / 100;
    }
    if (l.lock_waiters > 0) {
        k->lock_waits++;
        if (batch_ms * cfg->archive_lock_wait_pct / 100 > pause) pause = batch_ms * cfg->archive_lock_wait_pct / 100;
    }
    int aborted = pause > 0 && ja_pause(ctx, pause), held = 0;
    if (cfg->archive_max_replica_lag_ms > 0 && l.lag_ms > cfg->archive_max_replica_lag_ms) {
        held = 1;
        k->lag_waits++;
        FB_INFO("job=%s replica replay lag %" PRId64 " ms is above %" PRId64 " ms: archival waits", ctx->ev->job_id,
                l.lag_ms, cfg->archive_max_replica_lag_ms);
        while (!aborted && l.lag_ms > cfg->archive_max_replica_lag_ms) {
            aborted = ja_pause(ctx, 1000);
            ja_load(c, ctx, 0, &l);
        }
    }
    if (pause > 0 || held) k->throttle_ms += ja_now_ms() - t0;
    return aborted;
}

/* SQLSTATEs after which the same batch may well succeed a moment later. 23503: a referencing row committed
 * after our snapshot, caught by the deferred foreign-key check at COMMIT. */
static int ja_retryable(const char *st) {
    return pgx_sqlstate_retry_now(st) || (st && strcmp(st, PGX_FOREIGN_KEY_VIOLATION) == 0);
}

static void ja_rollback(PGconn *c) {
    PGresult *r = PQexec(c, "ROLLBACK");
    PQclear(r);
}

/* Runs sql (BEGIN already done); on failure fills err and state (the SQLSTATE, "" when none) and, when the failure
 * is worth a retry, sets *retry. */
static PGresult *ja_exec(PGconn *c, const char *sql, int nparams, const Oid *types, const char *const *params,
                         ExecStatusType want, const char *what, int *retry, char state[6], fb_err *err) {
    PGresult *r = PQexecParams(c, sql, nparams, types, params, NULL, NULL, 0);
    if (r && PQresultStatus(r) == want) return r;
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    snprintf(state, 6, "%s", st ? st : "");
    *retry = ja_retryable(st);
    pgx_check(c, r, want, what, err);
    return NULL;
}

/* Counts due rows up front (for progress); a failure here is not fatal: total_due stays -1. */
static void ja_count_due(PGconn *c, const ja_plan *p, const char *cutoff, int64_t *out) {
    fb_sbuf b = {0};
    *out = -1;
    fb_sbuf_printf(&b, "SELECT count(*) FROM ");
    pgx_sb_qualified(&b, p->nodes[0].schema, p->nodes[0].table);
    fb_sbuf_printf(&b, " WHERE ");
    pgx_sb_ident(&b, p->ts_column);
    fb_sbuf_printf(&b, " < (timestamptz 'epoch' + $1::bigint * interval '1 millisecond')");
    if (!b.oom) {
        const char *prm[1] = {cutoff};
        PGresult *r = PQexecParams(c, b.p, 1, NULL, prm, NULL, NULL, 0);
        if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            *out = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
    }
    fb_sbuf_free(&b);
}

/* Deletes (or, dry, counts) ArchivedRecords of the job's module+model archived before purge_before. */
static fb_code ja_purge(PGconn *c, const job_ctx *ctx, ja_counts *k, fb_err *err) {
    const ev_archive_due *a = &ctx->ev->u.archive;
    char before[32], limit[32];
    snprintf(before, sizeof before, "%" PRId64, a->purge_before.v);
    snprintf(limit, sizeof limit, "%" PRId64, a->batch_size);
    const char *prm[4] = {a->module, a->model_name, before, limit};
    fb_code rc = FB_OK;
    PGresult *r = NULL;
    if (a->dry_run) {
        r = PQexecParams(c,
                         "SELECT count(*) FROM public." JOB_ARCHIVE_TABLE " WHERE module = $1 AND model_name = $2 "
                         "AND archived_at < (timestamptz 'epoch' + $3::bigint * interval '1 millisecond')",
                         3, NULL, prm, NULL, NULL, 0);
        if ((rc = pgx_check(c, r, PGRES_TUPLES_OK, "counting ArchivedRecords to purge", err))) goto out;
        k->purged = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        goto out;
    }
    for (;;) {
        if (job_aborted(ctx)) {
            rc = fb_err_set(err, FB_ERR_ABORTED, "archive job %s stopped while purging old ArchivedRecords",
                            ctx->ev->job_id);
            goto out;
        }
        r = PQexecParams(c,
                         "DELETE FROM public." JOB_ARCHIVE_TABLE " WHERE id IN (SELECT id FROM public."
                         JOB_ARCHIVE_TABLE " WHERE module = $1 AND model_name = $2 AND archived_at < "
                         "(timestamptz 'epoch' + $3::bigint * interval '1 millisecond') LIMIT $4::bigint "
                         "FOR UPDATE SKIP LOCKED)",
                         4, NULL, prm, NULL, NULL, 0);
        if ((rc = pgx_check(c, r, PGRES_COMMAND_OK, "purging old ArchivedRecords", err))) goto out;
        int64_t n = strtoll(PQcmdTuples(r), NULL, 10);
        PQclear(r);
        r = NULL;
        k->purged += n;
        if (n < a->batch_size) break;
    }
out:
    PQclear(r);
    return rc;
}

/* One batch: BEGIN, the statement, the consistency check, COMMIT (a dry run rolls back). The session commits
 * asynchronously (job_archive_run); the COMMIT is synchronous, and so flushes this and every earlier batch, when
 * the batch saw rows and sync is set or it saw fewer than want (the job's last batch). *synced says which it was. On
 * success fills v and *last_key (malloc'd, NULL when the batch saw no row). On failure *retry says whether trying
 * again may help and state is the SQLSTATE ("" when none). fast: sql is the fast statement (ja_sql_fast), whose
 * transaction waits at most JA_FAST_LOCK_MS for a lock. Returns FB_ERR_ABORTED, rolled back, when the job is
 * aborted while the batch is open. */
static fb_code ja_batch(PGconn *c, const job_ctx *ctx, const char *sql, int fast, int nparams, const Oid *types,
                        const char *const *prm, int64_t want, int sync, int *synced, const char *what,
                        int64_t v[JA_R_NCOLS], char **last_key, int *retry, char state[6], fb_err *err) {
    const ev_archive_due *a = &ctx->ev->u.archive;
    PGresult *r = NULL, *cr = NULL;
    fb_code rc = FB_OK;
    char begin[64];
    *retry = 0;
    *last_key = NULL;
    state[0] = 0;
    if (fast)
        snprintf(begin, sizeof begin, "BEGIN; SET LOCAL lock_timeout = %d", JA_FAST_LOCK_MS);
    else
        snprintf(begin, sizeof begin, "%s", a->dry_run ? "BEGIN READ ONLY" : "BEGIN");
    if ((rc = pgx_exec(c, begin, "starting an archive batch", err))) goto out;
    if (!(r = ja_exec(c, sql, nparams, types, prm, PGRES_TUPLES_OK, what, retry, state, err))) {
        rc = err->code;
        goto out;
    }
    for (int i = 0; i < JA_R_LASTKEY; i++) v[i] = strtoll(PQgetvalue(r, 0, i), NULL, 10);
    if (!a->dry_run && v[JA_R_INSERTED] != v[JA_R_ARCHIVED] + v[JA_R_CASCADED]) {
        /* Someone deleted rows of the cascade between our snapshot and our DELETE: never keep copies of rows that
         * are gone. Roll back and take the batch again. */
        *retry = 1;
        rc = fb_err_set(err, FB_ERR_TRANSIENT,
                        "%s: the batch wrote %" PRId64 " ArchivedRecords but deleted %" PRId64
                        " rows (rows were deleted concurrently); rolled back",
                        what, v[JA_R_INSERTED], v[JA_R_ARCHIVED] + v[JA_R_CASCADED]);
        goto out;
    }
    if (job_aborted(ctx)) {
        rc = fb_err_set(err, FB_ERR_ABORTED, "%s: stopped by shutdown; the open batch was rolled back", what);
        goto out;
    }
    if (!PQgetisnull(r, 0, JA_R_LASTKEY) && !(*last_key = strdup(PQgetvalue(r, 0, JA_R_LASTKEY)))) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* A batch that saw rows locked them (FOR UPDATE writes WAL and takes a transaction id), so its synchronous
     * COMMIT writes a commit record and flushes the WAL up to it; a batch that saw none wrote nothing, and its
     * COMMIT flushes nothing: it is never counted as synchronous. */
    *synced = !a->dry_run && v[JA_R_SEEN] > 0 && (sync || v[JA_R_SEEN] < want);
    if (*synced && (rc = pgx_exec(c, "SET LOCAL synchronous_commit = on", what, err))) goto out;
    if (!(cr = ja_exec(c, a->dry_run ? "ROLLBACK" : "COMMIT", 0, NULL, NULL, PGRES_COMMAND_OK, what, retry, state,
                       err)))
        rc = err->code;
out:
    if (rc != FB_OK) {
        if (PQtransactionStatus(c) != PQTRANS_IDLE) ja_rollback(c);
        free(*last_key);
        *last_key = NULL;
    }
    PQclear(r);
    PQclear(cr);
    return rc;
}

/* Waits until the WAL of every batch this session committed is on disk, for the one case where the job's last
 * committed batch was asynchronous (the job ended on a batch that saw no row, was aborted or failed): WAL is one
 * sequential log, so once the server's flush position passes the insert position read after our last COMMIT,
 * every earlier commit record is flushed too. The WAL writer flushes asynchronous commits within 3 x
 * wal_writer_delay by itself; this only watches (pg_current_wal_*_lsn need no privilege). */
static fb_code ja_wait_durable(PGconn *c, const job_ctx *ctx, ja_counts *k, fb_err *err) {
    if (k->unflushed == 0) return FB_OK;
    PGresult *r = PQexec(c, "SELECT pg_current_wal_insert_lsn()::text");
    fb_code rc = pgx_check(c, r, PGRES_TUPLES_OK, "reading the WAL position after the last archive batch", err);
    char lsn[64] = "";
    if (rc == FB_OK) snprintf(lsn, sizeof lsn, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    const char *prm[1] = {lsn};
    for (int64_t waited = 0; rc == FB_OK; waited += 10) {
        r = PQexecParams(c, "SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn", 1, NULL, prm, NULL, NULL, 0);
        if ((rc = pgx_check(c, r, PGRES_TUPLES_OK, "waiting for the archive batches' WAL flush", err))) break;
        int flushed = PQgetvalue(r, 0, 0)[0] == 't';
        PQclear(r);
        if (flushed) {
            k->unflushed = 0;
            return FB_OK;
        }
        if (waited >= JA_DURABLE_WAIT_MS)
            return fb_err_set(err, FB_ERR_TRANSIENT, "job %s: the server did not flush the WAL of the last archive "
                              "batches (up to %s) within %d ms; they are committed but may be lost if the server "
                              "crashes now (their rows would then still be in the table)", ctx->ev->job_id, lsn,
                              JA_DURABLE_WAIT_MS);
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return rc;
}

/* --- the job, in named steps -------------------------------------------------------------------------------- */

/* Everything one archive job holds, from its first step to its clean-up. */
typedef struct ja_job {
    const job_ctx *ctx;
    const ev_archive_due *a;
    job_result *res;
    int64_t started;
    PGconn *c;
    ja_plan plan;
    fb_sbuf sql, sql_first;  /* the batch statement, after a key and for the first batch */
    fb_sbuf fast, fast_first; /* the fast statement (ja_sql_fast), when the table fits it */
    int careful;           /* 1: every batch runs sql / sql_first (no fast statement, or it fell back) */
    ja_params q;
    char *last_key;        /* where the next batch starts (NULL: the first) */
    ja_counts k;
    char cutoff[32], what[256];
} ja_job;

/* The policy authorises this exact request (table, keys, cutoff, purge, relations) before anything else; then the
 * session, the plan checked against the catalog and its two statements, and asynchronous commits. */
static fb_code ja_start(ja_job *j, fb_err *err) {
    const job_ctx *ctx = j->ctx;
    char appname[80];
    fb_code rc;
    if ((rc = job_authority_authorise(ctx->cfg, ctx->ev, err))) return rc;
    snprintf(appname, sizeof appname, "fusion-backup archive %.36s", ctx->ev->job_id);
    if (!(j->c = pgx_connect(ctx->cfg->pg, appname, err))) return err->code;
    if ((rc = ja_session_setup(j->c, (long long)ctx->cfg->lock_timeout_ms, (long long)ctx->cfg->statement_timeout_ms,
                               err)) ||
        (rc = ja_plan_build(j->c, ctx->ev, &j->plan, err)) ||
        (rc = ja_sql_batch(&j->plan, j->a->dry_run, 1, &j->sql_first, err)) ||
        (rc = ja_sql_batch(&j->plan, j->a->dry_run, 0, &j->sql, err)))
        return rc;
    /* A table nothing references (no CASCADE, no reference to check) is archived with the fast statement until a
     * batch meets a row another session holds or an ArchivedRecord that exists (ja_fast_fell_back). */
    j->careful = j->a->dry_run || !ja_sql_fast_fits(&j->plan);
    if (!j->careful && ((rc = ja_sql_fast(&j->plan, 1, &j->fast_first, err)) ||
                        (rc = ja_sql_fast(&j->plan, 0, &j->fast, err))))
        return rc;
    /* Batches commit asynchronously: a COMMIT does not wait for its WAL to reach disk, so the job's commits do not
     * queue with the live load's for the disk (the WAL writer flushes them in the background, within 3 x
     * wal_writer_delay). Nothing can be lost or reported archived that is not: an asynchronous commit is as
     * atomic as any (a crash loses whole transactions, never part of one), so a batch lost in a crash leaves all
     * its rows in the table and none in ArchivedRecord, and the next run moves them again. And nothing is
     * reported before it is durable: the batch after which progress is reported, and the job's last batch, commit
     * synchronously (ja_batch), which flushes every earlier batch with them because WAL is written and flushed in
     * order; when the last committed batch was asynchronous, ja_wait_durable waits for its flush before the
     * result is returned. */
    if (!j->a->dry_run && (rc = pgx_exec(j->c, "SET synchronous_commit = off", "setting up the archive session", err)))
        return rc;
    FB_DEBUG("job=%s archive statement: %s", ctx->ev->job_id, j->sql.p);
    return FB_OK;
}

/* What is due (counted, capped by max-rows), announced; the statements' parameters. */
static fb_code ja_announce(ja_job *j, fb_err *err) {
    const ev_archive_due *a = j->a;
    const ja_node *root = &j->plan.nodes[0];
    snprintf(j->cutoff, sizeof j->cutoff, "%" PRId64, a->cutoff);
    snprintf(j->what, sizeof j->what, "archiving a batch of \"%s\".\"%s\"", root->schema, root->table);
    ja_count_due(j->c, &j->plan, j->cutoff, &j->k.total_due);
    j->k.total_rows = j->k.total_due;
    if (a->max_rows.has && (j->k.total_rows < 0 || j->k.total_rows > a->max_rows.v)) j->k.total_rows = a->max_rows.v;
    FB_INFO("job=%s archive%s \"%s\".\"%s\" (%s.%s) where \"%s\" < %" PRId64 " ms: %" PRId64
            " due, %zu table(s) in the cascade, batches of %" PRId64,
            j->ctx->ev->job_id, a->dry_run ? " (dry run)" : "", root->schema, root->table, a->module, a->model_name,
            a->timestamp_column, a->cutoff, j->k.total_due, j->plan.n_nodes, a->batch_size);
    return ja_params_init(&j->plan, j->ctx->ev, &j->q, err);
}

/* After a failed batch: 1 when it is retried (a lock or a reference that appeared: after a growing pause, up to
 * JOB_ARCHIVE_LOCK_RETRIES times); 0 when the job fails, with *err saying so. */
static int ja_retry_batch(ja_job *j, int retry, int *fails, fb_err *err) {
    if (retry && *fails < JOB_ARCHIVE_LOCK_RETRIES) {
        (*fails)++;
        j->k.retries++;
        int64_t pause = (j->ctx->cfg->batch_pause_ms > 200 ? j->ctx->cfg->batch_pause_ms : 200) << (*fails - 1);
        if (pause > 30000) pause = 30000;
        FB_WARN("job=%s %s; retry %d of %d in %" PRId64 " ms", j->ctx->ev->job_id, err->msg, *fails,
                JOB_ARCHIVE_LOCK_RETRIES, pause);
        ja_pause(j->ctx, pause); /* an abort during the pause is seen at the top of the loop */
        return 1;
    }
    if (retry) {
        fb_err_prefix(err, "gave up after %d retries of one batch (rows stay locked by other sessions; the job will "
                      "be retried later): ", JOB_ARCHIVE_LOCK_RETRIES);
        err->code = FB_ERR_TRANSIENT;
    }
    return 0;
}

/* A committed batch's counts (v, as ja_batch returns them) into the job's. */
static void ja_count_batch(ja_job *j, const int64_t v[JA_R_NCOLS], int synced) {
    ja_counts *k = &j->k;
    const ja_node *root = &j->plan.nodes[0];
    k->unflushed = synced ? 0 : k->unflushed + 1;
    k->batches++;
    k->archived += v[JA_R_ARCHIVED];
    k->cascaded += v[JA_R_CASCADED];
    k->nulled += v[JA_R_NULLED];
    k->prot += v[JA_R_PROT];
    k->ref += v[JA_R_REF];
    k->conf += v[JA_R_CONF];
    k->done += v[JA_R_SEEN];
    if (v[JA_R_CONF])
        FB_WARN("job=%s \"%s\".\"%s\": %" PRId64 " due row(s) left in place because an ArchivedRecord with the same "
                "(module, model_name, original_id) exists (re-created rows); unarchive or purge the old record to "
                "let them move", j->ctx->ev->job_id, root->schema, root->table, v[JA_R_CONF]);
    FB_DEBUG("job=%s batch %" PRId64 ": seen %" PRId64 " archived %" PRId64 " cascaded %" PRId64, j->ctx->ev->job_id,
             k->batches, v[JA_R_SEEN], v[JA_R_ARCHIVED], v[JA_R_CASCADED]);
}

/* After the fast statement failed (rolled back, nothing changed): 1 when the failure may be one the batch
 * statement handles by skipping and counting, a row held by another session (lock_timeout of the fast batch, 55P03:
 * another archive job's batch or the ERP holds it; or a table lock) or an ArchivedRecord with the same key (23505 on
 * _uniq; any other unique violation fails the general statement too, and the job with it, as before). The job then
 * runs this batch, and every later one, with the batch statement: at most one batch's work is spent twice per job,
 * and two jobs on one table never wait for each other more than JA_FAST_LOCK_MS. */
static int ja_fast_fell_back(ja_job *j, const char *state, const fb_err *err) {
    if (strcmp(state, "55P03") != 0 && strcmp(state, "23505") != 0) return 0;
    j->careful = 1;
    FB_INFO("job=%s a batch met a row held by another session or already archived (%s); the job goes on with the "
            "statement that skips and counts such rows", j->ctx->ev->job_id, err->msg);
    return 1;
}

/* Batches until none is due, max-rows is reached, the job is aborted or a batch fails for good. Between batches:
 * progress (after a synchronous COMMIT, at most every JA_PROGRESS_MS) and the throttle. */
static fb_code ja_batches(ja_job *j, fb_err *err) {
    const job_ctx *ctx = j->ctx;
    const ev_archive_due *a = j->a;
    int fails = 0;         /* consecutive failed attempts of the current batch */
    int64_t reported = 0;  /* when progress was last reported (0: not yet) */
    ja_dbload load;
    ja_sense(j->c, ctx, &j->k, &load); /* is the first batch a small one beside a live load? */
    for (;;) {
        if (job_aborted(ctx))
            return fb_err_set(err, FB_ERR_ABORTED, "archive job %s of \"%s\".\"%s\" stopped after %" PRId64
                              " batches (committed batches stay archived; a re-run continues)", ctx->ev->job_id,
                              j->plan.nodes[0].schema, j->plan.nodes[0].table, j->k.batches);
        int64_t want = ja_batch_rows(ctx, &j->k);
        if (a->max_rows.has) {
            if (j->k.done >= a->max_rows.v) return FB_OK;
            if (a->max_rows.v - j->k.done < want) want = a->max_rows.v - j->k.done;
        }
        ja_params_batch(&j->q, j->last_key, want);
        int64_t v[JA_R_NCOLS] = {0};
        char *next_key = NULL;
        int retry = 0, synced = 0, fast = !j->careful;
        char state[6];
        int64_t t_batch = ja_now_ms();
        int report = reported == 0 || t_batch - reported >= JA_PROGRESS_MS ||
                     (a->max_rows.has && j->k.done + want >= a->max_rows.v);
        const fb_sbuf *sql = fast ? (j->last_key ? &j->fast : &j->fast_first) : (j->last_key ? &j->sql : &j->sql_first);
        fb_code rc = ja_batch(j->c, ctx, sql->p, fast, (int)j->q.n, j->q.types, j->q.prm, want, report, &synced,
                              j->what, v, &next_key, &retry, state, err);
        if (rc != FB_OK && rc != FB_ERR_ABORTED && fast && ja_fast_fell_back(j, state, err)) continue;
        if (rc != FB_OK && ja_retry_batch(j, retry, &fails, err)) continue;
        if (rc != FB_OK) return retry ? FB_ERR_TRANSIENT : rc;
        fails = 0;
        j->k.batch_ms = ja_now_ms() - t_batch;
        if (v[JA_R_SEEN] == 0) return FB_OK; /* wrote nothing: batches before it may still be unflushed */
        free(j->last_key);
        j->last_key = next_key;
        ja_count_batch(j, v, synced);
        ja_publish(j->res, &j->k, j->started);
        if (synced || a->dry_run) { /* what it reports is on disk */
            job_report_progress(ctx, j->res);
            reported = ja_now_ms();
        }
        if (v[JA_R_SEEN] < want) return FB_OK; /* the scan ran out of due rows */
        ja_throttle(j->c, ctx, j->k.batch_ms, &j->k); /* an abort during the pause is seen at the top of the loop */
    }
}

/* Durable before reported: waits for the WAL of batches committed asynchronously since the last flush, also after
 * an abort or a failure (the counts returned must be durable). Returns the job's code: rc, or the wait's failure
 * when rc was FB_OK. */
static fb_code ja_durable(ja_job *j, fb_code rc, fb_err *err) {
    if (j->k.purged > 0 && !j->a->dry_run) j->k.unflushed++; /* the purge's DELETEs committed asynchronously too */
    if (!j->k.unflushed) return rc;
    fb_err werr;
    fb_err_clear(&werr);
    fb_code wrc = ja_wait_durable(j->c, j->ctx, &j->k, &werr);
    if (wrc != FB_OK && rc == FB_OK) {
        *err = werr;
        return wrc;
    }
    if (wrc != FB_OK) FB_WARN("job=%s %s", j->ctx->ev->job_id, werr.msg);
    return rc;
}

fb_code job_archive_run(const job_ctx *ctx, job_result *res, fb_err *err) {
    const ev_event *ev = ctx->ev;
    ja_job j = {.ctx = ctx, .a = &ev->u.archive, .res = res, .started = ja_now_ms()};
    fb_code rc;
    j.k.total_due = -1;
    j.k.live_sessions = -1;
    if (ev->type != EV_ARCHIVE_DUE) {
        rc = fb_err_set(err, FB_ERR_INTERNAL, "job_archive_run was given a %s event", ev_type_name(ev->type));
        goto out;
    }
    /* 1. Authorised by the policy; the session, the plan and its statements. */
    if ((rc = ja_start(&j, err))) goto out;
    /* 2. What is due, announced. */
    if ((rc = ja_announce(&j, err))) goto out;
    /* 3. The batches. */
    rc = ja_batches(&j, err);
    /* 4. Purging old ArchivedRecords comes last. */
    if (rc == FB_OK && j.a->purge_before.has) rc = ja_purge(j.c, ctx, &j.k, err);
    /* 5. Every committed batch durable before the counts are returned. */
    rc = ja_durable(&j, rc, err);
    if (rc == FB_OK)
        FB_INFO("job=%s archive%s \"%s\".\"%s\" done: archived %" PRId64 " cascaded %" PRId64 " nulled %" PRId64
                " skipped protected %" PRId64 " referenced %" PRId64 " conflict %" PRId64 " purged %" PRId64
                " in %" PRId64 " batches", ev->job_id, j.a->dry_run ? " (dry run)" : "", j.plan.nodes[0].schema,
                j.plan.nodes[0].table, j.k.archived, j.k.cascaded, j.k.nulled, j.k.prot, j.k.ref, j.k.conf,
                j.k.purged, j.k.batches);
out:
    ja_publish(res, &j.k, j.started);
    ja_params_free(&j.q);
    free(j.last_key);
    fb_sbuf_free(&j.sql);
    fb_sbuf_free(&j.sql_first);
    fb_sbuf_free(&j.fast);
    fb_sbuf_free(&j.fast_first);
    ja_plan_free(&j.plan);
    if (j.c) PQfinish(j.c);
    return rc;
}
