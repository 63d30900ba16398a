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
#include <time.h>
#include <unistd.h>

#include "common/fb_time.h"
#include "common/fb_topic.h"

/* The types of a row. CFG_LIST: a string of comma-separated items, from a list setting given in several places
 * (see fb_config.origin). CFG_MULTI: a repeatable command option, one fb_strlist item per occurrence. CFG_FLAG:
 * an int64 0 or 1; on the command line `--NAME` alone means 1 (it takes no value, so it never swallows the next
 * argument), `--no-NAME` 0, `--NAME=0|1` either. CFG_ENUM: a string, one of the row's values. CFG_TIME: an int64
 * of ms since the epoch read by fb_time_parse (FB_TIME_NONE when not given). */
typedef enum { CFG_STR, CFG_INT, CFG_LIST, CFG_FLAG, CFG_ENUM, CFG_TIME, CFG_MULTI } cfg_type;
enum { ORIGIN_DEFAULT, ORIGIN_FILE, ORIGIN_ENV, ORIGIN_FLAG };

typedef struct cfg_row {
    const char *name;
    cfg_type type;
    size_t offset;
    const char *def;
    int64_t min, max;
    const char *values; /* CFG_ENUM: the accepted values, "a|b|c" */
    const char *env;    /* NULL: a command option, from the command line only */
    unsigned scope;     /* FB_SCOPE bits: the worker and the commands that accept it */
    const char *help;
} cfg_row;

