/* cap_stream: see cap_stream.h. */
#include "capture/cap_stream.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "capture/cap_pgoutput.h"
#include "capture/cap_slot.h"
#include "capture/cap_wire.h"
#include "common/fb_log.h"
#include "common/fb_sbuf.h"
#include "common/fb_time.h"
#include "pg/pgx.h"

#define CAP_STATUS_INTERVAL_US INT64_C(10000000)

struct cap_stream {
    PGconn *conn;
    cap_decoder *dec;
    int streaming;
    uint64_t received_lsn, confirmed_lsn;
    int64_t last_status_us;
    char *conninfo, *dbname;  /* for the heartbeat's own connection (NULL dbname: conninfo's) */
    PGconn *hb;               /* that connection, opened on the first heartbeat */
};

fb_code cap_stream_open(const char *conninfo, const char *application_name, cap_stream **out, fb_err *err) {
    return cap_stream_open_db(conninfo, NULL, application_name, out, err);
}

fb_code cap_stream_open_db(const char *conninfo, const char *dbname, const char *application_name, cap_stream **out,
                           fb_err *err) {
    *out = NULL;
    if (!conninfo || !*conninfo) return fb_err_set(err, FB_ERR_USAGE, "no PostgreSQL conninfo for change capture");
    /* Later keywords override what the expanded conninfo says, so replication=database always holds. */
    const char *keys[] = {"dbname", "replication", "application_name", dbname ? "dbname" : NULL, NULL};
    const char *vals[] = {conninfo, "database", application_name ? application_name : "fusion-backup capture", dbname,
                          NULL};
    cap_stream *s = calloc(1, sizeof *s);
    if (!s || !(s->dec = cap_decoder_new())) {
        free(s);
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory for a capture stream");
    }
    s->conninfo = strdup(conninfo);
    s->dbname = dbname ? strdup(dbname) : NULL;
    if (!s->conninfo || (dbname && !s->dbname)) {
        cap_stream_free(s);
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory for a capture stream");
    }
    s->conn = PQconnectdbParams(keys, vals, 1);
    if (!s->conn || PQstatus(s->conn) != CONNECTION_OK) {
        fb_err_set(err, FB_ERR_TRANSIENT,
                   "could not open a replication connection: %s"
                   "hint: the server needs wal_level=logical, free max_wal_senders, a pg_hba.conf line letting this "
                   "role reach this database from this host (a logical walsender is matched by its database, not by "
                   "the `replication` keyword), and a role WITH REPLICATION (or a superuser)",
                   s->conn ? PQerrorMessage(s->conn) : "out of memory\n");
        cap_stream_free(s);
        return err ? err->code : FB_ERR_TRANSIENT;
    }
    *out = s;
    return FB_OK;
}

void cap_stream_free(cap_stream *s) {
    if (!s) return;
    if (s->conn) PQfinish(s->conn);
    if (s->hb) PQfinish(s->hb);
    cap_decoder_free(s->dec);
    free(s->conninfo);
    free(s->dbname);
    free(s);
}

/* ---- publication and slot (simple query protocol: a walsender accepts no other) ------------------------------ */

static fb_code cap_query(cap_stream *s, const char *sql, ExecStatusType want, PGresult **out, const char *what,
                         fb_err *err) {
    if (s->streaming) return fb_err_set(err, FB_ERR_INTERNAL, "%s: the capture stream is already streaming", what);
    PGresult *r = PQexec(s->conn, sql);
    fb_code rc = pgx_check(s->conn, r, want, what, err);
    if (rc != FB_OK) return rc;
    if (out) *out = r;
    else PQclear(r);
    return FB_OK;
}

static fb_code cap_name_check(const char *name, const char *what, fb_err *err) {
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > CAP_NAME_MAX || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != n)
        return fb_err_set(err, FB_ERR_USAGE, "%s name \"%s\" must be 1..%d characters of a-z, 0-9 and _",
                          what, name ? name : "", CAP_NAME_MAX);
    return FB_OK;
}

