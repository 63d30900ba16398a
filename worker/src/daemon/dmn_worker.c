/* dmn_worker: see dmn_worker.h. */
#include "daemon/dmn_worker.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec/ev_event.h"
#include "common/fb_flag.h"
#include "common/fb_log.h"
#include "common/fb_time.h"
#include "daemon/dmn_capture.h"
#include "daemon/dmn_jobs.h"
#include "daemon/dmn_metrics.h"
#include "daemon/dmn_status.h"
#include "job/job_request.h"
#include "kafka/kfk.h"
#include "kafka/kfk_sign.h"

#define DMN_MAX_PARTS 1024
#define DMN_POLL_MS 200
#define DMN_LAG_EVERY_MS 10000
/* Flow control: messages taken from Kafka but not started yet. Above HIGH the whole assignment is paused (so a
 * backlog stays in Kafka, not in memory), below LOW it is resumed. Buffering a few instead of pausing for every
 * job matters: librdkafka 2.0.2 takes up to a second to fetch again after a resume. */
#define DMN_PENDING_HIGH 64
#define DMN_PENDING_LOW 16
/* A job whose outcome could not be published (broker down) runs again after a pause that doubles with each
 * consecutive failure, up to the cap: the pause is a time its message waits in the queue (dmn_dispatch skips it,
 * and its partition, until then), never a sleep of the consumer loop, which keeps polling, reaping the other
 * slots and answering rebalances meanwhile. */
#define DMN_REPUBLISH_FIRST_MS 1000
#define DMN_REPUBLISH_MAX_MS 16000

enum { SLOT_FREE = 0, SLOT_RUNNING = 1, SLOT_DONE = 2 };

typedef struct dmn_slot {
    int state; /* guarded by dmn_worker.mu */
    pthread_t thread;
    struct dmn_worker *w;
    rd_kafka_message_t *msg;
    ev_event *ev;
    fb_code publish_rc;
    fb_flag abort;
} dmn_slot;

typedef struct dmn_part {
    char topic[256];
    int32_t partition;
    int paused;
} dmn_part;

/* A message waiting for its turn: in arrival order, so each partition's messages run in offset order. */
typedef struct dmn_pending {
    rd_kafka_message_t *msg;
    int64_t not_before_ms; /* 0, or when a job whose outcome was not published may run again */
    struct dmn_pending *next;
} dmn_pending;

typedef struct dmn_worker {
    const fb_config *cfg;
    const fb_keyring *requesters; /* whose requests are accepted */
    rd_kafka_t *consumer;
    dmn_pub pub;
    dmn_slot *slots;
    size_t n_slots;
    pthread_mutex_t mu;
    dmn_part parts[DMN_MAX_PARTS];
    size_t n_parts;
    int stopping;
    dmn_pending *pending_head, *pending_tail;
    size_t n_pending;
    int publish_failures; /* consecutive jobs whose outcome did not get out: the back-off's exponent */
    char topic_backup[256], topic_archive[256];
} dmn_worker;

static int dmn_slot_holds(const dmn_slot *s, const char *topic, int32_t partition) {
    return s->state != SLOT_FREE && s->msg && s->msg->partition == partition &&
           strcmp(rd_kafka_topic_name(s->msg->rkt), topic) == 0;
}

static size_t dmn_running(dmn_worker *w) {
    size_t n = 0;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->n_slots; i++) n += w->slots[i].state != SLOT_FREE;
    pthread_mutex_unlock(&w->mu);
    return n;
}

static void dmn_set_paused(dmn_worker *w, dmn_part *p, int pause) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
    rd_kafka_resp_err_t e = pause ? rd_kafka_pause_partitions(w->consumer, l) : rd_kafka_resume_partitions(w->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) FB_WARN("could not %s %s[%d]: %s", pause ? "pause" : "resume", p->topic, (int)p->partition, rd_kafka_err2str(e));
    else p->paused = pause;
}

/* Pauses the whole assignment while we are stopping or the pending queue is full, resumes it once the queue has
 * drained to DMN_PENDING_LOW. Only partitions we paused are ever resumed (librdkafka 2.0.2 could rewind a
 * partition resumed without having been paused). A running job keeps its partition's later messages waiting in
 * the queue, never running beside it. */
static void dmn_reconcile(dmn_worker *w) {
    for (size_t i = 0; i < w->n_parts; i++) {
        dmn_part *p = &w->parts[i];
        int want = w->stopping || w->n_pending >= DMN_PENDING_HIGH || (p->paused && w->n_pending > DMN_PENDING_LOW);
        if (want != p->paused) dmn_set_paused(w, p, want);
    }
}

