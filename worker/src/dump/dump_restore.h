/* dump_restore: loads tables from an open artifact into a PostgreSQL database, all or nothing.
 *
 * Everything happens in one transaction on the caller's connection, committed only after every segment that was
 * read has passed its final authentication tag and its BLAKE2b check: a tampered, truncated or wrongly keyed
 * artifact leaves the target exactly as it was. With `create`, the tables (and their schemas and owned sequences)
 * are created first, the data loaded, then indexes and keys built, then foreign keys added (pg_restore's order).
 * Without it, the tables must exist and be empty (FB_ERR_CONFLICT otherwise, unless `truncate`); they are loaded
 * in foreign-key order with constraints deferred. Generated columns are left to the server; identity columns
 * take the stored values (COPY FROM always overrides); owned sequences are set with setval.
 *
 * Whole database with `create` (no table list) from an artifact that has a schema archive (format 4) of a backup
 * of every table (`all_tables`): the schema
 * comes from pg_dump's archive instead (dump_schema.h), in pg_restore's order and still in the one transaction:
 * the archive is read and authenticated first (into an unlinked temporary file), pg_restore turns its pre-data,
 * data and post-data sections into SQL, then: pre-data (schemas, extensions, types, functions, tables, views,
 * ...), the tables' rows with COPY ... FREEZE (the tables were created in this transaction), the data section
 * (sequence values, large objects), post-data (indexes, keys, triggers, rules, policies, materialized view
 * refreshes). jobs is then ignored: one connection, one transaction. A database that does not exist yet (c NULL,
 * new_db) is instead built under a temporary name on `jobs` connections and renamed (dump_rebuild.h). A table list with `create`, and artifacts
 * of format <= 3, use the manifest's own DDL (create_sql, index_sql, fk_sql: tables, owned sequences, indexes,
 * keys; nothing else).
 *
 * jobs > 1 (with create, an empty database, no schema archive used): the tables are spread over that many connections, each creating,
 * loading and indexing its share in its own open transaction, as pg_restore -j does. Authentication is still all
 * or nothing: no transaction commits before every connection has finished and every segment read has passed its
 * final tag and hash. What is weaker: the N commits then run one after the other (a crash between them leaves
 * part of the tables), and foreign keys are added in one more transaction after them.
 */
#ifndef DUMP_RESTORE_H
#define DUMP_RESTORE_H

#include <libpq-fe.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>

#include "artifact/arc_reader.h"
#include "common/fb_err.h"
#include "common/fb_flag.h"

typedef struct dump_restore_opts {
    const arc_tref *tables;  /* restore only these (schema may be NULL: "public"); n_tables == 0: all */
    size_t n_tables;
    int create;              /* create schemas, tables, sequences, indexes, keys */
    int truncate;            /* empty non-empty target tables first (same transaction) instead of refusing */
    int compare;             /* after loading, re-dump each table and compare with the manifest's hash */
    int commit;              /* 1: COMMIT at the end; 0: ROLLBACK (a dry run: verify --restore-into) */
    fb_flag *abort;    /* may be NULL; non-zero: stop and roll back */
    int jobs;                /* > 1 with create: load on this many connections (needs conninfo), see below */
    const char *conninfo;    /* the target, for the extra connections of jobs > 1 */
    /* Whole-database --create from a schema archive (format 4): */
    const char *pg_restore;  /* the program (NULL: "pg_restore" on PATH) */
    int no_owner;            /* pg_restore --no-owner: objects belong to the restoring role */
    int no_privileges;       /* pg_restore --no-privileges: no GRANT/REVOKE */
    /* --create of a database that does not exist yet (dump_rebuild_connect_target gave c == NULL): its name; the whole
     * database is then built under a temporary name and renamed (dump_rebuild.h) */
    const char *new_db;
    /* new_db only (may be NULL): called on a connection to the temporary database once everything is loaded, just
     * before the rename; an error fails the restore and drops the temporary database. restore --until applies the
     * captured transactions here, so the database appears only with them all. */
    fb_code (*before_rename)(void *opaque, PGconn *c, fb_err *err);
    void *before_rename_opaque;
} dump_restore_opts;

typedef struct dump_restore_stats {
    int64_t tables, rows, raw_bytes;
    int64_t fks_skipped;    /* restoring some tables with create: keys to tables not restored (warned) */
} dump_restore_stats;

/* c: an open connection (borrowed, no transaction open), or NULL with o->new_db (a database to create). r: an open
 * reader (borrowed). */
fb_code dump_restore(arc_reader *r, PGconn *c, const dump_restore_opts *o, dump_restore_stats *st, fb_err *err);

/* --- shared with dump_rebuild ------------------------------------------------------------------------------- */
/* COPY of table t from the reader into c (the table's hash and row count checked at its end); freeze: the table
 * was created or truncated in c's open transaction. peer_failed (may be NULL): stop when it becomes non-zero. */
fb_code dump_restore_copy_table(arc_reader *rd, PGconn *c, const arc_table *t, const dump_restore_opts *o,
                                atomic_int *peer_failed, int freeze, int64_t *rows, fb_err *err);
/* The schema archive, authenticated, in an unlinked temporary file (*fd, caller closes) and its pre-data, data and
 * post-data sections as pg_restore -1 scripts (sql[0..2], caller frees). */
fb_code dump_restore_schema_scripts(arc_reader *rd, const dump_restore_opts *o, int *fd, char *sql[3], fb_err *err);
/* Of parallel connections' outcomes: keeps in *rc/err the failure that made the others stop (wrc/werr, one
 * connection's), not their FB_ERR_ABORTED "stopped" messages. */
void dump_restore_first_error(fb_code *rc, fb_err *err, fb_code wrc, const fb_err *werr);
/* Runs one of those scripts on c; "already exists" becomes FB_ERR_CONFLICT, a missing role gets a hint. */
fb_code dump_restore_exec_script(PGconn *c, char *sql, const char *what, fb_err *err);

#endif
