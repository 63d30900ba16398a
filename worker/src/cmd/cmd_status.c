/* cmd_status: `fusion-backup status`: what an operator asks first. From the completion topic: the last
 * successful backup of each configuration and how old it is, the jobs whose latest word is FAILED, the jobs
 * running now; from the broker: the workers' consumer lag on the two job topics. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capture/cap_rebase.h"
#include "capture/cap_slot.h"
#include "cmd/cmd.h"
#include "cmd/cmd_jobs.h"
#include "codec/ev_event.h"
#include "common/fb_config.h"
#include "common/fb_json.h"
#include "common/fb_time.h"
#include "kafka/kfk_scan.h"
#include "kafka/kfk_sign.h"
#include "pg/pgx.h"

static const char cmd_status_usage[] =
    "usage: fusion-backup status [--json]\nSummarises <prefix>jobs.completed and the workers' consumer lag.\n";

/* 1 when jobs->items[i] is the newest backup SUCCESS of its configuration. */
static int cs_newest_success(const cmd_jobs *jobs, size_t i) {
    const ev_event *e = jobs->items[i].last;
    const ev_job_status *s = &e->u.status;
    if (s->job_type != EV_JOB_BACKUP || s->status != EV_SUCCESS || !s->config_id.has) return 0;
    for (size_t k = 0; k < jobs->n; k++) {
        const ev_job_status *o = &jobs->items[k].last->u.status;
        if (k != i && o->job_type == EV_JOB_BACKUP && o->status == EV_SUCCESS && o->config_id.has &&
            o->config_id.v == s->config_id.v && jobs->items[k].last->ts > e->ts)
            return 0;
    }
    return 1;
}

/* A section: a heading line, or a JSON member holding an array. */
static void cs_section(int json, const char *key, const char *heading) {
    if (json) printf(",\"%s\":[", key);
    else printf("\n%s\n", heading);
}

static void cs_section_end(int json, int any, const char *none) {
    if (json) printf("]");
    else if (!any) printf("%s\n", none);
}

/* What every section reads. */
typedef struct cs_view {
    const fb_config *cfg;
    const cmd_jobs *jobs;
    int64_t now;
    int json;
} cs_view;

/* The counts, and whether any status events were undecodable or untrusted (and so ignored). */
static void cs_summary(const cs_view *v) {
    const cmd_jobs *jobs = v->jobs;
    size_t n_run = 0, n_ok = 0, n_fail = 0;
    for (size_t i = 0; i < jobs->n; i++) {
        ev_status s = jobs->items[i].last->u.status.status;
        n_run += s == EV_RUNNING;
        n_ok += s == EV_SUCCESS;
        n_fail += s == EV_FAILED;
    }
    if (v->json) {
        printf("{\"jobs\":%zu,\"running\":%zu,\"succeeded\":%zu,\"failed\":%zu,\"undecodable\":%s,"
               "\"untrusted_ignored\":%zu", jobs->n, n_run, n_ok, n_fail, jobs->undecodable ? "true" : "false",
               jobs->untrusted);
        return;
    }
    printf("jobs: %zu (%zu running, %zu succeeded, %zu failed)%s; every one from status events signed by a "
           "trusted worker key\n", jobs->n, n_run, n_ok, n_fail,
           jobs->undecodable ? " and undecodable events (see tail)" : "");
    if (jobs->untrusted)
        printf("UNTRUSTED: %zu status event(s) not signed by a trusted worker key were ignored (forged, or from a "
               "worker whose key is not in --trusted-signer; `fusion-backup tail --from-beginning` shows them)\n",
               jobs->untrusted);
}

/* The newest backup SUCCESS of each configuration and its age. */
static void cs_last_success(const cs_view *v) {
    int any = 0;
    cs_section(v->json, "last_success", "last successful backup per configuration:");
    for (size_t i = 0; i < v->jobs->n; i++) {
        if (!cs_newest_success(v->jobs, i)) continue;
        const ev_event *e = v->jobs->items[i].last;
        const ev_job_status *s = &e->u.status;
        char when[40], size[32] = "-";
        fb_time_format(e->ts, when, sizeof when);
        if (v->json) {
            printf("%s{\"config_id\":%" PRId64 ",\"at\":\"%s\",\"age_hours\":%.2f,\"file_size\":%" PRId64
                   ",\"file_path\":", any ? "," : "", s->config_id.v, when, (double)(v->now - e->ts) / 3.6e6,
                   s->file_size.has ? s->file_size.v : -1);
            fb_json_string(stdout, s->file_path ? s->file_path : "");
            printf("}");
        } else {
            if (s->file_size.has) fb_size_format(s->file_size.v, size, sizeof size);
            printf("  config %-6" PRId64 " %s (%.1f h ago)  %s  %s\n", s->config_id.v, when,
                   (double)(v->now - e->ts) / 3.6e6, size, s->file_path ? s->file_path : "");
        }
        any = 1;
    }
    cs_section_end(v->json, any, "  none yet");
}

