/* dump_scratch: throw-away databases for verification restores.
 *
 * dump_scratch_create makes a new database on the server of `conninfo` (dropping a leftover of the same name from
 * a crashed run first) and connects to it; dump_scratch_drop disconnects and drops it (WITH (FORCE)). The name is
 * chosen by the caller (e.g. from a job id) so that a retry finds and replaces its own leftover.
 */
#ifndef DUMP_SCRATCH_H
#define DUMP_SCRATCH_H

#include <libpq-fe.h>

#include "common/fb_err.h"

/* Connects to `conninfo` with its dbname replaced by `dbname` (a new connection the caller PQfinish()es). */
PGconn *dump_connect_db(const char *conninfo, const char *dbname, const char *application_name, fb_err *err);
/* Creates database `name` and returns a connection to it in *out. */
fb_code dump_scratch_create(const char *conninfo, const char *name, PGconn **out, fb_err *err);
/* Closes *c (if any) and drops database `name`. Errors are logged and returned. */
fb_code dump_scratch_drop(const char *conninfo, const char *name, PGconn *c, fb_err *err);

#endif
