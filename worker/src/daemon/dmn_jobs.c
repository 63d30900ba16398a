/* dmn_jobs: see dmn_jobs.h. */
#include "daemon/dmn_jobs.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fb_log.h"
#include "daemon/dmn_ledger.h"
#include "daemon/dmn_metrics.h"
#include "job/job_archive.h"
#include "job/job_backup.h"
#include "job/job_verify.h"

static const struct {
    ev_type type;
    dmn_job_fn fn;
} dmn_job_table[] = {
    {EV_BACKUP_REQUESTED, job_backup_run},
    {EV_BACKUP_VERIFY, job_verify_run},
    {EV_ARCHIVE_DUE, job_archive_run},
};

dmn_job_fn dmn_jobs_lookup(ev_type type) {
    for (size_t i = 0; i < sizeof dmn_job_table / sizeof dmn_job_table[0]; i++)
        if (dmn_job_table[i].type == type) return dmn_job_table[i].fn;
    return NULL;
}

/* Progress: at most one RUNNING event per progress interval, carrying the counters so far. */
typedef struct dmn_progress {
    const dmn_pub *pub;
    const ev_event *req;
    int64_t started_at, last_ms, interval_ms;
} dmn_progress;

static void dmn_progress_cb(void *opaque, const job_result *so_far) {
    dmn_progress *p = opaque;
    int64_t now = ev_now_ms();
    if (!p->pub->producer || now - p->last_ms < p->interval_ms) return;
    p->last_ms = now;
    fb_err err;
    if (dmn_status_publish(p->pub, p->req, NULL, 0, EV_RUNNING, p->started_at, so_far, NULL, &err))
        FB_WARN("job %s: progress not published: %s", p->req->job_id, err.msg);
}

/* Sleeps ms, waking early when abort is set. */
static void dmn_sleep_abortable(int64_t ms, volatile sig_atomic_t *abort) {
    while (ms > 0 && !(abort && *abort)) {
        int64_t step = ms < 100 ? ms : 100;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

static int dmn_uses_ledger(const fb_config *cfg, const ev_event *req) {
    return req->type == EV_BACKUP_REQUESTED && cfg->storage_root && *cfg->storage_root;
}

fb_code dmn_jobs_execute(const dmn_pub *pub, const fb_config *cfg, const ev_event *req, const unsigned char *raw,
                         size_t raw_len, volatile sig_atomic_t *abort, dmn_outcome *out, fb_err *err) {
    memset(out, 0, sizeof *out);
    job_result_init(&out->result);
    const char *jt = ev_job_type_name(dmn_job_type_of(req));
    dmn_job_fn fn = dmn_jobs_lookup(req->type);
    if (!fn) return fb_err_set(err, FB_ERR_INVALID, "a %s event is not a job", ev_type_name(req->type));

    /* 1. Already done? Publish the recorded SUCCESS again (the first publish may have been lost). */
    if (dmn_uses_ledger(cfg, req)) {
        unsigned char *prev = NULL;
        size_t prev_len = 0;
        fb_err lerr;
        fb_code lr = dmn_ledger_get(cfg, req->job_id, &prev, &prev_len, &lerr);
        if (lr == FB_OK) {
            FB_INFO("job %s (%s): already succeeded, publishing its SUCCESS again", req->job_id, jt);
            out->status = EV_SUCCESS;
            out->from_ledger = 1;
            fb_code rc = pub->producer ? dmn_status_publish_raw(pub, req->job_id, prev, prev_len, err) : FB_OK;
            ev_event *old = NULL;
            if (ev_decode(prev, prev_len, &old, &lerr) == FB_OK) {
                if (old->u.status.file_path) snprintf(out->result.file_path, sizeof out->result.file_path, "%s",
                                                      old->u.status.file_path);
                if (old->u.status.file_size.has) out->result.file_size = old->u.status.file_size.v;
            }
            ev_event_free(old);
            free(prev);
            return rc;
        }
        if (lr != FB_ERR_NOTFOUND) FB_WARN("job %s: %s (running the job anyway)", req->job_id, lerr.msg);
    }

    /* 2. RUNNING. */
    int64_t started = ev_now_ms();
    fb_code rc;
    if (pub->producer && (rc = dmn_status_publish(pub, req, NULL, 0, EV_RUNNING, started, NULL, NULL, err))) return rc;
    FB_INFO("job %s (%s, attempt %lld): started", req->job_id, jt, (long long)req->attempt);
    dmn_metrics_job_started(jt);

    /* 3. The job, retried with doubling back-off while the failure is transient. */
    dmn_progress prog = {pub, req, started, started, cfg->progress_interval_ms};
    job_ctx ctx = {cfg, req, pub->worker_name, abort, dmn_progress_cb, &prog};
    fb_code jr = FB_OK;
    int64_t backoff = cfg->retry_backoff_ms;
    for (int64_t attempt = 0;; attempt++) {
        job_result_init(&out->result);
        fb_err_clear(&out->error);
        jr = fn(&ctx, &out->result, &out->error);
        if (jr == FB_OK || !fb_code_is_transient(jr) || attempt >= cfg->retry_max || (abort && *abort)) break;
        FB_WARN("job %s: transient failure, retry %lld of %lld in %lld ms: %s", req->job_id, (long long)attempt + 1,
                (long long)cfg->retry_max, (long long)backoff, out->error.msg);
        dmn_sleep_abortable(backoff, abort);
        backoff *= 2;
    }
    int64_t took = ev_now_ms() - started;
    if (job_result_get(&out->result, "duration_ms") == 0) job_result_set(&out->result, "duration_ms", took);

    /* 4. The outcome: durable first (ledger), then published. */
    if (jr == FB_OK) {
        out->status = EV_SUCCESS;
        ev_event *st = dmn_status_build(pub, req, NULL, 0, EV_SUCCESS, started, &out->result, NULL);
        unsigned char *buf = NULL;
        size_t len = 0;
        rc = st ? ev_encode(st, &buf, &len, err) : fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        if (!rc && dmn_uses_ledger(cfg, req)) rc = dmn_ledger_put(cfg, req->job_id, buf, len, err);
        if (!rc && pub->producer) rc = dmn_status_publish_raw(pub, req->job_id, buf, len, err);
        free(buf);
        ev_event_free(st);
        FB_INFO("job %s (%s): SUCCESS in %lld ms%s%s", req->job_id, jt, (long long)took,
                out->result.file_path[0] ? ", artifact " : "", out->result.file_path);
        dmn_metrics_job_finished(jt, "SUCCESS", took, &out->result);
        return rc;
    }
    out->status = EV_FAILED;
    FB_ERROR("job %s (%s): FAILED (%s): %s", req->job_id, jt, fb_code_name(jr), out->error.msg);
    dmn_metrics_job_finished(jt, "FAILED", took, &out->result);
    if (!pub->producer) return FB_OK;
    return dmn_status_publish(pub, req, raw, raw_len, EV_FAILED, started, &out->result, out->error.msg, err);
}
