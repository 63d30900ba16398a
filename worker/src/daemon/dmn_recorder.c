/* dmn_recorder: see dmn_recorder.h. */
#include "daemon/dmn_recorder.h"

#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fb_flag.h"
#include "common/fb_json.h"
#include "common/fb_log.h"
#include "common/fb_time.h"
#include "daemon/dmn_metrics.h"
#include "kafka/kfk.h"
#include "kafka/kfk_sign.h"
#include "pg/pgx.h"

/* A status event is a claim by an unknown sender (anyone who can produce to the completion topic), so every
 * statement below cross-checks it with what the record itself says, and clamps every time it carries to the
 * database's now() + this skew: a forged date in year 9999 must not pin a record ("older results never replace
 * newer ones" would otherwise keep it forever). Clamped in bigint milliseconds before to_timestamp(), which
 * would fail on the largest contract times. */
#define REC_SKEW_MS "300000"
#define REC_CLAMP(p) "to_timestamp(LEAST(" p "::bigint, (extract(epoch FROM now()) * 1000)::bigint + " REC_SKEW_MS ") / 1000.0)"

/* What a job's status sets on its row, BackupRecord's and ArchiveRun's alike (producer: models._Job), and the
 * rule that lets a row only move forward: the attempt at most one more than the row's (a replay adds 1; `attempt:
 * 1000` would pin the row against every real attempt), QUEUED -> RUNNING -> SUCCESS | FAILED, FAILED -> SUCCESS,
 * FAILED -> FAILED of a later attempt. Arguments: the statement's placeholders. */
#define REC_JOB_SET(status, started, completed, error, attempt, worker, stats)                                      \
    "  status = " status ", "                                                                                      \
    "  started_at = COALESCE(" REC_CLAMP(started) ", started_at), "                                                \
    "  completed_at = CASE WHEN " status " = 'RUNNING' THEN completed_at ELSE " REC_CLAMP(completed) " END, "       \
    "  error_message = CASE WHEN " status " = 'FAILED' THEN COALESCE(" error ", '') WHEN " status " = 'SUCCESS' "   \
    "    THEN '' ELSE error_message END, "                                                                         \
    "  attempt = " attempt "::int, "                                                                               \
    "  worker = " worker ", "                                                                                      \
    "  stats = COALESCE(" stats "::jsonb, stats) "
#define REC_JOB_FORWARD(status, attempt)                                                                            \
    " " attempt "::int >= attempt AND " attempt "::int <= attempt + 1 AND ("                                       \
    "  status = 'QUEUED' "                                                                                         \
    "  OR (status = 'RUNNING') "                                                                                   \
    "  OR (status = 'FAILED' AND " status " = 'SUCCESS') "                                                         \
    "  OR (status = 'FAILED' AND " status " = 'FAILED' AND " attempt "::int > attempt))"

/* The one statement that moves a backup record. $1 job_id, $2 status, $3 started_at ms, $4 completed_at ms,
 * $5 file_path, $6 file_size, $7 error, $8 attempt, $9 worker, $10 stats json, $11 record_id, $12 config_id.
 * Applies only when job id, record id and configuration all name this record. An INCREMENTAL or DIFFERENTIAL that
 * ran as a FULL (no base, or a new capture base: job_rebase.h; stat ran_as_full = 1) is recorded as the FULL its
 * artifact is, so the record never claims a type its artifact is not (the manifest keeps the requested type; the
 * stats say why: capture_rebase). Only ever towards FULL: a status cannot make a record claim less. */
static const char *const rec_backup_sql =
    "UPDATE backup_archive_backuprecord SET "
    REC_JOB_SET("$2", "$3", "$4", "$7", "$8", "$9", "$10") ", "
    "  backup_type = CASE WHEN $2 = 'SUCCESS' AND ($10::jsonb ->> 'ran_as_full') = '1' THEN 'FULL' "
    "    ELSE backup_type END, "
    "  file_path = COALESCE($5, file_path), "
    "  file_size = COALESCE($6::bigint, file_size) "
    "WHERE job_id = $1::uuid AND id = $11::bigint AND configuration_id = $12::bigint AND "
    REC_JOB_FORWARD("$2", "$8");

/* The one statement that moves an archive run (ArchiveRun, migration 0005: Django creates the row under the job
 * id it publishes). $1 job_id, $2 status, $3 started_at ms, $4 completed_at ms, $5 error, $6 attempt, $7 worker,
 * $8 stats json, $9 policy_id. Applies only when job id and policy name the same run. */
