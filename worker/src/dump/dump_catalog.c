/* dump_catalog: catalog -> manifest (see dump_catalog.h).
 *
 * One table is described with four small parameterised queries (columns, constraints, plain indexes, owned
 * sequences) plus one read per sequence. The DDL layout follows pg_restore's order: CREATE TABLE with columns and
 * CHECK constraints before the data; primary key, unique and exclusion constraints and other indexes after the
 * data (building an index once is faster than maintaining it per row); foreign keys last.
 */
#include "dump/dump_catalog.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fb_log.h"
#include "common/fb_sbuf.h"
#include "pg/pgx.h"

char *dump_strf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

fb_code dump_catalog_session(PGconn *c, fb_err *err) {
    return pgx_exec(c,
                    "SELECT pg_catalog.set_config('search_path', '', false);"
                    "SET TIME ZONE 'UTC'; SET DateStyle = ISO; SET IntervalStyle = postgres;"
                    "SET bytea_output = hex; SET extra_float_digits = 3; SET client_encoding = 'UTF8';"
                    "SET standard_conforming_strings = on;"
                    /* a role's timeouts must not cut a long dump or restore short (pg_dump does the same) */
                    "SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0",
                    "setting up the session", err);
}

void dump_rels_free(dump_rel *rels, size_t n) {
    if (!rels) return;
    for (size_t i = 0; i < n; i++) {
        free(rels[i].schema);
        free(rels[i].name);
    }
    free(rels);
}

static fb_code dump_rel_add(dump_rel **v, size_t *n, size_t *cap, unsigned oid, const char *schema, const char *name,
                            fb_err *err) {
    for (size_t i = 0; i < *n; i++)
        if ((*v)[i].oid == oid) return FB_OK; /* listed twice */
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        dump_rel *nv = realloc(*v, nc * sizeof *nv);
        if (!nv) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        *v = nv;
        *cap = nc;
    }
    dump_rel *r = &(*v)[(*n)++];
    r->oid = oid;
    r->schema = strdup(schema);
    r->name = strdup(name);
    if (!r->schema || !r->name) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    return FB_OK;
}

fb_code dump_catalog_resolve(PGconn *c, const arc_tref *req, size_t n_req, dump_rel **out, size_t *n_out,
                             fb_err *err) {
    dump_rel *v = NULL;
    size_t n = 0, cap = 0;
    fb_code rc = FB_OK;
    PGresult *r = NULL;
    *out = NULL;
    *n_out = 0;
    if (n_req == 0) {
        /* Partitions are ordinary tables holding the rows of their partitioned parent (which has none): they
         * are backed up as tables, and restored as standalone tables by --create (partitioning itself is not
         * recreated yet; restoring into an existing partitioned schema loads each partition). */
        r = PQexec(c, "SELECT c.oid, n.nspname, c.relname, c.relispartition FROM pg_catalog.pg_class c "
                      "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                      "WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' "
                      "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY n.nspname, c.relname");
        rc = pgx_check(c, r, PGRES_TUPLES_OK, "listing the tables of the database", err);
        if (rc) {
            r = NULL;
            goto out;
        }
        int partitions = 0;
        for (int i = 0; i < PQntuples(r) && rc == FB_OK; i++) {
            partitions += PQgetvalue(r, i, 3)[0] == 't';
            rc = dump_rel_add(&v, &n, &cap, (unsigned)strtoul(PQgetvalue(r, i, 0), NULL, 10), PQgetvalue(r, i, 1),
                              PQgetvalue(r, i, 2), err);
        }
        if (partitions)
            FB_WARN("database \"%s\": %d partitions are backed up as plain tables; restore --create recreates them "
                    "without their partitioned parent", PQdb(c), partitions);
        goto out;
    }
    for (size_t k = 0; k < n_req && rc == FB_OK; k++) {
        const char *params[2] = {req[k].schema ? req[k].schema : "public", req[k].name};
        r = PQexecParams(c,
                         "SELECT c.oid, c.relkind FROM pg_catalog.pg_class c "
                         "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                         "WHERE n.nspname = $1 AND c.relname = $2",
                         2, NULL, params, NULL, NULL, 0);
        rc = pgx_check(c, r, PGRES_TUPLES_OK, "looking up a table", err);
        if (rc) {
            r = NULL;
            goto out;
        }
        if (PQntuples(r) == 0) {
            rc = fb_err_set(err, FB_ERR_NOTFOUND,
                            "table \"%s\".\"%s\" does not exist in database \"%s\" (names are case-sensitive and "
                            "unquoted: give the name exactly as PostgreSQL stores it)",
                            params[0], params[1], PQdb(c));
            goto out;
        }
        if (strcmp(PQgetvalue(r, 0, 1), "r") != 0) {
            rc = fb_err_set(err, FB_ERR_INVALID,
                            "\"%s\".\"%s\" in database \"%s\" is not an ordinary table (relkind %s); only tables can "
                            "be backed up",
                            params[0], params[1], PQdb(c), PQgetvalue(r, 0, 1));
            goto out;
        }
        rc = dump_rel_add(&v, &n, &cap, (unsigned)strtoul(PQgetvalue(r, 0, 0), NULL, 10), params[0], params[1], err);
        PQclear(r);
        r = NULL;
    }
out:
    PQclear(r);
    if (rc) {
        dump_rels_free(v, n);
        return rc;
    }
    *out = v;
    *n_out = n;
    return FB_OK;
}

