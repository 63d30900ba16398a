/* cap_apply: see cap_apply.h. */
#include "capture/cap_apply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fb_sbuf.h"
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