static const char *const rec_archive_sql =
    "UPDATE backup_archive_archiverun SET "
    REC_JOB_SET("$2", "$3", "$4", "$5", "$6", "$7", "$8")
    "WHERE job_id = $1::uuid AND policy_id = $9::bigint AND "
    REC_JOB_FORWARD("$2", "$6");

/* Why rec_archive_sql changed nothing: the run of this job id, if any. $1 job_id. */
static const char *const rec_archive_why_sql =
    "SELECT policy_id, attempt FROM backup_archive_archiverun WHERE job_id = $1::uuid";

/* Why rec_backup_sql changed nothing: the record of this job id, if any. $1 job_id. */
static const char *const rec_backup_why_sql =
    "SELECT id, configuration_id, attempt FROM backup_archive_backuprecord WHERE job_id = $1::uuid";

/* $1 record id, $2 completed_at ms, $3 SUCCESS|FAILED, $4 message, $5 job id, $6 config id. Only the verification
 * the record asked for (Django writes its job id to verify_job_id when it requests one) may set the result; older
 * results never replace newer ones. */
static const char *const rec_verify_sql =
    "UPDATE backup_archive_backuprecord SET "
    "  last_verified_at = " REC_CLAMP("$2") ", verify_status = $3, verify_message = $4 "
    "WHERE id = $1::bigint AND verify_job_id = $5::uuid AND configuration_id = $6::bigint "
    "  AND (last_verified_at IS NULL OR last_verified_at <= " REC_CLAMP("$2") ")";

static const char *const rec_verify_why_sql =
    "SELECT configuration_id, verify_job_id::text FROM backup_archive_backuprecord WHERE id = $1::bigint";

static char *rec_stats_json(const ev_job_status *s) {
    if (!s->has_stats) return NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    fputc('{', f);
    for (size_t i = 0; i < s->n_stats; i++) {
        if (i) fputc(',', f);
        fb_json_string(f, s->stats[i].key);
        if (s->stats[i].is_float) fprintf(f, ":%.17g", s->stats[i].f);
        else fprintf(f, ":%" PRId64, s->stats[i].i);
    }
    fputc('}', f);
    fclose(f);
    return buf;
}

/* After an UPDATE that changed nothing: why, from the record as it is now. Returns FB_OK with *why set. */
static fb_code rec_why_ignored(PGconn *c, const ev_event *ev, dmn_ignored *why, fb_err *err) {
    const ev_job_status *s = &ev->u.status;
    char num[32];
    PGresult *r;
    *why = DMN_IGNORED_STALE;
    if (s->job_type == EV_JOB_VERIFY) {
        snprintf(num, sizeof num, "%" PRId64, s->record_id.v);
        const char *p[1] = {num};
        r = PQexecParams(c, rec_verify_why_sql, 1, NULL, p, NULL, NULL, 0);
    } else if (s->job_type == EV_JOB_ARCHIVE) {
        const char *p[1] = {ev->job_id};
        r = PQexecParams(c, rec_archive_why_sql, 1, NULL, p, NULL, NULL, 0);
    } else {
        const char *p[1] = {ev->job_id};
        r = PQexecParams(c, rec_backup_why_sql, 1, NULL, p, NULL, NULL, 0);
    }
    fb_code rc = pgx_check(c, r, PGRES_TUPLES_OK, "looking up the record of an unapplied status", err);
    if (rc) return rc;
    if (PQntuples(r) == 0) {
        *why = DMN_IGNORED_NO_RECORD;
    } else if (s->job_type == EV_JOB_ARCHIVE) {
        if (!s->policy_id.has || strtoll(PQgetvalue(r, 0, 0), NULL, 10) != s->policy_id.v)
            *why = DMN_IGNORED_CONFIG_MISMATCH;
        else if (ev->attempt > strtoll(PQgetvalue(r, 0, 1), NULL, 10) + 1)
            *why = DMN_IGNORED_ATTEMPT_TOO_HIGH;
    } else if (s->job_type == EV_JOB_VERIFY) {
        if (!s->config_id.has || strtoll(PQgetvalue(r, 0, 0), NULL, 10) != s->config_id.v)
            *why = DMN_IGNORED_CONFIG_MISMATCH;
        else if (PQgetisnull(r, 0, 1) || strcmp(PQgetvalue(r, 0, 1), ev->job_id) != 0)
            *why = DMN_IGNORED_VERIFY_JOB_MISMATCH;
    } else {
        if (!s->record_id.has || strtoll(PQgetvalue(r, 0, 0), NULL, 10) != s->record_id.v)
            *why = DMN_IGNORED_RECORD_MISMATCH;
        else if (!s->config_id.has || strtoll(PQgetvalue(r, 0, 1), NULL, 10) != s->config_id.v)
            *why = DMN_IGNORED_CONFIG_MISMATCH;
        else if (ev->attempt > strtoll(PQgetvalue(r, 0, 2), NULL, 10) + 1)
            *why = DMN_IGNORED_ATTEMPT_TOO_HIGH;
    }
    PQclear(r);
    return FB_OK;
}

