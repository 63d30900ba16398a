/* dump_restore: artifact -> database, in one transaction (see dump_restore.h).
 *
 * Order of work: pick the tables, sort them parents first (Kahn's algorithm on the manifest's FK dependencies;
 * members of a cycle keep manifest order and rely on deferred constraints), BEGIN, prepare the targets (create or
 * check empty), COPY each table FROM STDIN fed straight from the artifact reader, build indexes and foreign keys,
 * set sequences, optionally re-dump and compare, then COMMIT. On any error the transaction is rolled back; a COPY
 * in progress is ended with PQputCopyEnd(errormsg) so the server discards it.
 *
 * A whole-database --create from a schema archive (dr_restore_archive) replaces "create, index, keys, sequences"
 * with pg_restore's three sections around the same COPY loop; its tables are loaded in manifest order, since
 * no foreign key exists before post-data.
 */
#include "dump/dump_restore.h"

#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fb_log.h"
#include "common/fb_progress.h"
#include "dump/dump_catalog.h"
#include "dump/dump_rebuild.h"
#include "dump/dump_schema.h"
#include "pg/pgx.h"

#include <errno.h>
#include <unistd.h>

typedef struct dr_copy_sink {
    PGconn *c;
    const dump_restore_opts *o;
    atomic_int *peer_failed; /* parallel restore: another connection failed (set by its thread); NULL otherwise */
} dr_copy_sink;

static fb_code dr_put(void *opaque, const void *buf, size_t len, fb_err *err) {
    dr_copy_sink *s = opaque;
    if (s->o->abort && *s->o->abort) return fb_err_set(err, FB_ERR_ABORTED, "restore aborted; nothing was committed");
    if (s->peer_failed && *s->peer_failed)
        return fb_err_set(err, FB_ERR_ABORTED, "stopped because another restore connection failed");
    if (PQputCopyData(s->c, buf, (int)len) != 1)
        return fb_err_set(err, FB_ERR_TRANSIENT, "sending COPY data failed: %s", PQerrorMessage(s->c));
    return FB_OK;
}

/* Sorts the selected tables parents first. sel[] holds indexes into m->tables; written back in order. */
static fb_code dr_order(const arc_manifest *m, size_t *sel, size_t n, fb_err *err) {
    fb_code rc = FB_OK;
    size_t *indeg = calloc(n + 1, sizeof *indeg), *out = calloc(n + 1, sizeof *out);
    char *done = calloc(n + 1, 1);
    size_t k = 0;
    if (!indeg || !out || !done) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* indeg[i] = number of selected parents of sel[i] */
    for (size_t i = 0; i < n; i++) {
        const arc_table *t = &m->tables[sel[i]];
        for (size_t d = 0; d < t->n_deps; d++)
            for (size_t j = 0; j < n; j++) {
                const arc_table *p = &m->tables[sel[j]];
                if (j != i && strcmp(p->schema, t->deps[d].schema) == 0 && strcmp(p->name, t->deps[d].name) == 0)
                    indeg[i]++;
            }
    }
    while (k < n) {
        int progressed = 0;
        for (size_t i = 0; i < n; i++) {
            if (done[i] || indeg[i]) continue;
            done[i] = 1;
            out[k++] = sel[i];
            progressed = 1;
            const arc_table *p = &m->tables[sel[i]];
            for (size_t j = 0; j < n; j++) {
                if (done[j]) continue;
                const arc_table *t = &m->tables[sel[j]];
                for (size_t d = 0; d < t->n_deps; d++)
                    if (strcmp(p->schema, t->deps[d].schema) == 0 && strcmp(p->name, t->deps[d].name) == 0) indeg[j]--;
            }
        }
        if (!progressed) { /* a cycle: take the first remaining table; deferred constraints cover it */
            for (size_t i = 0; i < n; i++)
                if (!done[i]) {
                    indeg[i] = 0;
                    break;
                }
        }
    }
    memcpy(sel, out, n * sizeof *sel);
out:
    free(indeg);
    free(out);
    free(done);
    return rc;
}

static fb_code dr_exec_conflict(PGconn *c, const char *sql, const char *what, fb_err *err) {
    PGresult *r = PQexec(c, sql);
    if (r && PQresultStatus(r) == PGRES_COMMAND_OK) {
        PQclear(r);
        return FB_OK;
    }
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    int dup = st && (strcmp(st, "42P07") == 0 || strcmp(st, "42710") == 0);
    fb_code rc = pgx_check(c, r, PGRES_COMMAND_OK, what, err);
    if (dup) {
        fb_err_prefix(err, "--create needs an empty database: ");
        err->code = rc = FB_ERR_CONFLICT;
    }
    return rc;
}

