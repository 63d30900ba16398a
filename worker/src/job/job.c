/* job: result counters and context helpers shared by all job types. See job.h. */
#include "job/job.h"

#include <string.h>

void job_result_init(job_result *r) {
    memset(r, 0, sizeof *r);
    r->file_size = -1;
}

static ev_stat *job_result_slot(job_result *r, const char *key) {
    for (size_t i = 0; i < r->n_stats; i++)
        if (strcmp(r->stats[i].key, key) == 0) return &r->stats[i];
    if (r->n_stats >= JOB_MAX_STATS) return NULL;
    ev_stat *s = &r->stats[r->n_stats++];
    memset(s, 0, sizeof *s);
    s->key = key;
    return s;
}

void job_result_set(job_result *r, const char *key, int64_t v) {
    ev_stat *s = job_result_slot(r, key);
    if (!s) return;
    s->is_float = 0;
    s->i = v;
}

void job_result_setf(job_result *r, const char *key, double v) {
    ev_stat *s = job_result_slot(r, key);
    if (!s) return;
    s->is_float = 1;
    s->f = v;
}

int64_t job_result_get(const job_result *r, const char *key) {
    for (size_t i = 0; i < r->n_stats; i++)
        if (strcmp(r->stats[i].key, key) == 0) return r->stats[i].is_float ? (int64_t)r->stats[i].f : r->stats[i].i;
    return 0;
}

int job_aborted(const job_ctx *ctx) { return ctx->abort && *ctx->abort; }

void job_report_progress(const job_ctx *ctx, const job_result *so_far) {
    if (ctx->progress) ctx->progress(ctx->progress_opaque, so_far);
}
