/* dmn_jobs: see dmn_jobs.h. */
#include "daemon/dmn_jobs.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "artifact/arc_index.h"
#include "artifact/arc_key.h"
#include "artifact/arc_reader.h"
#include "artifact/arc_sign.h"
#include "common/fb_flag.h"
#include "common/fb_log.h"
#include "common/fb_time.h"
#include "daemon/dmn_ledger.h"
#include "daemon/dmn_metrics.h"
#include "job/job_archive.h"
#include "job/job_authority.h"
#include "job/job_backup.h"
#include "job/job_request.h"
#include "job/job_verify.h"
#include "storage/stor.h"

job_run_fn dmn_jobs_lookup(ev_type type) {
    return job_request_of(type) ? job_request_of(type)->run : NULL;
}

/* Progress: at most one RUNNING event per progress interval, carrying the counters so far. */
typedef struct dmn_progress {
    const dmn_pub *pub;
    const ev_event *req;
    int64_t started_at, last_ms, interval_ms;
} dmn_progress;

static void dmn_progress_cb(void *opaque, const job_result *so_far) {
    dmn_progress *p = opaque;
    int64_t now = fb_now_ms();
    if (!p->pub->producer || now - p->last_ms < p->interval_ms) return;
    p->last_ms = now;
    fb_err err;
    if (dmn_status_publish(p->pub, p->req, NULL, 0, EV_RUNNING, p->started_at, so_far, NULL, &err))
        FB_WARN("job %s: progress not published: %s", p->req->job_id, err.msg);
}

