/* job_archive_sql: writes the one statement that archives one batch, from a plan (job_archive_int.h).
 *
 * Shape (CTEs, all in one snapshot; PostgreSQL runs every data-modifying CTE to completion):
 *   cand  the batch: due rows after the last key, ORDER BY pk LIMIT n, FOR UPDATE SKIP LOCKED
 *   flags cand's rows with three flags computed through the CASCADE subtree: prot_ (a PROTECT/DO_NOTHING
 *         reference), ref_ (an unlisted catalog reference), conf_ (an ArchivedRecord with the same key exists),
 *         each a per-row index probe whose plan does not depend on statistics (see ja_sql_flag)
 *   n0    the rows of cand that may go; nK the CASCADE descendants of node K's parent rows, locked FOR UPDATE
 *         (waiting up to lock_timeout: we need all of them)
 *   ins   one ArchivedRecord per row of every nK (DISTINCT when the same table is reached twice)
 *   dK    DELETE of nK's rows by ctid (they are locked by us, so their ctid cannot change)
 *   sJ    UPDATE ... SET col = NULL / DEFAULT of rows referencing deleted rows through SET_NULL / SET_DEFAULT
 * and one result row of counters. The dry-run variant takes no locks and replaces every write by a SELECT of the
 * same rows, so it counts exactly what a real batch would do at that moment.
 * The fast statement (ja_sql_fast) is the same batch for a table nothing references, with the per-row work the
 * general shape needs only for references left out: no FOR UPDATE (the DELETE locks the rows it deletes), no
 * conflict probe (the unique index refuses a conflict), the rows from the DELETE's RETURNING rather than carried
 * through three CTEs; the job falls back to ja_sql_batch when it fails for a held row or a conflict.
 * Every name is quoted here; every value is a parameter (see JA_P_* in job_archive_int.h).
 */
#include "job/job_archive_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job/job_archive.h"
#include "pg/pgx.h"

enum { JA_FLAG_PROT, JA_FLAG_REF, JA_FLAG_CONF };

static int ja_param(size_t node, int field) { return JA_P_FIXED + 1 + (int)node * JA_P_PER_NODE + field; }

/* Does the subtree of node have anything that can set the flag? (Keeps the SQL free of useless probes.) */
static int ja_subtree_has(const ja_plan *p, size_t node, int flag) {
    if (flag == JA_FLAG_CONF) return 1;
    const ja_node *n = &p->nodes[node];
    for (size_t i = 0; i < n->n_edges; i++) {
        const ja_edge *e = &n->edges[i];
        if (flag == JA_FLAG_PROT && e->kind == JA_EDGE_PROTECT) return 1;
        if (flag == JA_FLAG_REF && e->kind == JA_EDGE_UNLISTED) return 1;
        if (e->kind == JA_EDGE_CASCADE && ja_subtree_has(p, (size_t)e->child, flag)) return 1;
    }
    return 0;
}

/* "x.c1 = alias.p1 AND x.c2 = alias.p2" */
static void ja_sql_join(fb_sbuf *b, const ja_edge *e, const char *x, const char *alias) {
    for (int j = 0; j < e->ncols; j++) {
        fb_sbuf_printf(b, "%s%s.", j ? " AND " : "", x);
        pgx_sb_ident(b, e->ccol[j]);
        fb_sbuf_printf(b, " = %s.", alias);
        pgx_sb_ident(b, e->pcol[j]);
    }
}

/* A boolean expression: does the row `alias` of node carry the flag, itself or through its CASCADE subtree?
 *
 * Every probe is a scalar subquery, `(SELECT x.ctid FROM ... LIMIT 1) IS NOT NULL`, never EXISTS: PostgreSQL plans
 * an EXISTS in a target list twice, as one probe per row and as a "hashed SubPlan" that reads every matching row
 * of the probed table once per statement, and picks one by its row estimates. For the conflict check that hash is
 * all ArchivedRecords of the model, so with statistics taken while ArchivedRecord was small (or never) each batch
 * read everything archived before it: cost linear in the rows archived so far, quadratic over a job, and fast or
 * slow depending on when autovacuum last analysed the table (bench/archive/README.md, issue 17). A scalar subquery
 * has no hashed form, so every batch does one index probe per row whatever the statistics say; on the unique
 * (module, model_name, original_id) index the planner estimates one row from the index alone. The session turns
 * sequential scans off (ja_session_setup), so a probe of a small or never-analysed table is the same index scan;
 * selecting ctid (which no index holds) rules out an index-only scan, whose choice depends on the visibility map
 * fraction that VACUUM records: one plan shape in every state of the statistics. */
