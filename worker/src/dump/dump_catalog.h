/* dump_catalog: reads PostgreSQL's catalog in the backup's snapshot and describes tables in the manifest's
 * terms (arc_table): columns, the SQL to recreate each table on an empty database, owned sequences and their
 * values, foreign-key dependencies; and builds the COPY statements both ways.
 *
 * The whole database's schema is not this module's job any more: since format 4 every backup carries a schema
 * archive made by pg_dump (dump_schema.h), and a whole-database restore --create replays that. What stays here is
 * what the rows need (columns and the COPY column list, the session settings that make COPY text identical on
 * both sides) and the per-table DDL that `restore --create --table NAME` and artifacts of format <= 3 still use.
 *
 * All SQL is built from catalog output: names go through pgx_quote_ident(), and constraint, index and default
 * definitions come from pg_get_constraintdef()/pg_get_indexdef()/pg_get_expr() run with an empty search_path, so
 * every non-catalog object in them is schema-qualified (as pg_dump does). Requested names are only ever compared
 * as parameters ($1), never spliced into SQL. The per-table DDL carries tables, owned sequences, indexes and keys
 * only: user-defined types and extensions they use must already exist where it runs (it fails naming them
 * otherwise), and partitions are recreated as plain tables without their parent.
 */
#ifndef DUMP_CATALOG_H
#define DUMP_CATALOG_H

#include <libpq-fe.h>
#include <stddef.h>

#include "artifact/arc_manifest.h"
#include "common/fb_err.h"

/* A resolved table: its oid in this snapshot plus its names (malloc'd, owned by the array). */
typedef struct dump_rel {
    unsigned int oid;
    char *schema, *name;
} dump_rel;

/* Session settings that make COPY text identical on dump and restore (UTC, ISO dates, hex bytea, exact floats)
 * and the empty search_path that qualifies catalog output; no statement or idle-in-transaction timeout. */
fb_code dump_catalog_session(PGconn *c, fb_err *err);

/* Resolves the requested tables (n_req == 0: every ordinary table outside the system schemas), in the current
 * transaction. An unknown table is FB_ERR_NOTFOUND naming it and the database. *out is a new array
 * (dump_rels_free). */
fb_code dump_catalog_resolve(PGconn *c, const arc_tref *req, size_t n_req, dump_rel **out, size_t *n_out,
                             fb_err *err);
void dump_rels_free(dump_rel *rels, size_t n);

/* Fills t (schema, name, columns, create/index/fk SQL, sequences with values, deps). t must be zeroed; on
 * failure its partial contents are for arc_table_clear(). */
fb_code dump_catalog_describe(PGconn *c, const dump_rel *rel, arc_table *t, fb_err *err);

/* "COPY schema.table (cols) TO STDOUT" (to = 1) or "... FROM STDIN" (to = 0): generated columns left out.
 * Returns a malloc'd string or NULL (out of memory). */
char *dump_copy_sql(const arc_table *t, int to);

/* malloc'd printf; NULL on out of memory. */
char *dump_strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Quoted names as malloc'd strings: pgx_ident_dup / pgx_qualified_dup (pg/pgx.h). */

#endif