#define ROW_S(n, f, d, env, sc, help) {n, CFG_STR, offsetof(fb_config, f), d, 0, 0, NULL, env, sc, help}
#define ROW_L(n, f, d, env, sc, help) {n, CFG_LIST, offsetof(fb_config, f), d, 0, 0, NULL, env, sc, help}
#define ROW_I(n, f, d, lo, hi, env, sc, help) {n, CFG_INT, offsetof(fb_config, f), d, lo, hi, NULL, env, sc, help}
#define ROW_F(n, f, env, sc, help) {n, CFG_FLAG, offsetof(fb_config, f), "0", 0, 1, NULL, env, sc, help}
#define ROW_E(n, f, d, vals, env, sc, help) {n, CFG_ENUM, offsetof(fb_config, f), d, 0, 0, vals, env, sc, help}
#define ROW_T(n, f, sc, help) {n, CFG_TIME, offsetof(fb_config, f), "", 0, 0, NULL, NULL, sc, help}
#define ROW_M(n, f, sc, help) {n, CFG_MULTI, offsetof(fb_config, f), "", 0, 0, NULL, NULL, sc, help}
#define W FB_CFG_WORKER
#define C FB_CFG_CLI
#define SC(cmd) FB_SCOPE(FB_CMD_##cmd)

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
    /* A string, not an enum row: the worker checks it after --worker-name (main_worker.c), so a bad name is
     * reported even when the role is wrong too. */
    ROW_S("role", role, "worker", "FB_ROLE", W,
          "worker (run jobs) | recorder (apply completion events to BackupRecord) | all (both in one process)"),
    ROW_E("log-level", log_level, "info", "debug|info|warn|error", "FB_LOG_LEVEL", W | C, "the least severe messages logged"),
    ROW_E("log-format", log_format, "text", "text|json", "FB_LOG_FORMAT", W | C, "log lines (and progress lines) as text or JSON"),
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
    ROW_I("dump-connections", dump_connections, "1", 1, 8, "FB_DUMP_CONNECTIONS", W,
          "database connections a FULL backup reads tables with, on one shared snapshot (largest tables first; "
          "worth it when the server has cores the worker does not share)"),
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
    ROW_E("s3-url-style", s3_url_style, "path", "path|virtual", "FB_S3_URL_STYLE", W | C,
          "path (ENDPOINT/BUCKET/KEY) or virtual (BUCKET.ENDPOINT-HOST/KEY)"),
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
    ROW_E("progress", progress, "auto", "auto|bar|lines|off", "FB_PROGRESS", C,
          "auto (a bar on stderr when it is a terminal, else a line every progress-lines-ms), bar, lines or off; "
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
    ROW_I("archive-live-window-ms", archive_live_window_ms, "2000", 0, 3600000, "FB_ARCHIVE_LIVE_WINDOW_MS", W,
          "a live load is present when another session of the database (not this system's own) is running a "
          "statement or ran one within this many ms (pg_stat_activity); archival then takes smaller batches and "
          "pauses after each (0: never)"),
    /* 50, not 200 (session 9, bench/archive/README.md): beside pgbench on Fusion's tables the live load's p99 rose
     * 1.48-1.70 x with batches of 200 rows, 1.12-1.33 x with 50, for 40 % less archival beside the load. */
    ROW_I("archive-live-batch-rows", archive_live_batch_rows, "50", 1, 100000000, "FB_ARCHIVE_LIVE_BATCH_ROWS", W,
          "at most this many rows per archival batch while a live load is present (the request's batch_size "
          "otherwise)"),
    ROW_I("archive-live-sleep-pct", archive_live_sleep_pct, "1000", 0, 10000, "FB_ARCHIVE_LIVE_SLEEP_PCT", W,
          "while a live load is present, pause after each archival batch for this percentage of its duration (at "
          "least)"),
    /* Change capture (worker/src/capture/cap_capture.h). */
    ROW_I("capture-flush-s", capture_flush_s, "10", 1, 3600, "FB_CAPTURE_FLUSH_S", W | SC(CAPTURE),
          "write captured transactions to a durable change segment at most this many seconds after the first "
          "of them arrived (the RPO bound); the slot is confirmed only after the write"),
    ROW_I("capture-incr-wait-s", capture_incr_wait_s, "60", 0, 3600, "FB_CAPTURE_INCR_WAIT_S", W | SC(BACKUP),
          "an INCREMENTAL/DIFFERENTIAL from captured changes waits up to this many seconds for the capture to make "
          "every transaction committed before the request durable (its slot confirmed past the WAL position of "
          "the request), then fails rather than miss one"),
    ROW_S("capture-slot", capture_slot, "fusion_backup", "FB_CAPTURE_SLOT", W | SC(CAPTURE) | SC(STATUS) | SC(BACKUP) | SC(LIST),
          "logical replication slot change capture streams from (a-z, 0-9, _); generation 1 of its family: a new "
          "base after a dropped slot or a migration takes NAME_2, NAME_3, ... (job/job_rebase.h)"),
    ROW_S("capture-publication", capture_publication, "fusion_backup", "FB_CAPTURE_PUBLICATION", W | SC(CAPTURE) | SC(BACKUP),
          "publication change capture subscribes to (created FOR ALL TABLES with the slot when missing)"),
    ROW_L("capture-databases", capture_databases, "", "FB_CAPTURE_DATABASES", W | SC(STATUS),
          "databases (on the --pg server) whose changes the worker captures: every worker tries each one's "
          "advisory lock, the holder streams its slot capture-slot into storage-root/capture-storage-path, the "
          "others stand by and take over when it dies (daemon/dmn_capture.h); status shows each slot's lag"),
    ROW_S("capture-storage-path", capture_storage_path, "capture", "FB_CAPTURE_STORAGE_PATH", W,
          "folder under storage-root for the workers' change segments (chain: PATH/capture/DBNAME/SLOT, as "
          "`capture --storage-path PATH` writes it)"),
    ROW_I("capture-lock-retry-s", capture_lock_retry_s, "5", 1, 3600, "FB_CAPTURE_LOCK_RETRY_S", W,
          "how often a standby worker tries to take over a database's capture (its advisory lock), and polls the "
          "slot's lag for the metrics"),
    /* Command options: from the command line only (no variable, not in the config file), each row naming the
     * commands that accept it. A new option of a command is one row here and one field in fb_config. */
    ROW_F("help", help, NULL, W | C, "print this help and exit (also -h)"),
    ROW_F("version", version, NULL, W, "print the versions of the program and its libraries and exit"),
    ROW_F("json", json, NULL, SC(BACKUP) | SC(CAPTURE) | SC(CHECK) | SC(EVENT) | SC(INSPECT) | SC(KEYGEN) |
          SC(LIST) | SC(PRUNE) | SC(REKEY) | SC(REPLAY) | SC(RESTORE) | SC(STATUS) | SC(TAIL) | SC(TOPICS) |
          SC(UNARCHIVE) | SC(VERIFY),
          "print one JSON document instead of readable lines, also on failure ({\"ok\": false, \"code\", "
          "\"error\"}); event and unarchive print JSON always"),
    ROW_F("dry-run", dry_run, NULL, SC(PRUNE) | SC(REPLAY) | SC(UNARCHIVE),
          "do everything but change nothing and say what would be done (unarchive: roll back at the end)"),
    ROW_M("table", table, SC(BACKUP) | SC(RESTORE),
          "only this table: NAME (schema public) or SCHEMA.NAME; repeatable (backup: default the configuration's)"),
    ROW_M("chain-dir", chain_dir, SC(RESTORE) | SC(VERIFY),
          "where else the backups an incremental/differential builds on may be (after the artifact's own folder); "
          "repeatable"),
    ROW_F("create", create, NULL, SC(RESTORE),
          "an empty database: the whole database (types, functions, views, triggers, policies, grants, large "
          "objects, ...) from the backup's schema archive, with pg_restore's sections (--pg-restore); with --table "
          "or a backup older than format 4: only the tables, their sequences, indexes and keys"),
    ROW_F("truncate", truncate, NULL, SC(RESTORE), "replace the rows of non-empty target tables (default: refuse)"),
    ROW_F("no-owner", no_owner, NULL, SC(RESTORE),
          "with --create: objects belong to the restoring role (pg_restore --no-owner); default: the owners of the "
          "backup (the roles must exist)"),
    ROW_F("no-privileges", no_privileges, NULL, SC(RESTORE), "with --create: no GRANT/REVOKE (pg_restore --no-privileges)"),
    ROW_I("jobs", jobs, "1", 1, 16, NULL, SC(RESTORE),
          "with --create of a database that does not exist yet: built under a temporary name on N connections "
          "and renamed when complete (a failure leaves no database); with --create --table, or a backup without "
          "a schema archive: load and index on N connections (like pg_restore -j); into an existing database: "
          "one transaction"),
    ROW_S("restore-into", restore_into, "", NULL, SC(VERIFY),
          "conninfo of an empty database: also restore everything there, compare each table with the manifest, "
          "then roll back"),
    ROW_M("storage-path", storage_path, SC(CAPTURE) | SC(LIST) | SC(PRUNE),
          "folder under --storage-root holding backups (list: repeatable, default with --pg every configuration's; "
          "prune and capture: exactly one)"),
    ROW_I("retention-days", retention_days, "-1", 0, 36500, NULL, SC(PRUNE),
          "remove the backups older than N days (0: none), never one a kept backup needs nor the last restorable "
          "FULL"),
    ROW_I("config-id", config_id, "-1", -1, INT64_MAX, NULL, SC(PRUNE),
          "only this configuration's backups (-1: every backup in the folder, format-1 ones included)"),
    ROW_I("now-ms", now_ms, "0", 0, INT64_MAX, NULL, SC(PRUNE),
          "the clock in ms since the epoch (0: now), to see what a later run would do"),
    ROW_E("from", from, "failed", "failed|dlq", NULL, SC(REPLAY),
          "failed: the jobs whose latest status is FAILED; dlq: the dead letters"),
    ROW_S("job-id", job_id, "", NULL, SC(REPLAY), "only this job (a lowercase UUID)"),
    ROW_T("since", since, SC(REPLAY), "only what failed at or after TIME"),
    ROW_F("from-beginning", from_beginning, NULL, SC(TAIL), "start at the oldest event kept (default: new ones only)"),
    ROW_I("count", count, "0", 0, 1000000000, NULL, SC(TAIL), "stop after N events (0: no limit)"),
    ROW_I("timeout", timeout_s, "0", 0, 31536000, NULL, SC(TAIL), "stop after this many seconds (0: never)"),
    ROW_I("partitions", partitions, FB_TOPIC_STR(FB_TOPIC_REQUEST_PARTITIONS), 1, 10000, NULL, SC(TOPICS),
          "partitions of backup.requested and archive.due: the most workers that can share the work"),
    ROW_I("completed-partitions", completed_partitions, FB_TOPIC_STR(FB_TOPIC_COMPLETED_PARTITIONS), 1, 10000, NULL,
          SC(TOPICS), "partitions of jobs.completed"),
    ROW_I("dlq-partitions", dlq_partitions, FB_TOPIC_STR(FB_TOPIC_DLQ_PARTITIONS), 1, 10000, NULL, SC(TOPICS),
          "partitions of jobs.dlq"),
    ROW_I("replication-factor", replication_factor, "1", 1, 32, NULL, SC(TOPICS),
          "replicas of each topic (1 for a one-node broker; use 3 on a production cluster)"),
    ROW_S("module", module, "", NULL, SC(UNARCHIVE), "Django app label of the ArchivedRecords (ArchivedRecord.module)"),
    ROW_S("model", model, "", NULL, SC(UNARCHIVE), "model name (ArchivedRecord.model_name)"),
    ROW_M("id", ids, SC(UNARCHIVE), "original primary key (as text) of a row to put back; repeatable"),
    ROW_T("archived-before", archived_before, SC(UNARCHIVE),
          "every record of the model archived before TIME (or \"infinity\": all of them)"),
    ROW_F("no-publish", no_publish, NULL, SC(EVENT), "event run: publish no status events"),
    ROW_S("configuration", configuration, "", NULL, SC(BACKUP),
          "the BackupConfiguration's name or id (or give it as the argument)"),
    ROW_F("capture-base", capture_base, NULL, SC(BACKUP),
          "create the capture slot (--capture-slot) and take this FULL in its snapshot: the base of its change chain"),
    ROW_E("type", backup_type, "", "FULL|INCREMENTAL|DIFFERENTIAL", NULL, SC(BACKUP),
          "the backup type (default: the configuration's)"),
    ROW_F("no-broker", no_broker, NULL, SC(CHECK), "skip the broker and topics check"),
    ROW_S("out", out, "", NULL, SC(KEYGEN), "write PREFIX.pub and PREFIX.key (never overwrites)"),
    ROW_F("sign", sign, NULL, SC(KEYGEN), "an Ed25519 signing key pair instead of a backup key pair"),
    ROW_S("new-public-key", new_public_key, "", NULL, SC(REKEY), "the public key file to re-seal the data keys to"),
    ROW_F("new-data-key", new_data_key, NULL, SC(REKEY),
          "for a COMPROMISED key: re-encrypt every segment under a fresh data key (the manifest is re-signed with "
          "--sign-key); destroy every older copy afterwards"),
    ROW_F("create-slot", create_slot, NULL, SC(CAPTURE),
          "create the publication and the logical slot first (refused when a table has no replica identity)"),
    ROW_F("list", list, NULL, SC(CAPTURE), "verify the chain (signatures, no gap; with --secret-key decrypted) and show it"),
    ROW_S("apply-into", apply_into, "", NULL, SC(CAPTURE),
          "conninfo of a restore of the chain's base: apply the captured transactions up to --until there"),
    ROW_S("until", until, "", NULL, SC(CAPTURE) | SC(RESTORE),
          "capture --apply-into: LSN (X/Y) up to which it applies (commit end <= LSN); restore: LSN or TIME, the "
          "moment to restore a capture base FULL and its change chain to"),
};
#define CFG_NROWS (sizeof cfg_rows / sizeof cfg_rows[0])
_Static_assert(CFG_NROWS <= FB_CONFIG_MAX_ROWS, "raise FB_CONFIG_MAX_ROWS");

