/* cap_capture: see cap_capture.h. */
#include "capture/cap_capture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "capture/cap_base.h"
#include "capture/cap_schema.h"
#include "capture/cap_slot.h"
#include "capture/cap_tip.h"
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
    int64_t asked_at_ms;    /* when the last segment written on a flush request was started */
    int ask_kept;           /* a request that came within CAP_ASK_MIN_MS of the last one, not served yet */
    uint64_t dropped;
    cap_schema *schema;
    const cap_rel **checked; /* definitions already checked against the schema (the stream's relset owns them) */
    size_t nchecked, checked_cap;
    /* The tip (cap_tip.h). proven: how far the chain and its durable tip prove the stream complete; the slot is
     * never confirmed past it. */
    uint64_t proven;
    cap_tip tip;                                   /* the durable tip (tip.to_lsn 0: none) */
    char tip_old[CAP_TIP_MAX_FILES][CAP_TIP_NAME_MAX]; /* tip files to remove once a newer one is durable */
    size_t ntip_old;
    uint64_t mark_lsn;      /* the last commit the stream decoded (cap_stream_last_commit) ... */
    int64_t mark_ms;        /* ... and when it arrived: the age of the newest server commit time known */
    int64_t hb_at_ms;       /* when the heartbeat now awaited was sent (0: none) */
    int64_t tip_at_ms;      /* when the last tip was written */
    int hb_seen;            /* a heartbeat's commit arrived since the last one was sent */
    int hb_warned;
};

static int64_t cap_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The slot must still hold what follows the chain, and the chain must not have ended. */
static fb_code cap_capture_safe(cap_capture *c, cap_stream *s, const char *slot, fb_err *err) {
    cap_slot_health h;
    uint64_t at;
    const char *why;
    fb_code rc = cap_stream_slot_health(s, slot, &h, err);
    if (rc == FB_OK) rc = cap_slot_usable(&h, cap_stream_dbname(s), slot, err);
    if (rc == FB_OK && strcmp(h.wal_status, "unreserved") == 0)
        FB_WARN("capture %s: slot %s is about to be invalidated (wal_status unreserved: it holds more WAL than "
                "max_slot_wal_keep_size; %lld bytes left)", c->o.out.stream, slot, (long long)h.safe_wal_size);
    if (rc == FB_OK) rc = cap_schema_load(c->o.st, c->o.dir, c->o.out.stream, c->o.signers, &c->schema, err);
    if (rc == FB_OK && cap_schema_ended(c->schema, &at, &why))
        rc = fb_err_set(err, FB_ERR_CONFLICT, "chain %s ended before the transaction committing at " CAP_LSN_FMT ": %s; "
                        CAP_NEW_BASE_HINT, c->o.out.stream, CAP_LSN_ARGS(at), why);
    return rc;
}

