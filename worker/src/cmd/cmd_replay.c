/* cmd_replay: `fusion-backup replay`: republish failed jobs to the topic their request belongs on, with attempt + 1.
 *
 * --from failed (default) takes every job whose latest status on the completion topic is FAILED (its status event
 * carries the original request); --from dlq takes the dead letters (messages that could not be decoded or did
 * not belong on their topic). Neither source is trusted: anyone who can write to the brokers can forge a FAILED
 * status or a dead letter. So every request is
 *   - printed in full (one JSON line, as `tail --json` prints events) before anything is sent, also with --dry-run;
 *   - checked against the database exactly as the worker will check it (job_authority.h, needs --pg): a request
 *     the database does not authorise now is refused, with the reason, and not sent;
 *   - routed by its own event type (backup.requested and backup.verify to the backup topic, archive.due to the
 *     archive topic), never by the dead letter's unauthenticated fusion.source.topic header; a header that names
 *     another topic than the event's own is refused, and so is a dead letter that cannot be decoded (its type,
 *     hence its topic, is unknown).
 * Who sent it (kfk_sign.h): replay re-signs each request with the operator's key (--sign-key), so it must never
 * launder an untrusted one. A FAILED status counts only when a trusted worker signed it (--trusted-signer; a
 * worker runs, hence fails, only requests it verified). A dead letter counts only when a trusted worker signed
 * it AND the original request it copies carries the signature of a trusted requester (--trusted-requester) for
 * the topic its type belongs on: the dead letter of an unsigned or forged request stays where it is.
 * The loop guard: a job whose next attempt would exceed --max-attempts is refused and named, so a job that fails
 * for good cannot circle forever. --dry-run says what it would do and sends nothing.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "cmd/cmd_jobs.h"
#include "codec/ev_event.h"
#include "codec/ev_json.h"
#include "common/fb_config.h"
#include "common/fb_json.h"
#include "common/fb_time.h"
#include "job/job_request.h"
#include "kafka/kfk.h"
#include "job/job_authority.h"
#include "kafka/kfk_scan.h"
#include "kafka/kfk_sign.h"

typedef struct replay_opts {
    int json, n_said; /* --json: the results array is open; n_said: its elements so far */
    const fb_config *cfg;
    const char *job_id;
    int64_t since;
    int dry_run;
    rd_kafka_t *producer;
    const fb_signer *signer;       /* the operator's key: signs what is republished */
    const fb_keyring *signers;     /* workers: FAILED statuses and dead letters */
    const fb_keyring *requesters;  /* the original requests inside dead letters */
    int replayed, refused, failed;
} replay_opts;

/* The request topic and key of a request event. */
static int replay_route(const fb_config *cfg, const ev_event *req, char *topic, size_t tcap, char *key, size_t kcap) {
    const job_request *r = job_request_of(req->type);
    if (!r) return 0;
    fb_config_topic(cfg, r->topic, topic, tcap);
    r->key(req, key, kcap);
    return 1;
}

/* One line of the outcome: "ACTION   JOB: detail" (detail starts with its separator), or with --json one element
 * {"action", "job_id", "detail"} of the results array. */
