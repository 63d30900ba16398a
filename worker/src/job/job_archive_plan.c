/* job_archive_plan: reads the catalog and the event's relations into the plan of one archival (see
 * job_archive_int.h), and checks everything the batch statement will rely on before anything is changed: the
 * table, its primary-key and timestamp columns, every relation's table and columns, and the primary key of every
 * CASCADE child. Errors name the table and column and say what to fix (usually the ArchivePolicy or the model).
 *
 * Catalog foreign keys are matched to relations by (referencing schema, table, first column). A relation without a
 * matching catalog key (Django's db_constraint=False) never gets here: the authority check (job_authority.h)
 * refuses it first, since a message could otherwise name any table as a CASCADE child. A catalog key without a
 * relation becomes an UNLISTED edge: referenced rows stay, counted as skipped_referenced.
 */
#include "job/job_archive_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job/job_archive.h"
#include "pg/pgx.h"

/* ---- SQL text builder ---- */


/* ---- catalog queries ---- */

/* Runs a catalog query with text parameters; returns the result (caller PQclear()s) or NULL with err set. */
static PGresult *ja_query(PGconn *c, const char *sql, int n, const char *const *params, const char *what, fb_err *err) {
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (pgx_check(c, r, PGRES_TUPLES_OK, what, err) != FB_OK) return NULL;
    return r;
}

static void ja_copy(char *dst, size_t cap, const char *src) {
    snprintf(dst, cap, "%s", src ? src : "");
}

/* The oid of schema.table as text in oid_out, or FB_ERR_NOTFOUND. role says what the table is for the message. */
static fb_code ja_table_oid(PGconn *c, const char *schema, const char *table, const char *role, unsigned int *oid,
                            int *partitioned, fb_err *err) {
    const char *p[2] = {schema, table};
    PGresult *r = ja_query(c,
                           "SELECT c.oid, c.relkind FROM pg_catalog.pg_class c "
                           "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                           "WHERE n.nspname = $1 AND c.relname = $2",
                           2, p, "looking up a table in the catalog", err);
    if (!r) return err->code;
    fb_code rc = FB_OK;
    if (PQntuples(r) == 0) {
        rc = fb_err_set(err, FB_ERR_NOTFOUND,
                        "%s table \"%s\".\"%s\" does not exist in this database (check the ArchivePolicy's model, "
                        "the relations of the event, and that --pg points at the Fusion database)",
                        role, schema, table);
    } else if (strcmp(PQgetvalue(r, 0, 1), "r") != 0 && strcmp(PQgetvalue(r, 0, 1), "p") != 0) {
        rc = fb_err_set(err, FB_ERR_INVALID, "%s \"%s\".\"%s\" is not a table (relkind %s): only tables can be archived",
                        role, schema, table, PQgetvalue(r, 0, 1));
    } else {
        *oid = (unsigned int)strtoul(PQgetvalue(r, 0, 0), NULL, 10);
        if (partitioned) *partitioned = strcmp(PQgetvalue(r, 0, 1), "p") == 0;
    }
    PQclear(r);
    return rc;
}

/* Checks that column exists in table oid; type_out (may be NULL) receives its type's name (regtype). */
static fb_code ja_column(PGconn *c, unsigned int oid, const char *schema, const char *table, const char *column,
                         const char *role, char *type_out, size_t type_cap, fb_err *err) {
    char oidtxt[16];
    snprintf(oidtxt, sizeof oidtxt, "%u", oid);
    const char *p[2] = {oidtxt, column};
    PGresult *r = ja_query(c,
                           "SELECT a.atttypid::pg_catalog.regtype::text FROM pg_catalog.pg_attribute a "
                           "WHERE a.attrelid = $1::oid AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
                           2, p, "looking up a column in the catalog", err);
    if (!r) return err->code;
    fb_code rc = FB_OK;
    if (PQntuples(r) == 0)
        rc = fb_err_set(err, FB_ERR_NOTFOUND,
                        "%s column \"%s\" does not exist in table \"%s\".\"%s\" (check the ArchivePolicy / model "
                        "field names against the database; names are case-sensitive)",
                        role, column, schema, table);
    else if (type_out)
        ja_copy(type_out, type_cap, PQgetvalue(r, 0, 0));
    PQclear(r);
    return rc;
}

