/* fb_config: the settings table and its parser. See fb_config.h.
 *
 * Design: one static table of rows pointing (by offsetof) into fb_config. Every consumer reads typed fields;
 * nothing else in the code base knows about environment variables or flag spelling.
 */
#include "common/fb_config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* CFG_LIST: a string of comma-separated items; see fb_config.origin. CFG_FLAG: an int64 0 or 1; on the command
 * line `--NAME` alone means 1 (it takes no value, so it never swallows the next argument), `--NAME=0|1` either. */
typedef enum { CFG_STR, CFG_INT, CFG_LIST, CFG_FLAG } cfg_type;
enum { ORIGIN_DEFAULT, ORIGIN_FILE, ORIGIN_ENV, ORIGIN_FLAG };

typedef struct cfg_row {
    const char *name;
    cfg_type type;
    size_t offset;
    const char *def;
    int64_t min, max;
    const char *env;
    unsigned programs;
    const char *help;
} cfg_row;

#define ROW_S(n, f, d, env, prog, help) {n, CFG_STR, offsetof(fb_config, f), d, 0, 0, env, prog, help}
#define ROW_L(n, f, d, env, prog, help) {n, CFG_LIST, offsetof(fb_config, f), d, 0, 0, env, prog, help}
#define ROW_I(n, f, d, lo, hi, env, prog, help) {n, CFG_INT, offsetof(fb_config, f), d, lo, hi, env, prog, help}
#define ROW_F(n, f, env, prog, help) {n, CFG_FLAG, offsetof(fb_config, f), "0", 0, 1, env, prog, help}
#define W FB_CFG_WORKER
#define C FB_CFG_CLI

