/* dmn_status: see dmn_status.h. */
#include "daemon/dmn_status.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fb_log.h"
#include "common/fb_time.h"
#include "job/job_request.h"
#include "kafka/kfk.h"
#include "kafka/kfk_sign.h"

#define DMN_PUBLISH_TIMEOUT_MS 60000
#define DMN_DLQ_MAX_SIGS 4 /* signature headers of the original copied into a dead letter, per name */

void dmn_pub_init(dmn_pub *pub, rd_kafka_t *producer, const fb_config *cfg, const fb_signer *signer,
                  const char *worker_name) {
    memset(pub, 0, sizeof *pub);
    pub->signer = signer;
    pub->producer = producer;
    pub->cfg = cfg;
    pub->worker_name = worker_name;
    fb_config_topic(cfg, FB_TOPIC_COMPLETED, pub->topic_completed, sizeof pub->topic_completed);
    fb_config_topic(cfg, FB_TOPIC_DLQ, pub->topic_dlq, sizeof pub->topic_dlq);
}

ev_job_type dmn_job_type_of(const ev_event *req) {
    return job_request_of(req->type) ? job_request_of(req->type)->job_type : EV_JOB_BACKUP;
}

ev_event *dmn_status_build(const dmn_pub *pub, const ev_event *req, const unsigned char *req_raw, size_t req_len,
                           ev_status status, int64_t started_at, const job_result *res, const char *error) {
    ev_event *ev = ev_event_new(EV_JOB_STATUS);
    if (!ev) return NULL;
    memcpy(ev->job_id, req->job_id, sizeof ev->job_id);
    ev->ts = fb_now_ms();
    ev->requested_by = req->requested_by;
    ev->attempt = req->attempt;
    ev_job_status *s = &ev->u.status;
    s->job_type = dmn_job_type_of(req);
    s->status = status;
    s->worker = ev_strdup(ev, pub->worker_name);
    if (started_at > 0) s->started_at = (ev_opt_i64){1, started_at};
    if (status != EV_RUNNING) s->completed_at = (ev_opt_i64){1, ev->ts};
    if (req->type == EV_BACKUP_REQUESTED) {
        s->record_id = (ev_opt_i64){1, req->u.backup.record_id};
        s->config_id = (ev_opt_i64){1, req->u.backup.config_id};
    } else if (req->type == EV_BACKUP_VERIFY) {
        s->record_id = (ev_opt_i64){1, req->u.verify.record_id};
        s->config_id = (ev_opt_i64){1, req->u.verify.config_id};
        if (req->u.verify.file_path) s->file_path = ev_strdup(ev, req->u.verify.file_path);
    } else if (req->type == EV_ARCHIVE_DUE) {
        s->policy_id = (ev_opt_i64){1, req->u.archive.policy_id};
    }
    if (res) {
        if (res->file_path[0]) s->file_path = ev_strdup(ev, res->file_path);
        if (res->file_size >= 0) s->file_size = (ev_opt_i64){1, res->file_size};
        s->has_stats = 1;
        s->n_stats = res->n_stats;
        s->stats = ev_alloc(ev, sizeof(ev_stat) * (res->n_stats ? res->n_stats : 1));
        if (s->stats) memcpy(s->stats, res->stats, sizeof(ev_stat) * res->n_stats);
        else s->has_stats = 0;
    }
    if (error) {
        /* The contract bounds error text; keep the beginning, which says what failed. Texts are assembled from
         * pieces cut to fit buffers (a name cut inside a character), and the encoder refuses invalid UTF-8: a
         * FAILED it refuses is an outcome never published, so the job would run again and again. Repair. */
        char buf[16384];
        snprintf(buf, sizeof buf, "%s", error);
        ev_text_repair(buf, sizeof buf - 1);
        s->error = ev_strdup(ev, buf);
    }
    if (status == EV_FAILED && req_raw && req_len <= (1u << 20)) {
        unsigned char *copy = ev_alloc(ev, req_len ? req_len : 1);
        if (copy) {
            memcpy(copy, req_raw, req_len);
            s->request = copy;
            s->request_len = req_len;
        }
    }
    return ev;
}

/* A minimal status names no artifact (a verify request's file_path is copied in by dmn_status_build). */
static void s_drop_file(ev_event *ev) {
    ev->u.status.file_path = NULL;
    ev->u.status.file_size.has = 0;
}

fb_code dmn_status_publish_raw(const dmn_pub *pub, const char *job_id, const unsigned char *value, size_t len,
                               fb_err *err) {
    return kfk_produce_sync(pub->producer, pub->signer, pub->topic_completed, job_id, strlen(job_id), value, len, NULL, 0,
                            DMN_PUBLISH_TIMEOUT_MS, err);
}

