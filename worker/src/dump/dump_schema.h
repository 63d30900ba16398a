/* dump_schema: the schema archive (FORMAT.md, "Schema archive"): every object of the database but the rows of its
 * tables, taken by pg_dump on the backup's own snapshot, and replayed by pg_restore's sections on the restore's own
 * connection.
 *
 * Why pg_dump: it already knows every object type of every server version (types, domains, functions, partitioned
 * tables, views, materialized views, triggers, rules, policies, comments, grants, extensions, large objects, ...),
 * so the worker does not re-implement it. The rows stay the worker's (its COPY pipeline, hashes and chunks): pg_dump
 * is told to skip the data of every ordinary and partitioned table, and keeps what is not table rows (sequence
 * values, large objects, materialized view refreshes).
 *
 * Connection of the child pg_dump: the worker's own connection parameters (PQconninfo) passed with --dbname, but
 * never a password: when the conninfo holds one it goes into a temporary passfile (mode 0600, in $TMPDIR, removed
 * as soon as pg_dump exits) named by the passfile keyword, so no secret is in `ps` or in the environment.
 *
 * Replay: pg_restore never connects. It turns a section of the archive into SQL (`pg_restore -f - -1
 * --section=...`), and that SQL runs on the restore's libpq connection, inside the restore's one transaction, so
 * a failure anywhere leaves the target as it was. `-1` makes pg_restore write its own BEGIN/COMMIT only once,
 * around the whole script (not around large objects); those two lines and psql's \restrict/\unrestrict lines of
 * the header and trailer are removed before the script runs.
 */
#ifndef DUMP_SCHEMA_H
#define DUMP_SCHEMA_H

#include <libpq-fe.h>
#include <stddef.h>

#include "common/fb_err.h"
#include "dump/dump_proc.h"

/* Runs `PROG --version`: ver gets its first line ("pg_dump (PostgreSQL) 15.18 (Debian ...)"), *major its major
 * version (15). setting names the setting that chooses PROG, for the hint. */
fb_code dump_schema_tool_version(const char *prog, const char *setting, char *ver, size_t cap, int *major, fb_err *err);

/* In c's open REPEATABLE READ transaction: exports its snapshot, checks that pg_dump's major version is at least
 * the server's, and streams `pg_dump -Fc -Z0 -b --snapshot=S --exclude-table-data=T...` (T: every ordinary and
 * partitioned table of the snapshot) to sink. ver receives pg_dump's version line. lock_timeout_ms > 0 is passed
 * as --lock-wait-timeout. The transaction stays open (the snapshot must live until pg_dump has imported it). */
fb_code dump_schema_dump(PGconn *c, const char *pg_dump, long long lock_timeout_ms, dump_proc_sink sink, void *opaque,
                         char *ver, size_t ver_cap, fb_err *err);

typedef struct dump_schema_opts {
    const char *pg_restore;  /* program path (the pg-restore setting) */
    int no_owner;            /* pg_restore --no-owner: objects belong to the restoring role */
    int no_privileges;       /* pg_restore --no-privileges: no GRANT/REVOKE */
} dump_schema_opts;

/* The SQL of one section ("pre-data", "data" or "post-data") of the archive in the open file descriptor fd
 * (borrowed; the child reads it as /dev/fd/3, so the file needs no name). *sql is malloc'd (caller frees). */
fb_code dump_schema_section_sql(const dump_schema_opts *o, int fd, const char *section, char **sql, fb_err *err);

/* Runs a pg_restore script (modified in place: its BEGIN/COMMIT and \restrict lines removed) on c, inside the
 * caller's open transaction. FB_ERR_FORMAT when the script does not look like pg_restore -1 output. */
fb_code dump_schema_exec(PGconn *c, char *sql, const char *what, fb_err *err);

#endif