static void ja_sql_flag(fb_sbuf *b, const ja_plan *p, size_t node, const char *alias, const char *ctid, int flag,
                        int *seq) {
    const ja_node *n = &p->nodes[node];
    fb_sbuf_printf(b, "(false");
    if (flag == JA_FLAG_CONF) {
        char a[16];
        snprintf(a, sizeof a, "a%d", ++*seq);
        fb_sbuf_printf(b, " OR (SELECT %s.ctid FROM ", a);
        pgx_sb_qualified(b, "public", JOB_ARCHIVE_TABLE);
        fb_sbuf_printf(b, " %s WHERE %s.module = $%d::text AND %s.model_name = $%d::text AND %s.original_id = %s.", a, a,
                     ja_param(node, 0), a, ja_param(node, 1), a, alias);
        pgx_sb_ident(b, n->pk);
        fb_sbuf_printf(b, "::text LIMIT 1) IS NOT NULL");
    }
    for (size_t i = 0; i < n->n_edges; i++) {
        const ja_edge *e = &n->edges[i];
        int direct = (flag == JA_FLAG_PROT && e->kind == JA_EDGE_PROTECT) ||
                     (flag == JA_FLAG_REF && e->kind == JA_EDGE_UNLISTED);
        int deep = e->kind == JA_EDGE_CASCADE && ja_subtree_has(p, (size_t)e->child, flag);
        if (!direct && !deep) continue;
        char x[16];
        snprintf(x, sizeof x, "x%d", ++*seq);
        fb_sbuf_printf(b, " OR (SELECT %s.ctid FROM ", x);
        pgx_sb_qualified(b, e->schema, e->table);
        fb_sbuf_printf(b, " %s WHERE ", x);
        ja_sql_join(b, e, x, alias);
        /* A row that references itself does not block its own archival. */
        if (strcmp(e->schema, n->schema) == 0 && strcmp(e->table, n->table) == 0)
            fb_sbuf_printf(b, " AND %s.ctid <> %s", x, ctid);
        if (deep) {
            char xc[24];
            snprintf(xc, sizeof xc, "%s.ctid", x);
            fb_sbuf_printf(b, " AND ");
            ja_sql_flag(b, p, (size_t)e->child, x, xc, flag, seq);
        }
        fb_sbuf_printf(b, " LIMIT 1) IS NOT NULL");
    }
    fb_sbuf_printf(b, ")");
}

/* "(SELECT (nK.r_).p1 FROM nK)" or the multi-column form, compared with the referencing columns of x. */
static void ja_sql_refs_in(fb_sbuf *b, const ja_edge *e, const char *x, size_t parent) {
    fb_sbuf_printf(b, "(");
    for (int j = 0; j < e->ncols; j++) {
        fb_sbuf_printf(b, "%s%s.", j ? ", " : "", x);
        pgx_sb_ident(b, e->ccol[j]);
    }
    fb_sbuf_printf(b, ") IN (SELECT ");
    for (int j = 0; j < e->ncols; j++) {
        fb_sbuf_printf(b, "%s(n%zu.r_).", j ? ", " : "", parent);
        pgx_sb_ident(b, e->pcol[j]);
    }
    fb_sbuf_printf(b, " FROM n%zu)", parent);
}

/* The batch statement is one chain of CTEs, written by the steps below in order: cand (the batch, locked), flags
 * and n0 (the root rows that may move); nK (their CASCADE descendants); ins (the ArchivedRecords); dK (the
 * deletes); sJ (SET NULL / SET DEFAULT of the rows that reference them); then the counters ja_batch reads. */

/* "t.<timestamp column> < the cutoff": a row of the root is due. */
static void ja_sql_due(fb_sbuf *b, const ja_plan *p) {
    fb_sbuf_printf(b, "t.");
    pgx_sb_ident(b, p->ts_column);
    fb_sbuf_printf(b, " < (timestamptz 'epoch' + $1::bigint * interval '1 millisecond')");
}

