/* fb_config: every setting of the worker and the CLI, declared once in a table (fb_config.c).
 *
 * Each row has a name (--name on the command line, `name = value` in the config file), a type, a default, an
 * environment variable, bounds and help text; --help is generated from the table. Precedence, lowest first:
 * defaults, config file (--config FILE or FB_CONFIG), environment, command-line flags. `-X prop=value` is kept
 * aside and passed to librdkafka untouched (as kcat does).
 */
#ifndef FB_CONFIG_H
#define FB_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/fb_err.h"
#include "common/fb_topic.h"

#define FB_CONFIG_MAX_X 64
#define FB_CONFIG_MAX_ROWS 160

/* A repeatable option's values, one per occurrence in order (never split at commas: a table name or a primary
 * key may hold one). */
typedef struct fb_strlist {
    char **v;
    size_t n;
} fb_strlist;

/* A time option that was not given (a given one is ms since the epoch, common/fb_time.h). */
#define FB_TIME_NONE INT64_MIN

/* Typed values, one field per table row (the table maps names to these fields by offset). */
typedef struct fb_config {
    char *config_file;
    char *brokers;
    char *pg;
    char *scratch_pg;
    char *storage_root;
    char *public_key;
    char *secret_key;
    char *group_id;
    char *topic_prefix;
    char *worker_name;
    char *role;
    char *log_level;
    char *log_format;
    char *metrics_listen;
    char *index_key;
    char *copy_to;
    /* PostgreSQL client programs for the schema archive (dump_schema.h) */
    char *pg_dump;
    char *pg_restore;
    int64_t concurrency;
    int64_t zstd_level;
    int64_t zstd_workers;
    int64_t dump_connections;
    int64_t lock_timeout_ms;
    int64_t statement_timeout_ms;
    int64_t batch_pause_ms;
    int64_t retry_max;
    int64_t retry_backoff_ms;
    int64_t max_attempts;
    int64_t shutdown_grace_s;
    int64_t progress_interval_ms;
    int64_t max_poll_interval_ms;
    /* Authority checks (job_authority.h): where the backup_archive tables are, and the clock skew allowed. */
    char *authority_pg;
    int64_t authority_skew_ms;
    int64_t max_deliveries;
    /* S3-compatible object storage (see the table). */
    char *s3_endpoint;
    char *s3_region;
    char *s3_url_style;
    char *s3_ca_file;
    char *s3_credentials_file;
    char *s3_profile;
    int64_t s3_part_mib;
    int64_t s3_timeout_s;
    /* Kafka security (SASL_SSL); applied by kfk_conf_apply for every client. The password only from a file. */
    char *kafka_security_protocol;
    char *kafka_sasl_mechanism;
    char *kafka_username;
    char *kafka_password_file;
    char *kafka_ca;
    /* Who is speaking (common/fb_sign.h): this party's signing key, and the public keys it trusts. The two
     * trusted-* settings are lists: comma-separated, or the flag / config line given several times. */
    char *sign_key;
    char *trusted_requesters;
    char *trusted_signers;
    int64_t allow_unsigned;   /* read unsigned (format <= 4) artifacts, with a warning (FORMAT.md, "Signatures") */
    /* Progress of long CLI commands (common/fb_progress.h). */
    char *progress;
    int64_t progress_lines_ms;
    /* Archival throttling (job_archive.c). */
    int64_t archive_sleep_pct;
    int64_t archive_lock_wait_pct;
    int64_t archive_max_replica_lag_ms;
    int64_t archive_live_window_ms;
    int64_t archive_live_batch_rows;
    int64_t archive_live_sleep_pct;
    /* Change capture (worker/src/capture/, `fusion-backup capture`). */
    int64_t capture_flush_s;
    int64_t capture_incr_wait_s;
    char *capture_slot;
    char *capture_publication;
    char *capture_databases;       /* the worker captures these databases (daemon/dmn_capture.h) */
    char *capture_storage_path;
    int64_t capture_lock_retry_s;
    /* Command options (scope: the commands named in their rows). Flags are 0 or 1. */
    int64_t help, version;
    int64_t json, dry_run;
    fb_strlist table, chain_dir, storage_path, ids;
    int64_t create, truncate, no_owner, no_privileges, jobs; /* restore */
    char *restore_into;                                      /* verify */
    int64_t retention_days, config_id, now_ms;               /* prune */
    char *from, *job_id;                                     /* replay */
    int64_t since;
    int64_t from_beginning, count, timeout_s;                /* tail */
    int64_t partitions, completed_partitions, dlq_partitions, replication_factor; /* topics */
    char *module, *model;                                    /* unarchive */
    int64_t archived_before;
    int64_t no_publish;                                      /* event run */
    char *configuration, *backup_type;                       /* backup */
    int64_t capture_base;
    int64_t no_broker;                                       /* check */
    char *out;                                               /* keygen */
    int64_t sign;
    char *new_public_key;                                    /* rekey */
    int64_t new_data_key;
    int64_t create_slot, list;                               /* capture */
    char *apply_into, *until;
    /* -X prop=value pairs for librdkafka, in order given. */
    char *x_keys[FB_CONFIG_MAX_X];
    char *x_values[FB_CONFIG_MAX_X];
    size_t n_x;
    /* Where each row's value came from (0 default, 1 file, 2 environment, 3 flag): a list setting repeated in the
     * same place accumulates, a higher place replaces it. Internal to fb_config.c. */
    unsigned char origin[FB_CONFIG_MAX_ROWS];
} fb_config;