static PGresult *dump_q(PGconn *c, const char *sql, unsigned oid) {
    char oids[16];
    snprintf(oids, sizeof oids, "%u", oid);
    const char *p[1] = {oids};
    return PQexecParams(c, sql, 1, NULL, p, NULL, NULL, 0);
}

static fb_code dump_oom(fb_err *err) { return fb_err_set(err, FB_ERR_NOMEM, "out of memory describing a table"); }

static char **dump_push(char ***v, size_t *n, char *s) {
    char **nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv) {
        free(s);
        return NULL;
    }
    nv[(*n)++] = s;
    *v = nv;
    return nv;
}

/* One table being described: what every step below reads (the connection, the table's oid and quoted name, the
 * error context) and the two things they build (t, and the CREATE TABLE text in b). */
typedef struct {
    PGconn *c;
    const dump_rel *rel;
    arc_table *t;
    char *qt;   /* "schema"."name", quoted */
    fb_sbuf b;  /* CREATE TABLE ... being written: columns, then inline CHECKs */
    char what[400];
} dc_table;

/* Runs one of the per-table catalog queries ($1 = the table's oid). On failure *out is NULL (pgx_check freed it). */
static fb_code dc_query(dc_table *d, const char *sql, PGresult **out, fb_err *err) {
    *out = dump_q(d->c, sql, d->rel->oid);
    fb_code rc = pgx_check(d->c, *out, PGRES_TUPLES_OK, d->what, err);
    if (rc) *out = NULL;
    return rc;
}

/* ---- step 1: owned sequences ------------------------------------------------------------------------------------- */

/* Row i of the owned-sequences query -> one arc_sequence: its DDL (or, for identity, the options the column DDL
 * repeats) and its current value. */