/* Is column a single-column unique key (primary key or unique, no predicate) of table oid? */
static fb_code ja_is_unique(PGconn *c, unsigned int oid, const char *column, int *unique, fb_err *err) {
    char oidtxt[16];
    snprintf(oidtxt, sizeof oidtxt, "%u", oid);
    const char *p[2] = {oidtxt, column};
    PGresult *r = ja_query(c,
                           "SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a "
                           "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
                           "WHERE i.indrelid = $1::oid AND i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL "
                           "AND i.indexprs IS NULL AND a.attname = $2",
                           2, p, "looking up the unique keys of a table", err);
    if (!r) return err->code;
    *unique = PQntuples(r) > 0;
    PQclear(r);
    return FB_OK;
}

/* The single-column primary key of table oid, or FB_ERR_INVALID. */
static fb_code ja_primary_key(PGconn *c, unsigned int oid, const char *schema, const char *table, char *out, size_t cap,
                              fb_err *err) {
    char oidtxt[16];
    snprintf(oidtxt, sizeof oidtxt, "%u", oid);
    const char *p[1] = {oidtxt};
    PGresult *r = ja_query(c,
                           "SELECT a.attname, i.indnkeyatts FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a "
                           "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
                           "WHERE i.indrelid = $1::oid AND i.indisprimary",
                           1, p, "looking up a primary key", err);
    if (!r) return err->code;
    fb_code rc = FB_OK;
    if (PQntuples(r) == 0 || strcmp(PQgetvalue(r, 0, 1), "1") != 0)
        rc = fb_err_set(err, FB_ERR_INVALID,
                        "table \"%s\".\"%s\" has no single-column primary key, so its rows cannot be archived one "
                        "ArchivedRecord each: name a unique column as pk_column in the relation",
                        schema, table);
    else
        ja_copy(out, cap, PQgetvalue(r, 0, 0));
    PQclear(r);
    return rc;
}

/* ---- plan building ---- */

static ja_node *ja_plan_add_node(ja_plan *plan, fb_err *err) {
    if (plan->n_nodes == plan->cap_nodes) {
        size_t cap = plan->cap_nodes ? plan->cap_nodes * 2 : 8;
        ja_node *n = realloc(plan->nodes, cap * sizeof *n);
        if (!n) {
            fb_err_set(err, FB_ERR_NOMEM, "out of memory building the archive plan");
            return NULL;
        }
        plan->nodes = n;
        plan->cap_nodes = cap;
    }
    ja_node *n = &plan->nodes[plan->n_nodes++];
    memset(n, 0, sizeof *n);
    n->parent = -1;
    return n;
}

static ja_edge *ja_node_add_edge(ja_node *n, fb_err *err) {
    if (n->n_edges == n->cap_edges) {
        size_t cap = n->cap_edges ? n->cap_edges * 2 : 8;
        ja_edge *e = realloc(n->edges, cap * sizeof *e);
        if (!e) {
            fb_err_set(err, FB_ERR_NOMEM, "out of memory building the archive plan");
            return NULL;
        }
        n->edges = e;
        n->cap_edges = cap;
    }
    ja_edge *e = &n->edges[n->n_edges++];
    memset(e, 0, sizeof *e);
    return e;
}

/* One catalog foreign key pointing at a node. */
typedef struct ja_fk {
    char schema[JA_NAME], table[JA_NAME];
    char ccol[JA_FK_MAX][JA_NAME], pcol[JA_FK_MAX][JA_NAME];
    int ncols;
    int covered;
} ja_fk;

static fb_code ja_catalog_fks(PGconn *c, const ja_node *node, ja_fk **out, size_t *n_out, fb_err *err) {
    char oidtxt[16];
    snprintf(oidtxt, sizeof oidtxt, "%u", node->oid);
    const char *p[1] = {oidtxt};
    PGresult *r = ja_query(c,
                           "SELECT con.oid, cn.nspname, cc.relname, ca.attname, pa.attname "
                           "FROM pg_catalog.pg_constraint con "
                           "JOIN pg_catalog.pg_class cc ON cc.oid = con.conrelid "
                           "JOIN pg_catalog.pg_namespace cn ON cn.oid = cc.relnamespace "
                           "CROSS JOIN LATERAL unnest(con.conkey, con.confkey) WITH ORDINALITY AS k(cnum, pnum, ord) "
                           "JOIN pg_catalog.pg_attribute ca ON ca.attrelid = con.conrelid AND ca.attnum = k.cnum "
                           "JOIN pg_catalog.pg_attribute pa ON pa.attrelid = con.confrelid AND pa.attnum = k.pnum "
                           "WHERE con.contype = 'f' AND con.confrelid = $1::oid AND con.conparentid = 0 "
                           "ORDER BY con.oid, k.ord",
                           1, p, "reading the foreign keys that reference the table", err);
    if (!r) return err->code;
    fb_code rc = FB_OK;
    int rows = PQntuples(r);
    ja_fk *fks = calloc((size_t)rows + 1, sizeof *fks);
    size_t n = 0;
    if (!fks) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory reading foreign keys");
        goto out;
    }
    const char *prev = NULL;
    for (int i = 0; i < rows; i++) {
        if (!prev || strcmp(prev, PQgetvalue(r, i, 0)) != 0) {
            ja_fk *f = &fks[n++];
            ja_copy(f->schema, sizeof f->schema, PQgetvalue(r, i, 1));
            ja_copy(f->table, sizeof f->table, PQgetvalue(r, i, 2));
        }
        prev = PQgetvalue(r, i, 0);
        ja_fk *f = &fks[n - 1];
        if (f->ncols >= JA_FK_MAX) {
            rc = fb_err_set(err, FB_ERR_INVALID, "a foreign key of \"%s\".\"%s\" has more than %d columns", f->schema,
                            f->table, JA_FK_MAX);
            goto out;
        }
        ja_copy(f->ccol[f->ncols], JA_NAME, PQgetvalue(r, i, 3));
        ja_copy(f->pcol[f->ncols], JA_NAME, PQgetvalue(r, i, 4));
        f->ncols++;
    }
