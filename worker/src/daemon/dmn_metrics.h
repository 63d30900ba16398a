/* dmn_metrics: process-wide counters and an HTTP endpoint (--metrics-listen host:port, [v6]:port): /metrics is
 * the Prometheus text exposition, /healthz says whether this process's consumer loops are consuming.
 *
 * Names: every metric is fusion_backup_<what> (fusion_backup_jobs_total, ...): "fusion_" alone would be the
 * ERP's own namespace, and this system is Fusion Backup & Archive.
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

#include "capture/cap_slot.h"
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

/* Change capture (dmn_capture.h), per database and slot: the slot's state as this worker last polled it
 * (state: standby | streaming | retrying | stopped, this worker's view), whether this worker leads it, and whether
 * its capture stopped on a condition that needs a new base. */
void dmn_metrics_capture(const char *database, const char *slot, int leader, const char *state,
                         const cap_slot_health *h, double lag_s);
void dmn_metrics_capture_leader(const char *database, const char *slot, int leader);
void dmn_metrics_capture_stopped(const char *database, const char *slot, int stopped);

/* /healthz. The consumer loops a process runs (bits of 1 << dmn_consumer), set once by main before they start.
 * Each loop calls _beat every time a poll returns and _stopped when it leaves. /healthz answers 200 when every
 * expected loop has polled within DMN_HEALTH_STALE_MS, 503 otherwise (not yet started, stopped, or stuck: e.g.
 * the recorder waiting for its database), with one line per loop saying which. The worker loop keeps polling
 * while jobs run (they run on their own threads) and during the shutdown grace, so neither makes it unhealthy. */
typedef enum dmn_consumer { DMN_CONSUMER_WORKER = 0, DMN_CONSUMER_RECORDER, DMN_CONSUMER_N } dmn_consumer;
/* A minute: well above one loop turn, which can include lag queries of a second per partition. */
#define DMN_HEALTH_STALE_MS 60000
void dmn_metrics_health_expect(unsigned consumers);
void dmn_metrics_consumer_beat(dmn_consumer which);
void dmn_metrics_consumer_stopped(dmn_consumer which);
/* Writes the /healthz body; returns 1 when healthy. */
int dmn_metrics_health(FILE *out);

/* Writes the Prometheus text exposition of every metric. */
void dmn_metrics_render(FILE *out);

/* Starts the endpoint thread on "IPv4:port", "[IPv6]:port" ("[::]:port": every address, IPv4 too) or ":port"
 * (127.0.0.1). Returns FB_ERR_USAGE for a bad address or a port in use. */
fb_code dmn_metrics_serve(const char *listen, fb_err *err);

#endif
