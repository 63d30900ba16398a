/* dmn_worker: see dmn_worker.h. */
#include "daemon/dmn_worker.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec/ev_event.h"
#include "common/fb_log.h"
#include "daemon/dmn_jobs.h"
#include "daemon/dmn_metrics.h"
#include "daemon/dmn_status.h"
#include "kafka/kfk.h"

#define DMN_MAX_PARTS 1024
#define DMN_POLL_MS 200
#define DMN_LAG_EVERY_MS 10000

enum { SLOT_FREE = 0, SLOT_RUNNING = 1, SLOT_DONE = 2 };

typedef struct dmn_slot {
    int state; /* guarded by dmn_worker.mu */
    pthread_t thread;
    struct dmn_worker *w;
    rd_kafka_message_t *msg;
    ev_event *ev;
    fb_code publish_rc;
    volatile sig_atomic_t abort;
} dmn_slot;

typedef struct dmn_part {
    char topic[256];
    int32_t partition;
    int paused;
} dmn_part;

typedef struct dmn_worker {
    const fb_config *cfg;
    rd_kafka_t *consumer;
    dmn_pub pub;
    dmn_slot *slots;
    size_t n_slots;
    pthread_mutex_t mu;
    dmn_part parts[DMN_MAX_PARTS];
    size_t n_parts;
    int stopping;
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

/* Pauses exactly the partitions that must not deliver now: those with a job, or all when every job thread is
 * busy or we are stopping. Only partitions we paused are ever resumed (librdkafka 2.0.2 could rewind a partition
 * resumed without having been paused). */
static void dmn_reconcile(dmn_worker *w) {
    int full = dmn_running(w) >= w->n_slots;
    for (size_t i = 0; i < w->n_parts; i++) {
        dmn_part *p = &w->parts[i];
        int busy = 0;
        pthread_mutex_lock(&w->mu);
        for (size_t s = 0; s < w->n_slots && !busy; s++) busy = dmn_slot_holds(&w->slots[s], p->topic, p->partition);
        pthread_mutex_unlock(&w->mu);
        int want = w->stopping || full || busy;
        if (want != p->paused) dmn_set_paused(w, p, want);
    }
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

/* Puts the fetch position back on m so it is delivered again (we could not finish it). */
static void dmn_rewind(dmn_worker *w, const rd_kafka_message_t *m) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(m->rkt), m->partition)->offset = m->offset;
    rd_kafka_error_t *e = rd_kafka_seek_partitions(w->consumer, l, 5000);
    if (e) {
        FB_WARN("could not rewind %s[%d] to %lld: %s", rd_kafka_topic_name(m->rkt), (int)m->partition,
                (long long)m->offset, rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

static void *dmn_job_thread(void *arg) {
    dmn_slot *s = arg;
    dmn_worker *w = s->w;
    dmn_outcome out;
    fb_err err;
    fb_code rc = dmn_jobs_execute(&w->pub, w->cfg, s->ev, s->msg->payload, s->msg->len, &s->abort, &out, &err);
    if (rc) FB_ERROR("job %s: outcome not published, the request will be delivered again: %s", s->ev->job_id, err.msg);
    if (!rc && out.status == EV_SUCCESS && s->ev->type == EV_BACKUP_REQUESTED)
        dmn_metrics_last_backup_success(s->ev->u.backup.config_id, ev_now_ms());
    pthread_mutex_lock(&w->mu);
    s->publish_rc = rc;
    s->state = SLOT_DONE;
    pthread_mutex_unlock(&w->mu);
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
        if (s->publish_rc == FB_OK) dmn_store_offset(w, s->msg);
        else dmn_rewind(w, s->msg);
        rd_kafka_message_destroy(s->msg);
        ev_event_free(s->ev);
        pthread_mutex_lock(&w->mu);
        s->msg = NULL;
        s->ev = NULL;
        s->abort = 0;
        s->state = SLOT_FREE;
        pthread_mutex_unlock(&w->mu);
    }
}

/* A message that is not a valid request for its topic: dead letter, never retried. */
static void dmn_dead_letter(dmn_worker *w, rd_kafka_message_t *m, const char *reason) {
    fb_err err;
    FB_WARN("%s[%d]@%lld to the dead-letter topic: %s", rd_kafka_topic_name(m->rkt), (int)m->partition,
            (long long)m->offset, reason);
    if (dmn_dlq_publish(&w->pub, m, reason, &err)) {
        FB_ERROR("%s; the message will be delivered again", err.msg);
        dmn_rewind(w, m);
        sleep(1);
        return;
    }
    dmn_metrics_dlq();
    dmn_store_offset(w, m);
}

static void dmn_handle(dmn_worker *w, rd_kafka_message_t *m) {
    const char *topic = rd_kafka_topic_name(m->rkt);
    if (w->stopping) { /* not ours to start any more: leave it for the next owner */
        dmn_rewind(w, m);
        rd_kafka_message_destroy(m);
        return;
    }
    ev_event *ev = NULL;
    fb_err err;
    if (ev_decode(m->payload, m->len, &ev, &err)) {
        dmn_dead_letter(w, m, err.msg);
        rd_kafka_message_destroy(m);
        return;
    }
    int for_backup = strcmp(topic, w->topic_backup) == 0;
    int fits = for_backup ? (ev->type == EV_BACKUP_REQUESTED || ev->type == EV_BACKUP_VERIFY) : ev->type == EV_ARCHIVE_DUE;
    if (!fits) {
        char why[512];
        snprintf(why, sizeof why, "a %s event does not belong on topic \"%s\"", ev_type_name(ev->type), topic);
        dmn_dead_letter(w, m, why);
        ev_event_free(ev);
        rd_kafka_message_destroy(m);
        return;
    }
    dmn_slot *free_slot = NULL;
    int busy_part = 0;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->n_slots; i++) {
        if (dmn_slot_holds(&w->slots[i], topic, m->partition)) busy_part = 1;
        if (!free_slot && w->slots[i].state == SLOT_FREE) free_slot = &w->slots[i];
    }
    pthread_mutex_unlock(&w->mu);
    if (busy_part || !free_slot) { /* raced a pause: deliver it again later */
        dmn_rewind(w, m);
        ev_event_free(ev);
        rd_kafka_message_destroy(m);
        return;
    }
    free_slot->w = w;
    free_slot->msg = m;
    free_slot->ev = ev;
    free_slot->abort = 0;
    free_slot->publish_rc = FB_OK;
    pthread_mutex_lock(&w->mu);
    free_slot->state = SLOT_RUNNING;
    pthread_mutex_unlock(&w->mu);
    if (pthread_create(&free_slot->thread, NULL, dmn_job_thread, free_slot) != 0) {
        FB_ERROR("could not start a job thread; the request will be delivered again");
        pthread_mutex_lock(&w->mu);
        free_slot->state = SLOT_FREE;
        free_slot->msg = NULL;
        free_slot->ev = NULL;
        pthread_mutex_unlock(&w->mu);
        dmn_rewind(w, m);
        ev_event_free(ev);
        rd_kafka_message_destroy(m);
    }
}

static void dmn_update_lag(dmn_worker *w) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)w->n_parts);
    for (size_t i = 0; i < w->n_parts; i++) rd_kafka_topic_partition_list_add(l, w->parts[i].topic, w->parts[i].partition);
    rd_kafka_committed(w->consumer, l, 2000);
    for (int i = 0; i < l->cnt; i++) {
        int64_t lo = 0, hi = 0;
        if (rd_kafka_query_watermark_offsets(w->consumer, l->elems[i].topic, l->elems[i].partition, &lo, &hi, 1000))
            continue;
        int64_t at = l->elems[i].offset >= 0 ? l->elems[i].offset : lo;
        dmn_metrics_lag(l->elems[i].topic, l->elems[i].partition, hi > at ? hi - at : 0);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

fb_code dmn_worker_run(const fb_config *cfg, const char *worker_name, volatile sig_atomic_t *signals, fb_err *err) {
    fb_code rc = FB_OK;
    dmn_worker *w = calloc(1, sizeof *w);
    rd_kafka_t *producer = NULL;
    if (!w) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&w->mu, NULL);
    w->cfg = cfg;
    w->n_slots = (size_t)cfg->concurrency;
    w->slots = calloc(w->n_slots, sizeof *w->slots);
    fb_config_topic(cfg, "backup.requested", w->topic_backup, sizeof w->topic_backup);
    fb_config_topic(cfg, "archive.due", w->topic_archive, sizeof w->topic_archive);
    if (!w->slots) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (!(producer = kfk_producer_new(cfg, err))) {
        rc = err->code;
        goto out;
    }
    dmn_pub_init(&w->pub, producer, cfg, worker_name);
    if (cfg->metrics_listen && *cfg->metrics_listen && (rc = dmn_metrics_serve(cfg->metrics_listen, err))) goto out;
    if (!(w->consumer = kfk_consumer_new(cfg, cfg->group_id, dmn_rebalance_cb, w, err))) {
        rc = err->code;
        goto out;
    }
    const char *topics[2] = {w->topic_backup, w->topic_archive};
    if ((rc = kfk_subscribe(w->consumer, topics, 2, err))) goto out;
    FB_INFO("worker %s: consuming %s and %s in group %s with %zu job thread(s)", worker_name, topics[0], topics[1],
            cfg->group_id, w->n_slots);

    int64_t stop_deadline = 0, last_lag = 0;
    int aborted = 0;
    for (;;) {
        dmn_reap(w);
        if (*signals && !w->stopping) {
            w->stopping = 1;
            stop_deadline = ev_now_ms() + cfg->shutdown_grace_s * 1000;
            FB_INFO("shutting down: no new jobs; %zu running get %lld s to finish (a second signal aborts them)",
                    dmn_running(w), (long long)cfg->shutdown_grace_s);
        }
        if (w->stopping) {
            if (!aborted && (*signals >= 2 || ev_now_ms() >= stop_deadline) && dmn_running(w)) {
                FB_WARN("aborting %zu running job(s)", dmn_running(w));
                pthread_mutex_lock(&w->mu);
                for (size_t i = 0; i < w->n_slots; i++) w->slots[i].abort = 1;
                pthread_mutex_unlock(&w->mu);
                aborted = 1;
            }
            if (!dmn_running(w)) break;
        }
        dmn_reconcile(w);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(w->consumer, DMN_POLL_MS);
        if (m) {
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    FB_WARN("consumer: %s", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
            } else {
                dmn_handle(w, m);
            }
        }
        if (cfg->metrics_listen && *cfg->metrics_listen && ev_now_ms() - last_lag > DMN_LAG_EVERY_MS) {
            last_lag = ev_now_ms();
            dmn_update_lag(w);
        }
    }
    dmn_reap(w);
    if (!rd_kafka_assignment_lost(w->consumer)) {
        rd_kafka_resp_err_t ce = rd_kafka_commit(w->consumer, NULL, 0);
        if (ce && ce != RD_KAFKA_RESP_ERR__NO_OFFSET) FB_WARN("final commit failed: %s", rd_kafka_err2str(ce));
    }
    FB_INFO("worker %s: leaving the group", worker_name);
out:
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