/* The row called name[0..len) that applies in scope; else, when out_of_scope, one of that name elsewhere. */
static const cfg_row *cfg_find(const char *name, size_t len, unsigned scope, const cfg_row **out_of_scope) {
    const cfg_row *other = NULL;
    for (size_t i = 0; i < CFG_NROWS; i++)
        if (strlen(cfg_rows[i].name) == len && strncmp(cfg_rows[i].name, name, len) == 0) {
            if (cfg_rows[i].scope & scope) return &cfg_rows[i];
            other = &cfg_rows[i];
        }
    if (out_of_scope) *out_of_scope = other;
    return NULL;
}

/* "a, b or c" from "a|b|c". */
static const char *cfg_values_text(const char *values, char *out, size_t cap) {
    size_t n = 0, bars = 0;
    for (const char *p = values; *p; p++) bars += *p == '|';
    out[0] = '\0';
    for (const char *p = values; *p && n + 8 < cap; p++) {
        if (*p != '|') {
            out[n++] = *p;
            continue;
        }
        const char *sep = --bars ? ", " : " or ";
        n += (size_t)snprintf(out + n, cap - n, "%s", sep);
    }
    out[n < cap ? n : cap - 1] = '\0';
    return out;
}

static int cfg_in_values(const char *values, const char *v) {
    size_t len = strlen(v);
    for (const char *p = values; p && *p;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && strncmp(p, v, n) == 0) return 1;
        p = bar ? bar + 1 : p + n;
    }
    return 0;
}

