/* cap_pgoutput: see cap_pgoutput.h for the design of change capture and what this decoder accepts.
 * Message layouts: PostgreSQL documentation, "Logical Replication Message Formats" (protocol version 1). */
#include "capture/cap_pgoutput.h"

#include <stdlib.h>
#include <string.h>

#include "capture/cap_wire.h"
#include "common/fb_log.h"

struct cap_decoder {
    cap_relset rels;
    cap_txn *cur;            /* between Begin and Commit */
    uint64_t last_end_lsn;   /* of the last Commit: commits must come in LSN order */
    int flush_asked;         /* a CAP_FLUSH_PREFIX message arrived (cap_decoder_take_flush) */
    int flush_in_txn;        /* ... inside the current transaction: asked when it commits */
    int heartbeat_in_txn;    /* a CAP_HEARTBEAT_PREFIX message inside the current transaction */
    int heartbeat_seen;      /* ... whose transaction committed (cap_decoder_take_heartbeat) */
    int64_t last_commit_us;  /* the commit time of the last Commit decoded (last_end_lsn is its end) */
};

cap_decoder *cap_decoder_new(void) { return calloc(1, sizeof(cap_decoder)); }

void cap_decoder_free(cap_decoder *d) {
    if (!d) return;
    cap_txn_free(d->cur);
    cap_relset_clear(&d->rels);
    free(d);
}

const cap_relset *cap_decoder_relset(const cap_decoder *d) { return &d->rels; }

int cap_decoder_in_txn(const cap_decoder *d) { return d->cur != NULL; }

/* ---- Begin / Commit ------------------------------------------------------------------------------------------ */

static fb_code dec_begin(cap_decoder *d, cap_rd *r, uint64_t at, fb_err *err) {
    uint64_t final_lsn = cap_rd_u64(r);
    int64_t ts = (int64_t)cap_rd_u64(r);
    uint32_t xid = cap_rd_u32(r);
    if (r->bad) return fb_err_set(err, FB_ERR_FORMAT, "pgoutput Begin at " CAP_LSN_FMT " is truncated", CAP_LSN_ARGS(at));
    if (d->cur)
        return fb_err_set(err, FB_ERR_FORMAT, "pgoutput Begin of xid %u at " CAP_LSN_FMT " inside transaction %u",
                          xid, CAP_LSN_ARGS(at), d->cur->xid);
    d->cur = cap_txn_new();
    if (!d->cur) return fb_err_set(err, FB_ERR_NOMEM, "out of memory for a transaction");
    d->cur->xid = xid;
    d->cur->commit_lsn = final_lsn;
    d->cur->commit_time_us = ts + CAP_PG_EPOCH_OFFSET_US;
    return FB_OK;
}

static fb_code dec_commit(cap_decoder *d, cap_rd *r, uint64_t at, cap_txn **done, fb_err *err) {
    (void)cap_rd_u8(r); /* flags: unused, always 0 */
    uint64_t commit_lsn = cap_rd_u64(r), end_lsn = cap_rd_u64(r);
    int64_t ts = (int64_t)cap_rd_u64(r);
    if (r->bad) return fb_err_set(err, FB_ERR_FORMAT, "pgoutput Commit at " CAP_LSN_FMT " is truncated", CAP_LSN_ARGS(at));
    if (!d->cur)
        return fb_err_set(err, FB_ERR_FORMAT, "pgoutput Commit at " CAP_LSN_FMT " without a Begin", CAP_LSN_ARGS(at));
    if (commit_lsn != d->cur->commit_lsn || end_lsn <= commit_lsn || commit_lsn < d->last_end_lsn)
        return fb_err_set(err, FB_ERR_FORMAT,
                          "pgoutput Commit of xid %u: commit LSN " CAP_LSN_FMT " end " CAP_LSN_FMT
                          " (Begin said " CAP_LSN_FMT ", previous commit ended at " CAP_LSN_FMT ")",
                          d->cur->xid, CAP_LSN_ARGS(commit_lsn), CAP_LSN_ARGS(end_lsn),
                          CAP_LSN_ARGS(d->cur->commit_lsn), CAP_LSN_ARGS(d->last_end_lsn));
    d->cur->end_lsn = end_lsn;
    d->cur->commit_time_us = ts + CAP_PG_EPOCH_OFFSET_US;
    d->last_end_lsn = end_lsn;
    d->last_commit_us = d->cur->commit_time_us;
    *done = d->cur;
    d->cur = NULL;
    int marker = d->flush_in_txn || d->heartbeat_in_txn;
    if (d->flush_in_txn) d->flush_asked = 1;
    if (d->heartbeat_in_txn) d->heartbeat_seen = 1;
    d->flush_in_txn = d->heartbeat_in_txn = 0;
    /* A request's or heartbeat's own transaction (pg_logical_emit_message(true, ...)) holds no change: nothing to
     * keep; its commit time and end stay known (cap_decoder_last_commit). */
    if (marker && (*done)->nchanges == 0) {
        cap_txn_free(*done);
        *done = NULL;
    }
    return FB_OK;
}