static fb_code dc_sequence_row(dc_table *d, PGresult *r, int i, fb_err *err) {
    arc_sequence *s = &d->t->seqs[d->t->n_seqs++];
    s->schema = strdup(PQgetvalue(r, i, 0));
    s->name = strdup(PQgetvalue(r, i, 1));
    s->column = strdup(PQgetvalue(r, i, 2));
    s->identity = PQgetvalue(r, i, 3)[0] == 'i';
    char *qs = pgx_qualified_dup(s->schema, s->name), *qc = pgx_ident_dup(s->column);
    /* An identity sequence takes the column's type: "AS type" would conflict. */
    char *as = s->identity ? strdup("") : dump_strf("AS %s ", PQgetvalue(r, i, 10));
    char *opts = dump_strf("%sSTART WITH %s INCREMENT BY %s MINVALUE %s MAXVALUE %s CACHE %s%s", as ? as : "",
                           PQgetvalue(r, i, 4), PQgetvalue(r, i, 5), PQgetvalue(r, i, 6), PQgetvalue(r, i, 7),
                           PQgetvalue(r, i, 8), PQgetvalue(r, i, 9)[0] == 't' ? " CYCLE" : " NO CYCLE");
    free(as);
    if (!s->schema || !s->name || !s->column || !qs || !qc || !opts) {
        free(qs), free(qc), free(opts);
        return dump_oom(err);
    }
    if (s->identity) {
        /* The column creates the sequence; keep its options as its "create_sql" for the column DDL. */
        s->create_sql = dump_strf("SEQUENCE NAME %s %s", qs, opts);
    } else {
        s->create_sql = dump_strf("CREATE SEQUENCE %s %s;", qs, opts);
        s->owned_sql = dump_strf("ALTER SEQUENCE %s OWNED BY %s.%s;", qs, d->qt, qc);
    }
    /* The value: not transactional, so read now (it can only be ahead of what the snapshot's rows used). */
    char *sql = dump_strf("SELECT last_value, is_called FROM %s", qs);
    free(qs), free(qc), free(opts);
    if (!sql || !s->create_sql || (!s->identity && !s->owned_sql)) {
        free(sql);
        return dump_oom(err);
    }
    PGresult *v = PQexec(d->c, sql);
    free(sql);
    fb_code rc = pgx_check(d->c, v, PGRES_TUPLES_OK, d->what, err);
    if (rc) return rc;
    s->last_value = strtoll(PQgetvalue(v, 0, 0), NULL, 10);
    s->is_called = PQgetvalue(v, 0, 1)[0] == 't';
    PQclear(v);
    return FB_OK;
}

/* Sequences owned by the table's columns ('a': serial / OWNED BY; 'i': identity). Needed first: identity columns
 * repeat their sequence's options. */
static fb_code dc_sequences(dc_table *d, fb_err *err) {
    PGresult *r;
    fb_code rc = dc_query(d,
                          "SELECT sn.nspname, s.relname, a.attname, d.deptype, sq.seqstart, sq.seqincrement, "
                          "sq.seqmin, sq.seqmax, sq.seqcache, sq.seqcycle, pg_catalog.format_type(sq.seqtypid, NULL) "
                          "FROM pg_catalog.pg_depend d "
                          "JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
                          "JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace "
                          "JOIN pg_catalog.pg_sequence sq ON sq.seqrelid = s.oid "
                          "JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
                          "WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass "
                          "AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = $1 "
                          "AND d.deptype IN ('a', 'i') ORDER BY a.attnum",
                          &r, err);
    if (rc) return rc;
    if (PQntuples(r) > 0 && !(d->t->seqs = calloc((size_t)PQntuples(r), sizeof *d->t->seqs))) rc = dump_oom(err);
    for (int i = 0; i < PQntuples(r) && rc == FB_OK; i++) rc = dc_sequence_row(d, r, i, err);
    PQclear(r);
    return rc;
}

/* ---- step 2: columns --------------------------------------------------------------------------------------------- */

/* Row i of the columns query -> one arc_column, and its line of the CREATE TABLE. */
static fb_code dc_column_row(dc_table *d, PGresult *r, int i, fb_err *err) {
    arc_table *t = d->t;
    arc_column *col = &t->cols[t->n_cols++];
    col->name = strdup(PQgetvalue(r, i, 0));
    col->type = strdup(PQgetvalue(r, i, 1));
    col->not_null = PQgetvalue(r, i, 2)[0] == 't';
    col->generated = PQgetvalue(r, i, 3)[0];
    col->identity = PQgetvalue(r, i, 4)[0];
    char *qc = pgx_ident_dup(PQgetvalue(r, i, 0));
    if (!col->name || !col->type || !qc) {
        free(qc);
        return dump_oom(err);
    }
    fb_sbuf_printf(&d->b, "%s\n    %s %s", i ? "," : "", qc, col->type);
    free(qc);
    if (!PQgetisnull(r, i, 6)) fb_sbuf_printf(&d->b, " COLLATE %s", PQgetvalue(r, i, 6));
    if (col->generated == 's') {
        fb_sbuf_printf(&d->b, " GENERATED ALWAYS AS (%s) STORED", PQgetvalue(r, i, 5));
    } else if (col->identity) {
        const char *opts = "";
        for (size_t k = 0; k < t->n_seqs; k++)
            if (t->seqs[k].identity && strcmp(t->seqs[k].column, col->name) == 0) opts = t->seqs[k].create_sql;
        fb_sbuf_printf(&d->b, " GENERATED %s AS IDENTITY%s%s%s", col->identity == 'a' ? "ALWAYS" : "BY DEFAULT",
                       *opts ? " (" : "", opts, *opts ? ")" : "");
    } else if (!PQgetisnull(r, i, 5)) {
        fb_sbuf_printf(&d->b, " DEFAULT %s", PQgetvalue(r, i, 5));
    }
    if (col->not_null) fb_sbuf_puts(&d->b, " NOT NULL");
    return FB_OK;
}

