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
#include "common/fb_sbuf.h"

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
/* The same appended to b: the form SQL builders use. A name longer than PostgreSQL's 63 bytes (which the server
 * would silently truncate into another name) marks b failed (b->oom) instead. */
void pgx_sb_ident(fb_sbuf *b, const char *name);
void pgx_sb_qualified(fb_sbuf *b, const char *schema, const char *table);
/* The same as a malloc'd string the caller free()s; NULL on out of memory or a name over 63 bytes. */
char *pgx_ident_dup(const char *name);
char *pgx_qualified_dup(const char *schema, const char *table);
/* 'text' with ' doubled and backslashes safe (E'' form when needed). Returns 0, or -1 if it does not fit. */
int pgx_quote_literal(const char *s, char *out, size_t cap);

/* Runs a command that returns no rows (or ignores them). Returns FB_OK or an error describing `what`. */
fb_code pgx_exec(PGconn *c, const char *sql, const char *what, fb_err *err);
/* Checks a PGresult: OK when its status is `want`. On failure fills err from the result (message, hint, and the
 * SQLSTATE in the text and in err->sqlstate, which is what callers compare), clears the result, and returns the code. `what` names the step ("locking rows of \"leave_leave\""). */
fb_code pgx_check(PGconn *c, PGresult *res, ExecStatusType want, const char *what, fb_err *err);

/* Maps a SQLSTATE to a code: FB_ERR_TRANSIENT for 40001 40P01 55P03 57014 57P01-57P03 08xxx 53xxx, else FB_ERR_PG. */
fb_code pgx_sqlstate_code(const char *sqlstate);
/* 1 for the transient SQLSTATEs after which the same statement may succeed on the same connection a moment later
 * (40001 serialization failure, 40P01 deadlock, 55P03 lock not available); 0 otherwise and for NULL. */
int pgx_sqlstate_retry_now(const char *sqlstate);

/* 1 for the SQLSTATEs that say the object is already there (duplicate_table, _object, _schema, _function,
 * _database, _column, _alias, and unique_violation): what a restore into a database that is not empty meets. */
int pgx_sqlstate_duplicate(const char *sqlstate);

/* SQLSTATEs callers act on by name. */
#define PGX_FOREIGN_KEY_VIOLATION "23503"
#define PGX_UNDEFINED_TABLE "42P01"
#define PGX_UNDEFINED_OBJECT "42704"  /* e.g. a replication slot or role that does not exist */
#define PGX_DUPLICATE_OBJECT "42710"  /* e.g. a replication slot that already exists */

#endif
