/* job_request: see job_request.h. */
#include "job/job_request.h"

#include <inttypes.h>
#include <stdio.h>

#include "job/job_archive.h"
#include "job/job_backup.h"
#include "job/job_verify.h"

static const char *jrq_key_backup(const ev_event *req, char *key, size_t cap) {
    snprintf(key, cap, "%" PRId64, req->u.backup.config_id);
    return key;
}

static const char *jrq_key_verify(const ev_event *req, char *key, size_t cap) {
    snprintf(key, cap, "%" PRId64, req->u.verify.config_id);
    return key;
}

static const char *jrq_key_archive(const ev_event *req, char *key, size_t cap) {
    snprintf(key, cap, "%s.%s", req->u.archive.module, req->u.archive.model_name);
    return key;
}

static const job_request job_requests[] = {
    {EV_BACKUP_REQUESTED, EV_JOB_BACKUP, FB_TOPIC_BACKUP, jrq_key_backup, job_backup_run, 1},
    {EV_BACKUP_VERIFY, EV_JOB_VERIFY, FB_TOPIC_BACKUP, jrq_key_verify, job_verify_run, 0},
    {EV_ARCHIVE_DUE, EV_JOB_ARCHIVE, FB_TOPIC_ARCHIVE, jrq_key_archive, job_archive_run, 0},
};

const job_request *job_request_of(ev_type type) {
    for (size_t i = 0; i < sizeof job_requests / sizeof job_requests[0]; i++)
        if (job_requests[i].type == type) return &job_requests[i];
    return NULL;
}
