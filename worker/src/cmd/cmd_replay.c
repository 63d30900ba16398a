/* cmd_replay: `fusion-backup replay`: republish failed jobs to the topic they came from, with attempt + 1.
 *
 * --from failed (default) takes every job whose latest status on the completion topic is FAILED (its status event
 * carries the original request); --from dlq takes the dead letters (messages that could not be decoded or did
 * not belong on their topic). The loop guard: a job whose next attempt would exceed --max-attempts is refused and
 * named, so a job that fails for good cannot circle forever; a dead letter that cannot be decoded carries its
 * replay count in the header fusion.replays (the worker copies it into the next dead letter). --dry-run says what
 * it would do and sends nothing.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "cmd/cmd_jobs.h"
#include "codec/ev_event.h"
#include "common/fb_config.h"
#include "common/fb_time.h"
#include "kafka/kfk.h"
#include "kafka/kfk_scan.h"

typedef struct replay_opts {
    const fb_config *cfg;
    const char *job_id;
    int64_t since;
    int dry_run;
    rd_kafka_t *producer;
    int replayed, refused, failed;
} replay_opts;

/* The request topic and key of a request event. */
static int replay_route(const fb_config *cfg, const ev_event *req, char *topic, size_t tcap, char *key, size_t kcap) {
    if (req->type == EV_BACKUP_REQUESTED || req->type == EV_BACKUP_VERIFY) {
        fb_config_topic(cfg, "backup.requested", topic, tcap);
        snprintf(key, kcap, "%" PRId64, req->type == EV_BACKUP_REQUESTED ? req->u.backup.config_id : req->u.verify.config_id);
        return 1;
    }
    if (req->type == EV_ARCHIVE_DUE) {
        fb_config_topic(cfg, "archive.due", topic, tcap);
        snprintf(key, kcap, "%s.%s", req->u.archive.module, req->u.archive.model_name);
        return 1;
    }
    return 0;
}

/* Republishes one decoded request with attempt = next_attempt (or refuses it). */
static void replay_one(replay_opts *o, ev_event *req, int64_t next_attempt, const char *why) {
    char topic[300], key[600];
    if (!replay_route(o->cfg, req, topic, sizeof topic, key, sizeof key)) {
        printf("skip     %s: a %s event is not a request, nothing to replay\n", req->job_id, ev_type_name(req->type));
        return;
    }
    if (next_attempt > o->cfg->max_attempts) {
        printf("refused  %s (%s): attempt %" PRId64 " would exceed --max-attempts %" PRId64
               " (loop guard: fix the cause, then raise --max-attempts to force)\n",
               req->job_id, ev_type_name(req->type), next_attempt, o->cfg->max_attempts);
        o->refused++;
        return;
    }
    req->attempt = next_attempt;
    req->ts = ev_now_ms();
    if (o->dry_run) {
        printf("would    %s (%s) -> %s key %s, attempt %" PRId64 " (%s)\n", req->job_id, ev_type_name(req->type), topic,
               key, next_attempt, why);
        o->replayed++;
        return;
    }
    unsigned char *buf = NULL;
    size_t len = 0;
    fb_err err;
    if (ev_encode(req, &buf, &len, &err) ||
        kfk_produce_sync(o->producer, topic, key, strlen(key), buf, len, NULL, 0, 30000, &err)) {
        printf("FAILED   %s: %s\n", req->job_id, err.msg);
        o->failed++;
    } else {
        printf("replayed %s (%s) -> %s key %s, attempt %" PRId64 " (%s)\n", req->job_id, ev_type_name(req->type), topic,
               key, next_attempt, why);
        o->replayed++;
    }
    free(buf);
}

static void replay_failed(replay_opts *o, cmd_jobs *jobs) {
    for (size_t i = 0; i < jobs->n; i++) {
        const ev_event *st = jobs->items[i].last;
        const ev_job_status *s = &st->u.status;
        if (s->status != EV_FAILED) continue;
        if (o->job_id && strcmp(o->job_id, st->job_id) != 0) continue;
        if (o->since && (s->completed_at.has ? s->completed_at.v : st->ts) < o->since) continue;
        ev_event *req = NULL;
        fb_err err;
        if (!s->request || ev_decode(s->request, s->request_len, &req, &err)) {
            printf("skip     %s: its FAILED status carries no usable request%s%s\n", st->job_id, s->request ? ": " : "",
                   s->request ? err.msg : "");
            continue;
        }
        int64_t base = req->attempt > st->attempt ? req->attempt : st->attempt;
        char why[300];
        snprintf(why, sizeof why, "failed: %.200s", s->error ? s->error : "no reason given");
        replay_one(o, req, base + 1, why);
        ev_event_free(req);
    }
}

static const char *replay_header(const rd_kafka_message_t *m, const char *name, char *buf, size_t cap) {
    rd_kafka_headers_t *h = NULL;
    const void *v = NULL;
    size_t n = 0;
    if (rd_kafka_message_headers(m, &h) || rd_kafka_header_get_last(h, name, &v, &n) || !v) return NULL;
    snprintf(buf, cap, "%.*s", (int)n, (const char *)v);
    return buf;
}