fb_code dmn_recorder_apply(PGconn *c, const ev_event *ev, int *applied, fb_err *err) {
    *applied = 0;
    if (ev->type != EV_JOB_STATUS) return fb_err_set(err, FB_ERR_INVALID, "not a job.status event");
    const ev_job_status *s = &ev->u.status;
    char num[8][32];
    PGresult *r;
    int archive = s->job_type == EV_JOB_ARCHIVE;
    if (s->job_type == EV_JOB_VERIFY && s->status == EV_RUNNING) return FB_OK;
    if (archive ? !s->policy_id.has : !s->record_id.has || !s->config_id.has) {
        /* Nothing to cross-check against: never applied. */
        FB_WARN("recorder: ignoring %s %s of job %s: it names no %s (reason no_record)", ev_job_type_name(s->job_type),
                ev_status_name(s->status), ev->job_id, archive ? "policy_id" : "record_id/config_id");
        dmn_metrics_recorder_ignored(DMN_IGNORED_NO_RECORD);
        return FB_OK;
    }
    snprintf(num[4], sizeof num[4], "%" PRId64, archive ? s->policy_id.v : s->record_id.v);
    snprintf(num[5], sizeof num[5], "%" PRId64, s->config_id.v);
    if (archive) {
        char *stats = rec_stats_json(s);
        snprintf(num[0], sizeof num[0], "%" PRId64, s->started_at.v);
        snprintf(num[1], sizeof num[1], "%" PRId64, s->completed_at.has ? s->completed_at.v : ev->ts);
        snprintf(num[3], sizeof num[3], "%" PRId64, ev->attempt);
        const char *p[9] = {ev->job_id, ev_status_name(s->status), s->started_at.has ? num[0] : NULL, num[1],
                            s->error, num[3], s->worker, stats, num[4]};
        r = PQexecParams(c, rec_archive_sql, 9, NULL, p, NULL, NULL, 0);
        free(stats);
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (state && strcmp(state, "42P01") == 0) { /* undefined_table: the app is older than migration 0005 */
            static int told;
            if (!told++)
                FB_WARN("recorder: archive statuses are not recorded: table backup_archive_archiverun does not exist "
                        "(run `manage.py migrate backup_archive`; until then archive jobs are seen only on the "
                        "completion topic)");
            PQclear(r);
            dmn_metrics_recorder_ignored(DMN_IGNORED_NO_RECORD);
            return FB_OK;
        }
    } else if (s->job_type == EV_JOB_VERIFY) {
        snprintf(num[1], sizeof num[1], "%" PRId64, s->completed_at.has ? s->completed_at.v : ev->ts);
        const char *p[6] = {num[4], num[1], ev_status_name(s->status), s->error ? s->error : "", ev->job_id, num[5]};
        r = PQexecParams(c, rec_verify_sql, 6, NULL, p, NULL, NULL, 0);
    } else {
        char *stats = rec_stats_json(s);
        snprintf(num[0], sizeof num[0], "%" PRId64, s->started_at.v);
        snprintf(num[1], sizeof num[1], "%" PRId64, s->completed_at.has ? s->completed_at.v : ev->ts);
        snprintf(num[2], sizeof num[2], "%" PRId64, s->file_size.v);
        snprintf(num[3], sizeof num[3], "%" PRId64, ev->attempt);
        const char *p[12] = {ev->job_id,
                             ev_status_name(s->status),
                             s->started_at.has ? num[0] : NULL,
                             num[1],
                             s->file_path,
                             s->file_size.has ? num[2] : NULL,
                             s->error,
                             num[3],
                             s->worker,
                             stats,
                             num[4],
                             num[5]};
        r = PQexecParams(c, rec_backup_sql, 12, NULL, p, NULL, NULL, 0);
        free(stats);
    }
    char what[128];
    snprintf(what, sizeof what, "recording %s of job %s", ev_status_name(s->status), ev->job_id);
    fb_code rc = pgx_check(c, r, PGRES_COMMAND_OK, what, err);
    if (rc) return rc;
    *applied = atoi(PQcmdTuples(r)) > 0;
    PQclear(r);
    if (*applied) return FB_OK;
    dmn_ignored why;
    if ((rc = rec_why_ignored(c, ev, &why, err))) return rc;
    dmn_metrics_recorder_ignored(why);
    if (why == DMN_IGNORED_STALE)
        FB_DEBUG("recorder: %s %s of job %s (attempt %lld) is older than its record: already known",
                 ev_job_type_name(s->job_type), ev_status_name(s->status), ev->job_id, (long long)ev->attempt);
    char ids[80];
    if (archive) snprintf(ids, sizeof ids, "policy %lld", (long long)s->policy_id.v);
    else snprintf(ids, sizeof ids, "record %lld, configuration %lld", (long long)s->record_id.v,
                  (long long)s->config_id.v);
    if (archive && why == DMN_IGNORED_NO_RECORD) /* an archive.due sent by hand (ops CLI) has no run row */
        FB_DEBUG("recorder: %s %s of job %s: no ArchiveRun has this job id", ev_job_type_name(s->job_type),
                 ev_status_name(s->status), ev->job_id);
    else if (why != DMN_IGNORED_STALE)
        FB_WARN("recorder: ignoring %s %s of job %s (attempt %lld, %s): %s (reason %s; "
                "a status that does not match its record is not applied: forged, or sent by a misconfigured worker)",
                ev_job_type_name(s->job_type), ev_status_name(s->status), ev->job_id, (long long)ev->attempt, ids,
                why == DMN_IGNORED_NO_RECORD            ? "no such record"
                : why == DMN_IGNORED_RECORD_MISMATCH    ? "the record of this job id is another one"
                : why == DMN_IGNORED_CONFIG_MISMATCH    ? (archive ? "the run belongs to another policy"
                                                                   : "the record belongs to another configuration")
                : why == DMN_IGNORED_ATTEMPT_TOO_HIGH   ? "the attempt is beyond the record's attempt + 1"
                                                        : "the record asked for no verification under this job id",
                dmn_metrics_ignored_name(why));
    return FB_OK;
}