/* The chain's durable tip, if one counts (it extends what is proven), and the tip files to remove later. */
static fb_code cap_capture_load_tip(cap_capture *c, fb_err *err) {
    cap_tip_found f;
    fb_code rc = cap_tip_find(c->o.st, c->o.dir, c->o.out.stream, c->o.signers, c->chain_end, &f, err);
    if (rc != FB_OK) return rc;
    /* Segments at the chain's end are gone: continuing would write the next segment over the hole, and the next
     * tip would remove the evidence. */
    if (f.ahead)
        return fb_err_set(err, FB_ERR_VERIFY, "chain %s: %s; put them back from a copy, or take a new base under a "
                          "new slot name (nothing was streamed)", c->o.out.stream, f.problem);
    if (f.problem[0]) FB_WARN("capture %s: %s", c->o.out.stream, f.problem);
    c->proven = c->chain_end;
    if (f.state == CAP_TIP_VALID) {
        c->tip = f.tip;
        c->proven = f.tip.to_lsn;
    }
    for (size_t i = 0; i < f.n_names; i++) snprintf(c->tip_old[i], CAP_TIP_NAME_MAX, "%s", f.names[i]);
    c->ntip_old = f.n_names;
    return FB_OK;
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
    fb_code rc = cap_capture_safe(c, s, slot, err);
    if (rc == FB_OK) rc = cap_segment_chain(o->st, o->dir, &in, base_lsn, NULL, NULL, &c->chain_end, err);
    if (rc == FB_OK && c->chain_end != base_lsn && !cap_schema_from_file(c->schema))
        rc = fb_err_set(err, FB_ERR_VERIFY, "chain %s has segments but no %s (it is written before the first segment): "
                        "removed? Without it a schema change could not be detected; restore it from a copy, or "
                        "start a new base", o->out.stream, CAP_SCHEMA_FILE);
    if (rc == FB_OK) rc = cap_stream_start(s, slot, pub, c->chain_end, err);
    /* Read the chain's end again now that this stream holds the slot (no other walsender can): a previous
     * leader's last segment may have landed in between, and the next segment must start at its end. What the
     * server re-sends below the new end is dropped by cap_capture_keep. */
    uint64_t end_now = c->chain_end;
    if (rc == FB_OK) rc = cap_segment_chain(o->st, o->dir, &in, base_lsn, NULL, NULL, &end_now, err);
    if (rc == FB_OK && end_now != c->chain_end) {
        FB_INFO("capture %s: the chain grew to " CAP_LSN_FMT " while the slot was being taken (a previous writer's "
                "last segment)", o->out.stream, CAP_LSN_ARGS(end_now));
        c->chain_end = end_now;
    }
    if (rc == FB_OK) rc = cap_capture_load_tip(c, err);
    if (rc != FB_OK) {
        cap_capture_free(c);
        return rc;
    }
    FB_INFO("capture %s: streaming slot %s from " CAP_LSN_FMT "%s", o->out.stream, slot, CAP_LSN_ARGS(c->chain_end),
            c->tip.to_lsn ? " (its tip proves it complete further)" : "");
    *out = c;
    return FB_OK;
}

static fb_code cap_capture_write(cap_capture *c, fb_err *err);

/* Checks one definition once per decoded Relation message (the pointer identifies it). */
static fb_code cap_capture_check_rel(cap_capture *c, const cap_rel *rel, uint64_t at, fb_err *err) {
    for (size_t i = 0; i < c->nchecked; i++)
        if (c->checked[i] == rel) return FB_OK;
    fb_code rc = cap_schema_check(c->schema, rel, at, err);
    if (rc != FB_OK) return rc;
    if (c->nchecked == c->checked_cap) {
        size_t cap = c->checked_cap ? c->checked_cap * 2 : 32;
        const cap_rel **p = realloc(c->checked, cap * sizeof *p);
        if (!p) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        c->checked = p;
        c->checked_cap = cap;
    }
    c->checked[c->nchecked++] = rel;
    return FB_OK;
}

/* Every definition t uses. On a changed one the chain ends before t: what is pending (all committed before t) is
 * written and confirmed, the end recorded, and the reason returned. */
static fb_code cap_capture_check_txn(cap_capture *c, const cap_txn *t, fb_err *err) {
    fb_code rc = FB_OK;
    const cap_rel *bad = NULL;
    for (size_t i = 0; rc == FB_OK && i < t->nchanges; i++) {
        const cap_change *ch = &t->changes[i];
        if (ch->kind != CAP_TRUNCATE) rc = cap_capture_check_rel(c, bad = ch->rel, t->commit_lsn, err);
        for (uint32_t k = 0; rc == FB_OK && ch->kind == CAP_TRUNCATE && k < ch->ntrunc; k++)
            rc = cap_capture_check_rel(c, bad = ch->trunc_rels[k], t->commit_lsn, err);
    }
    if (rc != FB_ERR_CONFLICT) return rc;
    fb_err why = *err, ferr;
    /* Only the pending ones: a tip to the server's position would claim t's range, t included. */
    fb_code frc = c->npending ? cap_capture_write(c, &ferr) : FB_OK;
    if (frc == FB_OK) frc = cap_schema_end(c->schema, t->commit_lsn, bad->relid, why.msg, &ferr);
    if (frc == FB_OK) frc = cap_schema_save(c->schema, c->o.st, c->o.dir, c->o.out.signer, &ferr);
    if (frc != FB_OK) /* not recorded: the slot still holds everything after the chain's end, so a retry finds it again */
        return fb_err_set(err, frc, "%s; and recording the chain's end failed: %s", why.msg, ferr.msg);
    FB_ERROR("capture %s: chain ended at " CAP_LSN_FMT ": %s", c->o.out.stream, CAP_LSN_ARGS(c->chain_end), why.msg);
    return fb_err_set(err, FB_ERR_CONFLICT, "chain %s ended at " CAP_LSN_FMT ": %s; " CAP_NEW_BASE_HINT, c->o.out.stream,
                      CAP_LSN_ARGS(c->chain_end), why.msg);
}