/* Drops every message not started yet: their offsets were never stored, so whoever owns the partition next
 * receives them again. */
static void dmn_pending_clear(dmn_worker *w) {
    while (w->pending_head) {
        dmn_pending *p = w->pending_head;
        w->pending_head = p->next;
        rd_kafka_message_destroy(p->msg);
        free(p);
    }
    w->pending_tail = NULL;
    w->n_pending = 0;
}

static void dmn_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e, rd_kafka_topic_partition_list_t *parts, void *opaque) {
    dmn_worker *w = opaque;
    if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_assign(rk, parts);
        w->n_parts = 0;
        for (int i = 0; i < parts->cnt && w->n_parts < DMN_MAX_PARTS; i++) {
            dmn_part *p = &w->parts[w->n_parts++];
            snprintf(p->topic, sizeof p->topic, "%s", parts->elems[i].topic);
            p->partition = parts->elems[i].partition;
            p->paused = 0;
        }
        FB_INFO("assigned %d partitions", parts->cnt);
        dmn_reconcile(w);
    } else {
        if (!rd_kafka_assignment_lost(rk)) {
            rd_kafka_resp_err_t ce = rd_kafka_commit(rk, NULL, 0);
            if (ce && ce != RD_KAFKA_RESP_ERR__NO_OFFSET) FB_WARN("commit on revoke failed: %s", rd_kafka_err2str(ce));
        } else {
            FB_WARN("assignment lost: offsets of running jobs will not be committed; their jobs will run again");
        }
        FB_INFO("revoked %d partitions", parts->cnt);
        dmn_pending_clear(w);
        rd_kafka_assign(rk, NULL);
        w->n_parts = 0;
        dmn_metrics_lag_clear();
    }
}

static void dmn_store_offset(dmn_worker *w, const rd_kafka_message_t *m) {
    if (rd_kafka_assignment_lost(w->consumer)) return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(m->rkt), m->partition)->offset = m->offset + 1;
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(w->consumer, l);
    if (!e && l->elems[0].err) e = l->elems[0].err;
    if (e)
        FB_WARN("offset of %s[%d]@%lld not stored (%s): the partition moved to another worker, which will see the "
                "message again", rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset,
                rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(l);
}

static void *dmn_job_thread(void *arg) {
    dmn_slot *s = arg;
    dmn_worker *w = s->w;
    dmn_outcome out;
    fb_err err;
    fb_code rc = dmn_jobs_execute(&w->pub, w->cfg, s->ev, s->msg->payload, s->msg->len, &s->abort, &out, &err);
    if (!rc && out.denied) {
        /* Refused by the database: a dead letter with the reason (the request and who may replay it are there),
         * never a status: a status under a job id the sender chose could move a genuine record. */
        fb_err derr;
        if ((rc = dmn_dlq_publish(&w->pub, s->msg, out.error.msg, &derr)) == FB_OK) dmn_metrics_dlq();
        else fb_err_set(&err, derr.code, "%s", derr.msg);
    }
    if (rc && out.gave_up) {
        /* Not even the minimal FAILED got out: the dead letter is the last place the request can go, so its
         * offset can be stored and the partition moves on. */
        char why[FB_ERR_MSG_MAX + 64];
        snprintf(why, sizeof why, "%s (the FAILED could not be published: %s)", out.error.msg, err.msg);
        fb_err derr;
        if (dmn_dlq_publish(&w->pub, s->msg, why, &derr) == FB_OK) {
            dmn_metrics_dlq();
            rc = FB_OK;
        } else {
            fb_err_set(&err, derr.code, "%s", derr.msg);
        }
    }
    if (rc) FB_ERROR("job %s: outcome not published, the request will be delivered again: %s", s->ev->job_id, err.msg);
    if (!rc && out.status == EV_SUCCESS && s->ev->type == EV_BACKUP_REQUESTED)
        dmn_metrics_last_backup_success(s->ev->u.backup.config_id, fb_now_ms());
    pthread_mutex_lock(&w->mu);
    s->publish_rc = rc;
    s->state = SLOT_DONE;
    pthread_mutex_unlock(&w->mu);
    /* Wake the consumer loop now rather than at its next poll timeout. */
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(w->consumer);
    if (q) {
        rd_kafka_queue_yield(q);
        rd_kafka_queue_destroy(q);
    }
    return NULL;
}

