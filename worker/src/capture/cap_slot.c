/* cap_slot: see cap_slot.h. */
#include "capture/cap_slot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capture/cap_txn.h"
#include "pg/pgx.h"

/* One row whether or not the slot exists (the LEFT JOIN), so "missing" is an answer, not an empty result. */
#define CAP_SLOT_SQL                                                                                              \
    "SELECT s.slot_name IS NOT NULL, coalesce(s.active, false), coalesce(s.plugin = 'pgoutput', false), "       \
    "coalesce(s.wal_status, ''), s.safe_wal_size, "                                                               \
    "coalesce(s.confirmed_flush_lsn, '0/0')::text, pg_catalog.pg_current_wal_lsn()::text "                        \
    "FROM (SELECT 1) one LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = %s "                        \
    "AND s.database = pg_catalog.current_database() AND NOT s.temporary"

fb_code cap_slot_health_read(PGconn *c, const char *slot, cap_slot_health *h, fb_err *err) {
    char lit[2 * 64 + 8], sql[sizeof CAP_SLOT_SQL + sizeof lit];
    memset(h, 0, sizeof *h);
    if (pgx_quote_literal(slot, lit, sizeof lit) != 0) return fb_err_set(err, FB_ERR_USAGE, "slot name too long");
    snprintf(sql, sizeof sql, CAP_SLOT_SQL, lit);
    PGresult *r = PQexec(c, sql);
    fb_code rc = pgx_check(c, r, PGRES_TUPLES_OK, "reading the replication slot's state", err);
    if (rc != FB_OK) return rc;
    int ok = PQntuples(r) == 1 && PQnfields(r) == 7;
    if (ok) {
        h->exists = PQgetvalue(r, 0, 0)[0] == 't';
        h->active = PQgetvalue(r, 0, 1)[0] == 't';
        h->logical = PQgetvalue(r, 0, 2)[0] == 't';
        snprintf(h->wal_status, sizeof h->wal_status, "%s", PQgetvalue(r, 0, 3));
        h->safe_wal_size = PQgetisnull(r, 0, 4) ? -1 : strtoll(PQgetvalue(r, 0, 4), NULL, 10);
        ok = cap_lsn_parse(PQgetvalue(r, 0, 5), &h->confirmed_lsn) == 0 &&
             cap_lsn_parse(PQgetvalue(r, 0, 6), &h->current_lsn) == 0;
    }
    PQclear(r);
    if (!ok) return fb_err_set(err, FB_ERR_PG, "pg_replication_slots gave an unexpected answer for slot \"%s\"", slot);
    if (h->exists && h->current_lsn > h->confirmed_lsn) h->lag_bytes = h->current_lsn - h->confirmed_lsn;
    return FB_OK;
}

const char *cap_slot_state(const cap_slot_health *h) {
    if (!h->exists) return "missing";
    if (!h->logical) return "not_pgoutput";
    if (strcmp(h->wal_status, "lost") == 0) return "lost";
    if (strcmp(h->wal_status, "unreserved") == 0) return "unreserved";
    return "ok";
}

fb_code cap_slot_usable(const cap_slot_health *h, const char *db, const char *slot, fb_err *err) {
    const char *state = cap_slot_state(h);
    if (strcmp(state, "missing") == 0)
        return fb_err_set(err, FB_ERR_NOTFOUND, "replication slot \"%s\" of database \"%s\" does not exist (dropped?): "
                          CAP_NEW_BASE_HINT, slot, db);
    if (strcmp(state, "lost") == 0)
        return fb_err_set(err, FB_ERR_NOTFOUND, "replication slot \"%s\" of database \"%s\" was invalidated (wal_status "
                          "lost: it held more WAL than max_slot_wal_keep_size allows) at confirmed position " CAP_LSN_FMT
                          ": " CAP_NEW_BASE_HINT, slot, db, CAP_LSN_ARGS(h->confirmed_lsn));
    if (strcmp(state, "not_pgoutput") == 0)
        return fb_err_set(err, FB_ERR_NOTFOUND, "replication slot \"%s\" of database \"%s\" is not a logical pgoutput "
                          "slot: it is not one change capture made; " CAP_NEW_BASE_HINT, slot, db);
    return FB_OK;
}

double cap_slot_lag_seconds(cap_slot_lag *t, const cap_slot_health *h, int64_t now_ms) {
    if (t->moved_ms == 0 || h->confirmed_lsn != t->last_confirmed) {
        t->last_confirmed = h->confirmed_lsn;
        t->moved_ms = now_ms;
    }
    return h->exists && h->lag_bytes > 0 ? (double)(now_ms - t->moved_ms) / 1000.0 : 0.0;
}