/* " t WHERE <due> AND <keyset> ORDER BY pk LIMIT $4": the root's next batch of due rows, for both statements.
 * Keyset: a plain `pk > $3` (no OR) so the index scan starts after the previous batch instead of walking the
 * dead index entries of every row already moved. */
static void ja_sql_page(fb_sbuf *b, const ja_plan *p, int first) {
    const ja_node *root = &p->nodes[0];
    fb_sbuf_printf(b, " t WHERE ");
    ja_sql_due(b, p);
    if (first) {
        fb_sbuf_printf(b, " AND $2::boolean");
    } else {
        fb_sbuf_printf(b, " AND NOT $2::boolean AND t.");
        pgx_sb_ident(b, root->pk);
        fb_sbuf_printf(b, " > $3");
    }
    fb_sbuf_printf(b, " ORDER BY t.");
    pgx_sb_ident(b, root->pk);
    fb_sbuf_printf(b, " LIMIT $4::bigint");
}

/* cand: the batch, locked. The flags are computed in a second CTE over cand's few rows: computed here, below
 * the LIMIT, the planner would cost them for every due row and may hash all ArchivedRecords of the model. */
static void ja_sql_cand(fb_sbuf *b, const ja_plan *p, int dry, int first) {
    const ja_node *root = &p->nodes[0];
    int seq = 0;
    /* A partitioned root's rows are named by (tableoid, ctid): ctids repeat across its partitions. */
    const char *toid = root->partitioned ? "toid_, " : "";
    fb_sbuf_printf(b, "WITH cand AS MATERIALIZED (SELECT %st.ctid AS ctid_, t AS r_, t.",
                   root->partitioned ? "t.tableoid AS toid_, " : "");
    pgx_sb_ident(b, root->pk);
    fb_sbuf_printf(b, " AS pk_ FROM ");
    pgx_sb_qualified(b, root->schema, root->table);
    ja_sql_page(b, p, first);
    fb_sbuf_printf(b, "%s),\n", dry ? "" : " FOR UPDATE OF t SKIP LOCKED");
    fb_sbuf_printf(b, "flags AS MATERIALIZED (SELECT %sc.ctid_, c.r_, c.pk_, ", root->partitioned ? "c.toid_, " : "");
    ja_sql_flag(b, p, 0, "(c.r_)", "c.ctid_", JA_FLAG_PROT, &seq);
    fb_sbuf_printf(b, " AS prot_, ");
    ja_sql_flag(b, p, 0, "(c.r_)", "c.ctid_", JA_FLAG_REF, &seq);
    fb_sbuf_printf(b, " AS ref_, ");
    ja_sql_flag(b, p, 0, "(c.r_)", "c.ctid_", JA_FLAG_CONF, &seq);
    fb_sbuf_printf(b, " AS conf_ FROM cand c),\n");
    fb_sbuf_printf(b, "n0 AS MATERIALIZED (SELECT %sctid_, r_, pk_ FROM flags WHERE NOT (prot_ OR ref_ OR conf_))", toid);
}

/* nK: CASCADE descendants (nodes are numbered parents first). */
static fb_code ja_sql_cascade(fb_sbuf *b, const ja_plan *p, int dry, fb_err *err) {
    for (size_t k = 1; k < p->n_nodes; k++) {
        const ja_node *n = &p->nodes[k];
        const ja_node *par = &p->nodes[n->parent];
        const ja_edge *e = NULL;
        for (size_t i = 0; i < par->n_edges; i++)
            if (par->edges[i].kind == JA_EDGE_CASCADE && par->edges[i].child == (int)k) e = &par->edges[i];
        if (!e) return fb_err_set(err, FB_ERR_INTERNAL, "archive plan: node %zu has no edge from its parent", k);
        fb_sbuf_printf(b, ",\nn%zu AS MATERIALIZED (SELECT x.ctid AS ctid_, x AS r_, x.", k);
        pgx_sb_ident(b, n->pk);
        fb_sbuf_printf(b, " AS pk_ FROM ");
        pgx_sb_qualified(b, n->schema, n->table);
        fb_sbuf_printf(b, " x WHERE ");
        ja_sql_refs_in(b, e, "x", (size_t)n->parent);
        fb_sbuf_printf(b, "%s)", dry ? "" : " FOR UPDATE OF x");
    }
    return FB_OK;
}

