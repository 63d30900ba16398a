/* test_capture_stream: pgoutput decoding through a real logical replication slot (cap_stream, cap_pgoutput).
 *
 * Proves: the slot's exported snapshot sees exactly the rows committed before its consistent point, and the
 * stream holds exactly the transactions committed after it, in commit order, each with its xid and an LSN range
 * that lies between the WAL positions measured around its commit; Insert/Update/Delete/Truncate decode with
 * quoted mixed-case names, NULLs, text with tabs/newlines/backslashes/quotes, a 100 kB value and an unchanged
 * TOASTed value ('u'); a confirmed position is what the slot restarts from (no transaction re-sent, none
 * skipped); malformed pgoutput bytes are refused with FB_ERR_FORMAT, never a crash.
 */
#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capture/cap_pgoutput.h"
#include "capture/cap_stream.h"
#include "capture/cap_wire.h"
#include "tap.h"
#include "cap_testenv.h"

#define DB "capture_stream_t"
#define SLOT "capture_stream_slot"
#define PUB "capture_stream_pub"

static const char *base_ci;

static void exec_ok(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    CHECKF(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%.120s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

static char *scalar(PGconn *c, const char *sql) {
    static char buf[256];
    PGresult *r = PQexec(c, sql);
    snprintf(buf, sizeof buf, "%s", PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) ? PQgetvalue(r, 0, 0) : PQerrorMessage(c));
    PQclear(r);
    return buf;
}

static uint64_t lsn_now(PGconn *c) {
    uint64_t l = 0;
    CHECK(cap_lsn_parse(scalar(c, "SELECT pg_current_wal_lsn()"), &l) == 0);
    return l;
}

/* One committed transaction of the test: its xid and the WAL positions before it began and after it committed. */
typedef struct { uint32_t xid; uint64_t before, after; } ran;

static ran run_txn(PGconn *c, const char *sql) {
    ran t = {0};
    t.before = lsn_now(c);
    exec_ok(c, "BEGIN");
    t.xid = (uint32_t)strtoul(scalar(c, "SELECT txid_current()"), NULL, 10);
    exec_ok(c, sql);
    exec_ok(c, "COMMIT");
    t.after = lsn_now(c);
    return t;
}

static void setup_db(void) {
    PGconn *c = tap_pg_connect(base_ci, "postgres");
    cap_test_drop_slots(c, "'" SLOT "'");
    exec_ok(c, "DROP DATABASE IF EXISTS " DB " WITH (FORCE)");
    exec_ok(c, "CREATE DATABASE " DB);
    PQfinish(c);
    c = tap_pg_connect(base_ci, DB);
    exec_ok(c, "CREATE SCHEMA \"Mixed Schema\"");
    exec_ok(c, "CREATE TABLE \"Mixed Schema\".\"Leave Item\" (id int PRIMARY KEY, \"Name\" text, n int, big text)");
    exec_ok(c, "CREATE TABLE public.plain (id int PRIMARY KEY, v text)");
    exec_ok(c, "INSERT INTO \"Mixed Schema\".\"Leave Item\" VALUES (100, 'before the slot', 1, NULL)");
    PQfinish(c);
}

static int64_t wait_txn(cap_stream *s, cap_txn **t) {
    fb_err err = {0};
    for (double until = cap_test_now() + CAP_TEST_WAIT_S; !*t && cap_test_now() < until;) {
        fb_code rc = cap_stream_next(s, 100, t, &err);
        CHECKF(rc == FB_OK, "cap_stream_next: %s", err.msg);
        if (rc != FB_OK) return -1;
    }
    CHECK(*t != NULL);
    return *t ? 0 : -1;
}

static void check_lsns(const cap_txn *t, const ran *r, uint64_t prev_end, const char *name) {
    CHECKF(t->xid == r->xid, "%s: xid %u, expected %u", name, t->xid, r->xid);
    CHECKF(t->commit_lsn >= r->before && t->end_lsn <= r->after && t->commit_lsn < t->end_lsn,
           "%s: commit " CAP_LSN_FMT "..." CAP_LSN_FMT " outside " CAP_LSN_FMT "..." CAP_LSN_FMT, name,
           CAP_LSN_ARGS(t->commit_lsn), CAP_LSN_ARGS(t->end_lsn), CAP_LSN_ARGS(r->before), CAP_LSN_ARGS(r->after));
    CHECKF(t->commit_lsn >= prev_end, "%s: commit LSN before the previous transaction's end", name);
    CHECKF(t->commit_time_us > INT64_C(1700000000000000), "%s: commit time %lld is not a Unix-epoch time", name,
           (long long)t->commit_time_us);
}

static void check_val(const cap_val *v, char kind, const char *text, const char *what) {
    CHECKF(v->kind == kind, "%s: kind '%c', expected '%c'", what, v->kind ? v->kind : '0', kind);
    if (kind == 't') CHECKF(v->data && strcmp(v->data, text) == 0 && v->len == strlen(text), "%s: \"%.60s\"", what, v->data ? v->data : "(null)");
}

static void test_stream(void) {
    fb_err err = {0};
    cap_stream *s = NULL;
    cap_slot_info info;
    char ci[1024];
    snprintf(ci, sizeof ci, "%s dbname=%s", base_ci, DB);
    CHECKF(cap_stream_open(ci, "capture test", &s, &err) == FB_OK, "open: %s", err.msg);
    if (!s) return;
    CHECKF(cap_stream_publication_ensure(s, PUB, NULL, 0, &err) == FB_OK, "publication: %s", err.msg);
    CHECKF(cap_stream_publication_ensure(s, PUB, NULL, 0, &err) == FB_OK, "publication again: %s", err.msg);
    CHECKF(cap_stream_slot_create(s, SLOT, &info, &err) == FB_OK, "slot: %s", err.msg);
    CHECK(info.consistent_lsn > 0);
    CHECK(info.snapshot[0] != '\0');
    fb_err e2 = {0};
    CHECK(cap_stream_slot_create(s, "Bad-Name; DROP", &info, &e2) == FB_ERR_USAGE);

    PGconn *w = tap_pg_connect(base_ci, DB);
    /* The exported snapshot: a FULL taken in it sees the row committed before the slot, not later ones. */
    PGconn *snap = tap_pg_connect(base_ci, DB);
    exec_ok(snap, "BEGIN ISOLATION LEVEL REPEATABLE READ");
    char sql[256];
    snprintf(sql, sizeof sql, "SET TRANSACTION SNAPSHOT '%s'", info.snapshot);
    exec_ok(snap, sql);

    /* A 100 kB value that does not compress (so it is TOASTed out of line and later sent as 'u' when unchanged). */
    const char *big_sql = "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 3125) g)";
    char t1sql[1024];
    snprintf(t1sql, sizeof t1sql,
             "INSERT INTO \"Mixed Schema\".\"Leave Item\" VALUES (1, E'tab\\there\\nnew line \\\\ back ''q''', NULL, NULL);"
             "INSERT INTO \"Mixed Schema\".\"Leave Item\" VALUES (2, 'two', 2, %s);"
             "INSERT INTO public.plain VALUES (1, 'p1'), (2, NULL)", big_sql);
    ran r1 = run_txn(w, t1sql);
    ran r2 = run_txn(w, "UPDATE \"Mixed Schema\".\"Leave Item\" SET n = 20 WHERE id = 2;"
                        "DELETE FROM \"Mixed Schema\".\"Leave Item\" WHERE id = 100");
    ran r3 = run_txn(w, "TRUNCATE public.plain");
    ran r4 = run_txn(w, "UPDATE \"Mixed Schema\".\"Leave Item\" SET id = 3 WHERE id = 1");
    CHECK_EQ_STR(scalar(snap, "SELECT count(*) FROM \"Mixed Schema\".\"Leave Item\""), "1");
    CHECK_EQ_STR(scalar(snap, "SELECT string_agg(id::text, ',') FROM \"Mixed Schema\".\"Leave Item\""), "100");
    exec_ok(snap, "COMMIT");
    PQfinish(snap);
    char expect_big[100001] = "";
    PGresult *br = PQexec(w, "SELECT big FROM \"Mixed Schema\".\"Leave Item\" WHERE id = 2");
    CHECK(PQresultStatus(br) == PGRES_TUPLES_OK && PQgetlength(br, 0, 0) == 100000);
    snprintf(expect_big, sizeof expect_big, "%s", PQgetvalue(br, 0, 0));
    PQclear(br);

    CHECKF(cap_stream_start(s, SLOT, PUB, info.consistent_lsn, &err) == FB_OK, "start: %s", err.msg);
    cap_txn *t[4] = {0};
    for (int i = 0; i < 4; i++)
        if (wait_txn(s, &t[i]) != 0) goto out;

    /* T1: three inserts, in statement order. */
    check_lsns(t[0], &r1, info.consistent_lsn, "T1");
    CHECK_EQ_INT(t[0]->nchanges, 4);
    if (t[0]->nchanges == 4) {
        const cap_change *c = &t[0]->changes[0];
        CHECK(c->kind == CAP_INSERT);
        CHECK_EQ_STR(c->rel->nspname, "Mixed Schema");
        CHECK_EQ_STR(c->rel->relname, "Leave Item");
        CHECK_EQ_INT(c->rel->ncols, 4);
        CHECK_EQ_STR(c->rel->cols[1].name, "Name");
        CHECK(c->rel->cols[0].flags & CAP_COL_KEY);
        CHECK(!(c->rel->cols[1].flags & CAP_COL_KEY));
        CHECK_EQ_INT(c->rel->cols[0].type_oid, 23);  /* int4 */
        CHECK_EQ_INT(c->rel->cols[1].type_oid, 25);  /* text */
        check_val(&c->new_tup.vals[0], 't', "1", "T1 row 1 id");
        check_val(&c->new_tup.vals[1], 't', "tab\there\nnew line \\ back 'q'", "T1 row 1 Name");
        check_val(&c->new_tup.vals[2], 'n', NULL, "T1 row 1 n");
        check_val(&t[0]->changes[1].new_tup.vals[3], 't', expect_big, "T1 row 2 big (100 kB)");
        CHECK_EQ_STR(t[0]->changes[2].rel->relname, "plain");
        check_val(&t[0]->changes[3].new_tup.vals[1], 'n', NULL, "T1 plain row 2 v");
    }
    /* T2: an update that leaves the TOASTed value unchanged ('u'), then a delete by key. */
    check_lsns(t[1], &r2, t[0]->end_lsn, "T2");
    CHECK_EQ_INT(t[1]->nchanges, 2);
    if (t[1]->nchanges == 2) {
        const cap_change *u = &t[1]->changes[0], *d = &t[1]->changes[1];
        CHECK(u->kind == CAP_UPDATE && u->old_kind == 0);
        check_val(&u->new_tup.vals[2], 't', "20", "T2 update n");
        check_val(&u->new_tup.vals[3], 'u', NULL, "T2 update big (unchanged TOAST)");
        CHECK(d->kind == CAP_DELETE && d->old_kind == 'K');
        check_val(&d->old_tup.vals[0], 't', "100", "T2 delete key");
        check_val(&d->old_tup.vals[1], 'n', NULL, "T2 delete non-key column (not sent)");
    }
    /* T3: truncate. */
    check_lsns(t[2], &r3, t[1]->end_lsn, "T3");
    CHECK(t[2]->nchanges == 1 && t[2]->changes[0].kind == CAP_TRUNCATE && t[2]->changes[0].ntrunc == 1 &&
          strcmp(t[2]->changes[0].trunc_rels[0]->relname, "plain") == 0);
    /* T4: a key change sends the old key ('K'). */
    check_lsns(t[3], &r4, t[2]->end_lsn, "T4");
    CHECK(t[3]->nchanges == 1 && t[3]->changes[0].kind == CAP_UPDATE && t[3]->changes[0].old_kind == 'K');
    if (t[3]->nchanges == 1) {
        check_val(&t[3]->changes[0].old_tup.vals[0], 't', "1", "T4 old key");
        check_val(&t[3]->changes[0].new_tup.vals[0], 't', "3", "T4 new key");
    }

    /* Confirm T2 only; a new stream from 0/0 must resume with T3 (the slot's confirmed position). */
    uint64_t confirmed = t[1]->end_lsn;
    CHECKF(cap_stream_confirm(s, confirmed, &err) == FB_OK, "confirm: %s", err.msg);
    uint32_t xid3 = t[2]->xid;
    for (int i = 0; i < 4; i++) cap_txn_free(t[i]);
    memset(t, 0, sizeof t);
    cap_stream_free(s);
    s = NULL;
    PGconn *pc = tap_pg_connect(base_ci, DB);
    for (int i = 0; i < 50; i++) { /* the walsender exits asynchronously after the client goes */
        if (strcmp(scalar(pc, "SELECT active FROM pg_replication_slots WHERE slot_name = '" SLOT "'"), "f") == 0) break;
        exec_ok(pc, "SELECT pg_sleep(0.1)");
    }
    uint64_t flushed = 0;
    CHECK(cap_lsn_parse(scalar(pc, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '" SLOT "'"), &flushed) == 0);
    CHECKF(flushed == confirmed, "slot confirmed_flush_lsn " CAP_LSN_FMT ", expected " CAP_LSN_FMT, CAP_LSN_ARGS(flushed), CAP_LSN_ARGS(confirmed));
    PQfinish(pc);
    CHECKF(cap_stream_open(ci, "capture test", &s, &err) == FB_OK, "reopen: %s", err.msg);
    if (!s) goto out;
    CHECKF(cap_stream_start(s, SLOT, PUB, 0, &err) == FB_OK, "restart: %s", err.msg);
    cap_txn *again = NULL;
    if (wait_txn(s, &again) == 0) CHECKF(again->xid == xid3, "after restart first xid %u, expected T3's %u", again->xid, xid3);
    cap_txn_free(again);
out:
    for (int i = 0; i < 4; i++) cap_txn_free(t[i]);
    cap_stream_free(s);
    PQfinish(w);
}

/* ---- malformed pgoutput bytes (no server needed) ------------------------------------------------------------- */

static fb_code feed(cap_decoder *d, const fb_sbuf *b, cap_txn **done, fb_err *err) {
    return cap_decoder_feed(d, b->p, b->len, 0x1000, done, err);
}

static void msg_relation(fb_sbuf *b, uint32_t relid, uint16_t ncols) {
    cap_wr_u8(b, 'R');
    cap_wr_u32(b, relid);
    fb_sbuf_put(b, "public", 7);
    fb_sbuf_put(b, "t", 2);
    cap_wr_u8(b, 'd');
    cap_wr_u16(b, ncols);
    for (uint16_t i = 0; i < ncols; i++) {
        cap_wr_u8(b, 1);
        fb_sbuf_put(b, "c", 2);
        cap_wr_u32(b, 25);
        cap_wr_u32(b, (uint32_t)-1);
    }
}

static void msg_begin(fb_sbuf *b, uint64_t lsn) {
    cap_wr_u8(b, 'B');
    cap_wr_u64(b, lsn);
    cap_wr_u64(b, 0);
    cap_wr_u32(b, 7);
}

static void test_malformed(void) {
    cap_decoder *d = cap_decoder_new();
    fb_err err = {0};
    cap_txn *done = NULL;
    fb_sbuf b = {0};
    /* Every prefix of a valid Relation message is refused, and so is the whole one with a trailing byte. */
    msg_relation(&b, 42, 2);
    for (size_t n = 0; n < b.len; n++) {
        fb_code rc = cap_decoder_feed(d, b.p, n, 0x1000, &done, &err);
        if (rc != FB_ERR_FORMAT) CHECKF(0, "Relation truncated to %zu bytes: code %d (%s)", n, rc, err.msg);
    }
    CHECK(feed(d, &b, &done, &err) == FB_OK);
    fb_sbuf_free(&b);
    /* A change outside a transaction. */
    cap_wr_u8(&b, 'I'); cap_wr_u32(&b, 42); cap_wr_u8(&b, 'N'); cap_wr_u16(&b, 2); cap_wr_u8(&b, 'n'); cap_wr_u8(&b, 'n');
    CHECK(feed(d, &b, &done, &err) == FB_ERR_FORMAT && strstr(err.msg, "outside a transaction"));
    fb_sbuf_free(&b);
    msg_begin(&b, 0x2000);
    CHECK(feed(d, &b, &done, &err) == FB_OK);
    fb_sbuf_free(&b);
    /* Unknown relation; wrong column count; a value longer than the message; binary and unknown kinds. */
    cap_wr_u8(&b, 'I'); cap_wr_u32(&b, 43); cap_wr_u8(&b, 'N'); cap_wr_u16(&b, 0);
    CHECK(feed(d, &b, &done, &err) == FB_ERR_FORMAT && strstr(err.msg, "no Relation message"));
    fb_sbuf_free(&b);
    cap_wr_u8(&b, 'I'); cap_wr_u32(&b, 42); cap_wr_u8(&b, 'N'); cap_wr_u16(&b, 1); cap_wr_u8(&b, 'n');
    CHECK(feed(d, &b, &done, &err) == FB_ERR_FORMAT && strstr(err.msg, "has 1 columns, its relation 2"));
    fb_sbuf_free(&b);
    cap_wr_u8(&b, 'I'); cap_wr_u32(&b, 42); cap_wr_u8(&b, 'N'); cap_wr_u16(&b, 2); cap_wr_u8(&b, 't'); cap_wr_u32(&b, 0xffffffffu);
    CHECK(feed(d, &b, &done, &err) == FB_ERR_FORMAT && strstr(err.msg, "truncated"));
    fb_sbuf_free(&b);
    cap_wr_u8(&b, 'I'); cap_wr_u32(&b, 42); cap_wr_u8(&b, 'N'); cap_wr_u16(&b, 2); cap_wr_u8(&b, 'b'); cap_wr_u32(&b, 0); cap_wr_u8(&b, 'n');
    CHECK(feed(d, &b, &done, &err) == FB_ERR_FORMAT && strstr(err.msg, "binary"));
    fb_sbuf_free(&b);
    cap_wr_u8(&b, 'I'); cap_wr_u32(&b, 42); cap_wr_u8(&b, 'X'); cap_wr_u16(&b, 2);
    CHECK(feed(d, &b, &done, &err) == FB_ERR_FORMAT && strstr(err.msg, "tuple marker"));
    fb_sbuf_free(&b);
    /* A text value with a NUL byte (text output never has one: a forged stream). */
    cap_wr_u8(&b, 'I'); cap_wr_u32(&b, 42); cap_wr_u8(&b, 'N'); cap_wr_u16(&b, 2); cap_wr_u8(&b, 't'); cap_wr_u32(&b, 3);
    fb_sbuf_put(&b, "a\0b", 3); cap_wr_u8(&b, 'n');
    CHECK(feed(d, &b, &done, &err) == FB_ERR_FORMAT && strstr(err.msg, "NUL"));
    fb_sbuf_free(&b);
    /* A Truncate naming more relations than its bytes hold. */
    cap_wr_u8(&b, 'T'); cap_wr_u32(&b, 1000000); cap_wr_u8(&b, 0); cap_wr_u32(&b, 42);
    CHECK(feed(d, &b, &done, &err) == FB_ERR_FORMAT);
    fb_sbuf_free(&b);
    /* A nested Begin; a Commit whose LSN differs from its Begin's; a good Commit; a Commit out of LSN order. */
    msg_begin(&b, 0x3000);
    CHECK(feed(d, &b, &done, &err) == FB_ERR_FORMAT && strstr(err.msg, "inside transaction"));
    fb_sbuf_free(&b);
    cap_wr_u8(&b, 'C'); cap_wr_u8(&b, 0); cap_wr_u64(&b, 0x2001); cap_wr_u64(&b, 0x2100); cap_wr_u64(&b, 0);
    CHECK(feed(d, &b, &done, &err) == FB_ERR_FORMAT && done == NULL);
    fb_sbuf_free(&b);
    cap_wr_u8(&b, 'C'); cap_wr_u8(&b, 0); cap_wr_u64(&b, 0x2000); cap_wr_u64(&b, 0x2100); cap_wr_u64(&b, 0);
    CHECK(feed(d, &b, &done, &err) == FB_OK && done && done->end_lsn == 0x2100 && done->xid == 7);
    cap_txn_free(done);
    done = NULL;
    fb_sbuf_free(&b);
    msg_begin(&b, 0x2050);
    CHECK(feed(d, &b, &done, &err) == FB_OK);
    fb_sbuf_free(&b);
    cap_wr_u8(&b, 'C'); cap_wr_u8(&b, 0); cap_wr_u64(&b, 0x2050); cap_wr_u64(&b, 0x2060); cap_wr_u64(&b, 0);
    CHECK(feed(d, &b, &done, &err) == FB_ERR_FORMAT && strstr(err.msg, "previous commit"));
    fb_sbuf_free(&b);
    cap_wr_u8(&b, 'Z');
    CHECK(feed(d, &b, &done, &err) == FB_ERR_FORMAT && strstr(err.msg, "unknown pgoutput message"));
    fb_sbuf_free(&b);
    cap_decoder_free(d);
}

int main(void) {
    test_malformed();
    base_ci = cap_test_conninfo();
    setup_db();
    test_stream();
    PGconn *c = tap_pg_connect(base_ci, "postgres");
    cap_test_drop_slots(c, "'" SLOT "'");
    exec_ok(c, "DROP DATABASE IF EXISTS " DB " WITH (FORCE)");
    PQfinish(c);
    return tap_done();
}