static void dmn_reap(dmn_worker *w) {
    for (size_t i = 0; i < w->n_slots; i++) {
        dmn_slot *s = &w->slots[i];
        pthread_mutex_lock(&w->mu);
        int done = s->state == SLOT_DONE;
        pthread_mutex_unlock(&w->mu);
        if (!done) continue;
        pthread_join(s->thread, NULL);
        if (s->publish_rc == FB_OK) {
            w->publish_failures = 0;
            dmn_store_offset(w, s->msg);
            rd_kafka_message_destroy(s->msg);
        } else {
            /* The outcome never reached Kafka (broker down): run it again, first in line for its partition, after a
             * pause (DMN_REPUBLISH_*). Its offset is not stored, so a crash meanwhile also leads to a rerun. */
            dmn_pending *p = malloc(sizeof *p);
            int shift = w->publish_failures < 4 ? w->publish_failures : 4;
            int64_t pause = (int64_t)DMN_REPUBLISH_FIRST_MS << shift;
            w->publish_failures++;
            if (p) {
                p->msg = s->msg;
                p->not_before_ms = fb_now_ms() + (pause < DMN_REPUBLISH_MAX_MS ? pause : DMN_REPUBLISH_MAX_MS);
                p->next = w->pending_head;
                w->pending_head = p;
                if (!w->pending_tail) w->pending_tail = p;
                w->n_pending++;
            } else {
                rd_kafka_message_destroy(s->msg);
            }
        }
        ev_event_free(s->ev);
        pthread_mutex_lock(&w->mu);
        s->msg = NULL;
        s->ev = NULL;
        s->abort = 0;
        s->state = SLOT_FREE;
        pthread_mutex_unlock(&w->mu);
    }
}

/* A message that is not a valid request for its topic: dead letter, never retried. Returns 0 when the dead letter
 * is published (and the offset stored), -1 when it must be tried again later. */
static int dmn_dead_letter(dmn_worker *w, rd_kafka_message_t *m, const char *reason) {
    fb_err err;
    FB_WARN("%s[%d]@%lld to the dead-letter topic: %s", rd_kafka_topic_name(m->rkt), (int)m->partition,
            (long long)m->offset, reason);
    if (dmn_dlq_publish(&w->pub, m, reason, &err)) {
        FB_ERROR("%s; trying again shortly", err.msg);
        return -1;
    }
    dmn_metrics_dlq();
    dmn_store_offset(w, m);
    return 0;
}

/* Takes one pending message: dead letter, or a job on a free slot. Returns 1 when it was taken (the caller unlinks
 * it), 0 when it must wait (no free slot, or its dead letter could not be sent). */
static int dmn_take(dmn_worker *w, rd_kafka_message_t *m) {
    const char *topic = rd_kafka_topic_name(m->rkt);
    ev_event *ev = NULL;
    fb_err err;
    /* Who sent it, first of all: an untrusted message has no effect but its dead letter (no status under a job id
     * its sender chose, no authority query, no ledger look-up). */
    char what[400];
    snprintf(what, sizeof what, "the request at %s[%d]@%lld", topic, (int)m->partition, (long long)m->offset);
    if (kfk_sign_verify_message(w->requesters, m, what, NULL, &err)) {
        dmn_metrics_untrusted_request();
        if (dmn_dead_letter(w, m, err.msg)) return 0;
        rd_kafka_message_destroy(m);
        return 1;
    }
    if (ev_decode(m->payload, m->len, &ev, &err)) {
        if (dmn_dead_letter(w, m, err.msg)) return 0;
        rd_kafka_message_destroy(m);
        return 1;
    }
    int for_backup = strcmp(topic, w->topic_backup) == 0;
    int fits = job_request_of(ev->type) && job_request_of(ev->type)->topic == (for_backup ? FB_TOPIC_BACKUP : FB_TOPIC_ARCHIVE);
    if (!fits) {
        char why[512];
        snprintf(why, sizeof why, "a %s event does not belong on topic \"%s\"", ev_type_name(ev->type), topic);
        ev_event_free(ev);
        if (dmn_dead_letter(w, m, why)) return 0;
        rd_kafka_message_destroy(m);
        return 1;
    }
    dmn_slot *slot = NULL;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->n_slots && !slot; i++)
        if (w->slots[i].state == SLOT_FREE) slot = &w->slots[i];
    pthread_mutex_unlock(&w->mu);
    if (!slot) {
        ev_event_free(ev);
        return 0;
    }
    slot->w = w;
    slot->msg = m;
    slot->ev = ev;
    slot->abort = 0;
    slot->publish_rc = FB_OK;
    pthread_mutex_lock(&w->mu);
    slot->state = SLOT_RUNNING;
    pthread_mutex_unlock(&w->mu);
    if (pthread_create(&slot->thread, NULL, dmn_job_thread, slot) != 0) {
        FB_ERROR("could not start a job thread; the job waits for the next try");
        pthread_mutex_lock(&w->mu);
        slot->state = SLOT_FREE;
        slot->msg = NULL;
        slot->ev = NULL;
        pthread_mutex_unlock(&w->mu);
        ev_event_free(ev);
        return 0;
    }
    return 1;
}