/* ins: the ArchivedRecords, one per moved row of every node. */
static void ja_sql_insert(fb_sbuf *b, const ja_plan *p, int dry) {
    fb_sbuf_printf(b, ",\nins AS (");
    if (!dry) {
        fb_sbuf_printf(b, "INSERT INTO ");
        pgx_sb_qualified(b, "public", JOB_ARCHIVE_TABLE);
        fb_sbuf_printf(b, " (module, model_name, original_id, data, archived_at, archived_by_id, job_id) ");
    }
    fb_sbuf_printf(b, "SELECT %s m_, n_, o_, d_, now(), $5::integer, $6::uuid FROM (",
                 p->any_dup ? "DISTINCT ON (m_, n_, o_)" : "");
    for (size_t k = 0; k < p->n_nodes; k++) {
        fb_sbuf_printf(b, "%sSELECT $%d::text AS m_, $%d::text AS n_, n%zu.pk_::text AS o_, ", k ? " UNION ALL " : "",
                     ja_param(k, 0), ja_param(k, 1), k);
        if (dry)
            fb_sbuf_printf(b, "NULL::text AS d_");
        else
            fb_sbuf_printf(b,
                         "json_build_object('v', 1, 'table', json_build_array($%d::text, $%d::text), 'pk', "
                         "$%d::text, 'row', row_to_json(n%zu.r_))::text AS d_",
                         ja_param(k, 2), ja_param(k, 3), ja_param(k, 4), k);
        fb_sbuf_printf(b, " FROM n%zu", k);
    }
    fb_sbuf_printf(b, ") s%s)", dry ? "" : " RETURNING 1");
}

/* dK: the deletes, one per node. */
static void ja_sql_deletes(fb_sbuf *b, const ja_plan *p, int dry) {
    for (size_t k = 0; k < p->n_nodes; k++) {
        if (dry) {
            fb_sbuf_printf(b, ",\nd%zu AS (SELECT 1 FROM n%zu)", k, k);
            continue;
        }
        fb_sbuf_printf(b, ",\nd%zu AS (DELETE FROM ", k);
        pgx_sb_qualified(b, p->nodes[k].schema, p->nodes[k].table);
        fb_sbuf_printf(b, " t WHERE t.ctid = ANY (ARRAY(SELECT ctid_ FROM n%zu))", k);
        /* The TID scan of each partition finds every partition's row with that ctid; the pair picks ours. A
         * partitioned descendant (nK, k > 0) is not told apart here: the batch's deleted = archived check then
         * rolls it back, and nothing is lost. */
        if (k == 0 && p->nodes[0].partitioned)
            fb_sbuf_printf(b, " AND (t.tableoid, t.ctid) = ANY (ARRAY(SELECT (toid_, ctid_) FROM n0))");
        fb_sbuf_printf(b, " RETURNING 1)");
    }
}

/* sJ: SET_NULL / SET_DEFAULT of the rows referencing a moved row; returns how many sJ there are. */
static int ja_sql_set(fb_sbuf *b, const ja_plan *p, int dry) {
    int n_set = 0;
    for (size_t k = 0; k < p->n_nodes; k++) {
        const ja_node *n = &p->nodes[k];
        for (size_t i = 0; i < n->n_edges; i++) {
            const ja_edge *e = &n->edges[i];
            if (e->kind != JA_EDGE_SET_NULL && e->kind != JA_EDGE_SET_DEFAULT) continue;
            fb_sbuf_printf(b, ",\ns%d AS (", n_set++);
            if (dry) {
                fb_sbuf_printf(b, "SELECT 1 FROM ");
                pgx_sb_qualified(b, e->schema, e->table);
            } else {
                fb_sbuf_printf(b, "UPDATE ");
                pgx_sb_qualified(b, e->schema, e->table);
                fb_sbuf_printf(b, " t SET ");
                for (int j = 0; j < e->ncols; j++) {
                    fb_sbuf_printf(b, "%s", j ? ", " : "");
                    pgx_sb_ident(b, e->ccol[j]);
                    fb_sbuf_printf(b, " = %s", e->kind == JA_EDGE_SET_NULL ? "NULL" : "DEFAULT");
                }
            }
            fb_sbuf_printf(b, "%s WHERE ", dry ? " t" : "");
            ja_sql_refs_in(b, e, "t", k);
            /* A row that is itself being archived in this batch is deleted, not updated. */
            for (size_t m = 0; m < p->n_nodes; m++)
                if (strcmp(p->nodes[m].schema, e->schema) == 0 && strcmp(p->nodes[m].table, e->table) == 0)
                    fb_sbuf_printf(b, " AND t.ctid <> ALL (ARRAY(SELECT ctid_ FROM n%zu))", m);
            fb_sbuf_printf(b, "%s)", dry ? "" : " RETURNING 1");
        }
    }
    return n_set;
}

