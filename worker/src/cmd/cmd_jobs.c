/* cmd_jobs: see cmd_jobs.h. A linear table: the completion topic of one installation holds thousands of jobs,
 * not millions, and commands run rarely. */
#include "cmd/cmd_jobs.h"

#include <stdlib.h>
#include <string.h>

#include "kafka/kfk_scan.h"
#include "kafka/kfk_sign.h"

static int cmd_jobs_rank(const ev_event *e) { return e->u.status.status == EV_RUNNING ? 0 : 1; }

static int cmd_jobs_add(void *opaque, const rd_kafka_message_t *m) {
    cmd_jobs *jobs = opaque;
    ev_event *ev = NULL;
    if (kfk_sign_verify_message(jobs->signers, m, "a status", NULL, NULL)) {
        jobs->untrusted++;
        return 0;
    }
    if (ev_decode(m->payload, m->len, &ev, NULL) || ev->type != EV_JOB_STATUS) {
        jobs->undecodable++;
        ev_event_free(ev);
        return 0;
    }
    cmd_job *j = NULL;
    for (size_t i = 0; i < jobs->n; i++)
        if (strcmp(jobs->items[i].last->job_id, ev->job_id) == 0) j = &jobs->items[i];
    if (!j) {
        if (jobs->n == jobs->cap) {
            size_t cap = jobs->cap ? jobs->cap * 2 : 256;
            cmd_job *n = realloc(jobs->items, cap * sizeof *n);
            if (!n) {
                ev_event_free(ev);
                return 1;
            }
            jobs->items = n;
            jobs->cap = cap;
        }
        j = &jobs->items[jobs->n++];
        memset(j, 0, sizeof *j);
        j->last = ev;
    } else if (ev->attempt > j->last->attempt ||
               (ev->attempt == j->last->attempt && cmd_jobs_rank(ev) >= cmd_jobs_rank(j->last))) {
        ev_event_free(j->last);
        j->last = ev;
    } else {
        ev_event_free(ev);
        ev = NULL;
    }
    if (ev && ev->u.status.status == EV_SUCCESS) j->last_success_ms = ev->ts;
    return 0;
}

fb_code cmd_jobs_load(const fb_config *cfg, const fb_keyring *signers, cmd_jobs *jobs, fb_err *err) {
    memset(jobs, 0, sizeof *jobs);
    jobs->signers = signers;
    char topic[300];
    fb_config_topic(cfg, FB_TOPIC_COMPLETED, topic, sizeof topic);
    return kfk_scan_topic(cfg, topic, cmd_jobs_add, jobs, err);
}

void cmd_jobs_free(cmd_jobs *jobs) {
    for (size_t i = 0; i < jobs->n; i++) ev_event_free(jobs->items[i].last);
    free(jobs->items);
    memset(jobs, 0, sizeof *jobs);
}
