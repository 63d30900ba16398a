/* job: what every job type shares: its context (borrowed from the daemon or a CLI command) and its result.
 *
 * A job function (job_backup_run, job_archive_run, job_verify_run) runs one decoded request to completion on the
 * calling thread. It must be idempotent (a redelivered or replayed request may run it again), must stop at the next
 * safe point when *ctx->abort becomes non-zero (rolling back, removing temporary files, returning
 * FB_ERR_ABORTED), and reports what it did in job_result (counters become `stats` of the status event). It never
 * publishes to Kafka itself: the daemon does that (progress through ctx->progress).
 */
#ifndef JOB_H
#define JOB_H

#include <signal.h>
#include <stdint.h>

#include "codec/ev_event.h"
#include "common/fb_config.h"
#include "common/fb_err.h"
#include "common/fb_flag.h"

#define JOB_MAX_STATS 32

typedef struct job_result {
    char file_path[1025];      /* artifact relative to the storage root; "" when the job writes none */
    int64_t file_size;         /* bytes of the artifact; -1 when none */
    ev_stat stats[JOB_MAX_STATS]; /* keys are string literals (static storage) */
    size_t n_stats;
} job_result;

/* Progress callback: a snapshot of counters so far (done_* / total_*). The daemon rate-limits publishing;
 * jobs may call it as often as once per batch or per table. */
typedef void (*job_progress_fn)(void *opaque, const job_result *so_far);

/* A backup taken in a snapshot someone else exported, as the base of a change chain (capture/cap_base.h): the
 * job imports `snapshot` instead of starting a fresh one and records slot, stream and lsn (the slot's consistent
 * point) in the manifest. Borrowed; the exporter must keep the snapshot alive until the job returns. */
typedef struct job_snapshot_import {
    const char *snapshot;       /* SET TRANSACTION SNAPSHOT id, as the server printed it */
    const char *slot, *stream;
    uint64_t lsn;
} job_snapshot_import;

typedef struct job_ctx {
    const fb_config *cfg;          /* borrowed */
    const ev_event *ev;            /* the request, borrowed */
    const char *worker_name;
    fb_flag *abort;  /* may be NULL; non-zero: stop at the next safe point */
    job_progress_fn progress;      /* may be NULL */
    void *progress_opaque;
    const job_snapshot_import *import; /* may be NULL: the backup takes its own snapshot (FULL only otherwise) */
} job_ctx;

void job_result_init(job_result *r);
/* Sets (or replaces) an integer / float counter. key must have static storage. */
void job_result_set(job_result *r, const char *key, int64_t v);
void job_result_setf(job_result *r, const char *key, double v);
int64_t job_result_get(const job_result *r, const char *key); /* 0 when absent */
int job_aborted(const job_ctx *ctx);
void job_report_progress(const job_ctx *ctx, const job_result *so_far);

#endif
