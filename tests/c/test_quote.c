/* test_quote: SQL quoting, the one defence where names are data (pgx.h): pgx_quote_ident, pgx_qualified,
 * pgx_quote_literal, and the wrappers over them (pgx_ident_dup / pgx_qualified_dup, pgx_sb_ident / pgx_sb_qualified).
 *
 * Exact outputs for the cases that matter, the bounds (a buffer one byte short is -1, never an overflow: ASan
 * watches), and then the property that counts, against the real server: a hostile table, column or value name,
 * quoted, makes PostgreSQL see exactly that name or value, nothing more (no second statement, no other table),
 * with standard_conforming_strings on and off. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dump/dump_catalog.h"
#include "job/job_archive_int.h"
#include "pg/pgx.h"
#include "tap.h"

/* Names an attacker who can create tables in the ERP (or name a model) would try. */
static const char *const hostile[] = {
    "plain", "Cpda Application", "a\"b", "\"", "\"\"", "x\"; DROP TABLE victim; --", "it's", "back\\slash",
    "$$dollar$$", "semi;colon", "tab\there", "üñíçødé", "UPPER", "select", "a.b", "-",
};
#define N_HOSTILE (sizeof hostile / sizeof hostile[0])

static void exact_outputs(void) {
    char q[256];
    CHECK(pgx_quote_ident("Cpda Application", q, sizeof q) == 0);
    CHECK_EQ_STR(q, "\"Cpda Application\"");
    CHECK(pgx_quote_ident("a\"b", q, sizeof q) == 0);
    CHECK_EQ_STR(q, "\"a\"\"b\"");
    CHECK(pgx_quote_ident("", q, sizeof q) == 0);
    CHECK_EQ_STR(q, "\"\"");
    CHECK(pgx_qualified("hr", "a\"b", q, sizeof q) == 0);
    CHECK_EQ_STR(q, "\"hr\".\"a\"\"b\"");
    CHECK(pgx_quote_literal("it's", q, sizeof q) == 0);
    CHECK_EQ_STR(q, "'it''s'");
    CHECK(pgx_quote_literal("a\\'b", q, sizeof q) == 0);
    CHECK_EQ_STR(q, "E'a\\\\''b'");
    char *d = pgx_qualified_dup("s\"", "t");
    CHECK_EQ_STR(d, "\"s\"\"\".\"t\"");
    free(d);
    d = pgx_ident_dup("x\"y");
    CHECK_EQ_STR(d, "\"x\"\"y\"");
    free(d);
    fb_sbuf b = {0};
    pgx_sb_qualified(&b, "public", "a\"b");
    fb_sbuf_printf(&b, " ");
    pgx_sb_ident(&b, "c d");
    CHECK(!b.oom && b.p && strcmp(b.p, "\"public\".\"a\"\"b\" \"c d\"") == 0);
    fb_sbuf_free(&b);
}

/* For each output: the exact size fits, one byte less is -1 (and writes nothing past cap). */
static void bounds(void) {
    static const char *const names[] = {"abc", "a\"b", "\"\"\"", ""};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char full[64], *small;
        CHECK(pgx_quote_ident(names[i], full, sizeof full) == 0);
        size_t need = strlen(full) + 1;
        small = malloc(need); /* exact: ASan catches a write past it */
        CHECKF(pgx_quote_ident(names[i], small, need) == 0 && strcmp(small, full) == 0, "ident \"%s\" in %zu bytes",
               names[i], need);
        free(small);
        small = malloc(need - 1);
        CHECKF(pgx_quote_ident(names[i], small, need - 1) == -1, "ident \"%s\" in %zu bytes should not fit",
               names[i], need - 1);
        free(small);

        CHECK(pgx_quote_literal(names[i], full, sizeof full) == 0);
        need = strlen(full) + 1;
        small = malloc(need);
        CHECKF(pgx_quote_literal(names[i], small, need) == 0 && strcmp(small, full) == 0, "literal \"%s\"", names[i]);
        free(small);
        small = malloc(need - 1);
        CHECKF(pgx_quote_literal(names[i], small, need - 1) == -1, "literal \"%s\" in %zu bytes should not fit",
               names[i], need - 1);
        free(small);
    }
    char q[16];
    CHECK(pgx_qualified("schema", "table", q, sizeof q) == -1); /* "schema"."table" is 16 bytes + NUL */
    char q2[17];
    CHECK(pgx_qualified("schema", "table", q2, sizeof q2) == 0);
    /* A name longer than PostgreSQL allows marks the SQL buffer failed rather than truncating it. */
    char longname[400];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    fb_sbuf b = {0};
    pgx_sb_ident(&b, longname);
    CHECK(b.oom);
    fb_sbuf_free(&b);
}