/* ---- Relation ------------------------------------------------------------------------------------------------ */

static char *dec_strdup(cap_rd *r, int *oom) {
    const char *s = cap_rd_cstr(r);
    if (!s) return NULL;
    char *c = strdup(s);
    if (!c) *oom = 1;
    return c;
}

/* pgoutput re-sends a Relation after DDL (and after a reconnect). A changed column list means a migration ran:
 * said here as it is decoded; cap_capture (cap_schema.h) ends the chain before the first change that uses it. */
static void dec_relation_changed(const cap_rel *old, const cap_rel *now, uint64_t at) {
    if (!old) return;
    int same = old->ncols == now->ncols && strcmp(old->nspname, now->nspname) == 0 && strcmp(old->relname, now->relname) == 0;
    for (uint16_t i = 0; same && i < now->ncols; i++)
        same = strcmp(old->cols[i].name, now->cols[i].name) == 0 && old->cols[i].type_oid == now->cols[i].type_oid &&
               old->cols[i].typmod == now->cols[i].typmod && old->cols[i].flags == now->cols[i].flags;
    if (!same)
        FB_WARN("capture: table %s.%s changed definition in the transaction committing at " CAP_LSN_FMT " (%u -> %u columns): a schema change (migration) "
                "ran; restoring past this point needs a target with the new definition: take a new FULL with a new slot",
                now->nspname, now->relname, CAP_LSN_ARGS(at), old->ncols, now->ncols);
}

static fb_code dec_relation(cap_decoder *d, cap_rd *r, uint64_t at, fb_err *err) {
    int oom = 0;
    cap_rel *rel = calloc(1, sizeof *rel);
    if (!rel) return fb_err_set(err, FB_ERR_NOMEM, "out of memory for a relation");
    rel->relid = cap_rd_u32(r);
    rel->nspname = dec_strdup(r, &oom);
    rel->relname = dec_strdup(r, &oom);
    rel->replident = (char)cap_rd_u8(r);
    uint16_t ncols = cap_rd_u16(r);
    if (!r->bad && ncols > CAP_MAX_COLS) r->bad = 1;
    if (!r->bad && !oom) {
        rel->cols = calloc(ncols ? ncols : 1, sizeof(cap_col));
        if (!rel->cols) oom = 1;
    }
    for (uint16_t i = 0; rel->cols && i < ncols && !r->bad && !oom; i++, rel->ncols++) {
        cap_col *c = &rel->cols[i];
        c->flags = cap_rd_u8(r);
        c->name = dec_strdup(r, &oom);
        c->type_oid = cap_rd_u32(r);
        c->typmod = (int32_t)cap_rd_u32(r);
    }
    if (!oom && !r->bad && rel->nspname[0] == '\0') { /* pgoutput sends "" for pg_catalog */
        free(rel->nspname);
        rel->nspname = strdup("pg_catalog");
        if (!rel->nspname) oom = 1;
    }
    if (oom || r->bad) {
        cap_rel_free(rel);
        if (oom) return fb_err_set(err, FB_ERR_NOMEM, "out of memory for a relation");
        return fb_err_set(err, FB_ERR_FORMAT, "pgoutput Relation at " CAP_LSN_FMT " is truncated or has too many columns",
                          CAP_LSN_ARGS(at));
    }
    dec_relation_changed(cap_relset_current(&d->rels, rel->relid), rel, d->cur ? d->cur->commit_lsn : at);
    cap_relset_add(&d->rels, rel);
    return FB_OK;
}

/* ---- Insert / Update / Delete / Truncate ---------------------------------------------------------------------- */