static fb_code cap_capture_keep(cap_capture *c, cap_txn *t, fb_err *err) {
    if (t->commit_lsn < c->chain_end) { /* re-sent: a durable segment holds it */
        c->dropped++;
        cap_txn_free(t);
        return FB_OK;
    }
    fb_code rc = cap_capture_check_txn(c, t, err);
    if (rc != FB_OK) {
        cap_txn_free(t);
        return rc;
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

/* Writes the pending transactions as one segment and confirms its end (a segment proves nothing past it; a tip
 * written afterwards may). */
static fb_code cap_capture_write(cap_capture *c, fb_err *err) {
    char name[CAP_SEG_NAME_MAX];
    uint64_t end;
    fb_code rc = FB_OK;
    if (c->o.fence && c->o.fence(c->o.fence_opaque))
        return fb_err_set(err, FB_ERR_ABORTED, "capture %s: leadership lost; %zu pending transactions not written "
                          "(the slot still holds them for the next leader)", c->o.out.stream, c->npending);
    /* The definitions a segment's changes use are recorded first, so no restart can meet them unrecorded. */
    if (cap_schema_dirty(c->schema)) rc = cap_schema_save(c->schema, c->o.st, c->o.dir, c->o.out.signer, err);
    if (rc != FB_OK) return rc;
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
    c->proven = end; /* the tip, from the old end, is stale now; its transactions committed past its end */
    return cap_stream_confirm(c->s, end, err); /* durable first, confirmed second */
}

/* The tip (cap_tip.h): nothing is pending and the stream is between transactions, so every transaction that
 * committed before the server's reported position is in a durable segment. Written durably from the chain's end
 * to that position with the latest server commit time the stream decoded, then that position is confirmed:
 * never before the proof is durable, so a restart streams from where the proof ends. A tip that cannot be
 * written is logged and confirms nothing (the next one retries); only a lost lead stops the capture. */
static fb_code cap_capture_tip(cap_capture *c, fb_err *err) {
    cap_tip t = {.from_lsn = c->chain_end, .to_lsn = cap_stream_received_lsn(c->s)};
    cap_stream_last_commit(c->s, &t.mark_lsn, &t.time_us);
    int old_counts = c->tip.to_lsn && c->tip.from_lsn == c->chain_end;
    if (t.mark_lsn > t.to_lsn || (old_counts && c->tip.time_us > t.time_us)) { /* keep the later proven time */
        t.mark_lsn = old_counts ? c->tip.mark_lsn : 0;
        t.time_us = old_counts ? c->tip.time_us : 0;
    }
    if (t.to_lsn <= c->proven || t.to_lsn <= t.from_lsn) return FB_OK; /* nothing new to prove */
    if (c->o.fence && c->o.fence(c->o.fence_opaque))
        return fb_err_set(err, FB_ERR_ABORTED, "capture %s: leadership lost; no tip written", c->o.out.stream);
    char name[CAP_TIP_NAME_MAX];
    fb_err werr;
    if (cap_tip_write(c->o.st, c->o.dir, c->o.out.stream, c->o.out.signer, &t, name, &werr) != FB_OK) {
        FB_WARN("capture %s: %s (the window stays at the last durable proof; retried)", c->o.out.stream, werr.msg);
        return FB_OK;
    }
    for (size_t i = 0; i < c->ntip_old; i++) {
        char rel[1300];
        snprintf(rel, sizeof rel, "%s/%s", c->o.dir, c->tip_old[i]);
        if (strcmp(c->tip_old[i], name) != 0 && stor_remove(c->o.st, rel, &werr) != FB_OK && werr.code != FB_ERR_NOTFOUND)
            FB_WARN("capture %s: could not remove the old tip %s: %s", c->o.out.stream, c->tip_old[i], werr.msg);
    }
    snprintf(c->tip_old[0], CAP_TIP_NAME_MAX, "%s", name);
    c->ntip_old = 1;
    c->tip = t;
    c->proven = t.to_lsn;
    c->tip_at_ms = cap_mono_ms();
    FB_DEBUG("capture %s: tip %s (commit time %lld us)", c->o.out.stream, name, (long long)t.time_us);
    return cap_stream_confirm(c->s, t.to_lsn, err);
}

fb_code cap_capture_flush(cap_capture *c, fb_err *err) {
    fb_code rc = c->npending > 0 ? cap_capture_write(c, err) : FB_OK;
    if (rc == FB_OK && cap_stream_between_txns(c->s)) rc = cap_capture_tip(c, err);
    return rc;
}

/* When the pending transactions must be written so that the oldest is durable flush_ms after it arrived: the
 * write itself takes time (the last one's duration) and a transaction reaches us a little after its commit, so
 * the segment is started that much earlier (CAP_HEADROOM_MS for the decoding delay). */
#define CAP_HEADROOM_MS 250
#define CAP_ASK_MIN_MS 100
static int64_t cap_capture_deadline(const cap_capture *c) {
    return c->oldest_ms + c->o.flush_ms - c->last_write_ms - CAP_HEADROOM_MS;
}

/* A backup of captured changes asked to flush (cap_incr.h): write now (a segment if anything is pending, a tip for
 * the rest) rather than at the deadline. Anyone who may connect can ask, so requests make at most one write per
 * CAP_ASK_MIN_MS; one within it is kept and served when that time is up (the step waits no longer). 1 when a
 * write is due for a request. */
static int cap_capture_asked(cap_capture *c) {
    if (cap_stream_take_flush_request(c->s)) c->ask_kept = 1;
    if (!c->ask_kept || cap_mono_ms() - c->asked_at_ms < CAP_ASK_MIN_MS) return 0;
    c->asked_at_ms = cap_mono_ms();
    c->ask_kept = 0;
    return 1;
}

/* Sends a heartbeat so the stream brings a fresh server commit time; 0 when none can be sent (said once per
 * failure streak: the tip then carries the last commit time the stream saw). */
static int cap_capture_heartbeat(cap_capture *c) {
    fb_err e;
    if (cap_stream_heartbeat(c->s, &e) == FB_OK) {
        c->hb_warned = 0;
        return 1;
    }
    if (!c->hb_warned)
        FB_WARN("capture %s: %s; the chain's tip carries the last commit time seen instead, so on a quiet database the "
                "recoverable window's time advances only with commits (its LSN still does)", c->o.out.stream, e.msg);
    c->hb_warned = 1;
    return 0;
}

/* Nothing pending. A flush request gets a tip at once. Once the newest server commit time the stream brought is
 * flush_ms old (a quiet publication), a heartbeat is sent, and the tip is written when its commit arrived (or
 * flush_ms later without it): so the window's end lags the server's clock by at most about flush_ms, with one
 * heartbeat and one tip per flush_ms. When commits that hold no change keep the time fresh (someone else's
 * heartbeats), a tip still goes every flush_ms while the position moves, so nobody can hold the window and the
 * slot back. Without heartbeats (PostgreSQL 13, no permission) a tip goes every flush_ms with the last time known. */
static fb_code cap_capture_idle(cap_capture *c, int asked, fb_err *err) {
    if (!cap_stream_between_txns(c->s)) return FB_OK;
    int64_t now = cap_mono_ms();
    if (asked) return cap_capture_tip(c, err);
    if (c->hb_at_ms) {
        if (!c->hb_seen && now - c->hb_at_ms < c->o.flush_ms) return FB_OK;
        c->hb_at_ms = 0;
        return cap_capture_tip(c, err);
    }
    if (now - c->mark_ms < c->o.flush_ms) {
        if (now - c->tip_at_ms < c->o.flush_ms) return FB_OK;
        c->tip_at_ms = now; /* checked now, written or not (nothing new): the next check in flush_ms */
        return cap_capture_tip(c, err);
    }
    c->hb_seen = 0;
    if (cap_capture_heartbeat(c)) {
        c->hb_at_ms = now;
        return FB_OK;
    }
    c->mark_ms = now;
    return cap_capture_tip(c, err);
}

/* How long the next wait may last: no longer than the flush deadline, a kept flush request or a due tip. */
static int cap_capture_wait_ms(const cap_capture *c, int wait_ms) {
    int64_t now = cap_mono_ms(), left = wait_ms;
    if (c->npending > 0 && cap_capture_deadline(c) - now < left) left = cap_capture_deadline(c) - now;
    if (c->ask_kept && c->asked_at_ms + CAP_ASK_MIN_MS - now < left) left = c->asked_at_ms + CAP_ASK_MIN_MS - now;
    int64_t due = c->mark_ms > c->tip_at_ms ? c->tip_at_ms : c->mark_ms; /* the earlier of the two clocks */
    if (c->npending == 0 && !c->hb_at_ms && cap_stream_between_txns(c->s) && due + c->o.flush_ms - now < left)
        left = due + c->o.flush_ms - now;
    return left > 0 ? (int)left : 0;
}

fb_code cap_capture_step(cap_capture *c, int wait_ms, fb_err *err) {
    cap_txn *t = NULL;
    fb_code rc = cap_stream_next(c->s, cap_capture_wait_ms(c, wait_ms), &t, err);
    if (rc == FB_OK && t) rc = cap_capture_keep(c, t, err);
    if (rc != FB_OK) return rc;
    int asked = cap_capture_asked(c);
    if (cap_stream_take_heartbeat(c->s)) c->hb_seen = 1; /* taken every step: the stream would wake at once again */
    uint64_t mark;
    int64_t mark_us;
    cap_stream_last_commit(c->s, &mark, &mark_us);
    if (mark != c->mark_lsn) {
        c->mark_lsn = mark;
        c->mark_ms = cap_mono_ms();
    }
    if (c->npending == 0) return cap_capture_idle(c, asked, err);
    if (!asked && cap_mono_ms() < cap_capture_deadline(c) && c->pending_bytes < c->o.flush_bytes) return FB_OK;
    rc = cap_capture_write(c, err);
    /* A flush request asks for everything up to its own commit: past the segment's end, a tip proves the rest. */
    if (rc == FB_OK && asked && cap_stream_between_txns(c->s)) rc = cap_capture_tip(c, err);
    return rc;
}

fb_code cap_capture_base(stor *st, const char *dir, cap_stream *s, const char *slot, uint64_t *base, fb_err *err) {
    fb_code rc = cap_base_chain_first(st, dir, base, err); /* no folder yet: no segment, so 0 */
    if (rc == FB_OK && *base == 0) rc = cap_stream_slot_position(s, slot, base, err);
    return rc;
}

fb_code cap_capture_names(const char *storage_path, const char *db, const char *slot, char stream[CAP_SEG_STREAM_MAX + 1],
                          char *dir, size_t dir_cap, fb_err *err) {
    int plain = db && *db;
    for (const char *p = db; plain && *p; p++) plain = (unsigned char)*p >= 0x20 && *p != 0x7f && *p != '"' && *p != '\\';
    if (!plain || strchr(db, '/') || strcmp(db, ".") == 0 || strcmp(db, "..") == 0 ||
        strlen(db) + 1 + strlen(slot) > CAP_SEG_STREAM_MAX)
        return fb_err_set(err, FB_ERR_USAGE, "database \"%s\" cannot name a capture chain: it must be non-empty, "
                          "without '/', '\"', '\\' or control characters, and with the slot name at most %d characters",
                          db ? db : "", CAP_SEG_STREAM_MAX - 1);
    snprintf(stream, CAP_SEG_STREAM_MAX + 1, "%s/%s", db, slot);
    if ((size_t)snprintf(dir, dir_cap, "%s/capture/%s", storage_path, stream) >= dir_cap)
        return fb_err_set(err, FB_ERR_USAGE, "capture storage path \"%s\" is too long", storage_path);
    return FB_OK;
}

uint64_t cap_capture_chain_end(const cap_capture *c) { return c->chain_end; }
size_t cap_capture_pending(const cap_capture *c) { return c->npending; }
uint64_t cap_capture_dropped(const cap_capture *c) { return c->dropped; }

void cap_capture_free(cap_capture *c) {
    if (!c) return;
    for (size_t i = 0; i < c->npending; i++) cap_txn_free(c->pending[i]);
    free(c->pending);
    free(c->checked);
    cap_schema_free(c->schema);
    free(c);
}
