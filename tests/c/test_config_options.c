/* test_config_options: the one option parser (common/fb_config.c) every command and both binaries use. Both
 * spellings (--x v, --x=v), --no-x, `--`, bounds, unknown options, options of another command, missing values,
 * enums, repeatable and list options, times with their zone, and the precedence of the config file, the
 * environment and the flags; the help generated from the same table. No services needed. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fb_config.h"
#include "common/fb_time.h"
#include "tap.h"

#define RESTORE FB_SCOPE(FB_CMD_RESTORE)

/* Parses the NULL-terminated args (after a program name) for scope into *cfg; returns the code, err filled. The
 * arguments left (non-options) are in left[0..*n_left). */
static fb_code parse(fb_config *cfg, unsigned scope, fb_err *err, char **left, int *n_left, ...) {
    static char store[32][256];
    char *argv[33];
    int argc = 0;
    va_list ap;
    va_start(ap, n_left);
    strcpy(store[argc], "cmd");
    argv[argc] = store[argc];
    argc++;
    for (const char *a; (a = va_arg(ap, const char *)) && argc < 32; argc++) {
        snprintf(store[argc], sizeof store[argc], "%s", a);
        argv[argc] = store[argc];
    }
    va_end(ap);
    argv[argc] = NULL;
    memset(err, 0, sizeof *err);
    fb_code rc = fb_config_init(cfg, err);
    if (!rc) rc = fb_config_parse_args(cfg, &argc, argv, scope, NULL, err);
    for (int i = 0; left && i < argc; i++) left[i] = argv[i];
    if (n_left) *n_left = argc;
    return rc;
}

/* The parse must fail with FB_ERR_USAGE and a message holding every fragment (NULL-terminated). */
static void refused(unsigned scope, const char *arg1, const char *arg2, const char *f1, const char *f2,
                    const char *f3) {
    fb_config cfg;
    fb_err err;
    fb_code rc = parse(&cfg, scope, &err, NULL, NULL, arg1, arg2, (char *)NULL);
    const char *frags[3] = {f1, f2, f3};
    int all = rc == FB_ERR_USAGE;
    for (int i = 0; i < 3; i++) all = all && (!frags[i] || strstr(err.msg, frags[i]));
    CHECKF(all, "%s %s: rc %d, \"%s\" (wanted %s / %s / %s)", arg1, arg2 ? arg2 : "", (int)rc, err.msg, f1,
           f2 ? f2 : "-", f3 ? f3 : "-");
    fb_config_free(&cfg);
}

static void test_both_spellings(void) {
    fb_config a, b;
    fb_err err;
    CHECK_EQ_INT(parse(&a, RESTORE, &err, NULL, NULL, "--jobs", "3", "--pg", "dbname=x", (char *)NULL), FB_OK);
    CHECK_EQ_INT(parse(&b, RESTORE, &err, NULL, NULL, "--jobs=3", "--pg=dbname=x", (char *)NULL), FB_OK);
    CHECK_EQ_INT(a.jobs, 3);
    CHECK_EQ_INT(b.jobs, 3);
    CHECK_EQ_STR(a.pg, "dbname=x");
    CHECK_EQ_STR(b.pg, "dbname=x"); /* only the first '=' separates: a conninfo keeps its own */
    fb_config_free(&a);
    fb_config_free(&b);
    /* defaults come from the table */
    CHECK_EQ_INT(parse(&a, RESTORE, &err, NULL, NULL, (char *)NULL), FB_OK);
    CHECK_EQ_INT(a.jobs, 1);
    CHECK_EQ_INT(a.create, 0);
    CHECK_EQ_INT(a.table.n, 0);
    fb_config_free(&a);
}

static void test_bounds_and_numbers(void) {
    refused(RESTORE, "--jobs", "17", "--jobs must be 1..16", "\"17\"", NULL);
    refused(RESTORE, "--jobs=0", NULL, "--jobs must be 1..16", "\"0\"", NULL);
    refused(RESTORE, "--jobs", "2x", "--jobs must be a whole number 1..16", "\"2x\"", NULL);
    refused(RESTORE, "--jobs", "99999999999999999999", "--jobs", "99999999999999999999", NULL); /* overflow */
    refused(FB_SCOPE(FB_CMD_TOPICS), "--partitions", "0", "--partitions must be 1..10000", NULL, NULL);
    refused(FB_SCOPE(FB_CMD_PRUNE), "--config-id", "-2", "--config-id must be at least -1", "\"-2\"", NULL);
    fb_config cfg;
    fb_err err;
    /* a negative number is a value, not an option, where a value is due */
    CHECK_EQ_INT(parse(&cfg, FB_SCOPE(FB_CMD_PRUNE), &err, NULL, NULL, "--config-id", "-1", (char *)NULL), FB_OK);
    CHECK_EQ_INT(cfg.config_id, -1);
    fb_config_free(&cfg);
}