/* The counters, in the order of JA_R_* (job_archive_int.h): seen, protected, referenced, conflicting, root rows
 * deleted, descendants deleted, ArchivedRecords inserted, rows nulled (sJ), and the batch's last key. */
static void ja_sql_counters(fb_sbuf *b, const ja_plan *p, int n_set) {
    fb_sbuf_printf(b, "\nSELECT c.seen, c.prot, c.ref, c.conf, (SELECT count(*) FROM d0), 0");
    for (size_t k = 1; k < p->n_nodes; k++) fb_sbuf_printf(b, " + (SELECT count(*) FROM d%zu)", k);
    fb_sbuf_printf(b, ", (SELECT count(*) FROM ins), 0");
    for (int j = 0; j < n_set; j++) fb_sbuf_printf(b, " + (SELECT count(*) FROM s%d)", j);
    fb_sbuf_printf(b, ", (SELECT cand.pk_::text AS last_ FROM cand ORDER BY cand.pk_ DESC LIMIT 1) FROM (SELECT count(*) AS seen, "
                    "count(*) FILTER (WHERE prot_) AS prot, count(*) FILTER (WHERE ref_ AND NOT prot_) AS ref, "
                    "count(*) FILTER (WHERE conf_ AND NOT prot_ AND NOT ref_) AS conf FROM flags) c");
}

fb_code ja_sql_batch(const ja_plan *p, int dry, int first, fb_sbuf *b, fb_err *err) {
    ja_sql_cand(b, p, dry, first);
    fb_code rc = ja_sql_cascade(b, p, dry, err);
    if (rc) return rc;
    ja_sql_insert(b, p, dry);
    ja_sql_deletes(b, p, dry);
    ja_sql_counters(b, p, ja_sql_set(b, p, dry));
    if (b->oom) return fb_err_set(err, FB_ERR_NOMEM, "out of memory writing the archive statement");
    return FB_OK;
}

int ja_sql_fast_fits(const ja_plan *p) {
    return p->n_nodes == 1 && p->nodes[0].n_edges == 0 && !p->nodes[0].partitioned;
}

/* The fast statement (see job_archive_int.h for when it may run and what makes it fall back):
 *   cand  the batch's ctids and keys, no row lock;
 *   d0    DELETE by ctid of those still due, RETURNING the rows: the DELETE takes the row locks itself;
 *   ins   one ArchivedRecord per row d0 returned, so archived and deleted are the same rows by construction;
 * and the counters in the order of JA_R_* (nothing can be protected or referenced: the table has no edges; a
 * conflict is a unique violation of _uniq, never a count). */