/* Sleeps ms, waking early when abort is set. */
static void dmn_sleep_abortable(int64_t ms, fb_flag *abort) {
    while (ms > 0 && !(abort && *abort)) {
        int64_t step = ms < 100 ? ms : 100;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

/* Where delivery counters are kept: the storage root when it is a folder; in memory (NULL) for a bucket. */
static const char *dmn_counter_root(const fb_config *cfg) {
    return cfg->storage_root && *cfg->storage_root && !stor_is_url(cfg->storage_root) ? cfg->storage_root : NULL;
}

static int dmn_uses_ledger(const fb_config *cfg, const ev_event *req) {
    return job_request_of(req->type) && job_request_of(req->type)->uses_ledger && cfg->storage_root && *cfg->storage_root;
}

/* Before a stored SUCCESS stands in for running the job: does the artifact it names exist, in this request's
 * folder, with a chain index (plaintext, MACed with the index key) that names this job and configuration? A
 * ledger entry is a file anyone with write access to the storage root could plant, and an artifact can be
 * removed by hand or by retention of another configuration; either way the job must run again. Returns 1 when
 * the artifact holds up, else 0 with the reason in why. */
static int dmn_artifact_holds(const fb_config *cfg, const ev_event *req, const unsigned char *status,
                              size_t status_len, char *why, size_t cap) {
    char rel[1400];
    ev_event *old = NULL;
    stor *st = NULL;
    stor_rfile *f = NULL;
    char *ibuf = NULL;
    size_t ilen = 0;
    arc_index *ix = NULL;
    unsigned char pk[ARC_PK_BYTES], ikey[ARC_INDEX_KEY_BYTES];
    fb_keyring kr = {0};
    arc_trust trust = {&kr, cfg->allow_unsigned != 0, req->job_id};
    int version = 0, ok = 0;
    fb_err e;
    if (job_backup_artifact_path(req->u.backup.storage_path, req->job_id, rel, sizeof rel) != 0) {
        snprintf(why, cap, "the storage path is too long for an artifact name");
        goto out;
    }
    if (ev_decode(status, status_len, &old, &e) || old->type != EV_JOB_STATUS || old->u.status.status != EV_SUCCESS ||
        strcmp(old->job_id, req->job_id) != 0) {
        snprintf(why, cap, "the entry is not a SUCCESS of this job");
        goto out;
    }
    if (!old->u.status.file_path || strcmp(old->u.status.file_path, rel) != 0) {
        snprintf(why, cap, "it names artifact \"%s\", not \"%s\"", old->u.status.file_path ? old->u.status.file_path : "",
                 rel);
        goto out;
    }
    if (arc_key_load_public(cfg->public_key, pk, &e) || arc_index_key(cfg->index_key, pk, ikey, &e) ||
        stor_open_location(cfg->storage_root, cfg, &st, &e) || stor_open(st, rel, &f, &e) ||
        arc_reader_peek_version(f, &version, &e)) {
        snprintf(why, cap, "%s", e.msg);
        goto out;
    }
    if (version < 2) {
        snprintf(why, cap, "artifact \"%s\" is of format %d, which has no chain index to prove whose it is", rel, version);
        goto out;
    }
    /* The same check as every other reader (jb_existing, the chain, verify): a SUCCESS is republished only for an
     * artifact a trusted worker key signed as this job's; the index alone proves only who holds the index key. */
    if (fb_keyring_load(&kr, cfg->trusted_signers, "--trusted-signer", &e) || arc_sign_peek(f, &trust, NULL, &e)) {
        snprintf(why, cap, "the signature of \"%s\": %s", rel, e.msg);
        goto out;
    }
    if (arc_reader_peek_index(f, &ibuf, &ilen, &e) || arc_index_parse(ibuf, ilen, ikey, &ix, &e)) {
        snprintf(why, cap, "the chain index of \"%s\": %s", rel, e.msg);
        goto out;
    }
    if (!ix->job_id || strcmp(ix->job_id, req->job_id) != 0 || ix->config_id != req->u.backup.config_id) {
        snprintf(why, cap, "the chain index of \"%s\" names job %s of configuration %lld", rel,
                 ix->job_id ? ix->job_id : "?", (long long)ix->config_id);
        goto out;
    }
    ok = 1;
out:
    sodium_memzero(ikey, sizeof ikey);
    fb_keyring_free(&kr);
    arc_index_free(ix);
    free(ibuf);
    stor_rfile_close(f);
    stor_free(st);
    ev_event_free(old);
    return ok;
}

/* Step 1: a backup that already succeeded is not run again; its SUCCESS is published again (the first publish
 * may have been lost). Returns 1 when that answered the request (*rc is the publish result), 0 to run the job. */
static int dmn_from_ledger(const dmn_pub *pub, const fb_config *cfg, const ev_event *req,
                           const unsigned char digest[DMN_DIGEST_BYTES], dmn_outcome *out, fb_code *rc, fb_err *err) {
    const char *jt = ev_job_type_name(dmn_job_type_of(req));
    unsigned char *prev = NULL;
    size_t prev_len = 0;
    int match = 0;
    char why[1200];
    fb_err lerr;
    fb_code lr = dmn_ledger_get(cfg, req->job_id, digest, &prev, &prev_len, &match, &lerr);
    if (lr == FB_ERR_NOTFOUND) return 0;
    if (lr != FB_OK) {
        FB_WARN("job %s: %s (running the job anyway)", req->job_id, lerr.msg);
        return 0;
    }
    if (!match) {
        FB_WARN("job %s (%s): the ledger has a SUCCESS under this job id, but for a different request (another "
                "table list, path, configuration or type, or an entry from before request digests): not "
                "republishing it; running the job, whose authority check decides", req->job_id, jt);
        dmn_metrics_ledger_mismatch();
        free(prev);
        return 0;
    }
    if (!dmn_artifact_holds(cfg, req, prev, prev_len, why, sizeof why)) {
        FB_WARN("job %s (%s): the ledger says it succeeded, but its artifact does not hold up (%s): running the job "
                "again", req->job_id, jt, why);
        free(prev);
        return 0;
    }
    FB_INFO("job %s (%s): already succeeded, publishing its SUCCESS again", req->job_id, jt);
    out->status = EV_SUCCESS;
    out->from_ledger = 1;
    *rc = pub->producer ? dmn_status_publish_raw(pub, req->job_id, prev, prev_len, err) : FB_OK;
    ev_event *old = NULL;
    if (ev_decode(prev, prev_len, &old, &lerr) == FB_OK) {
        if (old->u.status.file_path)
            snprintf(out->result.file_path, sizeof out->result.file_path, "%s", old->u.status.file_path);
        if (old->u.status.file_size.has) out->result.file_size = old->u.status.file_size.v;
    }
    ev_event_free(old);
    free(prev);
    return 1;
}

/* Publishes a FAILED; when the encoder refuses it (a text or a field the contract does not allow), sends the
 * minimal FAILED at once instead: a FAILED that can never be published would make the request run forever. */
static fb_code dmn_publish_failed(const dmn_pub *pub, const ev_event *req, const unsigned char *raw, size_t raw_len,
                                  int64_t started, const job_result *res, fb_code code, const char *error, fb_err *err) {
    fb_code rc = dmn_status_publish(pub, req, raw, raw_len, EV_FAILED, started, res, error, err);
    if (rc != FB_ERR_INVALID) return rc;
    FB_ERROR("job %s: its FAILED was refused (%s); sending a minimal FAILED instead", req->job_id, err->msg);
    dmn_metrics_minimal_failed();
    return dmn_status_publish_minimal(pub, req, code, "the job failed, and its full FAILED status could not be sent",
                                      err);
}

/* One request being executed: what dmn_jobs_execute's steps share. */
typedef struct dmn_exec {
    const dmn_pub *pub;
    const fb_config *cfg;
    const ev_event *req;
    const unsigned char *raw;
    size_t raw_len;
    const char *jt;                          /* the job type's name, for logs and metrics */
    unsigned char digest[DMN_DIGEST_BYTES];  /* of the request: the ledger's and the delivery counter's key */
    int have_digest;
    int64_t started, deliveries;
} dmn_exec;

/* Step 2: does the database authorise this request? Asked before anything is published under its job id: a
 * forged request that reuses a queued record's real job id (with another folder, say) must not move that record to
 * RUNNING or FAILED, or the genuine request would then be refused too. A refused request is answered with a dead
 * letter carrying the reason (the caller sends it), never a status event. A database that cannot be asked now goes
 * on: the job function asks again, inside the transient-failure retries. Returns 1 when refused. */
static int dmn_refused(const dmn_exec *x, dmn_outcome *out) {
    fb_err aerr;
    if (job_authority_authorise(x->cfg, x->req, &aerr) != FB_ERR_DENIED) return 0;
    FB_WARN("job %s (%s): %s", x->req->job_id, x->jt, aerr.msg);
    dmn_metrics_denied(x->jt);
    out->status = EV_FAILED;
    out->denied = 1;
    out->error = aerr;
    return 1;
}

/* Step 3: delivered too often already? Then not run again: a minimal FAILED (no request: replaying it is a
 * person's decision) says so, and the caller stores the offset (or dead-letters it when even that fails). Returns
 * 1 when given up (*rc: the publish result). */
static int dmn_given_up(dmn_exec *x, dmn_outcome *out, fb_code *rc, fb_err *err) {
    const ev_event *req = x->req;
    fb_err cerr;
    if (!x->have_digest ||
        dmn_ledger_delivery_count(dmn_counter_root(x->cfg), req->job_id, req->attempt, x->digest, &x->deliveries,
                                  &cerr) != FB_OK ||
        x->deliveries < x->cfg->max_deliveries)
        return 0;
    char why[400];
    snprintf(why, sizeof why,
             "not run again: this request (attempt %lld) was delivered %lld times without a published outcome "
             "(the worker crashed or was killed while running it, or could not publish or record its outcome; "
             "max_deliveries is %lld); fix the cause, then replay it",
             (long long)req->attempt, (long long)x->deliveries + 1, (long long)x->cfg->max_deliveries);
    FB_ERROR("job %s (%s): %s", req->job_id, x->jt, why);
    dmn_metrics_given_up();
    out->status = EV_FAILED;
    out->gave_up = 1;
    fb_err_set(&out->error, FB_ERR_ABORTED, "%s", why);
    *rc = x->pub->producer ? dmn_status_publish_minimal(x->pub, req, FB_ERR_ABORTED, why, err) : FB_OK;
    return 1;
}

/* Step 4: RUNNING published, then one more delivery counted, durable before the job starts, so a request that
 * crashes the worker or whose outcome never gets out is run at most max_deliveries times. Counted only once the
 * broker took the RUNNING: a broker that is down does not use up deliveries. */
static fb_code dmn_start(dmn_exec *x, fb_err *err) {
    const ev_event *req = x->req;
    fb_err cerr;
    x->started = fb_now_ms();
    fb_code rc = x->pub->producer ? dmn_status_publish(x->pub, req, NULL, 0, EV_RUNNING, x->started, NULL, NULL, err)
                                  : FB_OK;
    if (rc) return rc;
    if (x->have_digest &&
        dmn_ledger_delivery(dmn_counter_root(x->cfg), req->job_id, req->attempt, x->digest, &x->deliveries, &cerr)) {
        FB_WARN("job %s: %s; counting this delivery in memory only", req->job_id, cerr.msg);
        dmn_ledger_delivery(NULL, req->job_id, req->attempt, x->digest, &x->deliveries, &cerr);
    }
    FB_INFO("job %s (%s, attempt %lld, delivery %lld): started", req->job_id, x->jt, (long long)req->attempt,
            (long long)x->deliveries);
    dmn_metrics_job_started(x->jt);
    return FB_OK;
}

/* Step 5: the job, retried with doubling back-off while the failure is transient (and not aborted). */
static fb_code dmn_run(const dmn_exec *x, job_run_fn fn, fb_flag *abort, dmn_outcome *out) {
    const fb_config *cfg = x->cfg;
    dmn_progress prog = {x->pub, x->req, x->started, x->started, cfg->progress_interval_ms};
    job_ctx ctx = {cfg, x->req, x->pub->worker_name, abort, dmn_progress_cb, &prog, NULL};
    fb_code jr = FB_OK;
    int64_t backoff = cfg->retry_backoff_ms;
    for (int64_t attempt = 0;; attempt++) {
        job_result_init(&out->result);
        fb_err_clear(&out->error);
        jr = fn(&ctx, &out->result, &out->error);
        if (jr == FB_OK || !fb_code_is_transient(jr) || attempt >= cfg->retry_max || (abort && *abort)) break;
        FB_WARN("job %s: transient failure, retry %lld of %lld in %lld ms: %s", x->req->job_id, (long long)attempt + 1,
                (long long)cfg->retry_max, (long long)backoff, out->error.msg);
        dmn_sleep_abortable(backoff, abort);
        backoff *= 2;
    }
    return jr;
}

/* Step 6 on success: durable first (the ledger), then published. */
static fb_code dmn_succeeded(const dmn_exec *x, int64_t took, dmn_outcome *out, fb_err *err) {
    const ev_event *req = x->req;
    out->status = EV_SUCCESS;
    ev_event *st = dmn_status_build(x->pub, req, NULL, 0, EV_SUCCESS, x->started, &out->result, NULL);
    unsigned char *buf = NULL;
    size_t len = 0;
    fb_code rc = st ? ev_encode(st, &buf, &len, err) : fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    if (!rc && x->have_digest && dmn_uses_ledger(x->cfg, req))
        rc = dmn_ledger_put(x->cfg, req->job_id, x->digest, buf, len, err);
    if (!rc && x->pub->producer) rc = dmn_status_publish_raw(x->pub, req->job_id, buf, len, err);
    free(buf);
    ev_event_free(st);
    FB_INFO("job %s (%s): SUCCESS in %lld ms%s%s", req->job_id, x->jt, (long long)took,
            out->result.file_path[0] ? ", artifact " : "", out->result.file_path);
    dmn_metrics_job_finished(x->jt, "SUCCESS", took, &out->result);
    return rc;
}

/* Step 6 on failure: logged, counted, published (with the request, so it can be replayed). */
static fb_code dmn_failed(const dmn_exec *x, fb_code jr, int64_t took, dmn_outcome *out, fb_err *err) {
    out->status = EV_FAILED;
    FB_ERROR("job %s (%s): FAILED (%s): %s", x->req->job_id, x->jt, fb_code_name(jr), out->error.msg);
    dmn_metrics_job_finished(x->jt, "FAILED", took, &out->result);
    if (!x->pub->producer) return FB_OK;
    return dmn_publish_failed(x->pub, x->req, x->raw, x->raw_len, x->started, &out->result, jr, out->error.msg, err);
}

fb_code dmn_jobs_execute(const dmn_pub *pub, const fb_config *cfg, const ev_event *req, const unsigned char *raw,
                         size_t raw_len, fb_flag *abort, dmn_outcome *out, fb_err *err) {
    memset(out, 0, sizeof *out);
    job_result_init(&out->result);
    dmn_exec x = {.pub = pub, .cfg = cfg, .req = req, .raw = raw, .raw_len = raw_len,
                  .jt = ev_job_type_name(dmn_job_type_of(req))};
    job_run_fn fn = dmn_jobs_lookup(req->type);
    if (!fn) return fb_err_set(err, FB_ERR_INVALID, "a %s event is not a job", ev_type_name(req->type));
    fb_err derr;
    x.have_digest = dmn_ledger_digest(req, x.digest, &derr) == FB_OK;
    if (!x.have_digest) FB_WARN("job %s: %s (no ledger, no delivery count)", req->job_id, derr.msg);

    /* 1. Already done? */
    fb_code rc = FB_OK;
    if (x.have_digest && dmn_uses_ledger(cfg, req) && dmn_from_ledger(pub, cfg, req, x.digest, out, &rc, err)) return rc;
    if (dmn_refused(&x, out)) return FB_OK;              /* 2. authorised? */
    if (dmn_given_up(&x, out, &rc, err)) return rc;      /* 3. delivered too often? */
    if ((rc = dmn_start(&x, err))) return rc;            /* 4. RUNNING, one more delivery */
    fb_code jr = dmn_run(&x, fn, abort, out);            /* 5. the job */
    int64_t took = fb_now_ms() - x.started;
    if (job_result_get(&out->result, "duration_ms") == 0) job_result_set(&out->result, "duration_ms", took);
    /* 6. The outcome: durable first (ledger), then published; then the delivery count is done with. */
    rc = jr == FB_OK ? dmn_succeeded(&x, took, out, err) : dmn_failed(&x, jr, took, out, err);
    if (!rc && x.have_digest) dmn_ledger_delivery_clear(dmn_counter_root(cfg), req->job_id, req->attempt, x.digest);
    return rc;
}