out:
    PQclear(r);
    if (rc != FB_OK) {
        free(fks);
        fks = NULL;
        n = 0;
    }
    *out = fks;
    *n_out = n;
    return rc;
}

static int ja_same_table(const ev_table *t, const char *schema, const char *table) {
    return strcmp(t->schema, schema) == 0 && strcmp(t->name, table) == 0;
}

static ja_edge_kind ja_kind_of(ev_on_delete d) {
    switch (d) {
    case EV_CASCADE: return JA_EDGE_CASCADE;
    case EV_SET_NULL: return JA_EDGE_SET_NULL;
    case EV_SET_DEFAULT: return JA_EDGE_SET_DEFAULT;
    case EV_PROTECT:
    case EV_DO_NOTHING:
    default: return JA_EDGE_PROTECT;
    }
}

/* The child node of a CASCADE relation rel from node idx (its edge is the node's last): named, with its module,
 * model and primary key (rel's pk_column, which must be unique, or the table's primary key). */
static fb_code ja_add_cascade_child(PGconn *c, const ev_archive_due *a, ja_plan *plan, size_t idx,
                                    const ev_relation *rel, unsigned int child_oid, const char *what, fb_err *err) {
    fb_code rc;
    if (plan->nodes[idx].depth + 1 > JOB_ARCHIVE_MAX_DEPTH)
        return fb_err_set(err, FB_ERR_INVALID,
                          "%s: CASCADE relations nest deeper than %d levels below \"%s\".\"%s\"; the relations "
                          "probably form a cycle (a table cascading to itself): archive such tables without it",
                          what, JOB_ARCHIVE_MAX_DEPTH, plan->nodes[0].schema, plan->nodes[0].table);
    int parent_depth = plan->nodes[idx].depth;
    ja_node *ch = ja_plan_add_node(plan, err); /* may move plan->nodes: pointers into it are stale after this */
    if (!ch) return err->code;
    plan->nodes[idx].edges[plan->nodes[idx].n_edges - 1].child = (int)(plan->n_nodes - 1);
    ch->parent = (int)idx;
    ch->depth = parent_depth + 1;
    ch->oid = child_oid;
    ja_copy(ch->schema, sizeof ch->schema, rel->table.schema);
    ja_copy(ch->table, sizeof ch->table, rel->table.name);
    ja_copy(ch->module, sizeof ch->module, rel->module ? rel->module : a->module);
    ja_copy(ch->model_name, sizeof ch->model_name, rel->model_name ? rel->model_name : rel->table.name);
    if (rel->pk_column) {
        int uniq = 0;
        if ((rc = ja_column(c, child_oid, ch->schema, ch->table, rel->pk_column, "primary-key", NULL, 0, err)) ||
            (rc = ja_is_unique(c, child_oid, rel->pk_column, &uniq, err))) {
            fb_err_prefix(err, "%s: ", what);
            return rc;
        }
        if (!uniq)
            return fb_err_set(err, FB_ERR_INVALID, "%s: pk_column \"%s\" is not a unique column of \"%s\".\"%s\"",
                              what, rel->pk_column, ch->schema, ch->table);
        ja_copy(ch->pk, sizeof ch->pk, rel->pk_column);
    } else if ((rc = ja_primary_key(c, child_oid, ch->schema, ch->table, ch->pk, sizeof ch->pk, err))) {
        fb_err_prefix(err, "%s: ", what);
        return rc;
    }
    return FB_OK;
}

