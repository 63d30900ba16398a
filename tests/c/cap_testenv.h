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

#endif