/* A flag's value: 1/0 and the words people use for them. */
static int cfg_flag_value(const char *v, int64_t *out) {
    static const char *const on[] = {"1", "true", "yes", "on"}, *const off[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, on[i]) == 0) return *out = 1, 1;
        if (strcasecmp(v, off[i]) == 0) return *out = 0, 1;
    }
    return 0;
}

/* Reads value for row into *num (numbers, flags, times) after checking it; what names the option in messages
 * ("--jobs", "FB_CONCURRENCY: --concurrency"). Defaults are the table's own: not checked against bounds. */
static fb_code cfg_check_number(const cfg_row *row, const char *value, const char *what, int origin, int64_t *num,
                                fb_err *err) {
    if (row->type == CFG_FLAG) {
        if (!cfg_flag_value(value, num))
            return fb_err_set(err, FB_ERR_USAGE, "%s is a flag: give it alone (on), as --no-%s (off) or =1/=0, got "
                              "\"%s\"", what, row->name, value);
        return FB_OK;
    }
    if (row->type == CFG_TIME) {
        if (!*value) return *num = FB_TIME_NONE, FB_OK;
        fb_code rc = fb_time_parse(value, fb_now_ms(), num, err);
        if (rc) fb_err_prefix(err, "%s: ", what);
        return rc;
    }
    char range[64];
    if (row->max == INT64_MAX) snprintf(range, sizeof range, "at least %lld", (long long)row->min);
    else snprintf(range, sizeof range, "%lld..%lld", (long long)row->min, (long long)row->max);
    errno = 0;
    char *end = NULL;
    long long v = strtoll(value, &end, 10);
    if (errno || end == value || *end)
        return fb_err_set(err, FB_ERR_USAGE, "%s must be a whole number %s, got \"%s\"", what, range, value);
    if (origin != ORIGIN_DEFAULT && (v < row->min || v > row->max))
        return fb_err_set(err, FB_ERR_USAGE, "%s must be %s, got \"%s\"", what, range, value);
    *num = v;
    return FB_OK;
}

