/* job_request: the request types as one table: for each request event type, the job type its status events carry,
 * the topic it is published on, its partition key, the job function that runs it and whether finished runs are
 * kept in the ledger. The daemon (which job to run, which topic a message may come from, the ledger), `replay`
 * (where to republish) and the status events (job_type) all read it, so adding a request type is one row.
 */
#ifndef JOB_REQUEST_H
#define JOB_REQUEST_H

#include <stddef.h>

#include "codec/ev_event.h"
#include "common/fb_topic.h"
#include "job/job.h"

typedef fb_code (*job_run_fn)(const job_ctx *ctx, job_result *res, fb_err *err);

typedef struct job_request {
    ev_type type;
    ev_job_type job_type;   /* what its status events say it was */
    fb_topic topic;         /* where requesters publish it (schemas/SPEC.md, "Topics") */
    /* Its message key (the partition key): requests of one configuration, or of one model, are one partition and
     * so one worker at a time. Writes into key; returns it. */
    const char *(*key)(const ev_event *req, char *key, size_t cap);
    job_run_fn run;
    int uses_ledger;        /* finished runs are recorded in the storage root's ledger and not run again when
                             * redelivered (backups: long and writing an artifact; the others are cheap to redo) */
} job_request;

/* The row of a request type; NULL for an event type that is not a request (job.status). */
const job_request *job_request_of(ev_type type);

#endif