/* The columns, and the head of CREATE TABLE (UNLOGGED if the table is). */
static fb_code dc_columns(dc_table *d, fb_err *err) {
    PGresult *r;
    fb_code rc = dc_query(d,
                          "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, "
                          "a.attgenerated, a.attidentity, pg_catalog.pg_get_expr(d.adbin, d.adrelid), "
                          "CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN "
                          "(SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) "
                          "FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace "
                          "WHERE co.oid = a.attcollation) END, "
                          "(SELECT relpersistence FROM pg_catalog.pg_class WHERE oid = a.attrelid) "
                          "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
                          "LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                          "WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                          &r, err);
    if (rc) return rc;
    int nc = PQntuples(r);
    d->t->cols = calloc((size_t)(nc ? nc : 1), sizeof *d->t->cols);
    if (!d->t->cols) rc = dump_oom(err);
    if (rc == FB_OK)
        fb_sbuf_printf(&d->b, "CREATE %sTABLE %s (", nc && PQgetvalue(r, 0, 7)[0] == 'u' ? "UNLOGGED " : "", d->qt);
    for (int i = 0; i < nc && rc == FB_OK; i++) rc = dc_column_row(d, r, i, err);
    PQclear(r);
    return rc;
}

/* ---- step 3: constraints ----------------------------------------------------------------------------------------- */

/* Records that the table references schema.name (a foreign key to another table), once. */
static fb_code dc_dep_add(arc_table *t, const char *schema, const char *name, fb_err *err) {
    for (size_t k = 0; k < t->n_deps; k++)
        if (strcmp(t->deps[k].schema, schema) == 0 && strcmp(t->deps[k].name, name) == 0) return FB_OK;
    arc_tref *nd = realloc(t->deps, (t->n_deps + 1) * sizeof *nd);
    if (!nd) return dump_oom(err);
    t->deps = nd;
    nd[t->n_deps].schema = strdup(schema);
    nd[t->n_deps].name = strdup(name);
    t->n_deps++;
    if (!nd[t->n_deps - 1].schema || !nd[t->n_deps - 1].name) return dump_oom(err);
    return FB_OK;
}

/* Row i of the constraints query: a validated CHECK goes inline in CREATE TABLE; a key or exclusion joins the
 * after-data index SQL; a foreign key joins the last step and, if it points at another table, the deps. */
static fb_code dc_constraint_row(dc_table *d, PGresult *r, int i, fb_err *err) {
    arc_table *t = d->t;
    char type = PQgetvalue(r, i, 1)[0];
    char *qn = pgx_ident_dup(PQgetvalue(r, i, 0));
    const char *def = PQgetvalue(r, i, 2);
    if (!qn) return dump_oom(err);
    if (type == 'c' && PQgetvalue(r, i, 3)[0] == 't') {
        fb_sbuf_printf(&d->b, ",\n    CONSTRAINT %s %s", qn, def);
        free(qn);
        return FB_OK;
    }
    char *sql = dump_strf("ALTER TABLE ONLY %s ADD CONSTRAINT %s %s;", d->qt, qn, def);
    free(qn);
    if (!sql || !(type == 'f' ? dump_push(&t->fk_sql, &t->n_fk, sql) : dump_push(&t->index_sql, &t->n_index, sql)))
        return dump_oom(err);
    if (type == 'f' && PQgetvalue(r, i, 6)[0] != 't') return dc_dep_add(t, PQgetvalue(r, i, 4), PQgetvalue(r, i, 5), err);
    return FB_OK;
}

/* Constraints: validated CHECKs go inline; keys and exclusions after the data; foreign keys last. Closes the
 * CREATE TABLE into t->create_sql. */