static void replay_say(replay_opts *o, const char *action, const char *job, const char *fmt, ...) {
    char detail[2400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (!o->json) {
        printf("%-8s %s%s\n", action, job, detail);
        return;
    }
    const char *d = detail;
    if (d[0] == ':' && d[1] == ' ') d += 2;
    else if (d[0] == ' ') d++;
    printf("%s{\"action\":", o->n_said++ ? "," : "");
    fb_json_string(stdout, action);
    printf(",\"job_id\":");
    fb_json_string(stdout, job);
    printf(",\"detail\":");
    fb_json_string(stdout, d);
    printf("}");
}

/* Republishes one decoded request with attempt = next_attempt, or refuses it (loop guard, authority, a header
 * that disagrees with the event). claimed_topic: the topic a dead letter's header names (NULL: none). */
static void replay_one(replay_opts *o, ev_event *req, int64_t next_attempt, const char *why, const char *claimed_topic) {
    char topic[300], key[600];
    fb_err err;
    if (!replay_route(o->cfg, req, topic, sizeof topic, key, sizeof key)) {
        replay_say(o, "skip", req->job_id, ": a %s event is not a request, nothing to replay", ev_type_name(req->type));
        return;
    }
    req->attempt = next_attempt;
    req->ts = fb_now_ms();
    if (o->json) {
        printf("%s{\"action\":\"request\",\"job_id\":\"%s\",\"event\":", o->n_said++ ? "," : "", req->job_id);
        ev_json_write(stdout, req);
        printf("}");
    } else {
        printf("request  ");
        ev_json_write(stdout, req);
        putchar('\n');
    }
    if (claimed_topic && strcmp(claimed_topic, topic) != 0) {
        replay_say(o, "refused", req->job_id, " (%s): the dead letter's header says it came from %s, but a %s belongs on "
                   "%s; the header is not authenticated, so a letter whose header and content disagree is not replayed",
                   ev_type_name(req->type), claimed_topic, ev_type_name(req->type), topic);
        o->refused++;
        return;
    }
    if (next_attempt > o->cfg->max_attempts) {
        replay_say(o, "refused", req->job_id, " (%s): attempt %" PRId64 " would exceed --max-attempts %" PRId64
                   " (loop guard: fix the cause, then raise --max-attempts to force)",
                   ev_type_name(req->type), next_attempt, o->cfg->max_attempts);
        o->refused++;
        return;
    }
    /* The database decides, now, as the worker will: a forged or outdated request is not sent at all. */
    if (job_authority_authorise(o->cfg, req, &err) != FB_OK) {
        replay_say(o, "refused", req->job_id, " (%s): %s", ev_type_name(req->type), err.msg);
        o->refused++;
        return;
    }
    if (o->dry_run) {
        replay_say(o, "would", req->job_id, " (%s) -> %s key %s, attempt %" PRId64 " (%s)", ev_type_name(req->type),
                   topic, key, next_attempt, why);
        o->replayed++;
        return;
    }
    unsigned char *buf = NULL;
    size_t len = 0;
    if (ev_encode(req, &buf, &len, &err) ||
        kfk_produce_sync(o->producer, o->signer, topic, key, strlen(key), buf, len, NULL, 0, 30000, &err)) {
        replay_say(o, "FAILED", req->job_id, ": %s", err.msg);
        o->failed++;
    } else {
        replay_say(o, "replayed", req->job_id, " (%s) -> %s key %s, attempt %" PRId64 " (%s)", ev_type_name(req->type),
                   topic, key, next_attempt, why);
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
            replay_say(o, "skip", st->job_id, ": its FAILED status carries no usable request%s%s",
                       s->request ? ": " : "", s->request ? err.msg : "");
            continue;
        }
        if (strcmp(req->job_id, st->job_id) != 0) {
            replay_say(o, "refused", st->job_id, ": its FAILED status carries the request of another job (%s)",
                       req->job_id);
            o->refused++;
            ev_event_free(req);
            continue;
        }
        int64_t base = req->attempt > st->attempt ? req->attempt : st->attempt;
        char why[300];
        snprintf(why, sizeof why, "failed: %.200s", s->error ? s->error : "no reason given");
        replay_one(o, req, base + 1, why, NULL);
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
    char when[32] = "0", src[300] = "";
    replay_header(m, "fusion.time", when, sizeof when);
    char *end = NULL;
    long long at = strtoll(when, &end, 10);
    if (o->since && (*end || at < o->since)) return 0; /* a header that is not a time is not "since" anything */
    const char *claimed = replay_header(m, "fusion.source.topic", src, sizeof src);
    ev_event *req = NULL;
    fb_err err;
    char what[96];
    snprintf(what, sizeof what, "the dead letter at offset %" PRId64, m->offset);
    if (kfk_sign_verify_message(o->signers, m, what, NULL, &err)) {
        if (o->job_id) return 0;
        replay_say(o, "refused", "", "%s: not written by a trusted worker, so it is not replayed (--trusted-signer)",
                   err.msg);
        o->refused++;
        return 0;
    }
    if (ev_decode(m->payload, m->len, &req, &err) == FB_OK) {
        char topic[300], key[600];
        if (o->job_id && strcmp(o->job_id, req->job_id) != 0) {
            ev_event_free(req);
            return 0;
        }
        rd_kafka_headers_t *h = NULL;
        if (rd_kafka_message_headers(m, &h)) h = NULL;
        snprintf(what, sizeof what, "the original request of job %s", req->job_id);
        if (replay_route(o->cfg, req, topic, sizeof topic, key, sizeof key) &&
            kfk_sign_verify(o->requesters, topic, m->key, m->key_len, m->payload, m->len, h, KFK_HDR_SOURCE_KEY_ID,
                            KFK_HDR_SOURCE_SIG, what, NULL, &err)) {
            replay_say(o, "refused", req->job_id, " (%s): %s; replay re-signs what it sends with the operator's key, so "
                       "it never republishes a request that no trusted requester signed (--trusted-requester)",
                       ev_type_name(req->type), err.msg);
            o->refused++;
        } else {
            replay_one(o, req, req->attempt + 1, "dead letter", claimed);
        }
        ev_event_free(req);
        return 0;
    }
    if (o->job_id) return 0; /* cannot tell its job: only reported when not filtering by job */
    replay_say(o, "refused", "", "undecodable dead letter at offset %" PRId64 " (header: from %s): %s; only a request "
               "that decodes can be routed by its type (the header is not authenticated), so it stays in the "
               "dead-letter topic", m->offset, claimed ? claimed : "an unknown topic", err.msg);
    o->refused++;
    return 0;
}

static const char cmd_replay_usage[] =
    "usage: fusion-backup replay --pg CONNINFO [--from failed|dlq] [--job-id ID] [--since TIME] [--dry-run] [--json]\n"
    "Republishes failed jobs (or dead letters) to the topic of their event type with attempt + 1. Each\n"
    "request is printed as JSON first, and checked against the database (--pg) as the worker checks it:\n"
    "a request the database does not authorise now is refused, and so is a job whose attempt would\n"
    "exceed --max-attempts (default 5), a dead letter that does not decode, and one whose source-topic\n"
    "header disagrees with its type. Only FAILED statuses and dead letters signed by a trusted worker\n"
    "(--trusted-signer) count, and a dead letter only when its original request was signed by a trusted\n"
    "requester (--trusted-requester); what is sent is signed with --sign-key.\n";

int cmd_replay(int argc, char **argv) {
    fb_config cfg;
    fb_err err = {0};
    replay_opts o;
    memset(&o, 0, sizeof o);
    cmd_jobs jobs = {0};
    fb_signer signer = {0};
    fb_keyring signers = {0}, requesters = {0};
    int help = 0;
    fb_code rc = cmd_args(&cfg, &argc, argv, FB_CMD_REPLAY, cmd_replay_usage, &help, &err);
    if (help) goto out;
    const char *from = cfg.from;
    o.dry_run = cfg.dry_run != 0;
    o.since = cfg.since == FB_TIME_NONE ? 0 : cfg.since;
    if (!rc && argc > 1) rc = fb_err_set(&err, FB_ERR_USAGE, "unexpected argument \"%s\" (see replay --help)", argv[1]);
    if (!rc && cfg.job_id && *cfg.job_id) {
        o.job_id = cfg.job_id;
        if (!ev_uuid_valid(o.job_id))
            rc = fb_err_set(&err, FB_ERR_USAGE, "--job-id: \"%s\" is not a job id (a lowercase UUID)", o.job_id);
    }
    /* Keys first: a replay that could not sign what it sends, or could not tell who wrote what it reads, stops
     * before reading anything. --dry-run sends nothing, so it needs no signing key. */
    if (rc ||
        (rc = kfk_sign_load("replay", cfg.sign_key, !o.dry_run, &signer, cfg.trusted_signers,
                            "--trusted-signer (FB_TRUSTED_SIGNERS)", "the workers", &signers, &err)) ||
        (strcmp(from, "dlq") == 0 &&
         (rc = kfk_sign_load("replay --from dlq", NULL, 0, NULL, cfg.trusted_requesters,
                             "--trusted-requester (FB_TRUSTED_REQUESTERS)", "the Django app and the operators",
                             &requesters, &err))))
        goto out;
    o.cfg = &cfg;
    o.signer = &signer;
    o.signers = &signers;
    o.requesters = &requesters;
    if (!o.dry_run && !(o.producer = kfk_producer_new(&cfg, &err))) {
        rc = err.code;
        goto out;
    }
    if (cfg.json) {
        o.json = 1; /* from here on every outcome is an element of the results array */
        printf("{\"dry_run\":%s,\"from\":\"%s\",\"results\":[", o.dry_run ? "true" : "false", from);
    }
    if (strcmp(from, "failed") == 0) {
        if (!(rc = cmd_jobs_load(&cfg, &signers, &jobs, &err))) {
            if (jobs.untrusted)
                replay_say(&o, "ignored", "", "%zu status event(s) not signed by a trusted worker key "
                           "(--trusted-signer): a FAILED among them is not replayed", jobs.untrusted);
            replay_failed(&o, &jobs);
        }
    } else {
        char topic[300];
        fb_config_topic(&cfg, FB_TOPIC_DLQ, topic, sizeof topic);
        rc = kfk_scan_topic(&cfg, topic, replay_dlq_one, &o, &err);
    }
    if (!rc && !o.json)
        printf("%s%d replayed, %d refused, %d failed\n", o.dry_run ? "dry run: " : "", o.replayed, o.refused, o.failed);
    if (!rc && o.failed) rc = fb_err_set(&err, FB_ERR_KAFKA, "%d job(s) could not be republished (see above)", o.failed);
    if (o.json) {
        printf("],\"replayed\":%d,\"refused\":%d,\"failed\":%d,\"ok\":%s", o.replayed, o.refused, o.failed,
               rc ? "false" : "true");
        if (rc) {
            printf(",\"code\":%d,\"error\":", (int)rc);
            fb_json_string(stdout, err.msg);
        }
        printf("}\n");
    }
out:
    if (rc) fprintf(stderr, "fusion-backup replay: %s\n", err.msg);
    if (rc && cfg.json && !o.json) cmd_json_failure(rc, err.msg);
    cmd_jobs_free(&jobs);
    if (o.producer) kfk_producer_free(o.producer);
    fb_signer_wipe(&signer);
    fb_keyring_free(&signers);
    fb_keyring_free(&requesters);
    fb_config_free(&cfg);
    return rc;
}