/* Without --create: the table must exist and, unless o->truncate, be empty. */
static fb_code dr_check_target(PGconn *c, const arc_table *t, const dump_restore_opts *o, fb_err *err) {
    char *qt = pgx_qualified_dup(t->schema, t->name);
    fb_code rc = FB_OK;
    if (!qt) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    const char *params[2] = {t->schema, t->name};
    PGresult *r = PQexecParams(c,
                               "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = "
                               "c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                               2, NULL, params, NULL, NULL, 0);
    if ((rc = pgx_check(c, r, PGRES_TUPLES_OK, "looking up a target table", err))) goto out;
    int exists = PQntuples(r) > 0;
    PQclear(r);
    if (!exists) {
        rc = fb_err_set(err, FB_ERR_NOTFOUND,
                        "table %s does not exist in the target database \"%s\" (use --create to create the tables "
                        "on an empty database)", qt, PQdb(c));
        goto out;
    }
    if (o->truncate) goto out;
    char *sql = dump_strf("SELECT 1 FROM ONLY %s LIMIT 1", qt);
    if (!sql) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }
    r = PQexec(c, sql);
    free(sql);
    if ((rc = pgx_check(c, r, PGRES_TUPLES_OK, "checking a target table", err))) goto out;
    int nonempty = PQntuples(r) > 0;
    PQclear(r);
    if (nonempty)
        rc = fb_err_set(err, FB_ERR_CONFLICT,
                        "target table %s in database \"%s\" is not empty; restore refuses to mix rows (empty it, "
                        "restore into a new database with --create, or pass --truncate to replace its rows)",
                        qt, PQdb(c));
out:
    free(qt);
    return rc;
}

/* --truncate: one TRUNCATE of every restored table, so that tables referencing each other can be emptied
 * together (the same transaction: a failed restore brings the rows back). */
static fb_code dr_truncate(PGconn *c, const arc_manifest *m, const size_t *sel, size_t n, fb_err *err) {
    size_t cap = 64, len;
    for (size_t i = 0; i < n; i++) cap += 2 * (strlen(m->tables[sel[i]].schema) + strlen(m->tables[sel[i]].name)) + 8;
    char *sql = malloc(cap);
    if (!sql) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    len = (size_t)snprintf(sql, cap, "TRUNCATE TABLE ONLY ");
    for (size_t i = 0; i < n; i++) {
        if (i) sql[len++] = ',';
        pgx_qualified(m->tables[sel[i]].schema, m->tables[sel[i]].name, sql + len, cap - len);
        len += strlen(sql + len);
    }
    fb_code rc = pgx_exec(c, sql, "emptying the target tables (--truncate)", err);
    free(sql);
    return rc;
}

/* freeze: the table was created in this transaction, so COPY may write its rows frozen (no later hint-bit and
 * freeze rewrites of the whole table). */
fb_code dump_restore_copy_table(arc_reader *rd, PGconn *c, const arc_table *t, const dump_restore_opts *o,
                                atomic_int *peer_failed, int freeze, int64_t *rows, fb_err *err) {
    char what[400];
    fb_code rc = FB_OK;
    snprintf(what, sizeof what, "loading table \"%s\".\"%s\"", t->schema, t->name);
    char *sql = dump_copy_sql(t, 0);
    if (sql && freeze) {
        char *f = dump_strf("%s WITH (FREEZE)", sql);
        free(sql);
        sql = f;
    }
    if (!sql) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    PGresult *r = PQexec(c, sql);
    free(sql);
    if ((rc = pgx_check(c, r, PGRES_COPY_IN, what, err))) return rc;
    PQclear(r);
    dr_copy_sink s = {c, o, peer_failed};
    rc = arc_reader_read_table(rd, t, dr_put, &s, err);
    if (!rc) fb_progress_item(); /* restore's progress display counts tables */
    if (rc) {
        PQputCopyEnd(c, "the artifact failed authentication or the restore was stopped");
        while ((r = PQgetResult(c))) PQclear(r);
        return fb_err_prefix(err, "%s: ", what);
    }
    if (PQputCopyEnd(c, NULL) != 1) return fb_err_set(err, FB_ERR_TRANSIENT, "%s: %s", what, PQerrorMessage(c));
    r = PQgetResult(c);
    if ((rc = pgx_check(c, r, PGRES_COMMAND_OK, what, err))) {
        while ((r = PQgetResult(c))) PQclear(r);
        return rc;
    }
    *rows = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    while ((r = PQgetResult(c))) PQclear(r);
    if (*rows != t->rows)
        return fb_err_set(err, FB_ERR_VERIFY, "%s: loaded %lld rows but the manifest says %lld", what,
                          (long long)*rows, (long long)t->rows);
    return FB_OK;
}