static int replay_dlq_one(void *opaque, const rd_kafka_message_t *m) {
    replay_opts *o = opaque;
    char when[32] = "0", src[300] = "", count[16] = "0";
    replay_header(m, "fusion.time", when, sizeof when);
    if (o->since && atoll(when) < o->since) return 0;
    ev_event *req = NULL;
    if (ev_decode(m->payload, m->len, &req, NULL) == FB_OK) {
        if (!o->job_id || strcmp(o->job_id, req->job_id) == 0) replay_one(o, req, req->attempt + 1, "dead letter");
        ev_event_free(req);
        return 0;
    }
    if (o->job_id) return 0; /* cannot tell its job: only replayed when not filtering by job */
    replay_header(m, "fusion.replays", count, sizeof count);
    int next = atoi(count) + 1;
    if (!replay_header(m, "fusion.source.topic", src, sizeof src)) {
        printf("skip     dead letter at offset %" PRId64 ": no source topic header\n", m->offset);
        return 0;
    }
    if (next > o->cfg->max_attempts) {
        printf("refused  undecodable dead letter from %s: replayed %d times already (loop guard)\n", src, next - 1);
        o->refused++;
        return 0;
    }
    char nbuf[16];
    snprintf(nbuf, sizeof nbuf, "%d", next);
    if (o->dry_run) {
        printf("would    undecodable dead letter -> %s as is (replay %d; only useful after the workers were upgraded)\n",
               src, next);
        o->replayed++;
        return 0;
    }
    kfk_header hdr[1] = {{"fusion.replays", nbuf}};
    fb_err err;
    if (kfk_produce_sync(o->producer, src, m->key, m->key_len, m->payload, m->len, hdr, 1, 30000, &err)) {
        printf("FAILED   dead letter -> %s: %s\n", src, err.msg);
        o->failed++;
    } else {
        printf("replayed undecodable dead letter -> %s as is (replay %d)\n", src, next);
        o->replayed++;
    }
    return 0;
}

int cmd_replay(int argc, char **argv) {
    static const char *const extra[] = {"from", "job-id", "since", "dry-run", "help", NULL};
    fb_config cfg;
    fb_err err = {0};
    replay_opts o;
    memset(&o, 0, sizeof o);
    const char *from = "failed";
    cmd_jobs jobs = {0};
    fb_code rc = fb_config_init(&cfg, &err);
    if (!rc) rc = fb_config_parse_args(&cfg, &argc, argv, FB_CFG_CLI, extra, &err);
    for (int i = 1; !rc && i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            printf("usage: fusion-backup replay [--from failed|dlq] [--job-id ID] [--since TIME] [--dry-run]\n"
                   "Republishes failed jobs (or dead letters) to their original topic with attempt + 1; refuses a job\n"
                   "whose attempt would exceed --max-attempts (default 5). TIME: 2026-11-27T05:00:00Z, 2026-11-27,\n"
                   "or a duration before now (90m, 2h, 7d).\n");
            goto out;
        } else if (strcmp(a, "--dry-run") == 0) {
            o.dry_run = 1;
        } else if (i + 1 < argc && strcmp(a, "--from") == 0) {
            from = argv[++i];
        } else if (i + 1 < argc && strcmp(a, "--job-id") == 0) {
            o.job_id = argv[++i];
            if (!ev_uuid_valid(o.job_id)) rc = fb_err_set(&err, FB_ERR_USAGE, "--job-id: \"%s\" is not a job id (a lowercase UUID)", o.job_id);
        } else if (i + 1 < argc && strcmp(a, "--since") == 0) {
            rc = fb_time_parse(argv[++i], ev_now_ms(), &o.since, &err);
        } else {
            rc = fb_err_set(&err, FB_ERR_USAGE, "unexpected argument \"%s\" (see replay --help)", a);
        }
    }
    if (!rc && strcmp(from, "failed") != 0 && strcmp(from, "dlq") != 0)
        rc = fb_err_set(&err, FB_ERR_USAGE, "--from must be failed or dlq, got \"%s\"", from);
    if (rc) goto out;
    o.cfg = &cfg;
    if (!o.dry_run && !(o.producer = kfk_producer_new(&cfg, &err))) {
        rc = err.code;
        goto out;
    }
    if (strcmp(from, "failed") == 0) {
        if (!(rc = cmd_jobs_load(&cfg, &jobs, &err))) replay_failed(&o, &jobs);
    } else {
        char topic[300];
        fb_config_topic(&cfg, "jobs.dlq", topic, sizeof topic);
        rc = kfk_scan_topic(&cfg, topic, replay_dlq_one, &o, &err);
    }
    if (!rc) {
        printf("%s%d replayed, %d refused, %d failed\n", o.dry_run ? "dry run: " : "", o.replayed, o.refused, o.failed);
        if (o.failed) rc = fb_err_set(&err, FB_ERR_KAFKA, "%d job(s) could not be republished (see above)", o.failed);
    }
out:
    if (rc) fprintf(stderr, "fusion-backup replay: %s\n", err.msg);
    cmd_jobs_free(&jobs);
    if (o.producer) kfk_producer_free(o.producer);
    fb_config_free(&cfg);
    return rc;
}