static const cfg_row cfg_rows[] = {
    ROW_S("config", config_file, "", "FB_CONFIG", W | C, "config file of `name = value` lines (# comments)"),
    ROW_S("brokers", brokers, "127.0.0.1:59092", "FB_BROKERS", W | C, "Kafka bootstrap servers"),
    ROW_S("pg", pg, "", "FB_PG", W | C, "PostgreSQL conninfo of the Fusion database (libpq syntax or URI)"),
    ROW_S("scratch-pg", scratch_pg, "", "FB_SCRATCH_PG", W | C,
          "conninfo of a server where verification may create and drop scratch databases"),
    ROW_S("storage-root", storage_root, "", "FB_STORAGE_ROOT", W | C,
          "folder under which artifacts are written; storage_path in events is relative to it"),
    ROW_S("public-key", public_key, "", "FB_PUBLIC_KEY", W | C,
          "file with the backup public key (from `fusion-backup keygen`); workers need only this"),
    ROW_S("secret-key", secret_key, "", "FB_SECRET_KEY", C | W,
          "file with the backup secret key, for restore and verify; keep it off worker machines"),
    ROW_S("group-id", group_id, "fusion-backup-workers", "FB_GROUP_ID", W | C, "Kafka consumer group of the workers"),
    ROW_S("topic-prefix", topic_prefix, "fusion.", "FB_TOPIC_PREFIX", W | C,
          "prefix of the four topics (backup.requested, archive.due, jobs.completed, jobs.dlq)"),
    ROW_S("worker-name", worker_name, "", "FB_WORKER_NAME", W, "name in status events (default host:pid)"),
    ROW_S("role", role, "worker", "FB_ROLE", W, "worker | recorder | all (worker and recorder in one process)"),
    ROW_S("log-level", log_level, "info", "FB_LOG_LEVEL", W | C, "debug | info | warn | error"),
    ROW_S("log-format", log_format, "text", "FB_LOG_FORMAT", W | C, "text | json"),
    ROW_S("metrics-listen", metrics_listen, "", "FB_METRICS_LISTEN", W,
          "host:port for the Prometheus text endpoint (empty: off)"),
    ROW_S("index-key", index_key, "", "FB_INDEX_KEY", W | C,
          "key file (32 bytes, e.g. a `keygen` .key) that authenticates chain indexes; empty: derived from the "
          "public key (detects damage, not tampering)"),
    ROW_S("copy-to", copy_to, "", "FB_COPY_TO", W,
          "further storage roots (comma-separated folders) that receive a checked copy of every artifact"),
    ROW_S("pg-dump", pg_dump, "pg_dump", "FB_PG_DUMP", W | C,
          "pg_dump program (a path, or a name looked up in PATH) that takes the schema archive of every backup; its "
          "major version must be at least the server's"),
    ROW_S("pg-restore", pg_restore, "pg_restore", "FB_PG_RESTORE", C | W,
          "pg_restore program (a path, or a name looked up in PATH) that turns the schema archive into SQL on "
          "restore --create and verify"),
    ROW_I("concurrency", concurrency, "1", 1, 64, "FB_CONCURRENCY", W, "jobs run at once by one worker process"),
    ROW_I("zstd-level", zstd_level, "3", 1, 19, "FB_ZSTD_LEVEL", W, "zstd compression level of artifacts"),
    ROW_I("zstd-workers", zstd_workers, "1", 0, 4, "FB_ZSTD_WORKERS", W,
          "zstd compression threads of a backup (0: compress in the writer thread itself)"),
    ROW_I("lock-timeout-ms", lock_timeout_ms, "5000", 0, 3600000, "FB_LOCK_TIMEOUT_MS", W | C,
          "lock_timeout of the worker's statements (0: none)"),
    ROW_I("statement-timeout-ms", statement_timeout_ms, "600000", 0, 86400000, "FB_STATEMENT_TIMEOUT_MS", W | C,
          "statement_timeout of archival statements (0: none); dumps are not limited"),
    ROW_I("batch-pause-ms", batch_pause_ms, "0", 0, 600000, "FB_BATCH_PAUSE_MS", W,
          "pause between archival batches, to be gentle with the live ERP"),
    ROW_I("retry-max", retry_max, "3", 0, 100, "FB_RETRY_MAX", W,
          "retries of a job after a transient failure (database down, lock timeout)"),
    ROW_I("retry-backoff-ms", retry_backoff_ms, "1000", 0, 600000, "FB_RETRY_BACKOFF_MS", W,
          "first retry delay; doubles each retry"),
    ROW_I("max-attempts", max_attempts, "5", 1, 1000, "FB_MAX_ATTEMPTS", W | C,
          "replay refuses jobs whose attempt would exceed this (loop guard)"),
    ROW_I("shutdown-grace-s", shutdown_grace_s, "30", 0, 86400, "FB_SHUTDOWN_GRACE_S", W,
          "on SIGTERM, how long running jobs may finish before they are aborted"),
    ROW_I("progress-interval-ms", progress_interval_ms, "10000", 100, 3600000, "FB_PROGRESS_INTERVAL_MS", W,
          "at most one RUNNING progress event per job per interval"),
    ROW_I("max-poll-interval-ms", max_poll_interval_ms, "300000", 10000, 86400000, "FB_MAX_POLL_INTERVAL_MS", W,
          "librdkafka max.poll.interval.ms (the consumer keeps polling while jobs run)"),
    /* Authority (job_authority.h): the database decides what a request may do. */
    ROW_S("authority-pg", authority_pg, "", "FB_AUTHORITY_PG", W | C,
          "conninfo of the database holding the backup_archive tables that authorise backup and verify requests, "
          "when it is not --pg (empty: --pg, as in Fusion); archive requests are always checked in --pg"),
    ROW_I("authority-skew-ms", authority_skew_ms, "300000", 0, 3600000, "FB_AUTHORITY_SKEW_MS", W | C,
          "clock skew allowed when checking an archive cutoff or purge_before against the policy's age limits"),
    /* Issue 10 (bounded failure): settings of the daemon's delivery counter. */
    ROW_I("max-deliveries", max_deliveries, "5", 1, 1000, "FB_MAX_DELIVERIES", W,
          "runs of one request without a published outcome (crash, OOM kill, broker or ledger failure) after which "
          "the worker stops running it and publishes a FAILED (or a dead letter) instead"),
    /* S3-compatible object storage (storage/stor_s3.c): used when a storage root or --copy-to target is
     * s3://BUCKET/PREFIX. Credentials are never settings: they come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
     * and AWS_SESSION_TOKEN or from the credentials file named here, so they appear on no command line. */
    ROW_S("s3-endpoint", s3_endpoint, "", "FB_S3_ENDPOINT", W | C,
          "URL of the S3 service, e.g. https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:48333"),
    ROW_S("s3-region", s3_region, "us-east-1", "FB_S3_REGION", W | C, "region that requests are signed for (SigV4)"),
    ROW_S("s3-url-style", s3_url_style, "path", "FB_S3_URL_STYLE", W | C,
          "path (ENDPOINT/BUCKET/KEY) | virtual (BUCKET.ENDPOINT-HOST/KEY)"),
    ROW_S("s3-ca-file", s3_ca_file, "", "FB_S3_CA_FILE", W | C,
          "PEM file of the CA(s) that sign the endpoint's TLS certificate (empty: the system's)"),
    ROW_S("s3-credentials-file", s3_credentials_file, "", "FB_S3_CREDENTIALS_FILE", W | C,
          "AWS-style credentials file (aws_access_key_id / aws_secret_access_key), read when AWS_ACCESS_KEY_ID is "
          "unset; empty: AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials"),
    ROW_S("s3-profile", s3_profile, "default", "FB_S3_PROFILE", W | C, "section of the credentials file to use"),
    ROW_I("s3-part-mib", s3_part_mib, "8", 5, 512, "FB_S3_PART_MIB", W | C,
          "multipart upload part size in MiB: the memory one upload holds"),
    ROW_I("s3-timeout-s", s3_timeout_s, "60", 1, 3600, "FB_S3_TIMEOUT_S", W | C,
          "an S3 request that moves no data for this long fails; failed requests are retried (retry-max times, "
          "retry-backoff-ms doubling)"),
    /* Kafka security: every client (worker, recorder, CLI) applies these before the -X settings. */
    ROW_S("kafka-security-protocol", kafka_security_protocol, "", "FB_KAFKA_SECURITY_PROTOCOL", W | C,
          "librdkafka security.protocol: PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL (empty: librdkafka's default)"),
    ROW_S("kafka-sasl-mechanism", kafka_sasl_mechanism, "SCRAM-SHA-512", "FB_KAFKA_SASL_MECHANISM", W | C,
          "librdkafka sasl.mechanism, used when --kafka-username is set"),
    ROW_S("kafka-username", kafka_username, "", "FB_KAFKA_USERNAME", W | C,
          "SASL user name of this client's principal (e.g. worker, recorder, ops)"),
    ROW_S("kafka-password-file", kafka_password_file, "", "FB_KAFKA_PASSWORD_FILE", W | C,
          "file holding the SASL password (first line); the password is never taken from a flag or variable"),
    ROW_S("kafka-ca", kafka_ca, "", "FB_KAFKA_CA", W | C,
          "PEM file of the CA that signed the brokers' certificates (librdkafka ssl.ca.location)"),
    /* Who is speaking (common/fb_sign.h, schemas/SPEC.md "Signatures", FORMAT.md). */
    ROW_S("sign-key", sign_key, "", "FB_SIGN_KEY", W | C,
          "file with this party's Ed25519 signing key (`keygen --sign`): workers sign status events, dead letters "
          "and artifacts with it, operators sign replayed requests"),
    ROW_L("trusted-requester", trusted_requesters, "", "FB_TRUSTED_REQUESTERS", W | C,
          "public signing key file whose requests workers accept (the Django app's, the operators'); repeat the "
          "option (or comma-separate) to trust several, e.g. old and new during a key rotation"),
    ROW_L("trusted-signer", trusted_signers, "", "FB_TRUSTED_SIGNERS", W | C,
          "public signing key file of a worker whose status events the recorder accepts and whose artifacts "
          "restore, verify, inspect and chains accept; repeat (or comma-separate) to trust several"),
    ROW_F("allow-unsigned", allow_unsigned, "FB_ALLOW_UNSIGNED", W | C,
          "also read artifacts written before format 5 (unsigned: anyone with the public key can make one), with a "
          "warning each time; only while migrating a store you know was not tampered with"),
    /* Progress of long CLI commands: backup, restore, verify (common/fb_progress.h). */
    ROW_S("progress", progress, "auto", "FB_PROGRESS", C,
          "auto (a bar on stderr when it is a terminal, else a line every progress-lines-ms) | bar | lines | off; "
          "lines are JSON with --log-format json"),
    ROW_I("progress-lines-ms", progress_lines_ms, "10000", 100, 3600000, "FB_PROGRESS_LINES_MS", C,
          "interval of progress lines when stderr is not a terminal"),
    /* Archival throttling (job_archive.c, ja_throttle): pauses driven by what the database reports. */
    ROW_I("archive-sleep-pct", archive_sleep_pct, "0", 0, 10000, "FB_ARCHIVE_SLEEP_PCT", W,
          "pause after each archival batch for this percentage of the batch's own duration (pt-archiver's "
          "--sleep-coef): a busy database makes batches slower and so the pauses longer"),
    ROW_I("archive-lock-wait-pct", archive_lock_wait_pct, "100", 0, 10000, "FB_ARCHIVE_LOCK_WAIT_PCT", W,
          "when other sessions of the database are waiting for a lock after a batch, pause this percentage of "
          "the batch's duration (at least) so they get through first"),
    ROW_I("archive-max-replica-lag-ms", archive_max_replica_lag_ms, "10000", 0, 86400000,
          "FB_ARCHIVE_MAX_REPLICA_LAG_MS", W,
          "hold archival between batches while a streaming replica's replay lag (pg_stat_replication) is above "
          "this (0: do not check)"),
    /* Change capture (worker/src/capture/cap_capture.h). */
    ROW_I("capture-flush-s", capture_flush_s, "10", 1, 3600, "FB_CAPTURE_FLUSH_S", W | C,
          "write captured transactions to a durable change segment at most this many seconds after the first "
          "of them arrived (the RPO bound); the slot is confirmed only after the write"),
    ROW_S("capture-slot", capture_slot, "fusion_backup", "FB_CAPTURE_SLOT", W | C,
          "logical replication slot change capture streams from (a-z, 0-9, _)"),
    ROW_S("capture-publication", capture_publication, "fusion_backup", "FB_CAPTURE_PUBLICATION", W | C,
          "publication change capture subscribes to (created FOR ALL TABLES with the slot when missing)"),
};
#define CFG_NROWS (sizeof cfg_rows / sizeof cfg_rows[0])
_Static_assert(CFG_NROWS <= FB_CONFIG_MAX_ROWS, "raise FB_CONFIG_MAX_ROWS");

