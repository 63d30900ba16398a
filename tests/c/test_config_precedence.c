/* test_config_precedence: fb_config's promise (fb_config.h), through its public header only: defaults < config
 * file < environment < flags, whichever order the flags come in and also when --config names the file on the
 * command line; and bounded integers refused outside their bounds, wherever the value comes from, with a message
 * naming the setting, the bounds and the source. Small on purpose: the option parser is being rewritten (issue 14
 * section 2), and what it must keep is this. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fb_config.h"
#include "tap.h"

static char dir[64] = "/tmp/fb_config_XXXXXX";
static char file[128];

static void write_config(const char *text) {
    FILE *f = fopen(file, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* init, then flags argv (NULL-terminated); returns the code and leaves cfg filled (free it). */
static fb_code load(fb_config *cfg, const char *const *flags, fb_err *err) {
    fb_code rc = fb_config_init(cfg, err);
    if (rc || !flags) return rc;
    char *argv[16];
    int argc = 0;
    argv[argc++] = "fusion-backup-worker";
    for (; *flags && argc < 15; flags++) argv[argc++] = (char *)*flags;
    argv[argc] = NULL;
    return fb_config_parse_args(cfg, &argc, argv, FB_CFG_WORKER, NULL, err);
}

static void expect_value(const char *what, const char *const *flags, long long concurrency, const char *prefix) {
    fb_config cfg;
    fb_err err;
    fb_code rc = load(&cfg, flags, &err);
    CHECKF(rc == FB_OK, "%s: %s", what, rc ? err.msg : "");
    if (!rc) {
        CHECKF(cfg.concurrency == concurrency, "%s: concurrency %lld, expected %lld", what, (long long)cfg.concurrency,
               concurrency);
        CHECKF(cfg.topic_prefix && strcmp(cfg.topic_prefix, prefix) == 0, "%s: topic prefix \"%s\", expected \"%s\"",
               what, cfg.topic_prefix ? cfg.topic_prefix : "(null)", prefix);
    }
    fb_config_free(&cfg);
}

static void expect_refused(const char *what, const char *const *flags, const char *fragment) {
    fb_config cfg;
    fb_err err;
    fb_code rc = load(&cfg, flags, &err);
    CHECKF(rc == FB_ERR_USAGE && strstr(err.msg, fragment), "%s: got %d \"%s\", wanted \"%s\"", what, (int)rc,
           rc ? err.msg : "", fragment);
    fb_config_free(&cfg);
}

static void precedence(void) {
    static const char *const none[] = {NULL};
    expect_value("defaults", none, 1, "fusion.");
    write_config("# a comment\nconcurrency = 4\ntopic-prefix = file.\n");
    setenv("FB_CONFIG", file, 1);
    expect_value("file over default", none, 4, "file.");
    setenv("FB_CONCURRENCY", "6", 1);
    expect_value("environment over file", none, 6, "file.");
    setenv("FB_TOPIC_PREFIX", "env.", 1);
    static const char *const flag[] = {"--concurrency", "8", NULL};
    expect_value("flag over environment", flag, 8, "env.");
    static const char *const eq[] = {"--concurrency=9", "--topic-prefix=flag.", NULL};
    expect_value("--name=value over environment", eq, 9, "flag.");
    /* --config on the command line: the file it names still ranks below the environment and below flags, given
     * before or after it. */
    unsetenv("FB_CONFIG");
    static const char *const cfg_flag[] = {"--config", file, NULL};
    expect_value("--config FILE: environment still over file", cfg_flag, 6, "env.");
    static const char *const before[] = {"--concurrency", "8", "--config", file, NULL};
    expect_value("flag before --config FILE still over file", before, 8, "env.");
    static const char *const after[] = {"--config", file, "--concurrency", "8", NULL};
    expect_value("flag after --config FILE over file", after, 8, "env.");
    unsetenv("FB_CONCURRENCY");
    unsetenv("FB_TOPIC_PREFIX");
    expect_value("--config FILE over default", cfg_flag, 4, "file.");
}

static void bounds(void) {
    static const char *const lo[] = {"--concurrency", "1", NULL}, *const hi[] = {"--concurrency", "64", NULL};
    expect_value("lowest bound accepted", lo, 1, "fusion.");
    expect_value("highest bound accepted", hi, 64, "fusion.");
    static const char *const zero[] = {"--concurrency", "0", NULL}, *const big[] = {"--concurrency=65", NULL},
                             *const huge[] = {"--concurrency", "99999999999999999999", NULL},
                             *const word[] = {"--concurrency", "four", NULL},
                             *const neg[] = {"--zstd-level", "-3", NULL}, *const half[] = {"--concurrency", "2.5", NULL};
    expect_refused("flag below the bounds", zero, "--concurrency must be 1..64, got \"0\"");
    expect_refused("flag above the bounds", big, "--concurrency must be 1..64, got \"65\"");
    expect_refused("flag beyond 64 bits", huge, "concurrency must be a whole number");
    expect_refused("flag not a number", word, "concurrency must be a whole number");
    expect_refused("flag not whole", half, "concurrency must be a whole number");
    expect_refused("negative zstd level", neg, "--zstd-level must be 1..19");
    setenv("FB_CONCURRENCY", "65", 1);
    expect_refused("environment above the bounds, named", NULL, "FB_CONCURRENCY: --concurrency must be 1..64");
    unsetenv("FB_CONCURRENCY");
    write_config("concurrency = 0\n");
    setenv("FB_CONFIG", file, 1);
    expect_refused("file below the bounds, with file and line", NULL, ":1: --concurrency must be 1..64");
    write_config("concurrency = 2\nno-such-setting = 1\n");
    expect_refused("unknown setting in the file", NULL, "unknown setting \"no-such-setting\"");
    unsetenv("FB_CONFIG");
}

int main(void) {
    /* Only the variables this test sets: anything else the environment carries stays as it is. */
    unsetenv("FB_CONFIG");
    unsetenv("FB_CONCURRENCY");
    unsetenv("FB_TOPIC_PREFIX");
    unsetenv("FB_ZSTD_LEVEL");
    if (!mkdtemp(dir)) return 1;
    snprintf(file, sizeof file, "%s/worker.conf", dir);
    precedence();
    bounds();
    unlink(file);
    rmdir(dir);
    return tap_done();
}