fb_code cap_stream_publication_ensure(cap_stream *s, const char *name, const char *const *tables, size_t ntables,
                                      fb_err *err) {
    fb_code rc = cap_name_check(name, "publication", err);
    if (rc != FB_OK) return rc;
    char lit[2 * CAP_NAME_MAX + 8], id[2 * CAP_NAME_MAX + 8];
    fb_sbuf q = {0};
    PGresult *r = NULL;
    pgx_quote_literal(name, lit, sizeof lit);
    pgx_quote_ident(name, id, sizeof id);
    fb_sbuf_printf(&q, "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = %s", lit);
    rc = q.oom ? fb_err_set(err, FB_ERR_NOMEM, "out of memory") : cap_query(s, q.p, PGRES_TUPLES_OK, &r, "looking up the publication", err);
    fb_sbuf_free(&q);
    if (rc != FB_OK) return rc;
    int exists = PQntuples(r) > 0;
    PQclear(r);
    if (exists) return FB_OK;
    fb_sbuf_printf(&q, "CREATE PUBLICATION %s FOR %s", id, ntables ? "TABLE " : "ALL TABLES");
    for (size_t i = 0; i < ntables; i++) {
        char qn[600], schema[256];
        const char *dot = strchr(tables[i], '.');
        if (!dot || (size_t)(dot - tables[i]) >= sizeof schema) {
            fb_sbuf_free(&q);
            return fb_err_set(err, FB_ERR_USAGE, "table \"%s\" for the publication must be schema.table", tables[i]);
        }
        memcpy(schema, tables[i], (size_t)(dot - tables[i]));
        schema[dot - tables[i]] = '\0';
        if (pgx_qualified(schema, dot + 1, qn, sizeof qn) != 0) {
            fb_sbuf_free(&q);
            return fb_err_set(err, FB_ERR_USAGE, "table name \"%s\" is too long", tables[i]);
        }
        fb_sbuf_printf(&q, "%s%s", i ? ", " : "", qn);
    }
    rc = q.oom ? fb_err_set(err, FB_ERR_NOMEM, "out of memory") : cap_query(s, q.p, PGRES_COMMAND_OK, NULL, "creating the publication", err);
    fb_sbuf_free(&q);
    return rc;
}

/* Tables that can be published but have no primary key (REPLICA IDENTITY FULL, or USING INDEX on a unique index):
 * allowed, but said: every UPDATE and DELETE on them writes the whole old row to the WAL, and applying a change
 * finds its row by every column, so of two identical rows one statement changes one, as PostgreSQL does. */
static void cap_stream_warn_no_pk(cap_stream *s) {
    static const char sql[] =
        "SELECT n.nspname, c.relname, c.relreplident FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON "
        "n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p' "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' "
        "AND c.relreplident IN ('f', 'i') AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i "
        "WHERE i.indrelid = c.oid AND i.indisprimary) ORDER BY 1, 2";
    PGresult *r = NULL;
    fb_err err;
    if (cap_query(s, sql, PGRES_TUPLES_OK, &r, "looking for tables without a primary key", &err) != FB_OK) {
        FB_WARN("capture: %s", err.msg);
        return;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        char q[300];
        if (pgx_qualified(PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), q, sizeof q) != 0) snprintf(q, sizeof q, "(long name)");
        FB_WARN("capture: table %s has no primary key (REPLICA IDENTITY %s): its UPDATEs and DELETEs write whole old "
                "rows to the WAL and are applied by matching every column; give it a primary key if it can have one",
                q, PQgetvalue(r, i, 2)[0] == 'f' ? "FULL" : "USING INDEX");
    }
    PQclear(r);
}

