/* cap_apply: see cap_apply.h. */
#include "capture/cap_apply.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capture/cap_tip.h"
#include "common/fb_sbuf.h"
#include "common/fb_time.h"
#include "pg/pgx.h"


typedef struct cap_stmt {
    fb_sbuf sql;
    const char **vals;
    int n, cap;
} cap_stmt;

static int stmt_param(cap_stmt *s, const cap_val *v) {
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 16;
        const char **p = realloc(s->vals, (size_t)cap * sizeof *p);
        if (!p) {
            s->sql.oom = 1;
            return 0;
        }
        s->vals = p;
        s->cap = cap;
    }
    s->vals[s->n] = v->kind == 't' ? v->data : NULL;
    return ++s->n;
}

/* WHERE for the row the old tuple (or, for an update without key change, the new tuple's key) identifies. */
static void stmt_where(cap_stmt *s, const cap_rel *r, const cap_change *ch) {
    const cap_tuple *id = ch->old_kind ? &ch->old_tup : &ch->new_tup;
    int full = ch->old_kind == 'O';
    int first = 1;
    if (full) {
        fb_sbuf_puts(&s->sql, " WHERE ctid = (SELECT ctid FROM ");
        pgx_sb_qualified(&s->sql, r->nspname, r->relname);
    }
    fb_sbuf_puts(&s->sql, " WHERE ");
    for (uint16_t i = 0; i < r->ncols; i++) {
        if (!full && !(r->cols[i].flags & CAP_COL_KEY)) continue;
        if (id->vals[i].kind == 'u') continue; /* an unchanged TOASTed value: not sent, cannot be compared */
        fb_sbuf_puts(&s->sql, first ? "" : " AND ");
        first = 0;
        pgx_sb_ident(&s->sql, r->cols[i].name);
        if (full) fb_sbuf_printf(&s->sql, "::text IS NOT DISTINCT FROM $%d", stmt_param(s, &id->vals[i]));
        else fb_sbuf_printf(&s->sql, " = $%d", stmt_param(s, &id->vals[i]));
    }
    if (first) fb_sbuf_puts(&s->sql, "false"); /* no identity: match nothing, reported below */
    if (full) fb_sbuf_puts(&s->sql, " LIMIT 1)");
}

static void stmt_build(cap_stmt *s, const cap_change *ch) {
    const cap_rel *r = ch->rel;
    if (ch->kind == CAP_INSERT) {
        fb_sbuf_puts(&s->sql, "INSERT INTO ");
        pgx_sb_qualified(&s->sql, r->nspname, r->relname);
        fb_sbuf_puts(&s->sql, " (");
        for (uint16_t i = 0; i < r->ncols; i++) {
            fb_sbuf_puts(&s->sql, i ? ", " : "");
            pgx_sb_ident(&s->sql, r->cols[i].name);
        }
        fb_sbuf_puts(&s->sql, ") OVERRIDING SYSTEM VALUE VALUES (");
        for (uint16_t i = 0; i < r->ncols; i++) fb_sbuf_printf(&s->sql, "%s$%d", i ? ", " : "", stmt_param(s, &ch->new_tup.vals[i]));
        fb_sbuf_puts(&s->sql, ")");
    } else if (ch->kind == CAP_UPDATE) {
        fb_sbuf_puts(&s->sql, "UPDATE ");
        pgx_sb_qualified(&s->sql, r->nspname, r->relname);
        fb_sbuf_puts(&s->sql, " SET ");
        int first = 1;
        for (uint16_t i = 0; i < r->ncols; i++) {
            if (ch->new_tup.vals[i].kind == 'u') continue;
            fb_sbuf_puts(&s->sql, first ? "" : ", ");
            first = 0;
            pgx_sb_ident(&s->sql, r->cols[i].name);
            fb_sbuf_printf(&s->sql, " = $%d", stmt_param(s, &ch->new_tup.vals[i]));
        }
        if (first) { /* every column unchanged TOAST: nothing to set, but the row must still exist */
            pgx_sb_ident(&s->sql, r->cols[0].name);
            fb_sbuf_puts(&s->sql, " = ");
            pgx_sb_ident(&s->sql, r->cols[0].name);
        }
        stmt_where(s, r, ch);
    } else {
        fb_sbuf_puts(&s->sql, "DELETE FROM ");
        pgx_sb_qualified(&s->sql, r->nspname, r->relname);
        stmt_where(s, r, ch);
    }
}

