/* cmd_tail: `fusion-backup tail [--json] [--from-beginning] [--count N] [--timeout S]`: follows the completion
 * topic as readable lines (time, job, type, status, size, duration, error) or as JSON lines, as an observer that
 * never joins the workers' group. Ctrl-C stops it. Every event says whether it is trusted (signed by a key of
 * --trusted-signer, kfk_sign.h): a line ends with "signed by KEYID" or starts with "UNTRUSTED" and ends with why;
 * a JSON line is {"trusted": bool, "key_id": ..., "reason": ..., "event": {...}}. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "codec/ev_event.h"
#include "codec/ev_json.h"
#include "common/fb_config.h"
#include "common/fb_flag.h"
#include "common/fb_json.h"
#include "common/fb_time.h"
#include "kafka/kfk_scan.h"
#include "kafka/kfk_sign.h"

static fb_flag tail_stop = 0;
static void tail_on_signal(int sig) {
    (void)sig;
    tail_stop = 1;
}

typedef struct tail_opts {
    int json;
    long count, seen;
    const fb_keyring *signers;
} tail_opts;

/* One readable line for a status event; who signed it (NULL: untrusted, for `why`). */
static void tail_line(FILE *out, const ev_event *ev, const fb_trusted_key *who, const char *why) {
    const ev_job_status *s = &ev->u.status;
    char when[40], size[32] = "-", dur[32] = "-";
    fb_time_format(s->completed_at.has ? s->completed_at.v : ev->ts, when, sizeof when);
    if (s->file_size.has) fb_size_format(s->file_size.v, size, sizeof size);
    if (s->started_at.has) {
        int64_t end = s->completed_at.has ? s->completed_at.v : ev->ts;
        snprintf(dur, sizeof dur, "%.1f s", (double)(end - s->started_at.v) / 1000.0);
    }
    if (!who) fputs("UNTRUSTED  ", out);
    fprintf(out, "%s  %.8s  %-7s %-7s  a%-3" PRId64 " %9s %9s  %s%s%s", when, ev->job_id, ev_job_type_name(s->job_type),
            ev_status_name(s->status), ev->attempt, size, dur, s->worker, s->file_path ? "  " : "",
            s->file_path ? s->file_path : "");
    if (s->status == EV_RUNNING && s->has_stats) { /* progress: done_x/total_x pairs */
        for (size_t i = 0; i < s->n_stats; i++)
            if (strncmp(s->stats[i].key, "done_", 5) == 0) fprintf(out, "  %s=%" PRId64, s->stats[i].key + 5, s->stats[i].i);
    }
    if (s->error) fprintf(out, "  error: %s", s->error);
    if (who) fprintf(out, "  signed by %s", who->key_id);
    else fprintf(out, "  (not applied by the recorder: %s)", why);
    fputc('\n', out);
}

static int tail_one(void *opaque, const rd_kafka_message_t *m) {
    tail_opts *o = opaque;
    ev_event *ev = NULL;
    fb_err err, serr;
    char what[64];
    const fb_trusted_key *who = NULL;
    snprintf(what, sizeof what, "offset %" PRId64, m->offset);
    kfk_sign_verify_message(o->signers, m, what, &who, &serr);
    if (ev_decode(m->payload, m->len, &ev, &err)) {
        fprintf(stderr, "%soffset %" PRId64 ": not a valid status event: %s\n", who ? "" : "UNTRUSTED ", m->offset,
                err.msg);
        return 0;
    }
    if (o->json) {
        printf("{\"trusted\":%s,\"key_id\":", who ? "true" : "false");
        fb_json_string(stdout, who ? who->key_id : NULL);
        fputs(",\"reason\":", stdout);
        fb_json_string(stdout, who ? NULL : serr.msg);
        fputs(",\"event\":", stdout);
        ev_json_write(stdout, ev);
        fputs("}\n", stdout);
    } else if (ev->type == EV_JOB_STATUS) {
        tail_line(stdout, ev, who, serr.msg);
    }
    fflush(stdout);
    ev_event_free(ev);
    return o->count > 0 && ++o->seen >= o->count;
}

static const char cmd_tail_usage[] =
    "usage: fusion-backup tail [--json] [--from-beginning] [--count N] [--timeout SECONDS]\n"
    "Follows <prefix>jobs.completed: time, job, type, status, attempt, size, duration, worker, file, error,\n"
    "and who signed it (--trusted-signer: the workers' keys; an untrusted event is marked UNTRUSTED).\n"
    "--json: one {\"trusted\", \"key_id\", \"reason\", \"event\"} object per line.\n";

int cmd_tail(int argc, char **argv) {
    fb_config cfg;
    fb_err err = {0};
    tail_opts o = {0, 0, 0, NULL};
    fb_keyring signers = {0};
    int help = 0;
    fb_code rc = cmd_args(&cfg, &argc, argv, FB_CMD_TAIL, cmd_tail_usage, &help, &err);
    if (help) goto out;
    if (!rc && argc > 1) rc = fb_err_set(&err, FB_ERR_USAGE, "unexpected argument \"%s\" (see tail --help)", argv[1]);
    o.json = cfg.json != 0;
    o.count = (long)cfg.count;
    int from_beginning = cfg.from_beginning != 0;
    int64_t timeout_ms = cfg.timeout_s * 1000;
    if (rc || (rc = kfk_sign_load("tail", NULL, 0, NULL, cfg.trusted_signers, "--trusted-signer (FB_TRUSTED_SIGNERS)",
                                  "the workers", &signers, &err)))
        goto out;
    o.signers = &signers;
    signal(SIGINT, tail_on_signal);
    signal(SIGTERM, tail_on_signal);
    char topic[300];
    fb_config_topic(&cfg, FB_TOPIC_COMPLETED, topic, sizeof topic);
    rc = kfk_follow_topic(&cfg, topic, from_beginning, timeout_ms, &tail_stop, tail_one, &o, &err);
out:
    if (rc) fprintf(stderr, "fusion-backup tail: %s\n", err.msg);
    fb_keyring_free(&signers);
    fb_config_free(&cfg);
    return rc;
}