fb_code cap_stream_identity_check(cap_stream *s, fb_err *err) {
    static const char sql[] =
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p' "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' "
        "AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i "
        "WHERE i.indrelid = c.oid AND i.indisprimary)) OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM "
        "pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisreplident))) ORDER BY 1, 2";
    PGresult *r = NULL;
    fb_code rc = cap_query(s, sql, PGRES_TUPLES_OK, &r, "looking for tables without a replica identity", err);
    if (rc != FB_OK) return rc;
    int n = PQntuples(r);
    if (n > 0) {
        fb_sbuf b = {0};
        for (int i = 0; i < n && i < 20; i++) {
            char q[300];
            if (pgx_qualified(PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), q, sizeof q) != 0) snprintf(q, sizeof q, "(long name)");
            fb_sbuf_printf(&b, "%s%s", i ? ", " : "", q);
        }
        rc = fb_err_set(err, FB_ERR_USAGE,
                        "%d table(s) have no replica identity: %s%s; publishing them would make every UPDATE and "
                        "DELETE on them fail. Give each a primary key, or ALTER TABLE ... REPLICA IDENTITY FULL "
                        "(whole old rows go to the WAL), then create the slot", n, b.p ? b.p : "", n > 20 ? ", ..." : "");
        fb_sbuf_free(&b);
    }
    PQclear(r);
    if (rc == FB_OK) cap_stream_warn_no_pk(s);
    return rc;
}

fb_code cap_stream_slot_create(cap_stream *s, const char *slot, cap_slot_info *info, fb_err *err) {
    fb_code rc = cap_name_check(slot, "replication slot", err);
    if (rc != FB_OK) return rc;
    char sql[256];
    PGresult *r = NULL;
    /* PostgreSQL 15 takes options in parentheses; 10..14 the EXPORT_SNAPSHOT keyword. */
    if (PQserverVersion(s->conn) >= 150000)
        snprintf(sql, sizeof sql, "CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (SNAPSHOT 'export')", slot);
    else
        snprintf(sql, sizeof sql, "CREATE_REPLICATION_SLOT %s LOGICAL pgoutput EXPORT_SNAPSHOT", slot);
    rc = cap_query(s, sql, PGRES_TUPLES_OK, &r, "creating the replication slot", err);
    if (rc != FB_OK) {
        if (strcmp(err->sqlstate, PGX_DUPLICATE_OBJECT) == 0) err->code = FB_ERR_CONFLICT;
        return fb_err_prefix(err, "slot \"%s\": ", slot);
    }
    /* Columns: slot_name, consistent_point, snapshot_name, output_plugin. */
    memset(info, 0, sizeof *info);
    snprintf(info->slot, sizeof info->slot, "%s", slot);
    int ok = PQntuples(r) == 1 && PQnfields(r) >= 3 && cap_lsn_parse(PQgetvalue(r, 0, 1), &info->consistent_lsn) == 0;
    if (ok) snprintf(info->snapshot, sizeof info->snapshot, "%s", PQgetvalue(r, 0, 2));
    PQclear(r);
    if (!ok || !info->snapshot[0])
        return fb_err_set(err, FB_ERR_PG, "CREATE_REPLICATION_SLOT %s returned no consistent point or snapshot", slot);
    return FB_OK;
}

fb_code cap_stream_slot_drop(cap_stream *s, const char *slot, fb_err *err) {
    fb_code rc = cap_name_check(slot, "replication slot", err);
    if (rc != FB_OK) return rc;
    char sql[128];
    snprintf(sql, sizeof sql, "DROP_REPLICATION_SLOT %s WAIT", slot);
    rc = cap_query(s, sql, PGRES_COMMAND_OK, NULL, "dropping the replication slot", err);
    if (rc != FB_OK && strcmp(err->sqlstate, PGX_UNDEFINED_OBJECT) == 0) err->code = FB_ERR_NOTFOUND;
    return rc;
}

