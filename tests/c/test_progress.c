/* test_progress: fb_progress's output when stderr is not a terminal (a file here): plain lines at the interval,
 * never a carriage return, a final "done" line with the totals; JSON lines with --log-format json; nothing at all
 * with --progress off; fb_progress_data counts COPY rows by their newlines, and only for an attached display. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/fb_progress.h"
#include "tap.h"

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs body with stderr going to a temporary file; returns what was written (caller frees). */
static char *capture_stderr(void (*body)(const fb_config *), const fb_config *cfg) {
    fflush(stderr);
    int saved = dup(2);
    FILE *tmp = tmpfile();
    dup2(fileno(tmp), 2);
    body(cfg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fseek(tmp, 0, SEEK_END);
    long n = ftell(tmp);
    rewind(tmp);
    char *out = calloc(1, (size_t)n + 1);
    if (out && n > 0 && fread(out, 1, (size_t)n, tmp) != (size_t)n) out[0] = '\0';
    fclose(tmp);
    return out;
}

static void run_restore_like(const fb_config *cfg) {
    fb_progress *p = fb_progress_new(cfg, "restore", "tables", 0);
    fb_progress_total(p, 4, 16, 2);
    fb_progress_attach(p);
    fb_progress_data("a\tb\nc\td\n", 8); /* two COPY rows */
    sleep_ms(150);
    fb_progress_item();
    fb_progress_data("e\tf\ng\th\n", 8);
    sleep_ms(150);
    fb_progress_item();
    fb_progress_done(p, 1);
    fb_progress_data("x\n", 2); /* detached by done: counts nowhere */
    fb_progress_free(p);
}

static void run_backup_like(const fb_config *cfg) {
    fb_progress *p = fb_progress_new(cfg, "backup", "tables", 0);
    fb_progress_update(p, 10, 100, 0, 3);
    sleep_ms(150);
    fb_progress_update(p, 20, 200, 1, 0);
    fb_progress_done(p, 0);
    fb_progress_free(p);
}

int main(void) {
    fb_config cfg;
    fb_err err;
    CHECK(fb_config_init(&cfg, &err) == FB_OK);
    free(cfg.progress);
    cfg.progress = strdup("auto"); /* stderr is a file below: lines */
    cfg.progress_lines_ms = 100;

    char *out = capture_stderr(run_restore_like, &cfg);
    CHECKF(out && !strchr(out, '\r'), "a carriage return in lines mode: %s", out ? out : "");
    CHECKF(out && strstr(out, "restore: ") && strstr(out, " 1/2 tables, 2/4 rows, "), "no running line: %s", out);
    CHECKF(out && strstr(out, "restore: done, 100% 2/2 tables, 4/4 rows, 16 B of 16 B, "), "no final line: %s", out);
    CHECKF(out && strstr(out, "/s, ETA "), "no rate or ETA: %s", out);
    CHECKF(out && strstr(out, "took 0:00\n"), "the final line says how long: %s", out);
    free(out);

    /* A backup knows its tables, not its bytes: the ETA comes from tables; a failure says "stopped". */
    out = capture_stderr(run_backup_like, &cfg);
    CHECKF(out && strstr(out, "backup: stopped,  33% 1/3 tables, 20 rows, 200 B, "), "stopped line: %s", out);
    free(out);

    free(cfg.log_format);
    cfg.log_format = strdup("json");
    out = capture_stderr(run_restore_like, &cfg);
    CHECKF(out && strstr(out, "{\"progress\":\"restore\",\"state\":\"running\",") &&
               strstr(out, "{\"progress\":\"restore\",\"state\":\"done\",\"rows\":4,\"rows_total\":4,\"bytes\":16,"
                           "\"bytes_total\":16,\"tables\":2,\"tables_total\":2,"),
           "JSON lines: %s", out);
    free(out);

    free(cfg.progress);
    cfg.progress = strdup("off");
    CHECK(fb_progress_new(&cfg, "restore", "tables", 0) == NULL);
    out = capture_stderr(run_restore_like, &cfg);
    CHECKF(out && out[0] == '\0', "progress off still wrote: %s", out ? out : "");
    free(out);
    fb_config_free(&cfg);
    return tap_done();
}
