/* dmn_jobs: which job function runs which request type, and the run of one job with its retries.
 *
 * dmn_jobs_execute() is the whole life of one request once decoded, shared by the daemon's job threads and
 * `fusion-backup event run`: ledger look-up, the authority check (a request the database does not authorise is
 * not run and nothing is published under its job id: outcome `denied`, which the daemon dead-letters), (a backup that already succeeded, for this very request (digest) and
 * with its artifact in place, is not run again; its SUCCESS is published again), RUNNING, the delivery count
 * (past max_deliveries the request is not run but answered with a minimal FAILED), the job with bounded retries
 * of transient failures, then the ledger entry and SUCCESS, or FAILED with the reason and the request (or, when
 * the encoder refuses that, a minimal FAILED). It returns FB_OK once the outcome is published (whatever
 * the outcome): only then may the caller store the message's offset.
 */
#ifndef DMN_JOBS_H
#define DMN_JOBS_H

#include <signal.h>
#include <stddef.h>

#include "codec/ev_event.h"
#include "common/fb_flag.h"
#include "daemon/dmn_status.h"
#include "job/job.h"
#include "job/job_request.h"

/* The job function for a request type; NULL for types that are not jobs (job.status). */
job_run_fn dmn_jobs_lookup(ev_type type);

typedef struct dmn_outcome {
    ev_status status;       /* SUCCESS or FAILED */
    job_result result;
    fb_err error;           /* the job's error when FAILED */
    int from_ledger;        /* 1: the job had succeeded before and was not run again */
    int gave_up;            /* 1: delivered more than max_deliveries times: not run, a minimal FAILED sent */
    int denied;             /* 1: the database does not authorise it (job_authority.h): not run, nothing
                             * published; error says why; the daemon dead-letters the message */
} dmn_outcome;

/* Runs req to a published outcome. pub->producer may be NULL (no Kafka: nothing is published, e.g. `event run`
 * without brokers). abort may be NULL. Returns FB_OK when the outcome is published (or nothing had to be), else
 * the publishing error: then the caller must not store the offset, so the request is delivered again. */
fb_code dmn_jobs_execute(const dmn_pub *pub, const fb_config *cfg, const ev_event *req, const unsigned char *raw,
                         size_t raw_len, fb_flag *abort, dmn_outcome *out, fb_err *err);

#endif