fb_code cap_stream_slot_position(cap_stream *s, const char *slot, uint64_t *lsn, fb_err *err) {
    fb_code rc = cap_name_check(slot, "replication slot", err);
    if (rc != FB_OK) return rc;
    char sql[256];
    PGresult *r = NULL;
    snprintf(sql, sizeof sql, "SELECT confirmed_flush_lsn FROM pg_catalog.pg_replication_slots WHERE slot_name = '%s' "
             "AND database = pg_catalog.current_database() AND NOT temporary", slot);
    rc = cap_query(s, sql, PGRES_TUPLES_OK, &r, "reading the slot's position", err);
    if (rc != FB_OK) return rc;
    int ok = PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) && cap_lsn_parse(PQgetvalue(r, 0, 0), lsn) == 0;
    PQclear(r);
    if (!ok)
        return fb_err_set(err, FB_ERR_NOTFOUND, "no logical replication slot \"%s\" on this database; create it with "
                          "`fusion-backup capture --create-slot` (and take a FULL in its snapshot)", slot);
    return FB_OK;
}

fb_code cap_stream_slot_health(cap_stream *s, const char *slot, cap_slot_health *h, fb_err *err) {
    if (s->streaming) return fb_err_set(err, FB_ERR_INTERNAL, "slot health: the capture stream is already streaming");
    return cap_slot_health_read(s->conn, slot, h, err);
}

const char *cap_stream_dbname(const cap_stream *s) { return PQdb(s->conn); }

fb_code cap_stream_start(cap_stream *s, const char *slot, const char *pub, uint64_t start_lsn, fb_err *err) {
    fb_code rc = cap_name_check(slot, "replication slot", err);
    if (rc == FB_OK) rc = cap_name_check(pub, "publication", err);
    if (rc != FB_OK) return rc;
    char sql[512];
    /* messages 'true' (PostgreSQL 14+) carries the flush requests of backups of captured changes (cap_incr.h);
     * PostgreSQL 13's pgoutput refuses the option, and there such a backup waits for the capture's own flush. */
    snprintf(sql, sizeof sql, "START_REPLICATION SLOT %s LOGICAL " CAP_LSN_FMT " (proto_version '1', publication_names "
             "'%s'%s)", slot, CAP_LSN_ARGS(start_lsn), pub,
             PQserverVersion(s->conn) >= 140000 ? ", messages 'true'" : "");
    rc = cap_query(s, sql, PGRES_COPY_BOTH, NULL, "starting replication", err);
    /* Another walsender streams it (a previous leader whose connection the server has not closed yet, or another
     * capture): worth retrying, the slot allows one at a time and frees itself when that one ends. */
    if (rc != FB_OK && strstr(err->msg, "is active for PID")) err->code = FB_ERR_TRANSIENT;
    if (rc != FB_OK) return fb_err_prefix(err, "slot \"%s\": ", slot);
    s->streaming = 1;
    s->confirmed_lsn = start_lsn;
    s->received_lsn = start_lsn;
    return FB_OK;
}

/* ---- the CopyBoth stream ------------------------------------------------------------------------------------- */

static fb_code cap_send_status(cap_stream *s, int reply, fb_err *err) {
    unsigned char m[34];
    int64_t now = fb_now_us();
    m[0] = 'r';
    cap_be64_put(m + 1, s->received_lsn > s->confirmed_lsn ? s->received_lsn : s->confirmed_lsn); /* received */
    cap_be64_put(m + 9, s->confirmed_lsn);                                                        /* flushed */
    cap_be64_put(m + 17, s->confirmed_lsn);                                                       /* applied */
    cap_be64_put(m + 25, (uint64_t)(now - CAP_PG_EPOCH_OFFSET_US));
    m[33] = (unsigned char)reply;
    if (PQputCopyData(s->conn, (const char *)m, sizeof m) != 1 || PQflush(s->conn) != 0)
        return fb_err_set(err, FB_ERR_TRANSIENT, "could not send a standby status update: %s", PQerrorMessage(s->conn));
    s->last_status_us = now;
    return FB_OK;
}