static fb_code dec_need_txn(cap_decoder *d, char what, uint64_t at, fb_err *err) {
    if (d->cur) return FB_OK;
    return fb_err_set(err, FB_ERR_FORMAT, "pgoutput '%c' message at " CAP_LSN_FMT " outside a transaction", what,
                      CAP_LSN_ARGS(at));
}

static fb_code dec_rel(cap_decoder *d, cap_rd *r, char what, uint64_t at, const cap_rel **out, fb_err *err) {
    uint32_t relid = cap_rd_u32(r);
    if (r->bad) return fb_err_set(err, FB_ERR_FORMAT, "pgoutput '%c' at " CAP_LSN_FMT " is truncated", what, CAP_LSN_ARGS(at));
    *out = cap_relset_current(&d->rels, relid);
    if (!*out)
        return fb_err_set(err, FB_ERR_FORMAT, "pgoutput '%c' at " CAP_LSN_FMT " for relation %u, which no Relation message described",
                          what, CAP_LSN_ARGS(at), relid);
    return FB_OK;
}

/* One tuple after its 'N', 'K' or 'O' marker, with the relation's column count. */
static fb_code dec_tuple(cap_decoder *d, cap_rd *r, const cap_rel *rel, cap_tuple *tp, uint64_t at, fb_err *err) {
    fb_code rc = cap_tuple_read(r, tp, &d->cur->bytes, err);
    if (rc != FB_OK) return fb_err_prefix(err, "pgoutput change at " CAP_LSN_FMT " on %s.%s: ", CAP_LSN_ARGS(at),
                                          rel->nspname, rel->relname);
    if (tp->ncols != rel->ncols)
        return fb_err_set(err, FB_ERR_FORMAT, "pgoutput change at " CAP_LSN_FMT " on %s.%s has %u columns, its relation %u",
                          CAP_LSN_ARGS(at), rel->nspname, rel->relname, tp->ncols, rel->ncols);
    return FB_OK;
}

static fb_code dec_expect(cap_rd *r, const char *allowed, char *got, const char *what, uint64_t at, fb_err *err) {
    *got = (char)cap_rd_u8(r);
    if (!r->bad && *got && strchr(allowed, *got)) return FB_OK;
    return fb_err_set(err, FB_ERR_FORMAT, "pgoutput %s at " CAP_LSN_FMT ": tuple marker 0x%02x (expected one of \"%s\")",
                      what, CAP_LSN_ARGS(at), (unsigned char)*got, allowed);
}

static fb_code dec_row_change(cap_decoder *d, cap_rd *r, char kind, uint64_t at, fb_err *err) {
    const cap_rel *rel;
    fb_code rc = dec_need_txn(d, kind, at, err);
    if (rc == FB_OK) rc = dec_rel(d, r, kind, at, &rel, err);
    if (rc != FB_OK) return rc;
    cap_change *c = cap_txn_add(d->cur, (cap_kind)kind);
    if (!c) return fb_err_set(err, FB_ERR_NOMEM, "out of memory for a change");
    c->rel = rel;
    char m;
    const char *what = kind == 'I' ? "Insert" : kind == 'U' ? "Update" : "Delete";
    rc = dec_expect(r, kind == 'I' ? "N" : kind == 'U' ? "KON" : "KO", &m, what, at, err);
    if (rc == FB_OK && m != 'N') {
        c->old_kind = m;
        rc = dec_tuple(d, r, rel, &c->old_tup, at, err);
        if (rc == FB_OK && kind == 'U') rc = dec_expect(r, "N", &m, what, at, err);
    }
    if (rc == FB_OK && m == 'N') rc = dec_tuple(d, r, rel, &c->new_tup, at, err);
    return rc;
}

static fb_code dec_truncate(cap_decoder *d, cap_rd *r, uint64_t at, fb_err *err) {
    fb_code rc = dec_need_txn(d, 'T', at, err);
    if (rc != FB_OK) return rc;
    uint32_t n = cap_rd_u32(r);
    uint8_t opts = cap_rd_u8(r);
    if (r->bad || n == 0 || n > cap_rd_left(r) / 4)
        return fb_err_set(err, FB_ERR_FORMAT, "pgoutput Truncate at " CAP_LSN_FMT " is truncated or names %u relations",
                          CAP_LSN_ARGS(at), n);
    cap_change *c = cap_txn_add(d->cur, CAP_TRUNCATE);
    if (!c) return fb_err_set(err, FB_ERR_NOMEM, "out of memory for a change");
    c->trunc_options = opts;
    c->trunc_rels = calloc(n, sizeof *c->trunc_rels);
    if (!c->trunc_rels) return fb_err_set(err, FB_ERR_NOMEM, "out of memory for a Truncate of %u relations", n);
    for (uint32_t i = 0; i < n; i++, c->ntrunc++) {
        rc = dec_rel(d, r, 'T', at, &c->trunc_rels[i], err);
        if (rc != FB_OK) return rc;
    }
    d->cur->bytes += (size_t)n * sizeof *c->trunc_rels;
    return FB_OK;
}