static void stmt_truncate(cap_stmt *s, const cap_change *ch) {
    fb_sbuf_puts(&s->sql, "TRUNCATE ");
    for (uint32_t i = 0; i < ch->ntrunc; i++) {
        fb_sbuf_puts(&s->sql, i ? ", " : "");
        pgx_sb_qualified(&s->sql, ch->trunc_rels[i]->nspname, ch->trunc_rels[i]->relname);
    }
    if (ch->trunc_options & CAP_TRUNC_RESTART_IDENTITY) fb_sbuf_puts(&s->sql, " RESTART IDENTITY");
    if (ch->trunc_options & CAP_TRUNC_CASCADE) fb_sbuf_puts(&s->sql, " CASCADE");
}

static fb_code apply_change(PGconn *c, const cap_txn *t, size_t i, fb_err *err) {
    const cap_change *ch = &t->changes[i];
    cap_stmt s = {0};
    if (ch->kind == CAP_TRUNCATE) stmt_truncate(&s, ch);
    else stmt_build(&s, ch);
    fb_code rc = FB_OK;
    if (s.sql.oom) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory building change %zu of xid %u", i + 1, t->xid);
    const char *rel = ch->kind == CAP_TRUNCATE ? ch->trunc_rels[0]->relname : ch->rel->relname;
    if (rc == FB_OK) {
        PGresult *r = PQexecParams(c, s.sql.p, s.n, NULL, s.vals, NULL, NULL, 0);
        char what[256];
        snprintf(what, sizeof what, "applying change %zu (%c on \"%s\") of xid %u at " CAP_LSN_FMT, i + 1, ch->kind, rel,
                 t->xid, CAP_LSN_ARGS(t->commit_lsn));
        rc = pgx_check(c, r, PGRES_COMMAND_OK, what, err);
        if (rc == FB_OK) {
            int rows = atoi(PQcmdTuples(r));
            if ((ch->kind == CAP_UPDATE || ch->kind == CAP_DELETE) && rows != 1)
                rc = fb_err_set(err, FB_ERR_VERIFY, "%s: matched %d rows, expected 1 (the target is not this chain's base, "
                                "or the table has no replica identity)", what, rows);
            PQclear(r);
        }
    }
    fb_sbuf_free(&s.sql);
    free(s.vals);
    return rc;
}

fb_code cap_apply_txn(PGconn *c, const cap_txn *t, fb_err *err) {
    fb_code rc = pgx_exec(c, "BEGIN", "starting a captured transaction", err);
    for (size_t i = 0; rc == FB_OK && i < t->nchanges; i++) rc = apply_change(c, t, i, err);
    if (rc == FB_OK) rc = pgx_exec(c, "COMMIT", "committing a captured transaction", err);
    if (rc != FB_OK && PQtransactionStatus(c) != PQTRANS_IDLE) PQclear(PQexec(c, "ROLLBACK"));
    return rc;
}

/* --- a chain up to a target ---------------------------------------------------------------------------------- */

static fb_code window_segment(void *opaque, const cap_segment *s, fb_err *err) {
    (void)err;
    cap_window *w = opaque;
    w->segments++;
    w->transactions += s->ntxn;
    if (s->ntxn && s->last_commit_us > w->end_us) w->end_us = s->last_commit_us;
    return FB_OK;
}

fb_code cap_apply_window(stor *st, const char *dir, const cap_seg_in *in, uint64_t base_lsn, int64_t base_us,
                         cap_window *w, fb_err *err) {
    memset(w, 0, sizeof *w);
    w->base_lsn = w->end_lsn = base_lsn;
    w->base_us = w->end_us = base_us;
    fb_code rc = cap_segment_chain(st, dir, in, base_lsn, window_segment, w, &w->end_lsn, err);
    w->chain_end_lsn = w->end_lsn;
    w->chain_end_us = w->end_us;
    cap_tip_found f;
    if (rc == FB_OK) rc = cap_tip_find(st, dir, in->stream, in->signers, w->chain_end_lsn, &f, err);
    if (rc != FB_OK) return rc;
    snprintf(w->tip_problem, sizeof w->tip_problem, "%s", f.problem);
    if (f.state == CAP_TIP_VALID) {
        w->tip = 1;
        w->end_lsn = f.tip.to_lsn;
        if (f.tip.time_us > w->end_us) w->end_us = f.tip.time_us;
    }
    return FB_OK;
}