static PGresult *q1(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    CHECKF(st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(c));
    return r;
}

/* Each hostile name, quoted, names exactly one new table and column; the victim table survives. */
static void round_trip_idents(PGconn *c) {
    PQclear(q1(c, "CREATE TEMP TABLE victim (x int)"));
    for (size_t i = 0; i < N_HOSTILE; i++) {
        char qt[256], qc[256], sql[1024];
        CHECK(pgx_quote_ident(hostile[i], qt, sizeof qt) == 0);
        CHECK(pgx_quote_ident(hostile[i], qc, sizeof qc) == 0);
        snprintf(sql, sizeof sql, "CREATE TEMP TABLE %s (%s text)", qt, qc);
        PQclear(q1(c, sql));
        const char *prm[1] = {hostile[i]};
        PGresult *r = PQexecParams(c,
                                   "SELECT count(*) FROM pg_catalog.pg_class k JOIN pg_catalog.pg_attribute a "
                                   "ON a.attrelid = k.oid WHERE k.relname = $1 AND a.attname = $1 "
                                   "AND k.relnamespace = pg_catalog.pg_my_temp_schema()",
                                   1, NULL, prm, NULL, NULL, 0);
        CHECKF(PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "1") == 0,
               "table and column named \"%s\" not found exactly once", hostile[i]);
        PQclear(r);
        snprintf(sql, sizeof sql, "DROP TABLE %s", qt);
        PQclear(q1(c, sql));
    }
    PGresult *r = q1(c, "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'victim' "
                        "AND relnamespace = pg_catalog.pg_my_temp_schema()");
    CHECK(PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "1") == 0);
    PQclear(r);
    /* pgx_qualified: schema and table both data (the temp schema's own name, then a hostile table). */
    char qs[300], sql[800];
    CHECK(pgx_qualified("pg_temp", "x\"; DROP TABLE victim; --", qs, sizeof qs) == 0);
    snprintf(sql, sizeof sql, "CREATE TABLE %s (v int)", qs);
    PQclear(q1(c, sql));
    r = q1(c, "SELECT count(*) FROM pg_catalog.pg_class WHERE relname IN ('victim', 'x\"; DROP TABLE victim; --') "
              "AND relnamespace = pg_catalog.pg_my_temp_schema()");
    CHECK(PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "2") == 0);
    PQclear(r);
}

/* Each hostile value, as a literal, comes back as exactly itself, under both settings of backslash handling. */
static void round_trip_literals(PGconn *c) {
    static const char *const settings[] = {"SET standard_conforming_strings = on",
                                           "SET standard_conforming_strings = off"};
    static const char *const extra[] = {"\\", "\\'", "'\\", "a\\nb", "''", "\\\\'; SELECT 1; --"};
    for (size_t s = 0; s < 2; s++) {
        PQclear(q1(c, settings[s]));
        PQclear(q1(c, "SET escape_string_warning = off"));
        for (size_t i = 0; i < N_HOSTILE + sizeof extra / sizeof extra[0]; i++) {
            const char *v = i < N_HOSTILE ? hostile[i] : extra[i - N_HOSTILE];
            char lit[256], sql[400];
            CHECK(pgx_quote_literal(v, lit, sizeof lit) == 0);
            snprintf(sql, sizeof sql, "SELECT %s", lit);
            PGresult *r = PQexec(c, sql);
            CHECKF(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQnfields(r) == 1 &&
                       strcmp(PQgetvalue(r, 0, 0), v) == 0,
                   "%s: literal %s came back as \"%s\" (%s)", settings[s], lit,
                   PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "", PQerrorMessage(c));
            PQclear(r);
        }
    }
}

int main(void) {
    exact_outputs();
    bounds();
    PGconn *c = tap_pg_connect(tap_need_env("FB_TEST_PG"), "postgres");
    round_trip_idents(c);
    round_trip_literals(c);
    PQfinish(c); /* the temporary tables go with the session */
    return tap_done();
}