/* A logical message (pg_logical_emit_message): one with CAP_FLUSH_PREFIX means "make what you hold durable now"
 * (cap_incr.h, the point), a transactional one when its transaction commits; a transactional one with
 * CAP_HEARTBEAT_PREFIX brings a commit time (cap_tip.h). Others, and contents, are not used. */
static fb_code dec_message(cap_decoder *d, cap_rd *r, uint64_t at, fb_err *err) {
    uint8_t flags = cap_rd_u8(r);
    (void)cap_rd_u64(r);
    const char *prefix = cap_rd_cstr(r);
    uint32_t n = cap_rd_u32(r);
    (void)cap_rd_bytes(r, n);
    if (r->bad) return fb_err_set(err, FB_ERR_FORMAT, "malformed logical message at " CAP_LSN_FMT, CAP_LSN_ARGS(at));
    if (prefix && strcmp(prefix, CAP_HEARTBEAT_PREFIX) == 0 && (flags & 1) && d->cur) d->heartbeat_in_txn = 1;
    if (!prefix || strcmp(prefix, CAP_FLUSH_PREFIX) != 0) return FB_OK;
    if (!(flags & 1)) d->flush_asked = 1;
    else if (d->cur) d->flush_in_txn = 1;
    return FB_OK;
}

int cap_decoder_flush_pending(const cap_decoder *d) { return d->flush_asked; }

int cap_decoder_take_heartbeat(cap_decoder *d) {
    int seen = d->heartbeat_seen;
    d->heartbeat_seen = 0;
    return seen;
}

int cap_decoder_heartbeat_pending(const cap_decoder *d) { return d->heartbeat_seen; }

void cap_decoder_last_commit(const cap_decoder *d, uint64_t *end_lsn, int64_t *commit_us) {
    *end_lsn = d->last_end_lsn;
    *commit_us = d->last_commit_us;
}

int cap_decoder_take_flush(cap_decoder *d) {
    int asked = d->flush_asked;
    d->flush_asked = 0;
    return asked;
}

/* ---- dispatch ------------------------------------------------------------------------------------------------ */

fb_code cap_decoder_feed(cap_decoder *d, const void *msg, size_t len, uint64_t wal_start, cap_txn **done,
                         fb_err *err) {
    cap_rd r;
    *done = NULL;
    cap_rd_init(&r, msg, len);
    char type = (char)cap_rd_u8(&r);
    if (r.bad) return fb_err_set(err, FB_ERR_FORMAT, "empty pgoutput message at " CAP_LSN_FMT, CAP_LSN_ARGS(wal_start));
    fb_code rc;
    switch (type) {
    case 'B': rc = dec_begin(d, &r, wal_start, err); break;
    case 'C': rc = dec_commit(d, &r, wal_start, done, err); break;
    case 'R': rc = dec_relation(d, &r, wal_start, err); break;
    case 'I': case 'U': case 'D': rc = dec_row_change(d, &r, type, wal_start, err); break;
    case 'T': rc = dec_truncate(d, &r, wal_start, err); break;
    case 'M': rc = dec_message(d, &r, wal_start, err); break;
    case 'O': case 'Y': return FB_OK; /* origin, type: nothing a restore needs */
    default:
        return fb_err_set(err, FB_ERR_FORMAT, "unknown pgoutput message type 0x%02x at " CAP_LSN_FMT
                          " (protocol version 1 was requested)", (unsigned char)type, CAP_LSN_ARGS(wal_start));
    }
    if (rc == FB_OK && cap_rd_left(&r) != 0)
        return fb_err_set(err, FB_ERR_FORMAT, "pgoutput '%c' message at " CAP_LSN_FMT " has %zu trailing bytes", type,
                          CAP_LSN_ARGS(wal_start), cap_rd_left(&r));
    return rc;
}