fb_code cap_apply_check_target(const cap_window *w, const cap_target *t, fb_err *err) {
    char b[40], e[40], tip[500] = "";
    fb_time_format_iso(w->base_us / 1000, b, sizeof b);
    fb_time_format_iso(w->end_us / 1000, e, sizeof e);
    int before = t->by_time ? t->time_us < w->base_us : t->lsn < w->base_lsn;
    int after = t->by_time ? t->time_us > w->end_us : t->lsn > w->end_lsn;
    if (!before && !after) return FB_OK;
    if (after && w->tip_problem[0]) snprintf(tip, sizeof tip, "; the chain's tip was not used: %s", w->tip_problem);
    return fb_err_set(err, FB_ERR_NOTFOUND, "--until %s is %s the recoverable window of this base: from " CAP_LSN_FMT
                      " (%s) to " CAP_LSN_FMT " (%s, %s); nothing was restored%s%s", t->text,
                      before ? "before" : "after", CAP_LSN_ARGS(w->base_lsn), b, CAP_LSN_ARGS(w->end_lsn), e,
                      w->tip ? "the capture's signed tip: nothing committed after the chain's last durable commit"
                             : "the chain's last durable commit",
                      before ? " (an earlier base FULL is needed for an earlier moment)"
                             : " (is `fusion-backup capture` running? a later moment is restorable once it is durable)",
                      tip);
}

typedef struct apply_run {
    PGconn *c;
    const cap_target *t;
    cap_apply_stats *st;
    int done;
} apply_run;

static int past_target(const cap_target *t, const cap_txn *x) {
    return t->by_time ? x->commit_time_us > t->time_us : x->end_lsn > t->lsn;
}

static fb_code apply_segment(void *opaque, const cap_segment *s, fb_err *err) {
    apply_run *ap = opaque;
    for (uint32_t i = 0; i < s->ntxn; i++) {
        const cap_txn *x = s->txns[i];
        if (past_target(ap->t, x)) {
            ap->done = 1;
            /* Stops the walk: nothing after the target is read or decrypted. */
            return fb_err_set(err, FB_ERR_ABORTED, "target reached");
        }
        fb_code rc = cap_apply_txn(ap->c, x, err);
        if (rc != FB_OK)
            return fb_err_prefix(err, "%" PRIu64 " transactions applied (up to " CAP_LSN_FMT "), then: ",
                                 ap->st->applied, CAP_LSN_ARGS(ap->st->last_end));
        ap->st->applied++;
        ap->st->last_end = x->end_lsn;
        ap->st->last_commit_us = x->commit_time_us;
    }
    return FB_OK;
}

/* pgoutput (PostgreSQL 15) carries no sequence changes, so after the apply a serial or identity column's sequence
 * still has the FULL's value and the next nextval() would collide with an applied row. Every ascending sequence
 * owned by a column moves to at least that column's maximum: no collision, though values the source consumed in
 * transactions that rolled back are not skipped. */
#define CAP_SEQUENCES_SQL                                                                                         \
    "DO $cc$ DECLARE r record; m numeric; cur numeric; BEGIN "                                                     \
    "FOR r IN SELECT d.objid::regclass AS seq, d.refobjid::regclass AS tbl, a.attname "                            \
    "  FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' "             \
    "  JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid AND q.seqincrement > 0 "                                \
    "  JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "                    \
    "  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass "     \
    "    AND d.deptype IN ('a', 'i') LOOP "                                                                        \
    "  EXECUTE format('SELECT max(%I)::numeric FROM %s', r.attname, r.tbl) INTO m; "                              \
    "  EXECUTE format('SELECT last_value::numeric FROM %s', r.seq) INTO cur; "                                    \
    "  IF m IS NOT NULL AND m > cur THEN PERFORM pg_catalog.setval(r.seq, m::bigint); END IF; "                   \
    "END LOOP; END $cc$"

fb_code cap_apply_chain(PGconn *c, stor *st, const char *dir, const cap_seg_in *in, uint64_t base_lsn,
                        const cap_target *t, cap_apply_stats *out, fb_err *err) {
    uint64_t end = 0;
    memset(out, 0, sizeof *out);
    out->last_end = base_lsn;
    apply_run ap = {.c = c, .t = t, .st = out};
    fb_code rc = pgx_exec(c, "SET session_replication_role = replica", "turning the target's triggers off for the "
                          "apply (needs a superuser, as logical replication's apply does)", err);
    if (!rc) rc = cap_segment_chain(st, dir, in, base_lsn, apply_segment, &ap, &end, err);
    if (rc == FB_ERR_ABORTED && ap.done) rc = FB_OK;
    if (!rc) rc = pgx_exec(c, CAP_SEQUENCES_SQL, "moving column sequences past the applied rows", err);
    if (!rc) rc = pgx_exec(c, "RESET session_replication_role", "turning the target's triggers back on", err);
    return rc;
}