static fb_code dc_constraints(dc_table *d, fb_err *err) {
    PGresult *r;
    fb_code rc = dc_query(d,
                          "SELECT co.conname, co.contype, pg_catalog.pg_get_constraintdef(co.oid), co.convalidated, "
                          "fn.nspname, fc.relname, co.confrelid = co.conrelid "
                          "FROM pg_catalog.pg_constraint co "
                          "LEFT JOIN pg_catalog.pg_class fc ON fc.oid = co.confrelid "
                          "LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace "
                          "WHERE co.conrelid = $1 AND co.contype IN ('c', 'p', 'u', 'x', 'f') "
                          "ORDER BY co.contype, co.conname",
                          &r, err);
    if (rc) return rc;
    for (int i = 0; i < PQntuples(r) && rc == FB_OK; i++) rc = dc_constraint_row(d, r, i, err);
    PQclear(r);
    if (rc) return rc;
    fb_sbuf_puts(&d->b, "\n);");
    d->t->create_sql = fb_sbuf_take(&d->b);
    return d->t->create_sql ? FB_OK : dump_oom(err);
}

/* ---- step 4: indexes --------------------------------------------------------------------------------------------- */

/* Indexes that no constraint owns (those came with their constraint in step 3). */
static fb_code dc_indexes(dc_table *d, fb_err *err) {
    PGresult *r;
    fb_code rc = dc_query(d,
                          "SELECT pg_catalog.pg_get_indexdef(i.indexrelid) FROM pg_catalog.pg_index i "
                          "WHERE i.indrelid = $1 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint co "
                          "WHERE co.conindid = i.indexrelid AND co.conrelid = i.indrelid "
                          "AND co.contype IN ('p', 'u', 'x')) ORDER BY i.indexrelid",
                          &r, err);
    if (rc) return rc;
    for (int i = 0; i < PQntuples(r) && rc == FB_OK; i++) {
        char *sql = dump_strf("%s;", PQgetvalue(r, i, 0));
        if (!sql || !dump_push(&d->t->index_sql, &d->t->n_index, sql)) rc = dump_oom(err);
    }
    PQclear(r);
    return rc;
}

fb_code dump_catalog_describe(PGconn *c, const dump_rel *rel, arc_table *t, fb_err *err) {
    dc_table d = {.c = c, .rel = rel, .t = t};
    snprintf(d.what, sizeof d.what, "reading the definition of table \"%s\".\"%s\"", rel->schema, rel->name);
    t->schema = strdup(rel->schema);
    t->name = strdup(rel->name);
    d.qt = pgx_qualified_dup(rel->schema, rel->name);
    fb_code rc = !t->schema || !t->name || !d.qt ? dump_oom(err) : FB_OK;
    if (rc == FB_OK) rc = dc_sequences(&d, err);
    if (rc == FB_OK) rc = dc_columns(&d, err);
    if (rc == FB_OK) rc = dc_constraints(&d, err);
    if (rc == FB_OK) rc = dc_indexes(&d, err);
    free(d.b.p);
    free(d.qt);
    return rc;
}

char *dump_copy_sql(const arc_table *t, int to) {
    fb_sbuf b = {0};
    char *qt = pgx_qualified_dup(t->schema, t->name);
    if (!qt) return NULL;
    fb_sbuf_printf(&b, "COPY %s (", qt);
    free(qt);
    int first = 1;
    for (size_t i = 0; i < t->n_cols; i++) {
        if (t->cols[i].generated) continue;
        char *qc = pgx_ident_dup(t->cols[i].name);
        if (!qc) b.oom = 1;
        else fb_sbuf_printf(&b, "%s%s", first ? "" : ", ", qc);
        free(qc);
        first = 0;
    }
    fb_sbuf_puts(&b, to ? ") TO STDOUT" : ") FROM STDIN");
    /* A table with no columns: COPY t () is not valid SQL. */
    if (first && !b.oom) {
        free(b.p);
        qt = pgx_qualified_dup(t->schema, t->name);
        char *s = qt ? dump_strf("COPY %s %s", qt, to ? "TO STDOUT" : "FROM STDIN") : NULL;
        free(qt);
        return s;
    }
    return fb_sbuf_take(&b);
}
