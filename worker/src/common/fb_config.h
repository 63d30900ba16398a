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

#include "common/fb_err.h"

#define FB_CONFIG_MAX_X 64
#define FB_CONFIG_MAX_ROWS 128

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
    /* Change capture (worker/src/capture/, `fusion-backup capture`). */
    int64_t capture_flush_s;
    char *capture_slot;
    char *capture_publication;
    /* -X prop=value pairs for librdkafka, in order given. */
    char *x_keys[FB_CONFIG_MAX_X];
    char *x_values[FB_CONFIG_MAX_X];
    size_t n_x;
    /* Where each row's value came from (0 default, 1 file, 2 environment, 3 flag): a list setting repeated in the
     * same place accumulates, a higher place replaces it. Internal to fb_config.c. */
    unsigned char origin[FB_CONFIG_MAX_ROWS];
} fb_config;

/* Which program a row applies to (a bit set). */
#define FB_CFG_WORKER 1u
#define FB_CFG_CLI 2u

/* Fills cfg with defaults, then the config file, then the environment. Returns FB_OK or FB_ERR_USAGE. */
fb_code fb_config_init(fb_config *cfg, fb_err *err);

/* Parses flags from argv (--name value, --name=value, -X k=v, --config FILE). Arguments that are not options
 * are moved, in order, to the front of argv; *argc becomes their count. Unknown options are errors unless
 * they are listed in `extra_flags` (NULL-terminated names without dashes, e.g. {"table", "create", NULL}); those
 * are left in argv for the command to parse. Re-reads the config file if --config is given. */
fb_code fb_config_parse_args(fb_config *cfg, int *argc, char **argv, unsigned program, const char *const *extra_flags,
                             fb_err *err);

/* Writes --help text for `program` to stdout, generated from the table. */
void fb_config_print_help(unsigned program);

/* Topic name: topic_prefix + suffix ("backup.requested"). Writes into out; returns out. */
const char *fb_config_topic(const fb_config *cfg, const char *suffix, char *out, size_t cap);

void fb_config_free(fb_config *cfg);

/* 1 when a setting's value is a secret that must never be printed: its name contains "password" or "secret"
 * (any case), e.g. librdkafka's sasl.password or ssl.key.password. */
int fb_config_is_secret(const char *name);

/* The value to show for setting `name` in messages and logs: "***" for a secret (see above), else value. */
const char *fb_config_shown(const char *name, const char *value);

#endif