/* Starts what can start, in arrival order: a message waits while its partition has a running job or an earlier
 * message still waiting, so each partition's messages run one at a time, in offset order (one configuration's
 * backups, one table's archival, never concurrently), and offsets are stored in order. */
static void dmn_dispatch(dmn_worker *w) {
    const char *blocked_topic[DMN_PENDING_HIGH * 2];
    int32_t blocked_part[DMN_PENDING_HIGH * 2];
    size_t n_blocked = 0;
    dmn_pending **link = &w->pending_head, *prev = NULL;
    int64_t now = fb_now_ms();
    while (*link) {
        dmn_pending *p = *link;
        const char *topic = rd_kafka_topic_name(p->msg->rkt);
        int blocked = p->not_before_ms > now; /* pausing after an unpublished outcome: it, and its partition, wait */
        for (size_t i = 0; i < n_blocked && !blocked; i++)
            blocked = blocked_part[i] == p->msg->partition && strcmp(blocked_topic[i], topic) == 0;
        pthread_mutex_lock(&w->mu);
        for (size_t i = 0; i < w->n_slots && !blocked; i++) blocked = dmn_slot_holds(&w->slots[i], topic, p->msg->partition);
        pthread_mutex_unlock(&w->mu);
        if (!blocked && dmn_take(w, p->msg)) {
            *link = p->next;
            if (w->pending_tail == p) w->pending_tail = prev;
            free(p);
            w->n_pending--;
            continue;
        }
        if (n_blocked < sizeof blocked_part / sizeof blocked_part[0]) {
            blocked_topic[n_blocked] = topic;
            blocked_part[n_blocked++] = p->msg->partition;
        }
        prev = p;
        link = &p->next;
    }
}

static void dmn_enqueue(dmn_worker *w, rd_kafka_message_t *m) {
    dmn_pending *p = malloc(sizeof *p);
    if (w->stopping || !p) { /* not ours to start any more: its offset is not stored, the next owner gets it */
        free(p);
        rd_kafka_message_destroy(m);
        return;
    }
    p->msg = m;
    p->not_before_ms = 0;
    p->next = NULL;
    if (w->pending_tail) w->pending_tail->next = p;
    else w->pending_head = p;
    w->pending_tail = p;
    w->n_pending++;
}

static void dmn_update_lag(dmn_worker *w) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)w->n_parts);
    for (size_t i = 0; i < w->n_parts; i++) rd_kafka_topic_partition_list_add(l, w->parts[i].topic, w->parts[i].partition);
    rd_kafka_committed(w->consumer, l, 2000);
    for (int i = 0; i < l->cnt; i++) {
        int64_t lag = kfk_partition_lag(w->consumer, l->elems[i].topic, l->elems[i].partition, l->elems[i].offset, 1000);
        if (lag >= 0) dmn_metrics_lag(l->elems[i].topic, l->elems[i].partition, lag);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* Shutdown, in the loop: the first signal stops taking jobs and starts the grace period; a second signal or the
 * period's end aborts the running jobs. Returns 1 when the loop may end (stopping and nothing runs). */
typedef struct dmn_stopping {
    int64_t deadline;
    int aborted;
} dmn_stopping;

static int dmn_shutdown_step(dmn_worker *w, fb_flag *signals, dmn_stopping *st) {
    if (*signals && !w->stopping) {
        w->stopping = 1;
        st->deadline = fb_now_ms() + w->cfg->shutdown_grace_s * 1000;
        FB_INFO("shutting down: no new jobs; %zu running get %lld s to finish (a second signal aborts them)",
                dmn_running(w), (long long)w->cfg->shutdown_grace_s);
    }
    if (!w->stopping) return 0;
    if (!st->aborted && (*signals >= 2 || fb_now_ms() >= st->deadline) && dmn_running(w)) {
        FB_WARN("aborting %zu running job(s)", dmn_running(w));
        pthread_mutex_lock(&w->mu);
        for (size_t i = 0; i < w->n_slots; i++) w->slots[i].abort = 1;
        pthread_mutex_unlock(&w->mu);
        st->aborted = 1;
    }
    return !dmn_running(w);
}

/* One poll of the consumer: a request is queued for a job thread (dmn_enqueue owns it then). */
static void dmn_poll(dmn_worker *w) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(w->consumer, DMN_POLL_MS);
    dmn_metrics_consumer_beat(DMN_CONSUMER_WORKER);
    if (!m) return;
    if (!m->err) {
        dmn_enqueue(w, m);
        return;
    }
    if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) FB_WARN("consumer: %s", rd_kafka_message_errstr(m));
    rd_kafka_message_destroy(m);
}

