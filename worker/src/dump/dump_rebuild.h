/* dump_rebuild: `restore --create` of a database that does not exist yet, on N connections, all or nothing.
 *
 * PostgreSQL has no transaction spanning several connections (and prepared transactions are usually off), so
 * parallel loading cannot be one transaction in the target. Instead the whole database is built under a temporary
 * name that nobody uses, and one `ALTER DATABASE tmp RENAME TO target` (one synchronous commit) is the commit
 * point of the restore. Until then the target name does not exist; after it, the whole database does.
 *
 * Steps, on connections of the same server:
 *  1. An admin connection to the maintenance database ("postgres", else "template1"). Leftovers of restores that
 *     were killed (SIGKILL, a crash) are dropped: databases named fb_restore_tmp_* that carry this module's
 *     comment and whose advisory lock (below) nobody holds; each is reported.
 *  2. The admin connection takes the advisory lock of the new name (held until it closes: that is how a running
 *     restore's temporary database is told apart from a dead one's), then CREATE DATABASE fb_restore_tmp_<job>_<r>
 *     TEMPLATE template0 with a COMMENT naming the target and the job.
 *  3. Pre-data (pg_restore's script) on the first connection; then the tables' rows on N connections, largest
 *     first from a shared queue, each table in its own transaction: TRUNCATE ONLY, COPY ... FREEZE (the rows are
 *     written frozen: no later full rewrite for hint bits and freezing), hash and row count checked at the end of
 *     the COPY as always. The post-data script's INDEX and CONSTRAINT entries (not foreign keys) on a loaded table
 *     become ready as soon as its COPY commits and are run by whichever connection is free first, so the indexes
 *     of the tables loaded early are built while the large ones still load (pg_restore -j's overlap), with
 *     maintenance_work_mem raised. Then the data section (sequence values, large objects) and the rest of
 *     post-data (foreign keys after every index, triggers, rules, policies, matview refreshes, in pg_restore's
 *     order) as one script on the first connection.
 *  4. All connections to the temporary database are closed, then in one transaction on the admin connection,
 *     with synchronous_commit on: remove the comment, RENAME TO target. A target created by someone else in the
 *     meantime makes the rename fail (duplicate_database): the restore fails, the other database is untouched.
 *  5. Any failure before the rename's commit (including SIGINT/SIGTERM): DROP DATABASE tmp WITH (FORCE).
 *
 * Durability: the loading sessions commit with synchronous_commit off. The rename commits synchronously, and a
 * synchronous commit flushes the WAL up to its own commit record, which comes after every record of the loading
 * sessions (they have all committed before the rename starts). So after a crash either the rename is lost (the
 * temporary database is a leftover, dropped by the next restore: no target) or everything before it is on disk.
 */
#ifndef DUMP_REBUILD_H
#define DUMP_REBUILD_H

#include "dump/dump_restore.h"

/* o->new_db names the target, o->conninfo the server (its dbname is replaced), o->jobs the connections (< 1: 1).
 * sel/n: the manifest's tables to load (every table of an all-tables backup with a schema archive). */
fb_code dump_rebuild(arc_reader *rd, const dump_restore_opts *o, const size_t *sel, size_t n, dump_restore_stats *st,
                     fb_err *err);

/* Connects to conninfo's database. With create, a database that does not exist is no error: *c is NULL and new_db
 * (cap bytes) gets its name, for dump_restore_opts.new_db. */
fb_code dump_rebuild_connect_target(const char *conninfo, int create, PGconn **c, char *new_db, size_t cap,
                                    fb_err *err);

/* A connection to conninfo's server with its dbname replaced by db (NULL on failure, err set). */
PGconn *dump_rebuild_connect_db(const char *conninfo, const char *db, fb_err *err);

#endif
