/* fb_progress: see fb_progress.h. One mutex guards drawing (tried, never waited for: a thread that finds another
 * drawing just goes on); the counters are atomics so that feeding costs an add, not a lock. */
#include "common/fb_progress.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/fb_json.h"
#include "common/fb_time.h"

#define FP_BAR_EVERY_MS 100 /* at most 10 redraws a second: a terminal is not a log */
#define FP_BAR_WIDTH 24

typedef enum { FP_BAR, FP_LINES, FP_JSON } fp_mode;

struct fb_progress {
    const char *what, *unit;
    fp_mode mode;
    int64_t every_ms, start_ms;
    atomic_llong rows, bytes, items, total_rows, total_bytes, total_items;
    atomic_llong next_ms; /* when the next draw is due */
    atomic_int finished;
    pthread_mutex_t draw;
    size_t last_len; /* of the bar, to blank what a shorter redraw leaves */
};

static _Atomic(fb_progress *) fp_current = NULL;

static int64_t fp_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

fb_progress *fb_progress_new(const fb_config *cfg, const char *what, const char *unit, int json) {
    const char *m = cfg && cfg->progress ? cfg->progress : "auto";
    json = json || (cfg && cfg->log_format && strcmp(cfg->log_format, "json") == 0);
    fp_mode mode;
    if (strcmp(m, "off") == 0) return NULL;
    if (strcmp(m, "bar") == 0) mode = FP_BAR;
    else if (strcmp(m, "lines") == 0) mode = json ? FP_JSON : FP_LINES;
    else mode = isatty(STDERR_FILENO) && !json ? FP_BAR : json ? FP_JSON : FP_LINES; /* auto, or a typo */
    fb_progress *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->what = what;
    p->unit = unit;
    p->mode = mode;
    p->every_ms = mode == FP_BAR ? FP_BAR_EVERY_MS : cfg ? cfg->progress_lines_ms : 10000;
    p->start_ms = fp_now_ms();
    atomic_store(&p->next_ms, p->start_ms + p->every_ms);
    pthread_mutex_init(&p->draw, NULL);
    return p;
}

void fb_progress_total(fb_progress *p, int64_t rows, int64_t bytes, int64_t items) {
    if (!p) return;
    atomic_store(&p->total_rows, rows);
    atomic_store(&p->total_bytes, bytes);
    atomic_store(&p->total_items, items);
}

/* "1:02:03" / "2:03" into out. */
static const char *fp_hms(int64_t s, char *out, size_t cap) {
    if (s >= 3600) snprintf(out, cap, "%lld:%02lld:%02lld", (long long)(s / 3600), (long long)(s / 60 % 60),
                            (long long)(s % 60));
    else snprintf(out, cap, "%lld:%02lld", (long long)(s / 60), (long long)(s % 60));
    return out;
}