static const cfg_row *cfg_find(const char *name, size_t len) {
    for (size_t i = 0; i < CFG_NROWS; i++)
        if (strlen(cfg_rows[i].name) == len && strncmp(cfg_rows[i].name, name, len) == 0) return &cfg_rows[i];
    return NULL;
}

static fb_code cfg_set(fb_config *cfg, const cfg_row *row, const char *value, const char *source, int origin,
                       fb_err *err) {
    char *base = (char *)cfg;
    size_t idx = (size_t)(row - cfg_rows);
    int same_place = cfg->origin[idx] == origin && origin != ORIGIN_DEFAULT;
    cfg->origin[idx] = (unsigned char)origin;
    if (row->type == CFG_LIST && same_place && *value) {
        char **slot = (char **)(base + row->offset);
        size_t have = *slot ? strlen(*slot) : 0;
        char *joined = malloc(have + 1 + strlen(value) + 1);
        if (!joined) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        sprintf(joined, "%s%s%s", have ? *slot : "", have ? "," : "", value);
        free(*slot);
        *slot = joined;
        return FB_OK;
    }
    if (row->type == CFG_STR || row->type == CFG_LIST) {
        char **slot = (char **)(base + row->offset);
        char *copy = strdup(value);
        if (!copy) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        free(*slot);
        *slot = copy;
        return FB_OK;
    }
    errno = 0;
    char *end = NULL;
    long long v = strtoll(value, &end, 10);
    if (errno || end == value || *end) {
        return fb_err_set(err, FB_ERR_USAGE, "%s: %s must be a whole number, got \"%s\"", source, row->name, value);
    }
    if (v < row->min || v > row->max) {
        return fb_err_set(err, FB_ERR_USAGE, "%s: %s must be between %lld and %lld, got %lld", source, row->name,
                          (long long)row->min, (long long)row->max, v);
    }
    *(int64_t *)(base + row->offset) = v;
    return FB_OK;
}

