/* cap_testenv: which PostgreSQL the change capture tests use (included by tests/c/test_capture*.c only).
 *
 * Capture needs wal_level=logical. FB_TEST_PG_LOGICAL (a conninfo) names such a server when set; otherwise the
 * main FB_TEST_PG is used if it runs wal_level=logical (deploy/local/services.sh configures that); otherwise the
 * test fails, saying what to set. It never skips: CI's server is logical.
 */
#ifndef CAP_TESTENV_H
#define CAP_TESTENV_H

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *cap_test_conninfo(void) {
    const char *ci = getenv("FB_TEST_PG_LOGICAL");
    if (ci && *ci) return ci;
    ci = tap_need_env("FB_TEST_PG");
    PGconn *c = PQconnectdb(ci);
    PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, "SHOW wal_level") : NULL;
    int logical = r && PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "logical") == 0;
    if (!logical)
        printf("not ok - change capture needs a server with wal_level=logical: FB_TEST_PG (%s) runs %s; set "
               "FB_TEST_PG_LOGICAL to the conninfo of a logical server, or restart the local one after "
               "deploy/local/services.sh wrote wal_level=logical (services.sh stop pg && services.sh start pg)\n",
               ci, r && PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    if (!logical) exit(1);
    return ci;
}

/* The capture tests' waiting loops end at a deadline, never after a number of calls: a stream or capture step
 * returns at once on each keepalive, and under a parallel ctest the WAL of the other tests' databases brings
 * enough of them to spend 100 calls in well under a second (test_capture_segment and _stream failed so in CI). */
#define CAP_TEST_WAIT_S 30.0
static inline double cap_test_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Drops the slots of the SQL list `names` ('a', 'b') once no walsender holds them: a stream closed a moment ago
 * leaves its walsender exiting, and while a slot is active neither it nor its database can be dropped (DROP
 * DATABASE ... WITH (FORCE) refuses: "used by an active logical replication slot"). A walsender still there
 * after a second is terminated. */
static inline void cap_test_drop_slots(PGconn *c, const char *names) {
    char sql[1024];
    for (double until = cap_test_now() + CAP_TEST_WAIT_S, t0 = cap_test_now(); cap_test_now() < until;) {
        snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name IN (%s)", names);
        PGresult *r = PQexec(c, sql);
        int busy = PQresultStatus(r) != PGRES_TUPLES_OK || strcmp(PQgetvalue(r, 0, 0), "0") != 0;
        PQclear(r);
        if (!busy) break;
        if (cap_test_now() - t0 > 1.0) {
            snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE active "
                     "AND slot_name IN (%s)", names);
            PQclear(PQexec(c, sql));
        }
        usleep(50000);
    }
    snprintf(sql, sizeof sql, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name "
             "IN (%s)", names);
    PQclear(PQexec(c, sql));
}

#endif
