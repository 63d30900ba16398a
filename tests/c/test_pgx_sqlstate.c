/* test_pgx_sqlstate: a PostgreSQL refusal carries its SQLSTATE in fb_err (err.sqlstate), so callers classify it by
 * that field and never by searching the message (pgx.h); the one list of retryable SQLSTATEs classifies as its
 * comment says. Real server errors, in temporary tables of the postgres database. */
#include <libpq-fe.h>
#include <string.h>

#include "pg/pgx.h"
#include "tap.h"

static void carried(PGconn *c) {
    fb_err err;
    CHECK(pgx_exec(c, "CREATE TEMP TABLE p (id int PRIMARY KEY); CREATE TEMP TABLE ch (p int REFERENCES p)",
                   "creating tables", &err) == FB_OK);
    fb_code rc = pgx_exec(c, "INSERT INTO ch VALUES (42)", "inserting an orphan", &err);
    CHECK_EQ_INT(rc, FB_ERR_PG);
    CHECK_EQ_STR(err.sqlstate, PGX_FOREIGN_KEY_VIOLATION);
    fb_err_prefix(&err, "context: ");
    CHECK_EQ_STR(err.sqlstate, PGX_FOREIGN_KEY_VIOLATION); /* a prefix keeps it */
    rc = pgx_exec(c, "CREATE TEMP TABLE p (id int)", "creating it again", &err);
    CHECK_EQ_STR(err.sqlstate, "42P07");
    CHECK(pgx_sqlstate_duplicate(err.sqlstate)); /* what restore --create calls "not an empty database" */
    rc = pgx_exec(c, "INSERT INTO p VALUES (1); INSERT INTO p VALUES (1)", "a duplicate key", &err);
    CHECK(pgx_sqlstate_duplicate(err.sqlstate));
    CHECK(!pgx_sqlstate_duplicate(PGX_FOREIGN_KEY_VIOLATION) && !pgx_sqlstate_duplicate(NULL));
    rc = pgx_exec(c, "SELECT * FROM no_such_table_here", "reading", &err);
    CHECK_EQ_STR(err.sqlstate, PGX_UNDEFINED_TABLE);
    fb_err_set(&err, FB_ERR_IO, "a later error that is not the server's");
    CHECK_EQ_STR(err.sqlstate, ""); /* never a stale SQLSTATE on another error */
    rc = pgx_exec(c, "SET statement_timeout = 1; SELECT pg_sleep(1)", "sleeping", &err);
    CHECK_EQ_INT(rc, FB_ERR_TRANSIENT);
    CHECK_EQ_STR(err.sqlstate, "57014");
    CHECK(!pgx_sqlstate_retry_now(err.sqlstate)); /* a timeout is retried later, not at once on this connection */
    pgx_exec(c, "SET statement_timeout = 0", "resetting", &err);
}

static void classified(void) {
    static const char *const now[] = {"40001", "40P01", "55P03"};
    static const char *const later[] = {"57014", "57P01", "57P02", "57P03", "08006", "08001", "53100", "53300"};
    static const char *const never[] = {"23503", "23505", "42P01", "42501", "22P02", "XX000", "4000", "400011"};
    for (size_t i = 0; i < 3; i++) {
        CHECKF(pgx_sqlstate_code(now[i]) == FB_ERR_TRANSIENT && pgx_sqlstate_retry_now(now[i]), "%s", now[i]);
    }
    for (size_t i = 0; i < 8; i++)
        CHECKF(pgx_sqlstate_code(later[i]) == FB_ERR_TRANSIENT && !pgx_sqlstate_retry_now(later[i]), "%s", later[i]);
    for (size_t i = 0; i < 8; i++)
        CHECKF(pgx_sqlstate_code(never[i]) == FB_ERR_PG && !pgx_sqlstate_retry_now(never[i]), "%s", never[i]);
    CHECK(!pgx_sqlstate_retry_now(NULL));
}

int main(void) {
    PGconn *c = (PGconn *)tap_pg_connect(tap_need_env("FB_TEST_PG"), "postgres");
    carried(c);
    classified();
    PQfinish(c);
    return tap_done();
}