static fb_code cfg_strlist_add(fb_strlist *l, const char *value, fb_err *err) {
    char **nv = realloc(l->v, (l->n + 2) * sizeof *nv);
    if (!nv) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    l->v = nv;
    if (!(l->v[l->n] = strdup(value))) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    l->v[++l->n] = NULL;
    return FB_OK;
}

static void cfg_strlist_clear(fb_strlist *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* Sets row from value given at origin (source: where, for messages: "--jobs", "FB_ROLE", "file:3"). A value from
 * a lower place than the row's current one is checked, then ignored (flags beat the environment beat the file),
 * so the places may be read in any order; a list or repeatable option given again in the same place grows. */
static fb_code cfg_set(fb_config *cfg, const cfg_row *row, const char *value, const char *source, int origin,
                       fb_err *err) {
    char *base = (char *)cfg, what[700];
    size_t idx = (size_t)(row - cfg_rows);
    if (strncmp(source, "--", 2) == 0 || origin == ORIGIN_DEFAULT) snprintf(what, sizeof what, "--%s", row->name);
    else snprintf(what, sizeof what, "%s: --%s", source, row->name);
    int64_t num = 0;
    fb_code rc = FB_OK;
    if (row->type == CFG_INT || row->type == CFG_FLAG || row->type == CFG_TIME)
        rc = cfg_check_number(row, value, what, origin, &num, err);
    else if (row->type == CFG_ENUM && origin != ORIGIN_DEFAULT && !cfg_in_values(row->values, value)) {
        char vals[300];
        rc = fb_err_set(err, FB_ERR_USAGE, "%s must be %s, got \"%s\"", what,
                        cfg_values_text(row->values, vals, sizeof vals), value);
    } else if (row->type == CFG_MULTI && origin != ORIGIN_DEFAULT && !*value)
        rc = fb_err_set(err, FB_ERR_USAGE, "%s needs a value, got an empty one", what);
    if (rc || origin < cfg->origin[idx]) return rc;
    int same_place = cfg->origin[idx] == origin && origin != ORIGIN_DEFAULT;
    cfg->origin[idx] = (unsigned char)origin;
    if (row->type == CFG_INT || row->type == CFG_FLAG || row->type == CFG_TIME) {
        *(int64_t *)(base + row->offset) = num;
        return FB_OK;
    }
    if (row->type == CFG_MULTI) {
        fb_strlist *l = (fb_strlist *)(base + row->offset);
        if (!same_place) cfg_strlist_clear(l);
        return *value ? cfg_strlist_add(l, value, err) : FB_OK;
    }
    char **slot = (char **)(base + row->offset);
    if (row->type == CFG_LIST && same_place && *value) {
        size_t have = *slot ? strlen(*slot) : 0;
        char *joined = malloc(have + 1 + strlen(value) + 1);
        if (!joined) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        sprintf(joined, "%s%s%s", have ? *slot : "", have ? "," : "", value);
        free(*slot);
        *slot = joined;
        return FB_OK;
    }
    char *copy = strdup(value);
    if (!copy) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    free(*slot);
    *slot = copy;
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

static int cfg_is_config_row(const cfg_row *row) {
    return row->offset == offsetof(fb_config, config_file);
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
        const cfg_row *row = cfg_find(name, strlen(name), ~0u, NULL);
        if (!row || cfg_is_config_row(row)) {
            rc = fb_err_set(err, FB_ERR_USAGE, "%s: unknown setting \"%s\" (see --help)", source, name);
            break;
        }
        if (!row->env) {
            rc = fb_err_set(err, FB_ERR_USAGE, "%s: \"%s\" is an option of a command, not a setting: give it on the "
                            "command line (--%s)", source, name, name);
            break;
        }
        rc = cfg_set(cfg, row, value, source, ORIGIN_FILE, err);
    }
    fclose(f);
    return rc;
}

static fb_code cfg_read_env(fb_config *cfg, fb_err *err) {
    for (size_t i = 0; i < CFG_NROWS; i++) {
        const char *v = cfg_rows[i].env ? getenv(cfg_rows[i].env) : NULL;
        if (v && !cfg_is_config_row(&cfg_rows[i])) {
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
    fb_code rc = cfg_read_env(cfg, err);
    const char *file = getenv("FB_CONFIG");
    if (!rc && file && *file) {
        rc = cfg_set(cfg, &cfg_rows[0], file, "FB_CONFIG", ORIGIN_ENV, err);
        if (!rc) rc = cfg_read_file(cfg, file, err); /* below the environment: cfg_set keeps what ranks higher */
    }
    return rc;
}

static int cfg_is_extra(const char *name, size_t len, const char *const *extra) {
    for (; extra && *extra; extra++)
        if (strlen(*extra) == len && strncmp(*extra, name, len) == 0) return 1;
    return 0;
}

/* One `--name[=value]` (or -h) at argv[*i]; may take the next argument as its value. *keep: leave it in argv. */
static fb_code cfg_one_option(fb_config *cfg, int argc, char **argv, int *i, unsigned scope,
                              const char *const *extra, int *keep, const char **file, fb_err *err) {
    const char *a = argv[*i];
    const char *name = strcmp(a, "-h") == 0 ? "help" : a + 2, *eq = strchr(name, '='), *value = NULL;
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    const cfg_row *elsewhere = NULL, *row = cfg_find(name, len, scope, &elsewhere);
    if (!row && !eq && len > 3 && strncmp(name, "no-", 3) == 0) {
        row = cfg_find(name + 3, len - 3, scope, NULL);
        if (row && row->type == CFG_FLAG) value = "0";
        else row = NULL;
    }
    if (!row) {
        if (cfg_is_extra(name, len, extra)) return *keep = 1, FB_OK;
        if (elsewhere)
            return fb_err_set(err, FB_ERR_USAGE, "--%.*s is not an option of this command (see its --help)", (int)len,
                              name);
        /* the name only: a mistyped option's value may be a secret */
        return fb_err_set(err, FB_ERR_USAGE, "unknown option \"--%.*s\" (see --help)", (int)len, name);
    }
    if (eq) value = eq + 1;
    else if (!value && row->type == CFG_FLAG) value = "1";
    else if (!value && *i + 1 < argc) value = argv[++*i];
    else if (!value) return fb_err_set(err, FB_ERR_USAGE, "--%s needs a value (see --help)", row->name);
    char source[128];
    snprintf(source, sizeof source, "--%s", row->name);
    fb_code rc = cfg_set(cfg, row, value, source, ORIGIN_FLAG, err);
    if (!rc && cfg_is_config_row(row)) *file = value;
    return rc;
}

fb_code fb_config_parse_args(fb_config *cfg, int *argc, char **argv, unsigned scope, const char *const *extra_flags,
                             fb_err *err) {
    int n = *argc, kept = 0, after_dashdash = 0;
    char **rest = calloc((size_t)n + 1, sizeof *rest);
    if (!rest) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    fb_code rc = FB_OK;
    const char *file = NULL;
    for (int i = 0; i < n && rc == FB_OK; i++) {
        char *a = argv[i];
        int keep = 0;
        if (after_dashdash || a[0] != '-' || a[1] == '\0') keep = 1; /* an argument ("-" is stdin) */
        else if (strcmp(a, "--") == 0) after_dashdash = 1;
        else if (strcmp(a, "-X") == 0) {
            if (i + 1 >= n) rc = fb_err_set(err, FB_ERR_USAGE, "-X needs prop=value");
            else rc = cfg_add_x(cfg, argv[++i], err);
        } else if (strncmp(a, "--", 2) == 0 || strcmp(a, "-h") == 0) {
            rc = cfg_one_option(cfg, n, argv, &i, scope, extra_flags, &keep, &file, err);
        } else {
            rc = fb_err_set(err, FB_ERR_USAGE, "unknown option \"%s\" (options are spelt --name; see --help)", a);
        }
        if (keep) rest[kept++] = a;
    }
    /* A config file named on the command line ranks below the environment and the flags already applied. */
    if (rc == FB_OK && file) rc = cfg_read_file(cfg, file, err);
    for (int i = 0; i < kept; i++) argv[i] = rest[i];
    argv[kept] = NULL;
    *argc = kept;
    free(rest);
    return rc;
}

/* "--name VALUE": the option as it is written, its value named by type. */
static void cfg_spelling(const cfg_row *r, char *out, size_t cap) {
    const char *v = r->type == CFG_FLAG ? "" : r->type == CFG_INT ? " N" : r->type == CFG_TIME ? " TIME"
                    : r->type == CFG_ENUM ? " " : " VALUE";
    snprintf(out, cap, "--%s%s%s", r->name, v, r->type == CFG_ENUM ? r->values : "");
}

/* The second line of a row's help: what it accepts, its default, its variable. */
static void cfg_detail(const cfg_row *r, char *out, size_t cap) {
    size_t n = 0;
    out[0] = '\0';
#define ADD(...) (n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, __VA_ARGS__))
    if (r->type == CFG_FLAG) {
        /* flags: the header says how they are spelt */
    } else if (r->type == CFG_INT && r->max == INT64_MAX) ADD("at least %lld, default %s", (long long)r->min, r->def);
    else if (r->type == CFG_INT) ADD("%lld..%lld, default %s", (long long)r->min, (long long)r->max, r->def);
    else if (r->type == CFG_ENUM && *r->def) ADD("default %s", r->def);
    else if (r->type == CFG_MULTI) ADD("repeatable");
    else if (r->type == CFG_LIST) ADD("repeatable or comma-separated");
    else if (r->type == CFG_STR && *r->def) ADD("default \"%s\"", r->def);
    if (r->env) ADD("%s%s", n ? "; " : "", r->env);
#undef ADD
}

static void cfg_print_rows(unsigned scope, int command_options, FILE *out, int *times) {
    for (size_t i = 0; i < CFG_NROWS; i++) {
        const cfg_row *r = &cfg_rows[i];
        if (!(r->scope & scope) || (r->env == NULL) != command_options) continue;
        char spelt[160], detail[300];
        cfg_spelling(r, spelt, sizeof spelt);
        cfg_detail(r, detail, sizeof detail);
        if (strlen(spelt) > 27) fprintf(out, "  %s\n  %-28s %s\n", spelt, "", r->help); /* a long enum */
        else fprintf(out, "  %-28s %s\n", spelt, r->help);
        if (*detail) fprintf(out, "  %-28s (%s)\n", "", detail);
        *times |= r->type == CFG_TIME;
    }
}

static void cfg_print_settings(unsigned scope, FILE *out, int *times) {
    fprintf(out, "\nSettings (flag, also from the environment variable named and the config file; -X prop=value "
                 "passes a setting to librdkafka):\n");
    cfg_print_rows(scope, 0, out, times);
}

void fb_config_print_settings(unsigned scope, FILE *out) {
    int times = 0;
    cfg_print_settings(scope, out, &times);
}

void fb_config_print_options(unsigned scope, FILE *out) {
    int times = 0;
    fprintf(out, "\nOptions (--name VALUE or --name=VALUE; a flag alone turns it on, --no-FLAG off):\n");
    cfg_print_rows(scope, 1, out, &times);
    cfg_print_settings(scope, out, &times);
    if (times)
        fprintf(out, "\nTIME: 2026-11-27T10:30:00+05:30 or 2026-11-27 10:30Z (always with its zone), 2026-11-27 "
                     "(midnight UTC), a duration before now (90m, 2h, 7d) or ms since the epoch.\n");
}

void fb_config_print_help(unsigned scope) {
    fb_config_print_options(scope, stdout);
}

const char *fb_config_topic(const fb_config *cfg, fb_topic t, char *out, size_t cap) {
    snprintf(out, cap, "%s%s", cfg->topic_prefix ? cfg->topic_prefix : "", fb_topics[t].suffix);
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
    for (size_t i = 0; i < CFG_NROWS; i++) {
        cfg_type t = cfg_rows[i].type;
        if (t == CFG_MULTI) {
            cfg_strlist_clear((fb_strlist *)((char *)cfg + cfg_rows[i].offset));
        } else if (t == CFG_STR || t == CFG_LIST || t == CFG_ENUM) {
            char **slot = (char **)((char *)cfg + cfg_rows[i].offset);
            free(*slot);
            *slot = NULL;
        }
    }
    for (size_t i = 0; i < cfg->n_x; i++) {
        free(cfg->x_keys[i]);
        free(cfg->x_values[i]);
    }
    cfg->n_x = 0;
}