static fb_code dr_set_sequences(PGconn *c, const arc_table *t, fb_err *err) {
    fb_code rc = FB_OK;
    char *qt = pgx_qualified_dup(t->schema, t->name);
    if (!qt) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < t->n_seqs && rc == FB_OK; i++) {
        const arc_sequence *s = &t->seqs[i];
        char *qs = pgx_qualified_dup(s->schema, s->name);
        char val[32];
        snprintf(val, sizeof val, "%lld", (long long)s->last_value);
        const char *params[5] = {qt, s->column, qs, val, s->is_called ? "t" : "f"};
        if (!qs) {
            rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
            break;
        }
        PGresult *r = PQexecParams(c,
                                   "SELECT pg_catalog.setval(COALESCE(pg_catalog.pg_get_serial_sequence($1, $2), $3)"
                                   "::pg_catalog.regclass, $4::int8, $5::bool)",
                                   5, NULL, params, NULL, NULL, 0);
        char what[400];
        snprintf(what, sizeof what, "setting sequence %s of %s", qs, qt);
        rc = pgx_check(c, r, PGRES_TUPLES_OK, what, err);
        if (rc == FB_OK) PQclear(r);
        free(qs);
    }
    free(qt);
    return rc;
}

/* Re-dumps a restored table and compares with the manifest. */
static fb_code dr_compare(PGconn *c, const arc_table *t, fb_err *err) {
    char what[400];
    unsigned char hash[ARC_HASH_BYTES];
    arc_hasher h;
    fb_code rc = FB_OK;
    snprintf(what, sizeof what, "re-reading restored table \"%s\".\"%s\"", t->schema, t->name);
    char *sql = dump_copy_sql(t, 1);
    if (!sql) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    PGresult *r = PQexec(c, sql);
    free(sql);
    if ((rc = pgx_check(c, r, PGRES_COPY_OUT, what, err))) return rc;
    PQclear(r);
    arc_hasher_init(&h);
    int64_t rows = 0;
    for (;;) {
        char *buf = NULL;
        int n = PQgetCopyData(c, &buf, 0);
        if (n == -1) break;
        if (n < 0) return fb_err_set(err, FB_ERR_TRANSIENT, "%s failed: %s", what, PQerrorMessage(c));
        arc_hasher_put(&h, buf, (size_t)n, NULL);
        PQfreemem(buf);
        rows++;
    }
    r = PQgetResult(c);
    if ((rc = pgx_check(c, r, PGRES_COMMAND_OK, what, err))) return rc;
    PQclear(r);
    while ((r = PQgetResult(c))) PQclear(r);
    arc_hasher_final(&h, hash);
    if (rows != t->rows || h.bytes != t->raw_bytes || sodium_memcmp(hash, t->blake2b, sizeof hash) != 0)
        return fb_err_set(err, FB_ERR_VERIFY,
                          "table \"%s\".\"%s\" restored as %lld rows / %lld bytes, which differs from the manifest "
                          "(%lld rows / %lld bytes, BLAKE2b %s)",
                          t->schema, t->name, (long long)rows, (long long)h.bytes, (long long)t->rows,
                          (long long)t->raw_bytes,
                          sodium_memcmp(hash, t->blake2b, sizeof hash) == 0 ? "equal" : "different");
    return FB_OK;
}

static fb_code dr_create_table(PGconn *c, const arc_table *t, fb_err *err) {
    fb_code rc = FB_OK;
    char what[400];
    snprintf(what, sizeof what, "creating table \"%s\".\"%s\"", t->schema, t->name);
    for (size_t s = 0; s < t->n_seqs && rc == FB_OK; s++)
        if (!t->seqs[s].identity) rc = dr_exec_conflict(c, t->seqs[s].create_sql, what, err);
    if (rc == FB_OK) rc = dr_exec_conflict(c, t->create_sql, what, err);
    for (size_t s = 0; s < t->n_seqs && rc == FB_OK; s++)
        if (!t->seqs[s].identity) rc = pgx_exec(c, t->seqs[s].owned_sql, what, err);
    return rc;
}

static fb_code dr_build_indexes(PGconn *c, const arc_table *t, fb_err *err) {
    fb_code rc = FB_OK;
    for (size_t k = 0; k < t->n_index && rc == FB_OK; k++)
        rc = pgx_exec(c, t->index_sql[k], "building an index or key", err);
    return rc;
}

/* Adds t's foreign keys. When only some tables are restored (subset), a key to a table that is neither restored
 * nor present is skipped with a warning, as pg_restore -t does; everything else fails. */