static fb_code cfg_add_x(fb_config *cfg, const char *kv, fb_err *err) {
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) return fb_err_set(err, FB_ERR_USAGE, "-X takes prop=value (a librdkafka setting), got \"%s\"", kv);
    if (cfg->n_x >= FB_CONFIG_MAX_X) return fb_err_set(err, FB_ERR_USAGE, "too many -X settings (at most %d)", FB_CONFIG_MAX_X);
    cfg->x_keys[cfg->n_x] = strndup(kv, (size_t)(eq - kv));
    cfg->x_values[cfg->n_x] = strdup(eq + 1);
    if (!cfg->x_keys[cfg->n_x] || !cfg->x_values[cfg->n_x]) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    cfg->n_x++;
    return FB_OK;
}

static char *cfg_trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    return s;
}

static fb_code cfg_read_file(fb_config *cfg, const char *path, fb_err *err) {
    FILE *f = fopen(path, "r");
    if (!f) return fb_err_set(err, FB_ERR_USAGE, "could not open config file \"%s\": %s", path, strerror(errno));
    char line[4096];
    int lineno = 0;
    fb_code rc = FB_OK;
    while (rc == FB_OK && fgets(line, sizeof line, f)) {
        lineno++;
        char *s = cfg_trim(line);
        if (!*s || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = fb_err_set(err, FB_ERR_USAGE, "%s:%d: expected `name = value`", path, lineno);
            break;
        }
        *eq = '\0';
        char *name = cfg_trim(s), *value = cfg_trim(eq + 1);
        char source[600];
        snprintf(source, sizeof source, "%s:%d", path, lineno);
        if (strncmp(name, "X.", 2) == 0) {
            char kv[4096];
            snprintf(kv, sizeof kv, "%s=%s", name + 2, value);
            rc = cfg_add_x(cfg, kv, err);
            continue;
        }
        const cfg_row *row = cfg_find(name, strlen(name));
        if (!row || row->offset == offsetof(fb_config, config_file)) {
            rc = fb_err_set(err, FB_ERR_USAGE, "%s: unknown setting \"%s\" (see --help)", source, name);
            break;
        }
        rc = cfg_set(cfg, row, value, source, ORIGIN_FILE, err);
    }
    fclose(f);
    return rc;
}