fb_code cap_stream_confirm(cap_stream *s, uint64_t lsn, fb_err *err) {
    if (!s->streaming) return fb_err_set(err, FB_ERR_INTERNAL, "confirm before cap_stream_start");
    if (lsn > s->confirmed_lsn) s->confirmed_lsn = lsn;
    return cap_send_status(s, 0, err);
}

uint64_t cap_stream_received_lsn(const cap_stream *s) { return s->received_lsn; }
int cap_stream_between_txns(const cap_stream *s) { return !cap_decoder_in_txn(s->dec); }
uint64_t cap_stream_confirmed_lsn(const cap_stream *s) { return s->confirmed_lsn; }

/* One CopyData message from the server. */
static fb_code cap_on_copy(cap_stream *s, const unsigned char *buf, size_t len, cap_txn **out, fb_err *err) {
    cap_rd r;
    cap_rd_init(&r, buf, len);
    char type = (char)cap_rd_u8(&r);
    if (type == 'k') {
        uint64_t wal_end = cap_rd_u64(&r);
        (void)cap_rd_u64(&r);
        uint8_t reply = cap_rd_u8(&r);
        if (r.bad) return fb_err_set(err, FB_ERR_FORMAT, "truncated keepalive from the walsender");
        if (wal_end > s->received_lsn) s->received_lsn = wal_end;
        return reply ? cap_send_status(s, 0, err) : FB_OK;
    }
    if (type != 'w') return fb_err_set(err, FB_ERR_FORMAT, "unknown replication message type 0x%02x", (unsigned char)type);
    uint64_t wal_start = cap_rd_u64(&r), wal_end = cap_rd_u64(&r);
    (void)cap_rd_u64(&r);
    if (r.bad) return fb_err_set(err, FB_ERR_FORMAT, "truncated XLogData header from the walsender");
    if (wal_end > s->received_lsn) s->received_lsn = wal_end;
    return cap_decoder_feed(s->dec, buf + r.off, len - r.off, wal_start, out, err);
}

/* Waits for the socket to be readable, at most ms milliseconds. */
static fb_code cap_wait(cap_stream *s, int ms, fb_err *err) {
    struct pollfd p = {.fd = PQsocket(s->conn), .events = POLLIN};
    int n = poll(&p, 1, ms);
    if (n < 0 && errno != EINTR) return fb_err_set(err, FB_ERR_IO, "poll on the replication connection: %s", strerror(errno));
    if (n > 0 && PQconsumeInput(s->conn) != 1)
        return fb_err_set(err, FB_ERR_TRANSIENT, "replication connection lost: %s", PQerrorMessage(s->conn));
    return FB_OK;
}

/* The stream ended (server shutdown, slot dropped, error): the server's message says which. A fast shutdown
 * ends the COPY cleanly, with no error message at all (seen in tests/integration/test_pitr_load.py), so that case
 * is named rather than logged as an empty reason. */
static fb_code cap_stream_ended(cap_stream *s, fb_err *err) {
    PGresult *r = PQgetResult(s->conn);
    const char *why = r && PQresultErrorMessage(r)[0] ? PQresultErrorMessage(r) : PQerrorMessage(s->conn);
    fb_code rc = fb_err_set(err, FB_ERR_TRANSIENT, "replication stream ended: %s",
                            why[0] ? why : "the server ended it without an error (a shutdown, or its walsender "
                                           "stopped)");
    PQclear(r);
    s->streaming = 0;
    return rc;
}