static fb_code dr_add_fks(PGconn *c, const arc_table *t, int subset, int64_t *skipped, fb_err *err) {
    fb_code rc = FB_OK;
    for (size_t k = 0; k < t->n_fk && rc == FB_OK; k++) {
        if (!subset) {
            rc = pgx_exec(c, t->fk_sql[k], "adding a foreign key", err);
            continue;
        }
        if ((rc = pgx_exec(c, "SAVEPOINT fb_fk", "adding a foreign key", err))) break;
        PGresult *r = PQexec(c, t->fk_sql[k]);
        const char *sqlstate = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        if (PQresultStatus(r) == PGRES_COMMAND_OK) {
            PQclear(r);
            rc = pgx_exec(c, "RELEASE SAVEPOINT fb_fk", "adding a foreign key", err);
        } else if (sqlstate && strcmp(sqlstate, PGX_UNDEFINED_TABLE) == 0) {
            FB_WARN("restore: foreign key of \"%s\".\"%s\" skipped: %s", t->schema, t->name,
                    PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
            PQclear(r);
            (*skipped)++;
            rc = pgx_exec(c, "ROLLBACK TO SAVEPOINT fb_fk", "adding a foreign key", err);
        } else {
            rc = pgx_check(c, r, PGRES_COMMAND_OK, "adding a foreign key", err);
        }
    }
    return rc;
}

void dump_restore_first_error(fb_code *rc, fb_err *err, fb_code wrc, const fb_err *werr) {
    if (wrc != FB_OK && (*rc == FB_OK || (*rc == FB_ERR_ABORTED && wrc != FB_ERR_ABORTED))) {
        *rc = wrc;
        *err = *werr;
    }
}

static int dr_aborted(const dump_restore_opts *o) { return o->abort && *o->abort; }

static void dr_rollback(PGconn *c) {
    PGresult *r;
    while ((r = PQgetResult(c))) PQclear(r);
    PQclear(PQexec(c, "ROLLBACK"));
}

/* --- parallel --create ----------------------------------------------------------------------------------------
 * Each worker owns a connection and a reader dup, and in one open transaction creates, loads, indexes and sets
 * the sequences of its share of the tables (assigned largest first to the least loaded worker). Only when every
 * worker has finished, i.e. every segment read passed its final tag and hash, are the transactions committed,
 * one after the other; foreign keys are added last in one more transaction. */

typedef struct dr_worker {
    const arc_manifest *m;
    const dump_restore_opts *o;
    arc_reader *rd;
    PGconn *c;
    size_t *tables;
    size_t n;
    int64_t load;
    dump_restore_stats st;
    fb_code rc;
    fb_err err;
    int in_tx;
    atomic_int *failed; /* shared between the threads: set by the first worker that fails, read by the others */
} dr_worker;

static void *dr_worker_run(void *arg) {
    dr_worker *w = arg;
    fb_code rc = FB_OK;
    if ((rc = pgx_exec(w->c, "BEGIN", "starting a restore transaction", &w->err))) goto out;
    w->in_tx = 1;
    if ((rc = pgx_exec(w->c, "SET LOCAL maintenance_work_mem = '256MB'", "raising maintenance_work_mem", &w->err)))
        goto out;
    for (size_t i = 0; i < w->n && rc == FB_OK; i++) rc = dr_create_table(w->c, &w->m->tables[w->tables[i]], &w->err);
    for (size_t i = 0; i < w->n && rc == FB_OK; i++) {
        const arc_table *t = &w->m->tables[w->tables[i]];
        int64_t rows = 0;
        if (dr_aborted(w->o) || *w->failed) {
            rc = fb_err_set(&w->err, FB_ERR_ABORTED, *w->failed ? "stopped because another restore connection failed"
                                                                 : "restore aborted; nothing was committed");
            break;
        }
        if ((rc = dump_restore_copy_table(w->rd, w->c, t, w->o, w->failed, 1, &rows, &w->err))) break;
        w->st.tables++;
        w->st.rows += rows;
        w->st.raw_bytes += t->raw_bytes;
    }
    for (size_t i = 0; i < w->n && rc == FB_OK && !*w->failed; i++)
        rc = dr_build_indexes(w->c, &w->m->tables[w->tables[i]], &w->err);
    for (size_t i = 0; i < w->n && rc == FB_OK; i++) rc = dr_set_sequences(w->c, &w->m->tables[w->tables[i]], &w->err);
out:
    w->rc = rc;
    if (rc) *w->failed = 1;
    return NULL;
}

/* Parallel step 1: one worker per connection: the caller's (with rd) and jobs - 1 new ones (each with a dup of
 * rd), each with room for every table. */
static fb_code dr_par_workers(arc_reader *rd, PGconn *c, const dump_restore_opts *o, size_t n, dr_worker *w,
                              size_t jobs, atomic_int *failed, fb_err *err) {
    for (size_t k = 0; k < jobs; k++) {
        w[k].m = arc_reader_manifest(rd);
        w[k].o = o;
        w[k].failed = failed;
        if (!(w[k].tables = calloc(n, sizeof *w[k].tables))) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        if (k == 0) {
            w[k].c = c;
            w[k].rd = rd;
            continue;
        }
        if (!(w[k].c = pgx_connect(o->conninfo, "fusion-backup restore", err))) return err->code;
        fb_code rc = dump_catalog_session(w[k].c, err);
        if (rc || (rc = arc_reader_dup(rd, &w[k].rd, err))) return rc;
    }
    return FB_OK;
}

/* Parallel step 2: largest tables first, each to the least loaded worker (LPT scheduling). */
static fb_code dr_par_schedule(const arc_manifest *m, const size_t *sel, size_t n, dr_worker *w, size_t jobs,
                               fb_err *err) {
    size_t *by_size = calloc(n + 1, sizeof *by_size);
    if (!by_size) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    memcpy(by_size, sel, n * sizeof *by_size);
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && m->tables[by_size[j]].raw_bytes > m->tables[by_size[j - 1]].raw_bytes; j--) {
            size_t x = by_size[j];
            by_size[j] = by_size[j - 1];
            by_size[j - 1] = x;
        }
    for (size_t i = 0; i < n; i++) {
        size_t best = 0;
        for (size_t k = 1; k < jobs; k++)
            if (w[k].load < w[best].load) best = k;
        w[best].tables[w[best].n++] = by_size[i];
        w[best].load += m->tables[by_size[i]].raw_bytes + 1;
    }
    free(by_size);
    return FB_OK;
}