/* The jobs whose latest status is FAILED. */
static void cs_failed(const cs_view *v) {
    int any = 0;
    cs_section(v->json, "failed_jobs", "failed (latest status FAILED; `fusion-backup replay` republishes them):");
    for (size_t i = 0; i < v->jobs->n; i++) {
        const ev_event *e = v->jobs->items[i].last;
        if (e->u.status.status != EV_FAILED) continue;
        char when[40];
        fb_time_format(e->ts, when, sizeof when);
        if (v->json) {
            printf("%s{\"job_id\":\"%s\",\"job_type\":\"%s\",\"attempt\":%" PRId64 ",\"at\":\"%s\",\"error\":",
                   any ? "," : "", e->job_id, ev_job_type_name(e->u.status.job_type), e->attempt, when);
            fb_json_string(stdout, e->u.status.error ? e->u.status.error : "");
            printf("}");
        } else {
            printf("  %s  %s  %-7s attempt %" PRId64 "  %s\n", when, e->job_id, ev_job_type_name(e->u.status.job_type),
                   e->attempt, e->u.status.error ? e->u.status.error : "");
        }
        any = 1;
    }
    cs_section_end(v->json, any, "  none");
}

/* The jobs running now, on which worker, for how long. */
static void cs_running(const cs_view *v) {
    int any = 0;
    cs_section(v->json, "running_jobs", "running:");
    for (size_t i = 0; i < v->jobs->n; i++) {
        const ev_event *e = v->jobs->items[i].last;
        if (e->u.status.status != EV_RUNNING) continue;
        double for_s = (double)(v->now - (e->u.status.started_at.has ? e->u.status.started_at.v : e->ts)) / 1000.0;
        if (v->json) {
            printf("%s{\"job_id\":\"%s\",\"job_type\":\"%s\",\"seconds\":%.0f,\"worker\":", any ? "," : "",
                   e->job_id, ev_job_type_name(e->u.status.job_type), for_s);
            fb_json_string(stdout, e->u.status.worker ? e->u.status.worker : "");
            printf("}");
        } else {
            printf("  %s  %-7s on %s for %.0f s\n", e->job_id, ev_job_type_name(e->u.status.job_type),
                   e->u.status.worker, for_s);
        }
        any = 1;
    }
    cs_section_end(v->json, any, "  none");
}

/* The workers' consumer lag on the two job topics (from the broker; a topic it cannot read says why). */
static void cs_lag(const cs_view *v) {
    const fb_config *cfg = v->cfg;
    if (v->json) {
        printf(",\"group\":");
        fb_json_string(stdout, cfg->group_id);
        printf(",\"lag\":[");
    } else {
        printf("\nconsumer lag of group %s:\n", cfg->group_id);
    }
    for (int t = 0; t < FB_N_TOPICS; t++) { /* the request topics: FB_TOPIC_BACKUP (0) first */
        if (!fb_topics[t].requests) continue;
        char topic[300];
        int64_t lag = 0;
        int parts = 0;
        fb_err e2;
        fb_config_topic(cfg, (fb_topic)t, topic, sizeof topic);
        int failed = kfk_group_lag(cfg, cfg->group_id, topic, &lag, &parts, &e2) != FB_OK;
        if (v->json) {
            printf("%s{\"topic\":", t ? "," : "");
            fb_json_string(stdout, topic);
            if (failed) {
                printf(",\"error\":");
                fb_json_string(stdout, e2.msg);
            } else {
                printf(",\"waiting\":%" PRId64 ",\"partitions\":%d", lag, parts);
            }
            printf("}");
        } else if (failed) {
            printf("  %s: %s\n", topic, e2.msg);
        } else {
            printf("  %-40s %6" PRId64 " waiting  (%d partitions)\n", topic, lag, parts);
        }
    }
    if (v->json) printf("]");
}

/* Change capture: each capture-databases database's slot on the --pg server (the newest generation of capture-slot
 * that exists there, cap_rebase.h: the one the workers stream after a new base; capture-slot itself when none does), its lag and whether it
 * can still be streamed from (cap_slot.h). Returns FB_ERR_NOTFOUND when a slot is missing or invalidated (the
 * command then exits non-zero after printing everything), FB_OK otherwise; a database it cannot reach is printed
 * as such. In JSON: the "capture" member. */