fb_code dmn_status_publish(const dmn_pub *pub, const ev_event *req, const unsigned char *req_raw, size_t req_len,
                           ev_status status, int64_t started_at, const job_result *res, const char *error, fb_err *err) {
    ev_event *ev = dmn_status_build(pub, req, req_raw, req_len, status, started_at, res, error);
    if (!ev) return fb_err_set(err, FB_ERR_NOMEM, "out of memory building a status event");
    unsigned char *buf = NULL;
    size_t len = 0;
    fb_code rc = ev_encode(ev, &buf, &len, err);
    if (!rc) rc = dmn_status_publish_raw(pub, req->job_id, buf, len, err);
    if (rc) fb_err_prefix(err, "publishing %s for job %s: ", ev_status_name(status), req->job_id);
    free(buf);
    ev_event_free(ev);
    return rc;
}

fb_code dmn_status_publish_minimal(const dmn_pub *pub, const ev_event *req, fb_code code, const char *why,
                                   fb_err *err) {
    char text[512];
    snprintf(text, sizeof text, "%s (error code %s); see the worker's log for job %s", why, fb_code_name(code),
             req->job_id);
    ev_event *ev = dmn_status_build(pub, req, NULL, 0, EV_FAILED, 0, NULL, text);
    if (!ev) return fb_err_set(err, FB_ERR_NOMEM, "out of memory building a status event");
    /* Only what the request itself decoded with (ids, job id, attempt) besides the fixed text and the worker
     * name, which main validated: nothing the encoder can refuse. */
    s_drop_file(ev);
    unsigned char *buf = NULL;
    size_t len = 0;
    fb_code rc = ev_encode(ev, &buf, &len, err);
    if (!rc) rc = dmn_status_publish_raw(pub, req->job_id, buf, len, err);
    if (rc) fb_err_prefix(err, "publishing a minimal FAILED for job %s: ", req->job_id);
    free(buf);
    ev_event_free(ev);
    return rc;
}

fb_code dmn_dlq_publish(const dmn_pub *pub, const rd_kafka_message_t *m, const char *reason, fb_err *err) {
    char part[32], off[32], now[32];
    snprintf(part, sizeof part, "%" PRId32, m->partition);
    snprintf(off, sizeof off, "%" PRId64, m->offset);
    snprintf(now, sizeof now, "%" PRId64, fb_now_ms());
    /* fusion.replays travels with the message so `fusion-backup replay` can refuse a dead letter that keeps
     * coming back (the loop guard for messages without an attempt we could read). */
    char replays[16] = "0";
    rd_kafka_headers_t *src = NULL;
    const void *rv = NULL;
    size_t rn = 0;
    if (!rd_kafka_message_headers(m, &src) && !rd_kafka_header_get_last(src, "fusion.replays", &rv, &rn) && rv)
        snprintf(replays, sizeof replays, "%.*s", (int)rn, (const char *)rv);
    kfk_header h[8 + 2 * DMN_DLQ_MAX_SIGS] = {
        {"fusion.error", reason},
        {"fusion.source.topic", rd_kafka_topic_name(m->rkt)},
        {"fusion.source.partition", part},
        {"fusion.source.offset", off},
        {"fusion.worker", pub->worker_name},
        {"fusion.time", now},
        {"fusion.replays", replays},
    };
    size_t nh = 7;
    /* The original's signature headers, every occurrence (a duplicate stays visible to replay), as text: a value
     * that is not short printable text is not a signature and is left out (replay then says it is missing). */
    char copies[2 * DMN_DLQ_MAX_SIGS][KFK_SIG_HEX];
    static const char *const names[2][2] = {{KFK_HDR_KEY_ID, KFK_HDR_SOURCE_KEY_ID}, {KFK_HDR_SIG, KFK_HDR_SOURCE_SIG}};
    size_t nc = 0;
    for (int k = 0; k < 2 && src; k++) {
        const void *v = NULL;
        size_t n = 0;
        for (size_t idx = 0; nc < 2 * DMN_DLQ_MAX_SIGS &&
                             rd_kafka_header_get(src, idx, names[k][0], &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR; idx++) {
            if (!v || n >= KFK_SIG_HEX || memchr(v, '\0', n)) continue;
            memcpy(copies[nc], v, n);
            copies[nc][n] = '\0';
            h[nh++] = (kfk_header){names[k][1], copies[nc++]};
        }
    }
    fb_code rc = kfk_produce_sync(pub->producer, pub->signer, pub->topic_dlq, m->key, m->key_len, m->payload, m->len,
                                  h, nh, DMN_PUBLISH_TIMEOUT_MS, err);
    if (rc) fb_err_prefix(err, "sending a dead letter to \"%s\": ", pub->topic_dlq);
    return rc;
}