/* The edge of relation rel to node idx, checked against the catalog; the catalog key it names is marked covered;
 * a CASCADE adds its child node. */
static fb_code ja_add_relation(PGconn *c, const ev_archive_due *a, ja_plan *plan, size_t idx,
                               const ev_relation *rel, ja_fk *fks, size_t n_fks, fb_err *err) {
    ja_node *node = &plan->nodes[idx];
    char what[300];
    snprintf(what, sizeof what, "relation %s \"%s\".\"%s\".\"%s\" -> \"%s\".\"%s\"",
             ev_on_delete_name(rel->on_delete), rel->table.schema, rel->table.name, rel->column, node->schema,
             node->table);
    unsigned int child_oid = 0;
    fb_code rc;
    if ((rc = ja_table_oid(c, rel->table.schema, rel->table.name, "referencing", &child_oid, NULL, err)) ||
        (rc = ja_column(c, child_oid, rel->table.schema, rel->table.name, rel->column, "foreign-key", NULL, 0, err)) ||
        (rel->to_column &&
         (rc = ja_column(c, node->oid, node->schema, node->table, rel->to_column, "referenced", NULL, 0, err)))) {
        fb_err_prefix(err, "%s: ", what);
        return rc;
    }
    for (size_t k = 0; k < n_fks; k++)
        if (strcmp(fks[k].schema, rel->table.schema) == 0 && strcmp(fks[k].table, rel->table.name) == 0 &&
            strcmp(fks[k].ccol[0], rel->column) == 0)
            fks[k].covered = 1;
    ja_edge *e = ja_node_add_edge(node, err);
    if (!e) return err->code;
    e->kind = ja_kind_of(rel->on_delete);
    ja_copy(e->schema, sizeof e->schema, rel->table.schema);
    ja_copy(e->table, sizeof e->table, rel->table.name);
    ja_copy(e->ccol[0], JA_NAME, rel->column);
    ja_copy(e->pcol[0], JA_NAME, rel->to_column ? rel->to_column : node->pk);
    e->ncols = 1;
    e->child = -1;
    if (e->kind != JA_EDGE_CASCADE) return FB_OK;
    return ja_add_cascade_child(c, a, plan, idx, rel, child_oid, what, err);
}

/* The catalog's foreign keys to node idx that no relation covers: UNLISTED edges (job_archive_int.h), so a live
 * reference through one keeps the row in place. */
static fb_code ja_add_unlisted(ja_plan *plan, size_t idx, const ja_fk *fks, size_t n_fks, fb_err *err) {
    for (size_t k = 0; k < n_fks; k++) {
        if (fks[k].covered) continue;
        ja_edge *e = ja_node_add_edge(&plan->nodes[idx], err);
        if (!e) return err->code;
        e->kind = JA_EDGE_UNLISTED;
        e->child = -1;
        ja_copy(e->schema, sizeof e->schema, fks[k].schema);
        ja_copy(e->table, sizeof e->table, fks[k].table);
        e->ncols = fks[k].ncols;
        for (int j = 0; j < e->ncols; j++) {
            ja_copy(e->ccol[j], JA_NAME, fks[k].ccol[j]);
            ja_copy(e->pcol[j], JA_NAME, fks[k].pcol[j]);
        }
    }
    return FB_OK;
}

/* Adds the edges of node idx (relations first, then uncovered catalog keys) and the nodes of its CASCADE children. */
static fb_code ja_expand(PGconn *c, const ev_archive_due *a, ja_plan *plan, size_t idx, fb_err *err) {
    ja_fk *fks = NULL;
    size_t n_fks = 0;
    fb_code rc = ja_catalog_fks(c, &plan->nodes[idx], &fks, &n_fks, err);
    for (size_t i = 0; i < a->n_relations && !rc; i++) {
        const ev_relation *rel = &a->relations[i];
        const ja_node *node = &plan->nodes[idx];
        if (ja_same_table(&rel->references, node->schema, node->table))
            rc = ja_add_relation(c, a, plan, idx, rel, fks, n_fks, err);
    }
    if (!rc) rc = ja_add_unlisted(plan, idx, fks, n_fks, err);
    free(fks);
    return rc;
}