static fb_code cs_capture_slots(const fb_config *cfg, int json) {
    if (!cfg->capture_databases || !*cfg->capture_databases) return FB_OK;
    if (json) printf(",\"capture\":[");
    else printf("\nchange capture (slot %s):\n", cfg->capture_slot);
    char list[4096];
    fb_code worst = FB_OK;
    int k = 0;
    snprintf(list, sizeof list, "%s", cfg->capture_databases);
    for (char *save = NULL, *db = strtok_r(list, ", ", &save); db; db = strtok_r(NULL, ", ", &save), k++) {
        fb_err err;
        cap_slot_health h;
        char slot[CAP_NAME_MAX + 1];
        unsigned gen = 0;
        PGconn *c = pgx_connect_db(cfg->pg, db, "fusion-backup status", &err);
        fb_code rc = c ? cap_rebase_newest_slot(c, cfg->capture_slot, &gen, NULL, &err) : err.code;
        if (rc == FB_OK) rc = cap_rebase_slot_name(cfg->capture_slot, gen ? gen : 1, slot, &err);
        if (rc == FB_OK) rc = cap_slot_health_read(c, slot, &h, &err);
        if (c) PQfinish(c);
        fb_err why;
        int bad = rc == FB_OK && cap_slot_usable(&h, db, slot, &why) != FB_OK;
        if (bad) worst = FB_ERR_NOTFOUND;
        if (json) {
            printf("%s{\"database\":", k ? "," : "");
            fb_json_string(stdout, db);
            if (rc == FB_OK) printf(",\"slot\":\"%s\",\"generation\":%u", slot, gen ? gen : 1);
            if (rc != FB_OK) {
                printf(",\"error\":");
                fb_json_string(stdout, err.msg);
            } else {
                printf(",\"state\":\"%s\",\"active\":%s,\"wal_status\":\"%s\",\"lag_bytes\":%" PRIu64
                       ",\"safe_wal_bytes\":%" PRId64, cap_slot_state(&h), h.active ? "true" : "false", h.wal_status,
                       h.lag_bytes, h.safe_wal_size);
                if (bad) {
                    printf(",\"error\":");
                    fb_json_string(stdout, why.msg);
                }
            }
            printf("}");
        } else if (rc != FB_OK) {
            printf("  %-24s %s\n", db, err.msg);
        } else {
            char lag[32], safe[32] = "unbounded";
            fb_size_format((int64_t)h.lag_bytes, lag, sizeof lag);
            if (h.safe_wal_size >= 0) fb_size_format(h.safe_wal_size, safe, sizeof safe);
            printf("  %-24s %-10s %s, slot %s, wal_status %s, holds %s of WAL, %s before max_slot_wal_keep_size\n",
                   db, cap_slot_state(&h), h.active ? "streaming" : "NOT STREAMING", slot,
                   h.exists ? h.wal_status : "-", lag, safe);
            if (bad) printf("  %-24s ERROR: %s\n", "", why.msg);
        }
    }
    if (json) printf("]");
    return worst;
}

/* The sections, in the order they print: one function each, so a new one is one line here (a JSON section
 * starts with "," and ends with its value; a text one starts with a blank line and its heading). */
static void (*const cs_sections[])(const cs_view *) = {cs_summary, cs_last_success, cs_failed, cs_running, cs_lag};

int cmd_status(int argc, char **argv) {
    fb_config cfg;
    fb_err err = {0};
    cmd_jobs jobs = {0};
    fb_keyring signers = {0};
    int help = 0;
    fb_code rc = cmd_args(&cfg, &argc, argv, FB_CMD_STATUS, cmd_status_usage, &help, &err);
    if (help) goto out;
    if (!rc && argc > 1) rc = fb_err_set(&err, FB_ERR_USAGE, "unexpected argument \"%s\" (see status --help)", argv[1]);
    if (rc ||
        (rc = kfk_sign_load("status", NULL, 0, NULL, cfg.trusted_signers, "--trusted-signer (FB_TRUSTED_SIGNERS)",
                            "the workers", &signers, &err)) ||
        (rc = cmd_jobs_load(&cfg, &signers, &jobs, &err)))
        goto out;
    cs_view v = {&cfg, &jobs, fb_now_ms(), cfg.json != 0};
    for (size_t i = 0; i < sizeof cs_sections / sizeof cs_sections[0]; i++) cs_sections[i](&v);
    fb_code cap_rc = cs_capture_slots(&cfg, v.json); /* last: its exit code is the command's */
    if (v.json) printf("}\n");
    if (cap_rc) { /* the report is printed (the JSON one too): only the exit code and stderr say it failed */
        fprintf(stderr, "fusion-backup status: a change capture slot cannot be streamed from (see above): a new base "
                "is needed\n");
        rc = cap_rc;
        goto done;
    }
out:
    if (rc) fprintf(stderr, "fusion-backup status: %s\n", err.msg);
    if (rc && cfg.json) cmd_json_failure(rc, err.msg);
done:
    cmd_jobs_free(&jobs);
    fb_keyring_free(&signers);
    fb_config_free(&cfg);
    return rc;
}