fb_code ja_sql_fast(const ja_plan *p, int first, fb_sbuf *b, fb_err *err) {
    if (!ja_sql_fast_fits(p))
        return fb_err_set(err, FB_ERR_INTERNAL, "archive plan: the fast batch statement needs a table nothing references");
    const ja_node *root = &p->nodes[0];
    fb_sbuf_printf(b, "WITH cand AS MATERIALIZED (SELECT t.ctid AS ctid_, t.");
    pgx_sb_ident(b, root->pk);
    fb_sbuf_printf(b, " AS pk_ FROM ");
    pgx_sb_qualified(b, root->schema, root->table);
    ja_sql_page(b, p, first);
    fb_sbuf_printf(b, "),\nd0 AS (DELETE FROM ");
    pgx_sb_qualified(b, root->schema, root->table);
    /* Still due, said again: a row updated after the statement's snapshot is rechecked on its newest version
     * (EvalPlanQual), and a TID scan's recheck does not look at the TID list (nodeTidscan.c, TidRecheck), only at
     * the other conditions. So a newest version that is still due is deleted and archived as it is now (RETURNING
     * gives that version), one that is no longer due stays; a row deleted meanwhile is not returned at all. */
    fb_sbuf_printf(b, " t WHERE t.ctid = ANY (ARRAY(SELECT ctid_ FROM cand)) AND ");
    ja_sql_due(b, p);
    fb_sbuf_printf(b, " RETURNING t AS r_, t.");
    pgx_sb_ident(b, root->pk);
    fb_sbuf_printf(b, " AS pk_),\nins AS (INSERT INTO ");
    pgx_sb_qualified(b, "public", JOB_ARCHIVE_TABLE);
    fb_sbuf_printf(b, " (module, model_name, original_id, data, archived_at, archived_by_id, job_id) SELECT $%d::text, "
                      "$%d::text, d0.pk_::text, json_build_object('v', 1, 'table', json_build_array($%d::text, "
                      "$%d::text), 'pk', $%d::text, 'row', row_to_json(d0.r_))::text, now(), $5::integer, $6::uuid "
                      "FROM d0 RETURNING 1)\n",
                   ja_param(0, 0), ja_param(0, 1), ja_param(0, 2), ja_param(0, 3), ja_param(0, 4));
    fb_sbuf_printf(b, "SELECT (SELECT count(*) FROM cand), 0, 0, 0, (SELECT count(*) FROM d0), 0, "
                      "(SELECT count(*) FROM ins), 0, (SELECT cand.pk_::text AS last_ FROM cand ORDER BY cand.pk_ "
                      "DESC LIMIT 1)");
    if (b->oom) return fb_err_set(err, FB_ERR_NOMEM, "out of memory writing the archive statement");
    return FB_OK;
}

fb_code ja_params_init(const ja_plan *p, const ev_event *ev, ja_params *q, fb_err *err) {
    const ev_archive_due *a = &ev->u.archive;
    memset(q, 0, sizeof *q);
    q->n = JA_P_FIXED + p->n_nodes * JA_P_PER_NODE;
    if (!(q->prm = calloc(q->n, sizeof *q->prm)) || !(q->types = calloc(q->n, sizeof *q->types))) {
        ja_params_free(q);
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    /* Types are given (unused parameters of the dry-run and first-batch variants must still have one); $3 is
     * left to inference (the primary key's type) except in the first batch, which does not use it. */
    for (size_t i = 0; i < q->n; i++) q->types[i] = PGX_OID_TEXT;
    q->types[0] = PGX_OID_INT8;
    q->types[1] = PGX_OID_BOOL;
    q->types[3] = PGX_OID_INT8;
    q->types[4] = PGX_OID_INT4;
    q->types[5] = PGX_OID_UUID;
    snprintf(q->cutoff, sizeof q->cutoff, "%" PRId64, a->cutoff);
    snprintf(q->by, sizeof q->by, "%" PRId64, a->archived_by.v);
    q->prm[0] = q->cutoff;
    q->prm[3] = q->limit;
    q->prm[4] = a->archived_by.has ? q->by : NULL;
    q->prm[5] = ev->job_id;
    for (size_t i = 0; i < p->n_nodes; i++) {
        const char **r = &q->prm[JA_P_FIXED + i * JA_P_PER_NODE];
        r[0] = p->nodes[i].module;
        r[1] = p->nodes[i].model_name;
        r[2] = p->nodes[i].schema;
        r[3] = p->nodes[i].table;
        r[4] = p->nodes[i].pk;
    }
    ja_params_batch(q, NULL, a->batch_size);
    return FB_OK;
}

void ja_params_batch(ja_params *q, const char *last_key, int64_t limit) {
    snprintf(q->limit, sizeof q->limit, "%" PRId64, limit);
    q->prm[1] = last_key ? "false" : "true";
    q->prm[2] = last_key;
    q->types[2] = last_key ? 0 : PGX_OID_TEXT; /* the first variant does not use $3: say it is text; later: inferred */
}

void ja_params_free(ja_params *q) {
    if (!q) return;
    free(q->prm);
    free(q->types);
    q->prm = NULL;
    q->types = NULL;
}
