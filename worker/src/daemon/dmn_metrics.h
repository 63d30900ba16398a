/* dmn_metrics: process-wide counters and a Prometheus text endpoint (--metrics-listen host:port).
 *
 * Counters are updated by job threads and the consumer loop under one mutex (updates are a few per job, so
 * contention is irrelevant); the endpoint thread renders them on each GET. Consumer lag per partition comes from
 * the consumer loop (watermarks minus position), since librdkafka's statistics stop updating hi_offset while a
 * partition is paused for a long job.
 */
#ifndef DMN_METRICS_H
#define DMN_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "common/fb_err.h"
#include "job/job.h"

void dmn_metrics_job_started(const char *job_type);
void dmn_metrics_job_finished(const char *job_type, const char *status, int64_t duration_ms, const job_result *res);
void dmn_metrics_last_backup_success(int64_t config_id, int64_t when_ms);
void dmn_metrics_dlq(void);
/* Why the recorder did not apply a status event. */
typedef enum dmn_ignored {
    DMN_IGNORED_NO_RECORD = 0,      /* no BackupRecord has this job id (backup) or record id (verify) */
    DMN_IGNORED_RECORD_MISMATCH,    /* the record of this job id is not the status's record_id */
    DMN_IGNORED_CONFIG_MISMATCH,    /* config_id is not the record's configuration */
    DMN_IGNORED_ATTEMPT_TOO_HIGH,   /* attempt beyond the record's attempt + 1 */
    DMN_IGNORED_VERIFY_JOB_MISMATCH,/* a verify result for a job the record did not ask for */
    DMN_IGNORED_STALE,              /* older than what the record holds: a duplicate or late event (normal) */
    DMN_IGNORED_UNTRUSTED,          /* unsigned, or not signed by a trusted worker key (kfk_sign.h) */
    DMN_IGNORED_N
} dmn_ignored;

void dmn_metrics_recorder_ignored(dmn_ignored reason);
/* The label value of a reason ("attempt_too_high", ...). */
const char *dmn_metrics_ignored_name(dmn_ignored reason);
void dmn_metrics_given_up(void);
/* A request refused by the authority check (job type "backup", "archive", "verify"). */
void dmn_metrics_denied(const char *job_type);
void dmn_metrics_ledger_mismatch(void);
/* A request that was unsigned or not signed by a trusted requester (dead-lettered, not run). */
void dmn_metrics_untrusted_request(void);
void dmn_metrics_minimal_failed(void);
void dmn_metrics_lag(const char *topic, int32_t partition, int64_t lag);
void dmn_metrics_lag_clear(void);

/* Writes the Prometheus text exposition of every metric. */
void dmn_metrics_render(FILE *out);

/* Starts the endpoint thread on "host:port" (or ":port"). Returns FB_USAGE for a bad address or a port in use. */
fb_code dmn_metrics_serve(const char *listen, fb_err *err);

#endif