fb_code dmn_worker_run(const fb_config *cfg, const char *worker_name, const fb_signer *signer,
                       const fb_keyring *requesters, fb_flag *signals, fb_err *err) {
    fb_code rc = FB_OK;
    dmn_worker *w = calloc(1, sizeof *w);
    rd_kafka_t *producer = NULL;
    dmn_capture *capture = NULL; /* change capture of capture-databases, on threads of its own (dmn_capture.h) */
    if (!w) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&w->mu, NULL);
    w->cfg = cfg;
    w->requesters = requesters;
    w->n_slots = (size_t)cfg->concurrency;
    w->slots = calloc(w->n_slots, sizeof *w->slots);
    fb_config_topic(cfg, FB_TOPIC_BACKUP, w->topic_backup, sizeof w->topic_backup);
    fb_config_topic(cfg, FB_TOPIC_ARCHIVE, w->topic_archive, sizeof w->topic_archive);
    if (!w->slots) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (!(producer = kfk_producer_new(cfg, err))) {
        rc = err->code;
        goto out;
    }
    /* Connect the status producer now (TLS, SASL, the idempotent producer id), not on the first job's RUNNING:
     * measured, that first publish waited ~0.5 s for the connection, on every worker's first job. Not fatal: a
     * broker that is not up yet is waited for by the first publish, as before. */
    {
        fb_err werr;
        if (kfk_wait_ready(producer, 5000, &werr)) FB_WARN("status producer: %s; connecting on first use", werr.msg);
    }
    dmn_pub_init(&w->pub, producer, cfg, signer, worker_name);
    if (!(w->consumer = kfk_consumer_new(cfg, cfg->group_id, dmn_rebalance_cb, w, err))) {
        rc = err->code;
        goto out;
    }
    const char *topics[2] = {w->topic_backup, w->topic_archive};
    if ((rc = kfk_subscribe(w->consumer, topics, 2, err))) goto out;
    if ((rc = dmn_capture_start(cfg, worker_name, signer, signals, &capture, err))) goto out;
    FB_INFO("worker %s: consuming %s and %s in group %s with %zu job thread(s); signing as key %s, accepting "
            "requests signed by %zu trusted key(s)", worker_name, topics[0], topics[1], cfg->group_id, w->n_slots,
            signer->key_id, requesters->n);

    dmn_stopping st = {0};
    int64_t last_lag = 0;
    for (;;) {
        dmn_reap(w);
        if (dmn_shutdown_step(w, signals, &st)) break;
        if (w->stopping) dmn_pending_clear(w);
        dmn_dispatch(w);
        dmn_reconcile(w);
        dmn_poll(w);
        if (cfg->metrics_listen && *cfg->metrics_listen && fb_now_ms() - last_lag > DMN_LAG_EVERY_MS) {
            last_lag = fb_now_ms();
            dmn_update_lag(w);
        }
    }
    dmn_reap(w);
    dmn_pending_clear(w);
    if (!rd_kafka_assignment_lost(w->consumer)) {
        rd_kafka_resp_err_t ce = rd_kafka_commit(w->consumer, NULL, 0);
        if (ce && ce != RD_KAFKA_RESP_ERR__NO_OFFSET) FB_WARN("final commit failed: %s", rd_kafka_err2str(ce));
    }
    FB_INFO("worker %s: leaving the group", worker_name);
out:
    if (capture && !*signals) *signals = 1; /* the worker failed: its capture threads stop too */
    dmn_capture_stop(capture);
    dmn_metrics_consumer_stopped(DMN_CONSUMER_WORKER);
    if (w->consumer) {
        rd_kafka_consumer_close(w->consumer);
        rd_kafka_destroy(w->consumer);
    }
    kfk_producer_free(producer);
    free(w->slots);
    pthread_mutex_destroy(&w->mu);
    free(w);
    return rc;
}
