/* bench_archive: runs job_archive_run once, in-process, on a table and prints one JSON line of results.
 *
 * The benchmark (run.sh / bench.py) uses it to time the worker's archival exactly as the daemon runs it (same
 * function, same batches), without Kafka in the way. Built by run.sh against the build's libfbcore.a. The
 * duration of the batches the job reports progress after (the progress stat batch_ms: the first batch, then one
 * a second, and the last one that saw rows, see JA_PROGRESS_MS) is collected, and first, median, last and largest
 * are printed, so that a cost that grows as the job advances shows at a glance. Settings come from the
 * environment as for the worker (FB_ARCHIVE_SLEEP_PCT, ...): the defaults unless the caller sets them.
 *
 *   bench_archive CONNINFO TABLE PK TIMESTAMP_COLUMN CUTOFF_MS BATCH_SIZE [MAX_ROWS]
 *
 * MAX_ROWS (the request's max_rows) stops the job after that many rows: explain.py runs one batch of the job that
 * way, with auto_explain on, to count its buffers and WAL.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "common/fb_config.h"
#include "common/fb_log.h"
#include "job/job.h"
#include "job/job_archive.h"

/* The reported batches' durations, in order (the progress callback runs after a committed batch, at most once a
 * second). */
typedef struct ba_batches {
    int64_t *ms;
    size_t n, cap;
} ba_batches;

static void ba_progress(void *opaque, const job_result *so_far) {
    ba_batches *b = opaque;
    if ((size_t)job_result_get(so_far, "batches") <= b->n) return; /* a report without a new batch */
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 1024;
        int64_t *ms = realloc(b->ms, cap * sizeof *ms);
        if (!ms) return;
        b->ms = ms;
        b->cap = cap;
    }
    b->ms[b->n++] = job_result_get(so_far, "batch_ms");
}

static int ba_cmp(const void *x, const void *y) {
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv) {
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: bench_archive CONNINFO TABLE PK TIMESTAMP_COLUMN CUTOFF_MS BATCH_SIZE [MAX_ROWS]\n");
        return 2;
    }
    fb_config cfg;
    fb_err err;
    if (fb_config_init(&cfg, &err) != FB_OK) {
        fprintf(stderr, "bench_archive: %s\n", err.msg);
        return 2;
    }
    free(cfg.pg);
    cfg.pg = strdup(argv[1]);
    int level = fb_log_level_parse(cfg.log_level);
    if (level >= 0) fb_log_set_level((fb_log_level)level);
    ev_event ev;
    memset(&ev, 0, sizeof ev);
    ev.v = 1;
    ev.type = EV_ARCHIVE_DUE;
    ev.attempt = 1;
    snprintf(ev.job_id, sizeof ev.job_id, "00000000-0000-4000-8000-00000000be0c");
    ev_archive_due *a = &ev.u.archive;
    a->module = "notifications";
    a->model_name = "Notification";
    a->table.schema = "public";
    a->table.name = argv[2];
    a->pk_column = argv[3];
    a->timestamp_column = argv[4];
    a->cutoff = strtoll(argv[5], NULL, 10);
    a->batch_size = strtoll(argv[6], NULL, 10);
    if (argc == 8) {
        a->max_rows.has = 1;
        a->max_rows.v = strtoll(argv[7], NULL, 10);
    }
    a->has_relations = 0; /* the catalog decides: notifications are referenced by nothing */
    a->policy_id = 1;
    {
        /* The ArchivePolicy that authorises this request (the worker checks every request against one). */
        const char *p[4] = {argv[2], argv[3], argv[4], "1"};
        PGconn *c = PQconnectdb(cfg.pg);
        PGresult *r = PQexec(c, "DELETE FROM backup_archive_archivepolicy WHERE id = 1 OR (module = "
                                "'notifications' AND model_name = 'Notification')");
        PQclear(r);
        r = PQexecParams(c,
                         "INSERT INTO backup_archive_archivepolicy (id, module, model_name, timestamp_column, "
                         "archive_after_days, delete_after_days, batch_size, max_rows_per_run, schedule, is_active, "
                         "db_schema, db_table, pk_column) VALUES ($4::bigint, 'notifications', 'Notification', $3, 0, "
                         "NULL, 1000, NULL, '', true, 'public', $1, $2)",
                         4, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            fprintf(stderr, "bench_archive: could not write the ArchivePolicy: %s", PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
    }
    ba_batches batches = {0};
    job_ctx ctx = {.cfg = &cfg, .ev = &ev, .worker_name = "bench", .progress = ba_progress, .progress_opaque = &batches};
    job_result res;
    job_result_init(&res);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fb_code rc = job_archive_run(&ctx, &res, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (rc != FB_OK) {
        fprintf(stderr, "bench_archive: %s\n", err.msg);
        fb_config_free(&cfg);
        return rc;
    }
    int64_t first = 0, last = 0, median = 0, max = 0;
    if (batches.n) {
        first = batches.ms[0];
        last = batches.ms[batches.n - 1];
        qsort(batches.ms, batches.n, sizeof *batches.ms, ba_cmp);
        median = batches.ms[batches.n / 2];
        max = batches.ms[batches.n - 1];
    }
    printf("{\"archived\": %lld, \"batches\": %lld, \"seconds\": %.3f, \"batch_ms\": {\"first\": %lld, "
           "\"median\": %lld, \"last\": %lld, \"max\": %lld}, \"throttle_ms\": %lld, \"live_batches\": %lld}\n",
           (long long)job_result_get(&res, "archived"), (long long)job_result_get(&res, "batches"), s,
           (long long)first, (long long)median, (long long)last, (long long)max,
           (long long)job_result_get(&res, "throttle_ms"), (long long)job_result_get(&res, "throttle_live_batches"));
    free(batches.ms);
    fb_config_free(&cfg);
    return 0;
}
