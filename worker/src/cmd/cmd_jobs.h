/* cmd_jobs: the latest status of every job, read from the completion topic; shared by `replay` and `status`.
 * Private to cmd/. */
#ifndef CMD_JOBS_H
#define CMD_JOBS_H

#include <stddef.h>

#include "codec/ev_event.h"
#include "common/fb_config.h"
#include "common/fb_sign.h"

typedef struct cmd_job {
    ev_event *last;        /* the newest status event of the job (owned) */
    int64_t last_success_ms;
} cmd_job;

typedef struct cmd_jobs {
    cmd_job *items;
    size_t n, cap;
    size_t undecodable;
    size_t untrusted;      /* status events not signed by a trusted worker: skipped, counted */
    const fb_keyring *signers; /* borrowed during cmd_jobs_load */
} cmd_jobs;

/* Reads <prefix>jobs.completed to its end; keeps, per job id, the event of the highest attempt and, within it,
 * the latest (a terminal status beats RUNNING). Only status events signed by a key of signers count (kfk_sign.h):
 * the others are skipped and counted in jobs->untrusted, so a forged FAILED can neither be replayed nor shown as
 * a job's state. */
fb_code cmd_jobs_load(const fb_config *cfg, const fb_keyring *signers, cmd_jobs *jobs, fb_err *err);
void cmd_jobs_free(cmd_jobs *jobs);

#endif
