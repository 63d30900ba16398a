/* test_capture_slot: what change capture makes of its slot's state (cap_slot), including the invalidated ('lost')
 * slot that the integration tests cannot provoke on a shared server (max_slot_wal_keep_size is server-wide).
 *
 * Proves: a lost, missing or non-pgoutput slot is refused with a message naming the slot and the database, saying
 * that a new base is needed and which command makes one; an 'unreserved' slot (about to be lost) still streams but
 * reports its state; the lag in seconds counts from the last movement of the confirmed position, only while the
 * slot lags; and against the real server, a slot that does not exist reads as missing, and one that exists as ok
 * with its lag in bytes; a second walsender on a slot another one streams is refused as transient (a takeover
 * waits for the old leader's walsender to go, it does not stop).
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "capture/cap_slot.h"
#include "capture/cap_stream.h"
#include "tap.h"
#include "cap_testenv.h"

static cap_slot_health slot(const char *wal_status, int logical) {
    cap_slot_health h = {.exists = 1, .logical = logical, .safe_wal_size = -1, .confirmed_lsn = 0x1000,
                         .current_lsn = 0x5000, .lag_bytes = 0x4000};
    snprintf(h.wal_status, sizeof h.wal_status, "%s", wal_status);
    return h;
}

static void refusals(void) {
    fb_err err = {0};
    cap_slot_health lost = slot("lost", 1);
    CHECK_EQ_STR(cap_slot_state(&lost), "lost");
    CHECK(cap_slot_usable(&lost, "fusion", "fb_slot", &err) == FB_ERR_NOTFOUND);
    CHECKF(strstr(err.msg, "\"fb_slot\"") && strstr(err.msg, "\"fusion\"") && strstr(err.msg, "invalidated") &&
           strstr(err.msg, "max_slot_wal_keep_size") && strstr(err.msg, "--create-slot") && strstr(err.msg, "FULL"),
           "lost: %s", err.msg);
    cap_slot_health missing = {.safe_wal_size = -1};
    CHECK_EQ_STR(cap_slot_state(&missing), "missing");
    CHECK(cap_slot_usable(&missing, "fusion", "fb_slot", &err) == FB_ERR_NOTFOUND);
    CHECKF(strstr(err.msg, "does not exist") && strstr(err.msg, "new base"), "missing: %s", err.msg);
    cap_slot_health other = slot("reserved", 0);
    CHECK_EQ_STR(cap_slot_state(&other), "not_pgoutput");
    CHECK(cap_slot_usable(&other, "fusion", "fb_slot", &err) == FB_ERR_NOTFOUND && strstr(err.msg, "pgoutput"));
    cap_slot_health unres = slot("unreserved", 1);
    CHECK_EQ_STR(cap_slot_state(&unres), "unreserved");
    CHECK(cap_slot_usable(&unres, "fusion", "fb_slot", &err) == FB_OK);
    cap_slot_health ok = slot("extended", 1);
    CHECK_EQ_STR(cap_slot_state(&ok), "ok");
    CHECK(cap_slot_usable(&ok, "fusion", "fb_slot", &err) == FB_OK);
}

static void lag_seconds(void) {
    cap_slot_lag t = {0};
    cap_slot_health h = slot("reserved", 1);
    CHECK(cap_slot_lag_seconds(&t, &h, 10000) == 0.0);  /* first poll: counts from now */
    CHECK(cap_slot_lag_seconds(&t, &h, 13500) == 3.5);  /* not moved, still behind */
    h.confirmed_lsn = 0x2000;
    CHECK(cap_slot_lag_seconds(&t, &h, 14000) == 0.0);  /* moved */
    CHECK(cap_slot_lag_seconds(&t, &h, 15000) == 1.0);
    h.lag_bytes = 0;
    CHECK(cap_slot_lag_seconds(&t, &h, 99000) == 0.0);  /* caught up: no lag however long since it moved */
}

static void live(void) {
    const char *ci = cap_test_conninfo();
    PGconn *c = tap_pg_connect(ci, "postgres");
    cap_slot_health h;
    fb_err err = {0};
    CHECKF(cap_slot_health_read(c, "capsafety_no_such_slot", &h, &err) == FB_OK, "read: %s", err.msg);
    CHECK(!h.exists && h.lag_bytes == 0 && strcmp(cap_slot_state(&h), "missing") == 0 && h.current_lsn > 0);
    PQclear(PQexec(c, "SELECT pg_drop_replication_slot('capsafety_t_slot') FROM pg_replication_slots "
                      "WHERE slot_name = 'capsafety_t_slot'"));
    PGresult *r = PQexec(c, "SELECT pg_create_logical_replication_slot('capsafety_t_slot', 'pgoutput')");
    CHECKF(PQresultStatus(r) == PGRES_TUPLES_OK, "create: %s", PQerrorMessage(c));
    PQclear(r);
    PQclear(PQexec(c, "SELECT pg_logical_emit_message(false, 'capsafety', 'x')")); /* some WAL beyond the slot */
    CHECKF(cap_slot_health_read(c, "capsafety_t_slot", &h, &err) == FB_OK, "read: %s", err.msg);
    CHECK(h.exists && h.logical && !h.active && strcmp(cap_slot_state(&h), "ok") == 0);
    CHECK(h.current_lsn >= h.confirmed_lsn && h.lag_bytes == h.current_lsn - h.confirmed_lsn);
    CHECK(strcmp(h.wal_status, "reserved") == 0 || strcmp(h.wal_status, "extended") == 0);
    char db_ci[1024];
    snprintf(db_ci, sizeof db_ci, "%s dbname=postgres", ci);
    cap_stream *one = NULL, *two = NULL;
    CHECKF(cap_stream_open(db_ci, "capsafety slot test", &one, &err) == FB_OK, "open: %s", err.msg);
    CHECKF(cap_stream_open(db_ci, "capsafety slot test", &two, &err) == FB_OK, "open: %s", err.msg);
    if (one && two) {
        CHECKF(cap_stream_start(one, "capsafety_t_slot", "capsafety_no_pub", h.confirmed_lsn, &err) == FB_OK, "start: %s",
               err.msg);
        fb_code rc = cap_stream_start(two, "capsafety_t_slot", "capsafety_no_pub", h.confirmed_lsn, &err);
        CHECKF(rc == FB_ERR_TRANSIENT && strstr(err.msg, "is active for PID"), "second walsender: %d %s", (int)rc, err.msg);
    }
    cap_stream_free(one);
    cap_stream_free(two);
    for (int i = 0; i < 50; i++) { /* the walsender goes when its connection does */
        if (cap_slot_health_read(c, "capsafety_t_slot", &h, &err) == FB_OK && !h.active) break;
        usleep(100000);
    }
    PQclear(PQexec(c, "SELECT pg_drop_replication_slot('capsafety_t_slot')"));
    PQfinish(c);
}

int main(void) {
    refusals();
    lag_seconds();
    live();
    return tap_done();
}
