/* cap_capture: see cap_capture.h. */
#include "capture/cap_capture.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fb_log.h"

#define CAP_DEFAULT_FLUSH_BYTES ((size_t)64 << 20)

struct cap_capture {
    cap_stream *s;
    cap_capture_opts o;
    uint64_t chain_end;
    cap_txn **pending;
    size_t npending, cap, pending_bytes;
    int64_t oldest_ms;      /* when the oldest pending transaction arrived */
    int64_t last_write_ms;  /* how long the last segment took to become durable */
    uint64_t dropped;
};

static int64_t cap_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

fb_code cap_capture_begin(cap_stream *s, const cap_capture_opts *o, const char *slot, const char *pub,
                          uint64_t base_lsn, cap_capture **out, fb_err *err) {
    *out = NULL;
    cap_capture *c = calloc(1, sizeof *c);
    if (!c) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    c->s = s;
    c->o = *o;
    if (!c->o.flush_bytes) c->o.flush_bytes = CAP_DEFAULT_FLUSH_BYTES;
    cap_seg_in in = {.stream = o->out.stream, .signers = o->signers};
    fb_code rc = cap_segment_chain(o->st, o->dir, &in, base_lsn, NULL, NULL, &c->chain_end, err);
    if (rc == FB_OK) rc = cap_stream_start(s, slot, pub, c->chain_end, err);
    if (rc != FB_OK) {
        free(c);
        return rc;
    }
    FB_INFO("capture %s: streaming slot %s from " CAP_LSN_FMT, o->out.stream, slot, CAP_LSN_ARGS(c->chain_end));
    *out = c;
    return FB_OK;
}

static fb_code cap_capture_keep(cap_capture *c, cap_txn *t, fb_err *err) {
    if (t->commit_lsn < c->chain_end) { /* re-sent: a durable segment holds it */
        c->dropped++;
        cap_txn_free(t);
        return FB_OK;
    }
    if (c->npending == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        cap_txn **p = realloc(c->pending, cap * sizeof *p);
        if (!p) {
            cap_txn_free(t);
            return fb_err_set(err, FB_ERR_NOMEM, "out of memory holding captured transactions");
        }
        c->pending = p;
        c->cap = cap;
    }
    if (c->npending == 0) c->oldest_ms = cap_mono_ms();
    c->pending[c->npending++] = t;
    c->pending_bytes += t->bytes;
    return FB_OK;
}

fb_code cap_capture_flush(cap_capture *c, fb_err *err) {
    fb_code rc = FB_OK;
    if (c->npending > 0) {
        char name[CAP_SEG_NAME_MAX];
        uint64_t end;
        int64_t t0 = cap_mono_ms();
        rc = cap_segment_write(c->o.st, c->o.dir, &c->o.out, c->chain_end, c->pending, c->npending, name, &end, err);
        c->last_write_ms = cap_mono_ms() - t0;
        if (rc != FB_OK) return rc; /* pending kept: the next flush retries, the slot still holds them */
        FB_INFO("capture %s: segment %s, %zu transactions, %zu bytes in memory", c->o.out.stream, name, c->npending,
                c->pending_bytes);
        for (size_t i = 0; i < c->npending; i++) cap_txn_free(c->pending[i]);
        c->npending = 0;
        c->pending_bytes = 0;
        c->chain_end = end;
        return cap_stream_confirm(c->s, end, err); /* durable first, confirmed second */
    }
    /* Nothing pending: everything the server has decoded up to its reported position is durable. */
    if (cap_stream_between_txns(c->s) && cap_stream_received_lsn(c->s) > cap_stream_confirmed_lsn(c->s))
        rc = cap_stream_confirm(c->s, cap_stream_received_lsn(c->s), err);
    return rc;
}

/* When the pending transactions must be written so that the oldest is durable flush_ms after it arrived: the
 * write itself takes time (the last one's duration) and a transaction reaches us a little after its commit, so
 * the segment is started that much earlier (CAP_HEADROOM_MS for the decoding delay). */
#define CAP_HEADROOM_MS 250
static int64_t cap_capture_deadline(const cap_capture *c) {
    return c->oldest_ms + c->o.flush_ms - c->last_write_ms - CAP_HEADROOM_MS;
}

fb_code cap_capture_step(cap_capture *c, int wait_ms, fb_err *err) {
    cap_txn *t = NULL;
    if (c->npending > 0) { /* wait no longer than the flush deadline */
        int64_t left = cap_capture_deadline(c) - cap_mono_ms();
        if (left < wait_ms) wait_ms = left > 0 ? (int)left : 0;
    }
    fb_code rc = cap_stream_next(c->s, wait_ms, &t, err);
    if (rc == FB_OK && t) rc = cap_capture_keep(c, t, err);
    if (rc != FB_OK) return rc;
    int due = c->npending == 0 ? 1
                               : (cap_mono_ms() >= cap_capture_deadline(c) || c->pending_bytes >= c->o.flush_bytes);
    return due ? cap_capture_flush(c, err) : FB_OK;
}

uint64_t cap_capture_chain_end(const cap_capture *c) { return c->chain_end; }
size_t cap_capture_pending(const cap_capture *c) { return c->npending; }
uint64_t cap_capture_dropped(const cap_capture *c) { return c->dropped; }

void cap_capture_free(cap_capture *c) {
    if (!c) return;
    for (size_t i = 0; i < c->npending; i++) cap_txn_free(c->pending[i]);
    free(c->pending);
    free(c);
}