/* Parallel step 3: every worker on its own thread, each in its own transaction; the first error wins. */
static fb_code dr_par_run(dr_worker *w, size_t jobs, fb_err *err) {
    pthread_t *th = calloc(jobs, sizeof *th);
    size_t started = 0;
    fb_code rc = th ? FB_OK : fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    for (; th && started < jobs; started++)
        if (pthread_create(&th[started], NULL, dr_worker_run, &w[started]) != 0) {
            rc = fb_err_set(err, FB_ERR_INTERNAL, "could not start a restore thread");
            break;
        }
    for (size_t k = 0; k < started; k++) pthread_join(th[k], NULL);
    for (size_t k = 0; k < started; k++) dump_restore_first_error(&rc, err, w[k].rc, &w[k].err);
    free(th);
    return rc;
}

/* Parallel step 4: every segment is authenticated: commit each connection (a failure after the first says the
 * restore is partial), and add up the workers' counts. */
static fb_code dr_par_commit(dr_worker *w, size_t jobs, dump_restore_stats *st, fb_err *err) {
    for (size_t k = 0; k < jobs; k++) {
        fb_code rc = pgx_exec(w[k].c, "COMMIT", "committing the restore", err);
        if (rc) {
            if (k > 0)
                fb_err_prefix(err, "restore PARTIALLY committed (%zu of %zu connections): drop the restored tables "
                              "and retry: ", k, jobs);
            return rc;
        }
        w[k].in_tx = 0;
    }
    for (size_t k = 0; k < jobs; k++) {
        st->tables += w[k].st.tables;
        st->rows += w[k].st.rows;
        st->raw_bytes += w[k].st.raw_bytes;
    }
    return FB_OK;
}

/* Parallel step 5: the foreign keys, once every table is committed, in one transaction on the caller's
 * connection. */
static fb_code dr_par_fks(PGconn *c, const arc_manifest *m, const dump_restore_opts *o, const size_t *sel, size_t n,
                          dump_restore_stats *st, fb_err *err) {
    fb_code rc = pgx_exec(c, "BEGIN", "adding foreign keys", err);
    if (rc) return rc;
    for (size_t i = 0; i < n && rc == FB_OK; i++)
        rc = dr_add_fks(c, &m->tables[sel[i]], o->n_tables > 0, &st->fks_skipped, err);
    if (rc == FB_OK) rc = pgx_exec(c, "COMMIT", "adding foreign keys", err);
    if (rc) {
        dr_rollback(c);
        fb_err_prefix(err, "the data is restored and committed but its foreign keys could not be added: ");
    }
    return rc;
}

/* --create with --jobs > 1: the tables spread over `jobs` connections, each creating, loading and indexing its
 * share in its own transaction; they commit only once every one has succeeded, then the foreign keys are added. */
static fb_code dr_parallel_create(arc_reader *rd, PGconn *c, const dump_restore_opts *o, const size_t *sel, size_t n,
                                  dump_restore_stats *st, fb_err *err) {
    const arc_manifest *m = arc_reader_manifest(rd);
    size_t jobs = (size_t)o->jobs < n ? (size_t)o->jobs : n;
    dr_worker *w = calloc(jobs, sizeof *w);
    atomic_int failed = 0;
    fb_code rc = w ? FB_OK : fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    if (!rc) rc = dr_par_workers(rd, c, o, n, w, jobs, &failed, err);
    if (!rc) rc = dr_par_schedule(m, sel, n, w, jobs, err);
    if (!rc) rc = dr_par_run(w, jobs, err);
    if (!rc) rc = dr_par_commit(w, jobs, st, err);
    if (!rc) rc = dr_par_fks(c, m, o, sel, n, st, err);
    for (size_t k = 0; w && k < jobs; k++) {
        if (w[k].c && w[k].in_tx) dr_rollback(w[k].c);
        if (k > 0) {
            arc_reader_free(w[k].rd);
            if (w[k].c) PQfinish(w[k].c);
        }
        free(w[k].tables);
    }
    free(w);
    return rc;
}

/* Parallel --create needs every schema to exist already (a CREATE SCHEMA on one connection is invisible to the
 * others until committed, and committing it early would change the target before authentication). */
