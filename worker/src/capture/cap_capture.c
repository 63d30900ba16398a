/* cap_capture: see cap_capture.h. */
#include "capture/cap_capture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "capture/cap_base.h"
#include "capture/cap_schema.h"
#include "capture/cap_slot.h"
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
    if (rc != FB_OK) {
        cap_capture_free(c);
        return rc;
    }
    FB_INFO("capture %s: streaming slot %s from " CAP_LSN_FMT, o->out.stream, slot, CAP_LSN_ARGS(c->chain_end));
    *out = c;
    return FB_OK;
}

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
    /* Only the pending ones: the idle confirmation of the server's position would confirm t itself. */
    fb_code frc = c->npending ? cap_capture_flush(c, &ferr) : FB_OK;
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

fb_code cap_capture_flush(cap_capture *c, fb_err *err) {
    fb_code rc = FB_OK;
    if (c->npending > 0) {
        char name[CAP_SEG_NAME_MAX];
        uint64_t end;
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
        /* Durable first, confirmed second. Between transactions, everything received is now durable, so the
         * server's position may be confirmed at once (a backup of captured changes waits for it, cap_incr.h). */
        uint64_t upto = end;
        if (cap_stream_between_txns(c->s) && cap_stream_received_lsn(c->s) > upto) upto = cap_stream_received_lsn(c->s);
        return cap_stream_confirm(c->s, upto, err);
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
#define CAP_ASK_MIN_MS 100
static int64_t cap_capture_deadline(const cap_capture *c) {
    return c->oldest_ms + c->o.flush_ms - c->last_write_ms - CAP_HEADROOM_MS;
}

/* A backup of captured changes asked to flush (cap_incr.h): write now rather than at the deadline. Anyone who may
 * connect can ask, so requests make at most one segment per CAP_ASK_MIN_MS; one within it is kept and served when
 * that time is up (the step waits no longer). 1 when a write is due for a request. */
static int cap_capture_asked(cap_capture *c) {
    if (cap_stream_take_flush_request(c->s)) c->ask_kept = 1;
    if (!c->ask_kept || c->npending == 0) {
        c->ask_kept = 0; /* nothing pending: the idle confirmation answers it */
        return 0;
    }
    if (cap_mono_ms() - c->asked_at_ms < CAP_ASK_MIN_MS) return 0;
    c->asked_at_ms = cap_mono_ms();
    c->ask_kept = 0;
    return 1;
}

fb_code cap_capture_step(cap_capture *c, int wait_ms, fb_err *err) {
    cap_txn *t = NULL;
    if (c->npending > 0) { /* wait no longer than the flush deadline, or a kept flush request */
        int64_t left = cap_capture_deadline(c) - cap_mono_ms();
        if (c->ask_kept && c->asked_at_ms + CAP_ASK_MIN_MS - cap_mono_ms() < left)
            left = c->asked_at_ms + CAP_ASK_MIN_MS - cap_mono_ms();
        if (left < wait_ms) wait_ms = left > 0 ? (int)left : 0;
    }
    fb_code rc = cap_stream_next(c->s, wait_ms, &t, err);
    if (rc == FB_OK && t) rc = cap_capture_keep(c, t, err);
    if (rc != FB_OK) return rc;
    int asked = cap_capture_asked(c);
    int due = c->npending == 0 ? 1
                               : (asked || cap_mono_ms() >= cap_capture_deadline(c) ||
                                  c->pending_bytes >= c->o.flush_bytes);
    return due ? cap_capture_flush(c, err) : FB_OK;
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