fb_code cap_stream_next(cap_stream *s, int timeout_ms, cap_txn **out, fb_err *err) {
    *out = NULL;
    if (!s->streaming) return fb_err_set(err, FB_ERR_INTERNAL, "cap_stream_next before cap_stream_start");
    int64_t deadline = fb_now_us() + (int64_t)timeout_ms * 1000;
    int polled = 0; /* the socket is read at least once, even with timeout 0, or a caller's busy loop reads nothing */
    for (;;) {
        char *buf = NULL;
        int n = PQgetCopyData(s->conn, &buf, 1);
        fb_code rc = FB_OK;
        if (n > 0) {
            rc = cap_on_copy(s, (const unsigned char *)buf, (size_t)n, out, err);
            PQfreemem(buf);
        } else if (n == -1) {
            return cap_stream_ended(s, err);
        } else if (n == -2) {
            return fb_err_set(err, FB_ERR_TRANSIENT, "replication connection failed: %s", PQerrorMessage(s->conn));
        } else {
            int64_t left = deadline - fb_now_us();
            if (left <= 0 && polled) return FB_OK;
            rc = cap_wait(s, left > 0 ? (int)(left / 1000) + 1 : 0, err);
            polled = 1;
        }
        if (rc == FB_OK && fb_now_us() - s->last_status_us >= CAP_STATUS_INTERVAL_US) rc = cap_send_status(s, 0, err);
        /* a flush request or a heartbeat: now */
        if (rc != FB_OK || *out || cap_decoder_flush_pending(s->dec) || cap_decoder_heartbeat_pending(s->dec)) return rc;
    }
}

int cap_stream_take_flush_request(cap_stream *s) { return cap_decoder_take_flush(s->dec); }
int cap_stream_take_heartbeat(cap_stream *s) { return cap_decoder_take_heartbeat(s->dec); }

void cap_stream_last_commit(const cap_stream *s, uint64_t *end_lsn, int64_t *commit_us) {
    cap_decoder_last_commit(s->dec, end_lsn, commit_us);
}

/* ---- the heartbeat ------------------------------------------------------------------------------------------- */

int cap_stream_can_heartbeat(const cap_stream *s) { return PQserverVersion(s->conn) >= 140000; }

/* An ordinary connection to the streamed database: it commits locally only (a synchronous standby that is down
 * must not stall the capture) and gives up on a statement within seconds. */
static fb_code cap_hb_connect(cap_stream *s, fb_err *err) {
    const char *keys[] = {"dbname", "application_name", "options", "connect_timeout", s->dbname ? "dbname" : NULL, NULL};
    const char *vals[] = {s->conninfo, "fusion-backup capture heartbeat",
                          "-c synchronous_commit=local -c statement_timeout=5000", "5", s->dbname, NULL};
    s->hb = PQconnectdbParams(keys, vals, 1);
    if (s->hb && PQstatus(s->hb) == CONNECTION_OK) return FB_OK;
    fb_err_set(err, FB_ERR_TRANSIENT, "could not connect for the capture's heartbeat: %s",
               s->hb ? PQerrorMessage(s->hb) : "out of memory");
    PQfinish(s->hb);
    s->hb = NULL;
    return FB_ERR_TRANSIENT;
}

fb_code cap_stream_heartbeat(cap_stream *s, fb_err *err) {
    if (!cap_stream_can_heartbeat(s))
        return fb_err_set(err, FB_ERR_USAGE, "PostgreSQL %d's pgoutput sends no logical messages: no heartbeat",
                          PQserverVersion(s->conn) / 10000);
    if (!s->hb && cap_hb_connect(s, err) != FB_OK) return err->code;
    PGresult *r = PQexec(s->hb, "SELECT pg_catalog.pg_logical_emit_message(true, '" CAP_HEARTBEAT_PREFIX "', '')");
    fb_code rc = pgx_check(s->hb, r, PGRES_TUPLES_OK, "sending the capture's heartbeat", err);
    if (rc == FB_OK) PQclear(r);
    else if (PQstatus(s->hb) != CONNECTION_OK) {
        PQfinish(s->hb); /* the next heartbeat reconnects */
        s->hb = NULL;
    }
    return rc;
}
