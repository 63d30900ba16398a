/* bench_archive: runs job_archive_run once, in-process, on a table and prints one JSON line of results.
 *
 * The benchmark (run.sh / bench.py) uses it to time the worker's archival exactly as the daemon runs it (same
 * function, same batches), without Kafka in the way. Built by run.sh against the build's libfbcore.a.
 *
 *   bench_archive CONNINFO TABLE PK TIMESTAMP_COLUMN CUTOFF_MS BATCH_SIZE
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

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: bench_archive CONNINFO TABLE PK TIMESTAMP_COLUMN CUTOFF_MS BATCH_SIZE\n");
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
    job_ctx ctx = {.cfg = &cfg, .ev = &ev, .worker_name = "bench"};
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
    printf("{\"archived\": %lld, \"batches\": %lld, \"seconds\": %.3f}\n", (long long)job_result_get(&res, "archived"),
           (long long)job_result_get(&res, "batches"), s);
    fb_config_free(&cfg);
    return 0;
}