static int dr_schemas_exist(PGconn *c, const arc_manifest *m, const size_t *sel, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const char *p[1] = {m->tables[sel[i]].schema};
        PGresult *r = PQexecParams(c, "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1", 1, NULL, p, NULL,
                                   NULL, 0);
        int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
        PQclear(r);
        if (!ok) return 0;
    }
    return 1;
}

/* --- whole database from the schema archive -----------------------------------------------------------------
 * The archive is read (and authenticated: final tag, byte count, BLAKE2b) into an unlinked temporary file before
 * pg_restore sees it, and the three scripts are made before the transaction starts, so a damaged archive or a
 * failing pg_restore never touches the target. */

static fb_code dr_fd_sink(void *opaque, const void *buf, size_t len, fb_err *err) {
    int fd = *(int *)opaque;
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return fb_err_set(err, FB_ERR_IO, "writing the schema archive to a temporary file: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return FB_OK;
}

/* Runs a pg_restore script; "already exists" means the target was not empty (FB_ERR_CONFLICT). */
fb_code dump_restore_exec_script(PGconn *c, char *sql, const char *what, fb_err *err) {
    fb_code rc = dump_schema_exec(c, sql, what, err);
    if (rc && pgx_sqlstate_duplicate(err->sqlstate)) {
        fb_err_prefix(err, "--create needs an empty database: ");
        err->code = rc = FB_ERR_CONFLICT;
    } else if (rc && strstr(err->msg, "role \"") && strstr(err->msg, "does not exist")) {
        /* Roles are cluster-wide, so no database backup holds them. */
        size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof err->msg - n, " (the backup's owners and grantees must exist as roles on the "
                 "target server: create them, e.g. from `pg_dumpall --globals-only`, or restore with --no-owner "
                 "--no-privileges)");
    }
    return rc;
}