/* Logging untrusted statuses: once per REC_UNTRUSTED_LOG_MS per key id (the id the message claims, or none), so
 * a flood of forgeries costs a counter increment each, not a log line each. */
#define REC_UNTRUSTED_LOG_MS 60000
#define REC_UNTRUSTED_IDS 16
typedef struct rec_untrusted_log {
    char key_id[REC_UNTRUSTED_IDS][FB_SIGN_KEY_ID_HEX];
    int64_t last_ms[REC_UNTRUSTED_IDS];
    uint64_t suppressed[REC_UNTRUSTED_IDS];
} rec_untrusted_log;

static void rec_log_untrusted(rec_untrusted_log *lg, const rd_kafka_message_t *m, const char *why) {
    char id[FB_SIGN_KEY_ID_HEX] = "";
    rd_kafka_headers_t *h = NULL;
    const void *v = NULL;
    size_t n = 0;
    if (!rd_kafka_message_headers(m, &h) && !rd_kafka_header_get_last(h, KFK_HDR_KEY_ID, &v, &n) && v)
        snprintf(id, sizeof id, "%.*s", (int)(n < sizeof id ? n : sizeof id - 1), (const char *)v);
    size_t i = 0, oldest = 0;
    for (; i < REC_UNTRUSTED_IDS && lg->last_ms[i] && strcmp(lg->key_id[i], id) != 0; i++)
        if (lg->last_ms[i] < lg->last_ms[oldest]) oldest = i;
    if (i == REC_UNTRUSTED_IDS) { /* a full table: forget the oldest id */
        i = oldest;
        lg->last_ms[i] = 0;
    }
    int64_t now = fb_now_ms();
    if (lg->last_ms[i] && strcmp(lg->key_id[i], id) == 0 && now - lg->last_ms[i] < REC_UNTRUSTED_LOG_MS) {
        lg->suppressed[i]++;
        return;
    }
    FB_WARN("recorder: ignoring an untrusted status event: %s (not applied; counted as "
            "fusion_backup_recorder_ignored_total{reason=\"untrusted\"}; %llu more from key id %s were not logged "
            "in the last minute)", why, (unsigned long long)(lg->last_ms[i] ? lg->suppressed[i] : 0),
            *id ? id : "(none)");
    snprintf(lg->key_id[i], sizeof lg->key_id[i], "%s", id);
    lg->last_ms[i] = now;
    lg->suppressed[i] = 0;
}