static void test_unknown_and_missing(void) {
    refused(RESTORE, "--bogus", NULL, "unknown option", "--bogus", NULL);
    refused(RESTORE, "--bogus=1", NULL, "unknown option", "--bogus", NULL);
    {   /* a mistyped option's value is not echoed: it may be a password */
        fb_config cfg;
        fb_err err;
        CHECK_EQ_INT(parse(&cfg, RESTORE, &err, NULL, NULL, "--kafka-pasword=hunter2", (char *)NULL), FB_ERR_USAGE);
        CHECKF(strstr(err.msg, "--kafka-pasword") && !strstr(err.msg, "hunter2"), "%s", err.msg);
        fb_config_free(&cfg);
    }
    refused(RESTORE, "-x", NULL, "unknown option", "-x", NULL);
    /* an option of another command is refused, and said to be one */
    refused(RESTORE, "--dry-run", NULL, "--dry-run is not an option of this command", NULL, NULL);
    refused(FB_CFG_WORKER, "--table", "t", "--table is not an option of this command", NULL, NULL);
    refused(RESTORE, "--table", NULL, "--table needs a value", NULL, NULL);
    refused(RESTORE, "--pg", NULL, "--pg needs a value", NULL, NULL);
    refused(RESTORE, "--table=", NULL, "--table needs a value", NULL, NULL);
    refused(RESTORE, "--create=maybe", NULL, "--create is a flag", "\"maybe\"", NULL);
}

static void test_flags_and_arguments(void) {
    fb_config cfg;
    fb_err err;
    char *left[32];
    int n = 0;
    /* a flag takes no value: the next argument stays an argument; `--` ends the options */
    CHECK_EQ_INT(parse(&cfg, RESTORE, &err, left, &n, "--create", "ART", "--no-owner", "--", "--table", "-",
                       (char *)NULL), FB_OK);
    CHECK_EQ_INT(cfg.create, 1);
    CHECK_EQ_INT(cfg.no_owner, 1);
    CHECK_EQ_INT(cfg.table.n, 0);
    CHECK_EQ_INT(n, 4);
    if (n == 4) {
        CHECK_EQ_STR(left[0], "cmd");
        CHECK_EQ_STR(left[1], "ART");
        CHECK_EQ_STR(left[2], "--table");
        CHECK_EQ_STR(left[3], "-");
    }
    fb_config_free(&cfg);
    CHECK_EQ_INT(parse(&cfg, RESTORE, &err, NULL, NULL, "--create", "--no-create", "--truncate=yes", "-h",
                       (char *)NULL), FB_OK);
    CHECK_EQ_INT(cfg.create, 0);
    CHECK_EQ_INT(cfg.truncate, 1);
    CHECK_EQ_INT(cfg.help, 1);
    fb_config_free(&cfg);
}

static void test_enum(void) {
    refused(FB_SCOPE(FB_CMD_BACKUP), "--type", "WEEKLY", "--type must be FULL, INCREMENTAL or DIFFERENTIAL",
            "\"WEEKLY\"", NULL);
    refused(FB_SCOPE(FB_CMD_REPLAY), "--from=all", NULL, "--from must be failed or dlq", "\"all\"", NULL);
    refused(FB_CFG_WORKER, "--log-format", "xml", "--log-format must be text or json", "\"xml\"", NULL);
    fb_config cfg;
    fb_err err;
    CHECK_EQ_INT(parse(&cfg, FB_SCOPE(FB_CMD_BACKUP), &err, NULL, NULL, "--type=INCREMENTAL", (char *)NULL), FB_OK);
    CHECK_EQ_STR(cfg.backup_type, "INCREMENTAL");
    fb_config_free(&cfg);
    CHECK_EQ_INT(parse(&cfg, FB_SCOPE(FB_CMD_REPLAY), &err, NULL, NULL, (char *)NULL), FB_OK);
    CHECK_EQ_STR(cfg.from, "failed");
    fb_config_free(&cfg);
}