fb_code dump_restore_schema_scripts(arc_reader *rd, const dump_restore_opts *o, int *fd_out, char *sql[3],
                                   fb_err *err) {
    static const char *const sections[3] = {"pre-data", "data", "post-data"};
    char path[512];
    dump_schema_opts so = {o->pg_restore ? o->pg_restore : "pg_restore", o->no_owner, o->no_privileges};
    const char *tmp = getenv("TMPDIR");
    fb_code rc = FB_OK;
    sql[0] = sql[1] = sql[2] = NULL;
    snprintf(path, sizeof path, "%s/fusion-backup-schema-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path); /* 0600 */
    if (fd < 0) return fb_err_set(err, FB_ERR_IO, "could not create a temporary file \"%s\" for the schema archive: %s "
                                  "(set TMPDIR)", path, strerror(errno));
    unlink(path); /* nameless from now on; pg_restore reads it through the descriptor */
    if ((rc = arc_reader_read_schema(rd, dr_fd_sink, &fd, err))) goto out;
    for (int i = 0; i < 3 && rc == FB_OK; i++) {
        if (lseek(fd, 0, SEEK_SET) != 0) {
            rc = fb_err_set(err, FB_ERR_IO, "rewinding the schema archive's temporary file: %s", strerror(errno));
            break;
        }
        rc = dump_schema_section_sql(&so, fd, sections[i], &sql[i], err);
    }
out:
    if (rc) {
        close(fd);
        for (int i = 0; i < 3; i++) {
            free(sql[i]);
            sql[i] = NULL;
        }
        return rc;
    }
    *fd_out = fd;
    return FB_OK;
}

static fb_code dr_restore_archive(arc_reader *rd, PGconn *c, const dump_restore_opts *o, const size_t *sel, size_t n,
                                  dump_restore_stats *st, fb_err *err) {
    const arc_manifest *m = arc_reader_manifest(rd);
    char *sql[3] = {NULL, NULL, NULL};
    fb_code rc = FB_OK;
    int in_tx = 0, fd = -1;

    /* 1. Archive -> file (authenticated), file -> three scripts. */
    if ((rc = dump_restore_schema_scripts(rd, o, &fd, sql, err))) return rc;

    /* 2. One transaction: pre-data, rows, data section, post-data. */
    if ((rc = pgx_exec(c, "BEGIN", "starting the restore transaction", err))) goto out;
    in_tx = 1;
    if ((rc = pgx_exec(c, "SET LOCAL maintenance_work_mem = '256MB'", "raising maintenance_work_mem", err))) goto out;
    if ((rc = dump_restore_exec_script(c, sql[0], "creating the schema (pre-data section of the schema archive)", err))) goto out;
    /* pg_restore's script sets its own session (search_path, ...); the COPY text needs ours again. */
    if ((rc = dump_catalog_session(c, err))) goto out;
    for (size_t i = 0; i < n; i++) {
        const arc_table *t = &m->tables[sel[i]];
        int64_t rows = 0;
        if (dr_aborted(o)) {
            rc = fb_err_set(err, FB_ERR_ABORTED, "restore aborted; nothing was committed");
            goto out;
        }
        if ((rc = dump_restore_copy_table(rd, c, t, o, NULL, 1, &rows, err))) goto out;
        st->tables++;
        st->rows += rows;
        st->raw_bytes += t->raw_bytes;
        FB_DEBUG("restored table=\"%s\".\"%s\" rows=%lld", t->schema, t->name, (long long)rows);
    }
    if ((rc = dump_restore_exec_script(c, sql[1], "setting sequences and large objects (data section of the schema archive)",
                             err)))
        goto out;
    if ((rc = dump_restore_exec_script(c, sql[2], "building indexes, keys, triggers, rules, policies (post-data section of "
                             "the schema archive)", err)))
        goto out;
    if ((rc = dump_catalog_session(c, err))) goto out;
    if (o->compare)
        for (size_t i = 0; i < n && rc == FB_OK; i++) rc = dr_compare(c, &m->tables[sel[i]], err);
    if (rc) goto out;
    if (o->commit) {
        in_tx = 0;
        rc = pgx_exec(c, "COMMIT", "committing the restore", err);
    }
out:
    if (in_tx) dr_rollback(c);
    if (fd >= 0) close(fd);
    for (int i = 0; i < 3; i++) free(sql[i]);
    return rc;
}

/* ---- dump_restore's steps ------------------------------------------------------------------------------------ */

/* Step 1: which tables (o->tables, or all), each once, in an order that loads referenced tables first. */
static fb_code dr_select(const arc_manifest *m, const dump_restore_opts *o, size_t *sel, size_t *n, fb_err *err) {
    *n = 0;
    if (o->n_tables == 0) {
        for (size_t i = 0; i < m->n_tables; i++) sel[(*n)++] = i;
        return dr_order(m, sel, *n, err);
    }
    for (size_t k = 0; k < o->n_tables; k++) {
        const char *schema = o->tables[k].schema ? o->tables[k].schema : "public";
        arc_table *t = arc_manifest_find(m, schema, o->tables[k].name);
        if (!t)
            return fb_err_set(err, FB_ERR_NOTFOUND,
                              "table \"%s\".\"%s\" is not in this backup (`fusion-backup inspect` lists its tables)",
                              schema, o->tables[k].name);
        size_t idx = (size_t)(t - m->tables);
        int dup = 0;
        for (size_t j = 0; j < *n; j++) dup |= sel[j] == idx;
        if (!dup) sel[(*n)++] = idx;
    }
    return dr_order(m, sel, *n, err);
}

/* Step 2: the restores that are not one transaction over the selected tables: a database that does not exist
 * yet (built by dump_rebuild), a whole-database --create (replayed from the schema archive), a parallel --create.
 * *done = 1 when one of them ran (rc is its result); 0 to go on with the transaction below. */
static fb_code dr_other_paths(arc_reader *rd, PGconn *c, const dump_restore_opts *o, const size_t *sel, size_t n,
                              dump_restore_stats *st, int *done, fb_err *err) {
    const arc_manifest *m = arc_reader_manifest(rd);
    int whole = o->create && o->n_tables == 0 && m->schema && m->schema->all_tables;
    *done = 1;
    if (!c) { /* --create of a database that does not exist yet */
        if (whole && o->new_db) return dump_rebuild(rd, o, sel, n, st, err);
        return fb_err_set(err, FB_ERR_NOTFOUND, "database \"%s\" does not exist: only a whole-database --create from a "
                          "backup of every table (format 4 or later) creates it; otherwise create an empty database "
                          "first", o->new_db ? o->new_db : "?");
    }
    fb_code rc = dump_catalog_session(c, err);
    if (rc) return rc;
    if (o->create && o->n_tables == 0 && m->schema && !m->schema->all_tables)
        FB_INFO("restore: the backup holds only some tables' rows; creating those tables from the manifest rather "
                "than the whole database from the schema archive");
    if (whole) {
        if (o->jobs > 1)
            FB_INFO("restore: the target database exists; restoring in one transaction on one connection "
                    "(--jobs %d is used when --pg names a database that does not exist yet: it is then built under "
                    "a temporary name and renamed)", o->jobs);
        return dr_restore_archive(rd, c, o, sel, n, st, err);
    }
    if (o->create && o->jobs > 1 && o->conninfo && o->commit && !o->compare && n > 1) {
        if (dr_schemas_exist(c, m, sel, n)) return dr_parallel_create(rd, c, o, sel, n, st, err);
        FB_WARN("restore: some schemas do not exist in the target yet; restoring on one connection");
    }
    *done = 0;
    return FB_OK;
}

/* --create: each schema the selected tables live in (but public), once. */
static fb_code dr_create_schemas(PGconn *c, const arc_manifest *m, const size_t *sel, size_t n, fb_err *err) {
    for (size_t i = 0; i < n; i++) {
        const arc_table *t = &m->tables[sel[i]];
        int seen = 0;
        for (size_t j = 0; j < i; j++) seen |= strcmp(m->tables[sel[j]].schema, t->schema) == 0;
        if (seen || strcmp(t->schema, "public") == 0) continue;
        char *qs = pgx_ident_dup(t->schema);
        char *sql = qs ? dump_strf("CREATE SCHEMA IF NOT EXISTS %s", qs) : NULL;
        free(qs);
        if (!sql) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        fb_code rc = pgx_exec(c, sql, "creating a schema", err);
        free(sql);
        if (rc) return rc;
    }
    return FB_OK;
}

/* Step 3, inside the transaction: the tables created (--create), or the existing ones checked, emptied
 * (--truncate) and their constraints deferred until step 5. */
static fb_code dr_prepare(PGconn *c, const arc_manifest *m, const dump_restore_opts *o, const size_t *sel, size_t n,
                          fb_err *err) {
    fb_code rc = pgx_exec(c, "SET LOCAL maintenance_work_mem = '256MB'", "raising maintenance_work_mem", err);
    if (rc) return rc;
    if (o->create) {
        rc = dr_create_schemas(c, m, sel, n, err);
        for (size_t i = 0; i < n && rc == FB_OK; i++) rc = dr_create_table(c, &m->tables[sel[i]], err);
        return rc;
    }
    for (size_t i = 0; i < n && rc == FB_OK; i++) rc = dr_check_target(c, &m->tables[sel[i]], o, err);
    if (rc == FB_OK && o->truncate && n) rc = dr_truncate(c, m, sel, n, err);
    if (rc == FB_OK) rc = pgx_exec(c, "SET CONSTRAINTS ALL DEFERRED", "deferring constraints", err);
    return rc;
}

/* Step 4: the data. Each table's data is authenticated by the time its COPY ends. */
static fb_code dr_load(arc_reader *rd, PGconn *c, const dump_restore_opts *o, const size_t *sel, size_t n,
                       dump_restore_stats *st, fb_err *err) {
    const arc_manifest *m = arc_reader_manifest(rd);
    for (size_t i = 0; i < n; i++) {
        const arc_table *t = &m->tables[sel[i]];
        int64_t rows = 0;
        if (dr_aborted(o)) return fb_err_set(err, FB_ERR_ABORTED, "restore aborted; nothing was committed");
        fb_code rc = dump_restore_copy_table(rd, c, t, o, NULL, o->create, &rows, err);
        if (rc) return rc;
        st->tables++;
        st->rows += rows;
        st->raw_bytes += t->raw_bytes;
        FB_DEBUG("restored table=\"%s\".\"%s\" rows=%lld", t->schema, t->name, (long long)rows);
    }
    return FB_OK;
}

/* Step 5: indexes and keys, then foreign keys (--create), then sequences; the deferred constraints checked;
 * the optional comparison. */
static fb_code dr_finish(PGconn *c, const arc_manifest *m, const dump_restore_opts *o, const size_t *sel, size_t n,
                         dump_restore_stats *st, fb_err *err) {
    fb_code rc = FB_OK;
    if (o->create) {
        for (size_t i = 0; i < n && rc == FB_OK; i++) rc = dr_build_indexes(c, &m->tables[sel[i]], err);
        for (size_t i = 0; i < n && rc == FB_OK; i++)
            rc = dr_add_fks(c, &m->tables[sel[i]], o->n_tables > 0, &st->fks_skipped, err);
    }
    for (size_t i = 0; i < n && rc == FB_OK; i++) rc = dr_set_sequences(c, &m->tables[sel[i]], err);
    if (rc == FB_OK && !o->create) rc = pgx_exec(c, "SET CONSTRAINTS ALL IMMEDIATE", "checking foreign keys", err);
    for (size_t i = 0; o->compare && i < n && rc == FB_OK; i++) rc = dr_compare(c, &m->tables[sel[i]], err);
    return rc;
}

fb_code dump_restore(arc_reader *rd, PGconn *c, const dump_restore_opts *o, dump_restore_stats *st, fb_err *err) {
    const arc_manifest *m = arc_reader_manifest(rd);
    size_t *sel = calloc(m->n_tables + 1, sizeof *sel), n = 0;
    int done = 0;
    memset(st, 0, sizeof *st);
    if (!sel) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    fb_code rc = dr_select(m, o, sel, &n, err);
    if (!rc) rc = dr_other_paths(rd, c, o, sel, n, st, &done, err);
    if (!rc && !done) {
        /* One transaction: nothing is visible until the one commit, and any failure rolls everything back. */
        rc = pgx_exec(c, "BEGIN", "starting the restore transaction", err);
        int in_tx = rc == FB_OK;
        if (!rc) rc = dr_prepare(c, m, o, sel, n, err);
        if (!rc) rc = dr_load(rd, c, o, sel, n, st, err);
        if (!rc) rc = dr_finish(c, m, o, sel, n, st, err);
        if (!rc && o->commit) {
            rc = pgx_exec(c, "COMMIT", "committing the restore", err);
            in_tx = 0;
        }
        if (in_tx) dr_rollback(c);
    }
    free(sel);
    return rc;
}