static PGconn *rec_connect(const fb_config *cfg, fb_flag *signals) {
    for (int delay = 1; !*signals; delay = delay < 30 ? delay * 2 : 30) {
        fb_err err;
        PGconn *c = pgx_connect(cfg->pg, "fusion-backup-recorder", &err);
        if (c) return c;
        FB_WARN("recorder: %s; retrying in %d s", err.msg, delay);
        for (int i = 0; i < delay * 10 && !*signals; i++) usleep(100000);
    }
    return NULL;
}

fb_code dmn_recorder_run(const fb_config *cfg, const fb_keyring *signers, fb_flag *signals, fb_err *err) {
    rec_untrusted_log untrusted = {0};
    char group[512], topic[256];
    snprintf(group, sizeof group, "%s-recorder", cfg->group_id);
    fb_config_topic(cfg, FB_TOPIC_COMPLETED, topic, sizeof topic);
    if (!cfg->pg || !*cfg->pg) return fb_err_set(err, FB_ERR_USAGE, "the recorder needs --pg (the Fusion database)");
    rd_kafka_t *rk = kfk_consumer_new(cfg, group, NULL, NULL, err);
    if (!rk) return err->code;
    const char *topics[1] = {topic};
    fb_code rc = kfk_subscribe(rk, topics, 1, err);
    PGconn *c = rc ? NULL : rec_connect(cfg, signals);
    if (!rc) FB_INFO("recorder: applying %s to BackupRecord (group %s), accepting statuses signed by %zu trusted "
                     "worker key(s)", topic, group, signers->n);
    while (!rc && c && !*signals) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        dmn_metrics_consumer_beat(DMN_CONSUMER_RECORDER);
        if (!m) continue;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) FB_WARN("recorder: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        ev_event *ev = NULL;
        fb_err e2;
        int applied = 0, store = 1;
        char what[400];
        snprintf(what, sizeof what, "the status at %s[%d]@%lld", topic, (int)m->partition, (long long)m->offset);
        if (kfk_sign_verify_message(signers, m, what, NULL, &e2)) {
            dmn_metrics_recorder_ignored(DMN_IGNORED_UNTRUSTED);
            rec_log_untrusted(&untrusted, m, e2.msg);
        } else if (ev_decode(m->payload, m->len, &ev, &e2) || ev->type != EV_JOB_STATUS) {
            FB_WARN("recorder: skipping %s[%d]@%lld: %s", topic, (int)m->partition, (long long)m->offset,
                    ev ? "not a job.status event" : e2.msg);
        } else if (dmn_recorder_apply(c, ev, &applied, &e2)) {
            FB_WARN("recorder: %s", e2.msg);
            if (PQstatus(c) != CONNECTION_OK || fb_code_is_transient(e2.code)) {
                store = 0; /* deliver it again once the database is back */
                PQfinish(c);
                c = rec_connect(cfg, signals);
                rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
                rd_kafka_topic_partition_list_add(l, topic, m->partition)->offset = m->offset;
                rd_kafka_error_t *se = rd_kafka_seek_partitions(rk, l, 5000);
                if (se) rd_kafka_error_destroy(se);
                rd_kafka_topic_partition_list_destroy(l);
            }
        } else {
            FB_DEBUG("recorder: job %s %s %s", ev->job_id, ev_status_name(ev->u.status.status),
                     applied ? "applied" : "already known");
        }
        if (store) {
            rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(l, topic, m->partition)->offset = m->offset + 1;
            rd_kafka_offsets_store(rk, l);
            rd_kafka_topic_partition_list_destroy(l);
        }
        ev_event_free(ev);
        rd_kafka_message_destroy(m);
    }
    dmn_metrics_consumer_stopped(DMN_CONSUMER_RECORDER);
    if (!rd_kafka_assignment_lost(rk)) rd_kafka_commit(rk, NULL, 0);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    if (c) PQfinish(c);
    return rc;
}