/* Where a row applies (its scope, a bit set): the worker, or a command of the CLI. */
typedef enum fb_cmd {
    FB_CMD_WORKER,
    FB_CMD_BACKUP,
    FB_CMD_CAPTURE,
    FB_CMD_CHECK,
    FB_CMD_EVENT,
    FB_CMD_INSPECT,
    FB_CMD_KEYGEN,
    FB_CMD_LIST,
    FB_CMD_PRUNE,
    FB_CMD_REKEY,
    FB_CMD_REPLAY,
    FB_CMD_RESTORE,
    FB_CMD_STATUS,
    FB_CMD_TAIL,
    FB_CMD_TOPICS,
    FB_CMD_UNARCHIVE,
    FB_CMD_VERIFY,
    FB_CMD_COUNT
} fb_cmd;
#define FB_SCOPE(cmd) (1u << (cmd))
#define FB_CFG_WORKER FB_SCOPE(FB_CMD_WORKER)
/* every command of the CLI */
#define FB_CFG_CLI (((1u << FB_CMD_COUNT) - 1u) & ~FB_CFG_WORKER)

/* Fills cfg with defaults, then the config file, then the environment. Returns FB_OK or FB_ERR_USAGE. */
fb_code fb_config_init(fb_config *cfg, fb_err *err);

/* Parses options from argv for the rows in `scope` (FB_SCOPE(FB_CMD_RESTORE), FB_CFG_WORKER, ...): --name value,
 * --name=value, --no-name (a flag off), -h (--help), -X k=v, --config FILE, `--` (the rest are arguments).
 * Arguments that are not options are moved, in order, to the front of argv; *argc becomes their count. An option
 * outside `scope` is an error unless listed in `extra_flags` (NULL-terminated names without dashes, or NULL);
 * those are left in argv for the caller. Reads the config file if --config is given (below the environment and
 * the flags). */
fb_code fb_config_parse_args(fb_config *cfg, int *argc, char **argv, unsigned scope, const char *const *extra_flags,
                             fb_err *err);

/* Writes the options of `scope` to out, generated from the table: first those of the command itself, then the
 * settings every command (or the worker) shares, each with its value, bounds or values, default and variable. */
void fb_config_print_options(unsigned scope, FILE *out);

/* Only the shared settings of `scope` (the second part of the above): the top-level --help. */
void fb_config_print_settings(unsigned scope, FILE *out);

/* The same as fb_config_print_options to stdout (kept for callers of the first API). */
void fb_config_print_help(unsigned scope);

/* Topic name: topic_prefix + the topic's suffix ("backup.requested", common/fb_topic.h). Writes into out; returns out. */
const char *fb_config_topic(const fb_config *cfg, fb_topic t, char *out, size_t cap);

void fb_config_free(fb_config *cfg);

/* 1 when a setting's value is a secret that must never be printed: its name contains "password" or "secret"
 * (any case), e.g. librdkafka's sasl.password or ssl.key.password. */
int fb_config_is_secret(const char *name);

/* The value to show for setting `name` in messages and logs: "***" for a secret (see above), else value. */
const char *fb_config_shown(const char *name, const char *value);

#endif
