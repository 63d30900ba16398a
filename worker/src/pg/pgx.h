/* pgx: small libpq helpers shared by jobs and commands.
 *
 * Names are data: every identifier that reaches SQL goes through pgx_quote_ident()/pgx_qualified(), and every
 * value through a parameter ($1) or pgx_quote_literal(). Errors from the server are turned into fb_err with the
 * SQLSTATE and a hint; SQLSTATEs worth retrying (lock timeout, deadlock, serialization, connection loss) map to
 * FB_ERR_TRANSIENT so callers can retry without parsing messages.
 */
#ifndef PGX_H
#define PGX_H

#include <libpq-fe.h>
#include <stddef.h>

#include "common/fb_err.h"

/* The built-in type OIDs the worker names in PQexecParams' paramTypes (pg_type.dat; fixed since PostgreSQL 8.3). */
#define PGX_OID_BOOL 16
#define PGX_OID_INT8 20
#define PGX_OID_INT4 23
#define PGX_OID_TEXT 25
#define PGX_OID_UUID 2950

/* Connects and sets application_name; on failure returns NULL with err set (FB_ERR_TRANSIENT: the server may
 * come back). The caller owns the connection: PQfinish() it. */
PGconn *pgx_connect(const char *conninfo, const char *application_name, fb_err *err);
/* The same with conninfo's database replaced by dbname (NULL: conninfo's own). */
PGconn *pgx_connect_db(const char *conninfo, const char *dbname, const char *application_name, fb_err *err);

/* Quotes an identifier the way quote_ident() does, always adding quotes: "Cpda Application" -> "\"Cpda Application\"".
 * Writes into out (cap bytes incl. NUL); returns 0, or -1 if it does not fit. */
int pgx_quote_ident(const char *name, char *out, size_t cap);
/* schema.table, both quoted. Returns 0, or -1 if it does not fit. */
int pgx_qualified(const char *schema, const char *table, char *out, size_t cap);
/* 'text' with ' doubled and backslashes safe (E'' form when needed). Returns 0, or -1 if it does not fit. */
int pgx_quote_literal(const char *s, char *out, size_t cap);

/* Runs a command that returns no rows (or ignores them). Returns FB_OK or an error describing `what`. */
fb_code pgx_exec(PGconn *c, const char *sql, const char *what, fb_err *err);
/* Checks a PGresult: OK when its status is `want`. On failure fills err from the result (SQLSTATE, message,
 * hint), clears the result, and returns the code. `what` names the step ("locking rows of \"leave_leave\""). */
fb_code pgx_check(PGconn *c, PGresult *res, ExecStatusType want, const char *what, fb_err *err);

/* Maps a SQLSTATE to a code: FB_ERR_TRANSIENT for 40001 40P01 55P03 57014 57P01-57P03 08xxx 53xxx, else FB_ERR_PG. */
fb_code pgx_sqlstate_code(const char *sqlstate);

#endif