fb_code ja_plan_build(PGconn *c, const ev_event *ev, ja_plan *plan, fb_err *err) {
    const ev_archive_due *a = &ev->u.archive;
    memset(plan, 0, sizeof *plan);
    fb_code rc = FB_OK;
    char tstype[128] = "";
    int uniq = 0;
    unsigned int ar_oid = 0;
    ja_node *root = ja_plan_add_node(plan, err);
    if (!root) return err->code;
    ja_copy(root->schema, sizeof root->schema, a->table.schema);
    ja_copy(root->table, sizeof root->table, a->table.name);
    ja_copy(root->pk, sizeof root->pk, a->pk_column);
    ja_copy(root->module, sizeof root->module, a->module);
    ja_copy(root->model_name, sizeof root->model_name, a->model_name);
    ja_copy(plan->ts_column, sizeof plan->ts_column, a->timestamp_column);

    if ((rc = ja_table_oid(c, "public", JOB_ARCHIVE_TABLE, "ArchivedRecord", &ar_oid, NULL, err))) {
        fb_err_prefix(err, "the Django app backup_archive is not migrated here: ");
        goto out;
    }
    if ((rc = ja_table_oid(c, root->schema, root->table, "archived", &root->oid, &root->partitioned, err)) ||
        (rc = ja_column(c, root->oid, root->schema, root->table, a->pk_column, "primary-key", NULL, 0, err)) ||
        (rc = ja_column(c, root->oid, root->schema, root->table, a->timestamp_column, "timestamp", tstype,
                        sizeof tstype, err)) ||
        (rc = ja_is_unique(c, root->oid, a->pk_column, &uniq, err)))
        goto out;
    if (!uniq) {
        rc = fb_err_set(err, FB_ERR_INVALID,
                        "pk_column \"%s\" is not a unique column of \"%s\".\"%s\": original_id must identify one row",
                        a->pk_column, root->schema, root->table);
        goto out;
    }
    if (strcmp(tstype, "timestamp with time zone") != 0 && strcmp(tstype, "timestamp without time zone") != 0 &&
        strcmp(tstype, "date") != 0) {
        rc = fb_err_set(err, FB_ERR_INVALID,
                        "timestamp column \"%s\" of \"%s\".\"%s\" has type %s; it must be a date or timestamp "
                        "(fix the ArchivePolicy's timestamp_column)",
                        a->timestamp_column, root->schema, root->table, tstype);
        goto out;
    }
    for (size_t i = 0; i < plan->n_nodes; i++) /* grows while we expand */
        if ((rc = ja_expand(c, a, plan, i, err))) goto out;
    for (size_t i = 0; i < plan->n_nodes; i++)
        for (size_t j = 0; j < plan->n_nodes; j++)
            if (i != j && strcmp(plan->nodes[i].schema, plan->nodes[j].schema) == 0 &&
                strcmp(plan->nodes[i].table, plan->nodes[j].table) == 0) {
                plan->nodes[i].dup = 1;
                plan->any_dup = 1;
            }
out:
    return rc;
}

void ja_plan_free(ja_plan *plan) {
    if (!plan) return;
    for (size_t i = 0; i < plan->n_nodes; i++) free(plan->nodes[i].edges);
    free(plan->nodes);
    memset(plan, 0, sizeof *plan);
}

fb_code ja_session_setup(PGconn *c, long long lock_timeout_ms, long long statement_timeout_ms, fb_err *err) {
    char lt[32], st[32];
    snprintf(lt, sizeof lt, "%lld", lock_timeout_ms);
    snprintf(st, sizeof st, "%lld", statement_timeout_ms);
    const char *p[2] = {lt, st};
    /* Pinned output formats: the archived text must not depend on the server's or role's settings. jit off: JIT
     * starts when a plan's estimated cost passes jit_above_cost, so with it a batch would cost tens to hundreds
     * of milliseconds more (compiling its expressions) or not, depending on statistics; a batch is a short
     * statement re-planned every time, which never earns a compilation back. enable_seqscan off: every table a
     * batch touches is reached through an index (or by ctid), so a batch costs the same on a table of any size
     * and in any state of its statistics; a sequential scan is still used where no index exists (a catalog
     * foreign key without one), it is only costed last. */
    PGresult *r = PQexecParams(c,
                               "SELECT set_config('lock_timeout', $1, false), "
                               "set_config('statement_timeout', $2, false), "
                               "set_config('DateStyle', 'ISO, YMD', false), "
                               "set_config('IntervalStyle', 'postgres', false), "
                               "set_config('bytea_output', 'hex', false), "
                               "set_config('extra_float_digits', '1', false), "
                               "set_config('jit', 'off', false), "
                               "set_config('enable_seqscan', 'off', false)",
                               2, NULL, p, NULL, NULL, 0);
    fb_code rc = pgx_check(c, r, PGRES_TUPLES_OK, "setting up the archive session (timeouts, output formats, planner settings)", err);
    if (rc == FB_OK) PQclear(r); /* pgx_check clears the result only on failure */
    return rc;
}