static void test_lists(void) {
    fb_config cfg;
    fb_err err;
    /* repeatable: one item per occurrence, never split at a comma (a name may hold one) */
    CHECK_EQ_INT(parse(&cfg, RESTORE, &err, NULL, NULL, "--table", "a", "--table=b,c", "--chain-dir", "/x",
                       (char *)NULL), FB_OK);
    CHECK_EQ_INT(cfg.table.n, 2);
    if (cfg.table.n == 2) {
        CHECK_EQ_STR(cfg.table.v[0], "a");
        CHECK_EQ_STR(cfg.table.v[1], "b,c");
    }
    CHECK_EQ_INT(cfg.chain_dir.n, 1);
    fb_config_free(&cfg);
    /* a list setting: repeated flags accumulate */
    unsetenv("FB_TRUSTED_SIGNERS");
    CHECK_EQ_INT(parse(&cfg, RESTORE, &err, NULL, NULL, "--trusted-signer", "k1.pub", "--trusted-signer=k2.pub",
                       (char *)NULL), FB_OK);
    CHECK_EQ_STR(cfg.trusted_signers, "k1.pub,k2.pub");
    fb_config_free(&cfg);
}

static void test_times(void) {
    fb_config cfg;
    fb_err err;
    const long long t = 1795756200000LL; /* 2026-11-27T05:10:00Z */
    CHECK_EQ_INT(parse(&cfg, FB_SCOPE(FB_CMD_REPLAY), &err, NULL, NULL, "--since", "2026-11-27 10:40+05:30",
                       (char *)NULL), FB_OK);
    CHECK_EQ_INT(cfg.since, t); /* the offset moves the instant; it is never dropped */
    fb_config_free(&cfg);
    CHECK_EQ_INT(parse(&cfg, FB_SCOPE(FB_CMD_REPLAY), &err, NULL, NULL, "--since=2026-11-27T05:10Z", (char *)NULL),
                 FB_OK);
    CHECK_EQ_INT(cfg.since, t);
    fb_config_free(&cfg);
    CHECK_EQ_INT(parse(&cfg, FB_SCOPE(FB_CMD_REPLAY), &err, NULL, NULL, (char *)NULL), FB_OK);
    CHECK(cfg.since == FB_TIME_NONE);
    fb_config_free(&cfg);
    CHECK_EQ_INT(parse(&cfg, FB_SCOPE(FB_CMD_UNARCHIVE), &err, NULL, NULL, "--archived-before", "infinity",
                       (char *)NULL), FB_OK);
    CHECK(cfg.archived_before == INT64_MAX);
    fb_config_free(&cfg);
    refused(FB_SCOPE(FB_CMD_REPLAY), "--since", "2026-11-27 10:40", "--since", "has no zone", NULL);
    refused(FB_SCOPE(FB_CMD_UNARCHIVE), "--archived-before=2026-11-27 10:40 IST", NULL, "--archived-before",
            "cannot read the time", NULL);
    refused(FB_SCOPE(FB_CMD_REPLAY), "--since", "99999999999999999999d", "cannot read the time", NULL, NULL);
    /* the instant a time option hands to PostgreSQL keeps its milliseconds and says UTC */
    char iso[40];
    CHECK_EQ_STR(fb_time_format_iso(t + 250, iso, sizeof iso), "2026-11-27T05:10:00.250Z");
    CHECK_EQ_STR(fb_time_format_iso(INT64_MAX, iso, sizeof iso), "infinity");
}

/* Writes a config file and returns its path (static buffer). */
static const char *config_file(const char *text) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/fb-test-config-XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
        close(fd);
    }
    return path;
}