static fb_code cfg_read_env(fb_config *cfg, fb_err *err) {
    for (size_t i = 0; i < CFG_NROWS; i++) {
        const char *v = getenv(cfg_rows[i].env);
        if (v && cfg_rows[i].offset != offsetof(fb_config, config_file)) {
            fb_code rc = cfg_set(cfg, &cfg_rows[i], v, cfg_rows[i].env, ORIGIN_ENV, err);
            if (rc) return rc;
        }
    }
    return FB_OK;
}

fb_code fb_config_init(fb_config *cfg, fb_err *err) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < CFG_NROWS; i++) {
        fb_code rc = cfg_set(cfg, &cfg_rows[i], cfg_rows[i].def, "default", ORIGIN_DEFAULT, err);
        if (rc) return rc;
    }
    const char *file = getenv("FB_CONFIG");
    if (file && *file) {
        fb_code rc = cfg_set(cfg, &cfg_rows[0], file, "FB_CONFIG", ORIGIN_ENV, err);
        if (!rc) rc = cfg_read_file(cfg, file, err);
        if (rc) return rc;
    }
    return cfg_read_env(cfg, err);
}

static int cfg_is_extra(const char *name, size_t len, const char *const *extra) {
    for (; extra && *extra; extra++)
        if (strlen(*extra) == len && strncmp(*extra, name, len) == 0) return 1;
    return 0;
}