/* Appends to line[*n..cap), cutting at the end of the buffer. */
static void fp_add(char *line, size_t cap, size_t *n, const char *fmt, ...) {
    if (*n + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(line + *n, cap - *n, fmt, ap);
    va_end(ap);
    if (w > 0) *n = *n + (size_t)w < cap ? *n + (size_t)w : cap - 1;
}

/* Draws one frame. final: 0 while running, 1 done, 2 stopped. */
static void fp_draw(fb_progress *p, int final) {
    int64_t now = fp_now_ms(), el = now - p->start_ms;
    int64_t rows = atomic_load(&p->rows), bytes = atomic_load(&p->bytes), items = atomic_load(&p->items);
    int64_t trows = atomic_load(&p->total_rows), tbytes = atomic_load(&p->total_bytes);
    int64_t titems = atomic_load(&p->total_items);
    double rate = el > 0 ? (double)bytes * 1000.0 / (double)el : 0; /* bytes/s */
    double frac = -1;
    if (tbytes > 0) frac = (double)bytes / (double)tbytes;
    else if (titems > 0) frac = (double)items / (double)titems;
    if (frac > 1) frac = 1;
    if (final == 1) frac = 1;
    int64_t eta = -1; /* seconds; -1 unknown */
    if (final) eta = 0;
    else if (frac > 0 && el >= 200) eta = (int64_t)((double)el * (1.0 - frac) / frac / 1000.0 + 0.5);
    char b[32], tb[32], r[32], e[32], t[32];
    fb_size_format(bytes, b, sizeof b);
    fb_size_format((int64_t)rate, r, sizeof r);
    if (p->mode == FP_JSON) {
        fputs("{\"progress\":", stderr);
        fb_json_string(stderr, p->what); /* a table name, say: escaped like every JSON string */
        fprintf(stderr, ",\"state\":\"%s\",\"rows\":%lld,\"rows_total\":%lld,\"bytes\":%lld,"
                        "\"bytes_total\":%lld,\"%s\":%lld,\"%s_total\":%lld,\"bytes_per_s\":%.0f,\"elapsed_s\":%.1f,"
                        "\"eta_s\":",
                final == 1 ? "done" : final == 2 ? "stopped" : "running", (long long)rows, (long long)trows,
                (long long)bytes, (long long)tbytes, p->unit, (long long)items, p->unit, (long long)titems, rate,
                (double)el / 1000.0);
        if (eta >= 0) fprintf(stderr, "%lld}\n", (long long)eta);
        else fprintf(stderr, "null}\n");
        fflush(stderr);
        return;
    }
    char line[400];
    size_t n = 0;
    if (p->mode == FP_BAR) {
        char bar[FP_BAR_WIDTH + 1];
        int fill = frac < 0 ? 0 : (int)(frac * FP_BAR_WIDTH + 0.5);
        for (int i = 0; i < FP_BAR_WIDTH; i++) bar[i] = frac < 0 ? '?' : i < fill ? '#' : '.';
        bar[FP_BAR_WIDTH] = '\0';
        fp_add(line, sizeof line, &n, "%s [%s] ", p->what, bar);
    } else {
        fp_add(line, sizeof line, &n, "%s: %s", p->what, final == 1 ? "done, " : final == 2 ? "stopped, " : "");
    }
    if (frac >= 0) fp_add(line, sizeof line, &n, "%3d%% ", (int)(frac * 100));
    if (titems > 0) fp_add(line, sizeof line, &n, "%lld/%lld %s, ", (long long)items, (long long)titems, p->unit);
    if (trows > 0) fp_add(line, sizeof line, &n, "%lld/%lld rows, ", (long long)rows, (long long)trows);
    else fp_add(line, sizeof line, &n, "%lld rows, ", (long long)rows);
    if (tbytes > 0) fp_add(line, sizeof line, &n, "%s of %s, ", b, fb_size_format(tbytes, tb, sizeof tb));
    else fp_add(line, sizeof line, &n, "%s, ", b);
    fp_add(line, sizeof line, &n, "%s/s, %s %s", r, final ? "took" : "ETA",
           final ? fp_hms(el / 1000, t, sizeof t) : eta >= 0 ? fp_hms(eta, e, sizeof e) : "?");
    if (p->mode == FP_BAR) {
        /* \r, the frame, and spaces over what a longer previous frame left; a newline only at the end. */
        size_t pad = p->last_len > n ? p->last_len - n : 0;
        fprintf(stderr, "\r%s%*s%s", line, (int)pad, "", final ? "\n" : "");
        p->last_len = n;
    } else {
        fprintf(stderr, "%s\n", line);
    }
    fflush(stderr);
}

/* Draws if a frame is due and nobody else is drawing. */
static void fp_maybe_draw(fb_progress *p) {
    long long now = fp_now_ms(), due = atomic_load(&p->next_ms); /* long long: the type of atomic_llong */
    if (now < due || atomic_load(&p->finished)) return;
    if (pthread_mutex_trylock(&p->draw) != 0) return;
    if (!atomic_load(&p->finished) && atomic_compare_exchange_strong(&p->next_ms, &due, now + p->every_ms))
        fp_draw(p, 0);
    pthread_mutex_unlock(&p->draw);
}

void fb_progress_update(fb_progress *p, int64_t rows, int64_t bytes, int64_t items, int64_t items_total) {
    if (!p) return;
    atomic_store(&p->rows, rows);
    atomic_store(&p->bytes, bytes);
    atomic_store(&p->items, items);
    if (items_total > 0) atomic_store(&p->total_items, items_total);
    fp_maybe_draw(p);
}

void fb_progress_attach(fb_progress *p) { atomic_store(&fp_current, p); }

void fb_progress_data(const void *buf, size_t len) {
    fb_progress *p = atomic_load(&fp_current);
    if (!p || !len) return;
    int64_t nl = 0;
    for (const char *s = buf, *end = s + len; (s = memchr(s, '\n', (size_t)(end - s))) != NULL; s++) nl++;
    atomic_fetch_add(&p->rows, nl);
    atomic_fetch_add(&p->bytes, (long long)len);
    fp_maybe_draw(p);
}

void fb_progress_item(void) {
    fb_progress *p = atomic_load(&fp_current);
    if (!p) return;
    atomic_fetch_add(&p->items, 1);
    fp_maybe_draw(p);
}

void fb_progress_done(fb_progress *p, int ok) {
    if (!p) return;
    fb_progress *self = p;
    atomic_compare_exchange_strong(&fp_current, &self, NULL);
    pthread_mutex_lock(&p->draw);
    if (!atomic_exchange(&p->finished, 1)) fp_draw(p, ok ? 1 : 2);
    pthread_mutex_unlock(&p->draw);
}

void fb_progress_free(fb_progress *p) {
    if (!p) return;
    fb_progress *self = p;
    atomic_compare_exchange_strong(&fp_current, &self, NULL);
    pthread_mutex_destroy(&p->draw);
    free(p);
}