static void test_precedence(void) {
    fb_config cfg;
    fb_err err;
    const char *file = config_file("# a comment\nconcurrency = 4\nzstd-level = 7\ntrusted-signer = f.pub\n");
    char flag[100];
    snprintf(flag, sizeof flag, "--config=%s", file);
    unsetenv("FB_CONFIG");
    unsetenv("FB_ZSTD_LEVEL");
    unsetenv("FB_TRUSTED_SIGNERS");
    /* file < environment < flag, for each setting on its own */
    setenv("FB_CONCURRENCY", "5", 1);
    CHECK_EQ_INT(parse(&cfg, FB_CFG_WORKER, &err, NULL, NULL, flag, "--concurrency", "6", (char *)NULL), FB_OK);
    CHECK_EQ_INT(cfg.concurrency, 6);
    CHECK_EQ_INT(cfg.zstd_level, 7);
    CHECK_EQ_STR(cfg.trusted_signers, "f.pub");
    fb_config_free(&cfg);
    CHECK_EQ_INT(parse(&cfg, FB_CFG_WORKER, &err, NULL, NULL, flag, (char *)NULL), FB_OK);
    CHECK_EQ_INT(cfg.concurrency, 5);
    fb_config_free(&cfg);
    unsetenv("FB_CONCURRENCY");
    CHECK_EQ_INT(parse(&cfg, FB_CFG_WORKER, &err, NULL, NULL, flag, (char *)NULL), FB_OK);
    CHECK_EQ_INT(cfg.concurrency, 4);
    fb_config_free(&cfg);
    /* the same file named by FB_CONFIG; a list from a higher place replaces, repeated in one place grows */
    setenv("FB_CONFIG", file, 1);
    setenv("FB_TRUSTED_SIGNERS", "e.pub", 1);
    CHECK_EQ_INT(parse(&cfg, FB_CFG_WORKER, &err, NULL, NULL, (char *)NULL), FB_OK);
    CHECK_EQ_INT(cfg.concurrency, 4);
    CHECK_EQ_STR(cfg.trusted_signers, "e.pub");
    fb_config_free(&cfg);
    CHECK_EQ_INT(parse(&cfg, FB_CFG_WORKER, &err, NULL, NULL, "--trusted-signer", "a.pub", "--trusted-signer",
                       "b.pub", (char *)NULL), FB_OK);
    CHECK_EQ_STR(cfg.trusted_signers, "a.pub,b.pub");
    fb_config_free(&cfg);
    unsetenv("FB_CONFIG");
    unsetenv("FB_TRUSTED_SIGNERS");
    /* a bad value names where it came from, the option, the value and what is accepted */
    setenv("FB_CONCURRENCY", "0", 1);
    CHECK_EQ_INT(parse(&cfg, FB_CFG_WORKER, &err, NULL, NULL, (char *)NULL), FB_ERR_USAGE);
    CHECKF(strstr(err.msg, "FB_CONCURRENCY: --concurrency must be 1..64, got \"0\""), "%s", err.msg);
    fb_config_free(&cfg);
    unsetenv("FB_CONCURRENCY");
    unlink(file);
    /* a command option is not a setting: a config file cannot turn on --dry-run or --truncate behind one's back */
    file = config_file("truncate = 1\n");
    snprintf(flag, sizeof flag, "--config=%s", file);
    CHECK_EQ_INT(parse(&cfg, RESTORE, &err, NULL, NULL, flag, (char *)NULL), FB_ERR_USAGE);
    CHECKF(strstr(err.msg, ":1: \"truncate\" is an option of a command"), "%s", err.msg);
    fb_config_free(&cfg);
    unlink(file);
    file = config_file("zstd-level = 30\n");
    snprintf(flag, sizeof flag, "--config=%s", file);
    CHECK_EQ_INT(parse(&cfg, FB_CFG_WORKER, &err, NULL, NULL, flag, (char *)NULL), FB_ERR_USAGE);
    CHECKF(strstr(err.msg, ":1: --zstd-level must be 1..19, got \"30\""), "%s", err.msg);
    fb_config_free(&cfg);
    unlink(file);
}

static void test_help_is_the_table(void) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    fb_config_print_options(RESTORE, f);
    fclose(f);
    static const char *const in[] = {"--jobs N", "--table VALUE", "--chain-dir", "--create", "--no-owner",
                                     "--truncate", "--pg VALUE", "--secret-key", "--log-level debug|info|warn|error",
                                     "1..16, default 1", "FB_PG"};
    static const char *const out[] = {"--dry-run", "--partitions", "--concurrency", "--role"};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) CHECKF(strstr(text, in[i]), "help lacks \"%s\"", in[i]);
    for (size_t i = 0; i < sizeof out / sizeof out[0]; i++)
        CHECKF(!strstr(text, out[i]), "restore's help lists \"%s\", which restore refuses", out[i]);
    free(text);
}

int main(void) {
    test_both_spellings();
    test_bounds_and_numbers();
    test_unknown_and_missing();
    test_flags_and_arguments();
    test_enum();
    test_lists();
    test_times();
    test_precedence();
    test_help_is_the_table();
    return tap_done();
}