fb_code fb_config_parse_args(fb_config *cfg, int *argc, char **argv, unsigned program, const char *const *extra_flags,
                             fb_err *err) {
    int n = *argc, kept = 0;
    char **rest = calloc((size_t)n + 1, sizeof *rest);
    if (!rest) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    fb_code rc = FB_OK;
    const char *file = NULL;
    int after_dashdash = 0;
    for (int i = 0; i < n && rc == FB_OK; i++) {
        char *a = argv[i];
        if (after_dashdash || a[0] != '-' || a[1] == '\0') {
            rest[kept++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            after_dashdash = 1;
            continue;
        }
        if (strcmp(a, "-X") == 0) {
            if (i + 1 >= n) rc = fb_err_set(err, FB_ERR_USAGE, "-X needs prop=value");
            else rc = cfg_add_x(cfg, argv[++i], err);
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            rest[kept++] = a; /* short options belong to the command */
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const cfg_row *row = cfg_find(name, len);
        if (!row || !(row->programs & program)) {
            if (cfg_is_extra(name, len, extra_flags)) {
                rest[kept++] = a;
                continue;
            }
            rc = fb_err_set(err, FB_ERR_USAGE, "unknown option \"--%.*s\" (see --help)", (int)len, name);
            continue;
        }
        const char *value;
        if (eq) value = eq + 1;
        else if (row->type == CFG_FLAG) value = "1";
        else if (i + 1 < n) value = argv[++i];
        else {
            rc = fb_err_set(err, FB_ERR_USAGE, "option --%s needs a value", row->name);
            continue;
        }
        char source[128];
        snprintf(source, sizeof source, "--%s", row->name);
        rc = cfg_set(cfg, row, value, source, ORIGIN_FLAG, err);
        if (!rc && row->offset == offsetof(fb_config, config_file)) file = value;
    }
    if (rc == FB_OK && file) {
        /* A config file named on the command line ranks below flags: re-apply flags after reading it. */
        /* The flags are applied again below: forget that they were applied once, so a repeated list flag does
         * not accumulate onto its own first pass. */
        for (size_t r = 0; r < CFG_NROWS; r++)
            if (cfg->origin[r] == ORIGIN_FLAG) cfg->origin[r] = ORIGIN_DEFAULT;
        rc = cfg_read_file(cfg, file, err);
        if (rc == FB_OK) rc = cfg_read_env(cfg, err);
        for (int i = 0; i < n && rc == FB_OK; i++) {
            char *a = argv[i];
            if (strncmp(a, "--", 2) != 0 || !a[2]) continue;
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            const cfg_row *row = cfg_find(name, len);
            if (!row || !(row->programs & program) || row->offset == offsetof(fb_config, config_file)) {
                continue;
            }
            const char *value = eq ? eq + 1 : row->type == CFG_FLAG ? "1" : (i + 1 < n ? argv[++i] : "");
            rc = cfg_set(cfg, row, value, a, ORIGIN_FLAG, err);
        }
    }
    for (int i = 0; i < kept; i++) argv[i] = rest[i];
    argv[kept] = NULL;
    *argc = kept;
    free(rest);
    return rc;
}

void fb_config_print_help(unsigned program) {
    printf("Settings (flag, environment variable, default). Also: -X prop=value passes a setting to librdkafka.\n");
    for (size_t i = 0; i < CFG_NROWS; i++) {
        const cfg_row *r = &cfg_rows[i];
        if (!(r->programs & program)) continue;
        printf("  --%-22s %-24s %s\n", r->name, r->env, r->help);
        if (r->type == CFG_FLAG)
            printf("  %-24s %-24s a flag: --%s alone turns it on (default off)\n", "", "", r->name);
        else if (r->type == CFG_INT)
            printf("  %-24s %-24s default %s, %lld..%lld\n", "", "", r->def, (long long)r->min, (long long)r->max);
        else if (*r->def)
            printf("  %-24s %-24s default \"%s\"\n", "", "", r->def);
    }
}

const char *fb_config_topic(const fb_config *cfg, const char *suffix, char *out, size_t cap) {
    snprintf(out, cap, "%s%s", cfg->topic_prefix ? cfg->topic_prefix : "", suffix);
    return out;
}

int fb_config_is_secret(const char *name) {
    static const char *const words[] = {"password", "secret"};
    for (size_t w = 0; name && w < sizeof words / sizeof words[0]; w++) {
        size_t wl = strlen(words[w]);
        for (const char *p = name; *p; p++)
            if (strncasecmp(p, words[w], wl) == 0) return 1;
    }
    return 0;
}

const char *fb_config_shown(const char *name, const char *value) {
    return fb_config_is_secret(name) ? "***" : value;
}

void fb_config_free(fb_config *cfg) {
    if (!cfg) return;
    for (size_t i = 0; i < CFG_NROWS; i++)
        if (cfg_rows[i].type == CFG_STR || cfg_rows[i].type == CFG_LIST) {
            char **slot = (char **)((char *)cfg + cfg_rows[i].offset);
            free(*slot);
            *slot = NULL;
        }
    for (size_t i = 0; i < cfg->n_x; i++) {
        free(cfg->x_keys[i]);
        free(cfg->x_values[i]);
    }
    cfg->n_x = 0;
}
