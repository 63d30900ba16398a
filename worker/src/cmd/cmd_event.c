/* cmd_event: `fusion-backup event decode|reencode|run FILE|-`: the C codec and the job runner from the command line.
 *
 * decode prints the event as one JSON line (exit 3 with the reason when it breaks the contract); reencode decodes
 * and encodes again, writing msgpack to stdout. Interop tests drive the C codec through these, and an operator can
 * read a message taken from a topic or the DLQ. run executes one request in this process exactly as a worker
 * would (ledger, retries, status events when --brokers is reachable unless --no-publish) and prints the outcome
 * as JSON: for running a job by hand, and for tests of the jobs without a consumer group. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "codec/ev_event.h"
#include "codec/ev_json.h"
#include "common/fb_config.h"
#include "common/fb_json.h"
#include "common/fb_log.h"
#include "daemon/dmn_jobs.h"
#include "kafka/kfk.h"
#include "kafka/kfk_sign.h"

/* Reads a whole file (or stdin for "-") up to limit bytes into a new malloc'd buffer. */
static fb_code cmd_event_slurp(const char *path, unsigned char **out, size_t *len, fb_err *err) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) return fb_err_set(err, FB_ERR_IO, "could not open \"%s\": %s", path, strerror(errno));
    size_t cap = 65536, n = 0;
    unsigned char *buf = malloc(cap);
    fb_code rc = FB_OK;
    while (buf) {
        if (n == cap) {
            if (cap > EV_MESSAGE_MAX) {
                rc = fb_err_set(err, FB_ERR_INVALID, "\"%s\" is larger than the 4 MiB message limit", path);
                break;
            }
            unsigned char *nb = realloc(buf, cap * 2);
            if (!nb) break;
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (!buf) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory reading \"%s\"", path);
    if (f != stdin) fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = n;
    return FB_OK;
}

/* Prints a job outcome as one JSON line. */
static void cmd_event_print_outcome(const ev_event *req, const dmn_outcome *o) {
    printf("{\"job_id\":");
    fb_json_string(stdout, req->job_id);
    printf(",\"status\":\"%s\",\"from_ledger\":%s,\"file_path\":", ev_status_name(o->status),
           o->from_ledger ? "true" : "false");
    fb_json_string(stdout, o->result.file_path[0] ? o->result.file_path : NULL);
    printf(",\"file_size\":%lld,\"error\":", (long long)o->result.file_size);
    fb_json_string(stdout, o->status == EV_FAILED ? o->error.msg : NULL);
    printf(",\"error_code\":\"%s\",\"stats\":{", o->status == EV_FAILED ? fb_code_name(o->error.code) : "ok");
    for (size_t i = 0; i < o->result.n_stats; i++) {
        if (i) putchar(',');
        fb_json_string(stdout, o->result.stats[i].key);
        if (o->result.stats[i].is_float) printf(":%.6g", o->result.stats[i].f);
        else printf(":%lld", (long long)o->result.stats[i].i);
    }
    printf("}}\n");
}

/* `event run FILE`: cfg holds the settings and options already parsed (cmd_event). */
static int cmd_event_run(fb_config *cfg, int argc, char **argv) {
    fb_err err = {0};
    unsigned char *buf = NULL;
    size_t len = 0;
    ev_event *ev = NULL;
    rd_kafka_t *producer = NULL;
    int publish = !cfg->no_publish;
    fb_code rc = FB_OK;
    const char *file = argc > 2 ? argv[2] : NULL;
    if (argc > 3) rc = fb_err_set(&err, FB_ERR_USAGE, "event run takes one FILE");
    if (!rc && !file) rc = fb_err_set(&err, FB_ERR_USAGE, "usage: fusion-backup event run FILE|- [--no-publish] [settings]");
    if (!rc) rc = cmd_event_slurp(file, &buf, &len, &err);
    if (!rc) rc = ev_decode(buf, len, &ev, &err);
    /* Statuses it publishes are signed with --sign-key: the recorder applies them only when that key is one of
     * its --trusted-signer keys (a worker's). */
    fb_signer signer = {0};
    if (!rc && publish &&
        !(rc = kfk_sign_load("event run", cfg->sign_key, 1, &signer, NULL, NULL, NULL, NULL, &err)) &&
        !(producer = kfk_producer_new(cfg, &err)))
        rc = err.code;
    if (!rc) {
        fb_log_set_level(FB_LOG_WARN);
        dmn_pub pub;
        dmn_pub_init(&pub, producer, cfg, &signer, "fusion-backup-cli");
        dmn_outcome out;
        rc = dmn_jobs_execute(&pub, cfg, ev, buf, len, NULL, &out, &err);
        if (!rc) {
            cmd_event_print_outcome(ev, &out);
            rc = out.status == EV_SUCCESS ? FB_OK : out.error.code;
            if (rc) err = out.error;
        }
    }
    if (rc) fprintf(stderr, "fusion-backup event run: %s\n", err.msg);
    fb_signer_wipe(&signer);
    kfk_producer_free(producer);
    ev_event_free(ev);
    free(buf);
    return rc;
}

static const char cmd_event_usage[] =
    "usage: fusion-backup event decode|reencode|run FILE|-\n"
    "  decode    print the event as JSON (exit 3 and the reason if it breaks the contract)\n"
    "  reencode  decode, then write the C encoder's msgpack to stdout\n"
    "  run       run the request in this process as a worker would; print the outcome as JSON\n"
    "            (--no-publish: publish no status events; settings as for the worker)\n";

int cmd_event(int argc, char **argv) {
    fb_config cfg;
    fb_err perr;
    int help = 0;
    fb_code prc = cmd_args(&cfg, &argc, argv, FB_CMD_EVENT, cmd_event_usage, &help, &perr);
    if (help || prc) {
        if (prc) fprintf(stderr, "fusion-backup event: %s\n", perr.msg);
        fb_config_free(&cfg);
        return prc;
    }
    if (argc >= 2 && strcmp(argv[1], "run") == 0) {
        int rrc = cmd_event_run(&cfg, argc, argv);
        fb_config_free(&cfg);
        return rrc;
    }
    fb_config_free(&cfg);
    if (argc != 3 || (strcmp(argv[1], "decode") != 0 && strcmp(argv[1], "reencode") != 0)) {
        fputs(cmd_event_usage, stderr);
        return FB_ERR_USAGE;
    }
    fb_err err;
    unsigned char *buf = NULL, *enc = NULL;
    size_t len = 0, enc_len = 0;
    ev_event *ev = NULL;
    fb_code rc = cmd_event_slurp(argv[2], &buf, &len, &err);
    if (!rc) rc = ev_decode(buf, len, &ev, &err);
    if (!rc && strcmp(argv[1], "decode") == 0) {
        ev_json_write(stdout, ev);
        fputc('\n', stdout);
    } else if (!rc) {
        rc = ev_encode(ev, &enc, &enc_len, &err);
        if (!rc && fwrite(enc, 1, enc_len, stdout) != enc_len) rc = fb_err_set(&err, FB_ERR_IO, "could not write stdout");
    }
    if (rc) fprintf(stderr, "fusion-backup event: %s\n", err.msg);
    free(buf);
    free(enc);
    ev_event_free(ev);
    return rc;
}
