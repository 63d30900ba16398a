/* dump_rebuild: a new database built under a temporary name on N connections, renamed at the end (see
 * dump_rebuild.h). */
#include "dump/dump_rebuild.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/fb_log.h"
#include "common/fb_time.h"
#include "dump/dump_catalog.h"
#include "dump/dump_schema.h"
#include "pg/pgx.h"

#define RB_PREFIX "fb_restore_tmp_"
#define RB_COMMENT "fusion-backup restore in progress"
/* pg_advisory_lock(RB_LOCK_CLASS, hashtext(tmp name)) on the maintenance database: held by the restore building
 * that database, for as long as its admin connection lives ('FBRS'). */
#define RB_LOCK_CLASS "1178751571"
/* Index builds of the restore's sessions sort in memory up to this much (the server's default is usually 64 MB,
 * which makes the large indexes spill to disk); at most jobs builds run at once. */
#define RB_MAINTENANCE_MEM "512MB"

PGconn *dump_rebuild_connect_db(const char *conninfo, const char *db, fb_err *err) {
    return pgx_connect_db(conninfo, db, "fusion-backup restore", err);
}

/* The maintenance database: "postgres", or "template1" where there is none. */
static PGconn *rb_admin(const char *conninfo, fb_err *err) {
    PGconn *c = dump_rebuild_connect_db(conninfo, "postgres", err);
    if (!c) c = dump_rebuild_connect_db(conninfo, "template1", err);
    if (c && dump_catalog_session(c, err) != FB_OK) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

static int rb_db_exists(PGconn *admin, const char *name, fb_err *err) {
    const char *p[1] = {name};
    PGresult *r = PQexecParams(admin, "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1", 1, NULL, p, NULL,
                               NULL, 0);
    if (pgx_check(admin, r, PGRES_TUPLES_OK, "looking up the target database", err)) return -1;
    int n = PQntuples(r);
    PQclear(r);
    return n > 0;
}

fb_code dump_rebuild_connect_target(const char *conninfo, int create, PGconn **c, char *new_db, size_t cap,
                                    fb_err *err) {
    new_db[0] = '\0';
    if ((*c = pgx_connect(conninfo, "fusion-backup restore", err))) return FB_OK;
    if (!create) return err->code;
    /* Did it fail because the database does not exist? The resolved name (defaults applied) is PQdb's. */
    fb_err first = *err, e2;
    PGconn *probe = PQconnectdb(conninfo);
    const char *db = probe ? PQdb(probe) : NULL;
    if (db && *db && strlen(db) < cap) snprintf(new_db, cap, "%s", db);
    PQfinish(probe);
    PGconn *admin = new_db[0] ? rb_admin(conninfo, &e2) : NULL;
    int exists = admin ? rb_db_exists(admin, new_db, &e2) : -1;
    if (admin) PQfinish(admin);
    if (exists != 0) {
        new_db[0] = '\0';
        *err = first;
        return first.code;
    }
    return FB_OK;
}

static fb_code rb_exec_params(PGconn *c, const char *sql, int n, const char *const *p, ExecStatusType want,
                              PGresult **out, const char *what, fb_err *err) {
    PGresult *r = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    fb_code rc = pgx_check(c, r, want, what, err);
    if (rc == FB_OK) {
        if (out) *out = r;
        else PQclear(r);
    }
    return rc;
}

static fb_code rb_drop(PGconn *admin, const char *name, fb_err *err) {
    char q[200], sql[256];
    if (pgx_quote_ident(name, q, sizeof q) != 0) return fb_err_set(err, FB_ERR_INTERNAL, "database name too long");
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", q);
    return pgx_exec(admin, sql, "dropping the temporary database", err);
}

/* Leftovers of killed restores: our prefix, our comment, and nobody holds their advisory lock. */
static void rb_drop_leftovers(PGconn *admin) {
    fb_err err;
    PGresult *r = NULL;
    if (rb_exec_params(admin, "SELECT d.datname, pg_catalog.shobj_description(d.oid, 'pg_database') FROM "
                       "pg_catalog.pg_database d WHERE d.datname LIKE '" RB_PREFIX "%' AND "
                       "pg_catalog.shobj_description(d.oid, 'pg_database') LIKE '" RB_COMMENT "%'",
                       0, NULL, PGRES_TUPLES_OK, &r, "looking for leftover temporary databases", &err)) {
        FB_WARN("restore: %s", err.msg);
        return;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        const char *p[1] = {PQgetvalue(r, i, 0)};
        PGresult *l = NULL;
        if (rb_exec_params(admin, "SELECT pg_catalog.pg_try_advisory_lock(" RB_LOCK_CLASS ", pg_catalog.hashtext($1))",
                           1, p, PGRES_TUPLES_OK, &l, "locking a leftover temporary database", &err)) {
            FB_WARN("restore: %s", err.msg);
            continue;
        }
        int mine = strcmp(PQgetvalue(l, 0, 0), "t") == 0;
        PQclear(l);
        if (!mine) continue; /* a restore that is still running */
        if (rb_drop(admin, p[0], &err)) FB_WARN("restore: could not drop leftover \"%s\": %s", p[0], err.msg);
        else FB_WARN("restore: dropped \"%s\", the temporary database of an earlier restore that did not finish "
                     "(killed or crashed): %s", p[0], PQgetvalue(r, i, 1));
        rb_exec_params(admin, "SELECT pg_catalog.pg_advisory_unlock(" RB_LOCK_CLASS ", pg_catalog.hashtext($1))", 1, p,
                       PGRES_TUPLES_OK, NULL, "unlocking", &err);
    }
    PQclear(r);
}

/* fb_restore_tmp_<first 8 letters and digits of the job id>_<8 random hex digits> */
static void rb_tmp_name(const char *job_id, char *out, size_t cap) {
    char job[9] = "nojob";
    size_t k = 0;
    for (const char *p = job_id ? job_id : ""; *p && k < 8; p++)
        if ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z')) job[k++] = *p;
    if (k) job[k] = '\0';
    snprintf(out, cap, RB_PREFIX "%s_%08x", job, (unsigned)randombytes_random());
}

static fb_code rb_create_tmp(PGconn *admin, const char *tmp, const char *target, const char *job_id, fb_err *err) {
    const char *p[1] = {tmp};
    char q[200], *sql = NULL, when[32];
    fb_code rc = rb_exec_params(admin, "SELECT pg_catalog.pg_advisory_lock(" RB_LOCK_CLASS ", pg_catalog.hashtext($1))",
                                1, p, PGRES_TUPLES_OK, NULL, "locking the temporary database's name", err);
    if (rc) return rc;
    pgx_quote_ident(tmp, q, sizeof q);
    sql = dump_strf("CREATE DATABASE %s TEMPLATE template0", q);
    if (!sql) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    rc = pgx_exec(admin, sql, "creating the temporary database (the role needs CREATEDB)", err);
    free(sql);
    if (rc) return rc;
    fb_time_format_utc(fb_now_ms(), when, sizeof when);
    char *text = dump_strf(RB_COMMENT ": database \"%s\" from job %s, started %s by pid %d; the next restore drops "
                           "it if this one is gone", target, job_id ? job_id : "?", when, (int)getpid());
    char *lit = text ? PQescapeLiteral(admin, text, strlen(text)) : NULL;
    sql = lit ? dump_strf("COMMENT ON DATABASE %s IS %s", q, lit) : NULL;
    rc = sql ? pgx_exec(admin, sql, "marking the temporary database", err) : fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    free(text);
    PQfreemem(lit);
    free(sql);
    return rc;
}

/* --- loading ------------------------------------------------------------------------------------------------ */

/* An index or a key of one loaded table, taken out of the post-data script: built as soon as its table's rows are
 * in, by whichever connection is free, while the other tables still load (as pg_restore -j does). */
typedef struct rb_item {
    size_t table;   /* manifest index */
    char *sql;      /* the session state it needs (default tablespace, access method) and its statements */
    int ready;      /* its table is loaded */
} rb_item;

typedef struct rb_shared {
    const arc_manifest *m;
    const dump_restore_opts *o;
    const size_t *order; /* manifest indexes, largest first */
    size_t n, next;
    rb_item *items;
    size_t n_items, next_item, loading; /* items taken so far (in order of readiness); loads in flight */
    size_t *ready;                      /* indexes into items, in the order they became ready */
    size_t n_ready;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int failed; /* a loader failed: the others stop (read without the mutex by the COPY sink) */
} rb_shared;

typedef struct rb_loader {
    rb_shared *s;
    PGconn *c;
    arc_reader *rd;
    dump_restore_stats st;
    fb_code rc;
    fb_err err;
} rb_loader;

/* One table, one transaction: TRUNCATE ONLY (empty already; it lets COPY write frozen rows, and ONLY leaves the
 * inheritance children that other connections load alone), COPY ... FREEZE, COMMIT. */
static fb_code rb_load_table(rb_loader *w, const arc_table *t, fb_err *err) {
    char qt[600], sql[700];
    int64_t rows = 0;
    if (pgx_qualified(t->schema, t->name, qt, sizeof qt) != 0) return fb_err_set(err, FB_ERR_INTERNAL, "name too long");
    snprintf(sql, sizeof sql, "BEGIN; TRUNCATE TABLE ONLY %s", qt);
    fb_code rc = pgx_exec(w->c, sql, "starting a table's load", err);
    if (!rc) rc = dump_restore_copy_table(w->rd, w->c, t, w->s->o, &w->s->failed, 1, &rows, err);
    if (!rc) rc = pgx_exec(w->c, "COMMIT", "committing a table's load", err);
    if (rc) {
        PGresult *r;
        while ((r = PQgetResult(w->c))) PQclear(r);
        PQclear(PQexec(w->c, "ROLLBACK"));
        return rc;
    }
    w->st.tables++;
    w->st.rows += rows;
    w->st.raw_bytes += t->raw_bytes;
    return FB_OK;
}

/* The next piece of work: a ready index or key first (its table is complete and the CPU it uses would otherwise
 * wait for the last large loads), else the next table to load, else wait while loads run that will make items
 * ready. Returns 0 when nothing is left. */
static int rb_next(rb_shared *s, size_t *table, const char **item) {
    int got = 0;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->failed || (s->o->abort && *s->o->abort)) break;
        if (s->next_item < s->n_ready) {
            *item = s->items[s->ready[s->next_item++]].sql;
            got = 1;
            break;
        }
        if (s->next < s->n) {
            *table = s->order[s->next++];
            *item = NULL;
            s->loading++;
            got = 1;
            break;
        }
        if (!s->loading) break;
        pthread_cond_wait(&s->cv, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return got;
}

/* Table i is loaded (ok) or failed: its items become ready, idle connections wake up. */
static void rb_loaded(rb_shared *s, size_t i, int ok) {
    pthread_mutex_lock(&s->mu);
    s->loading--;
    for (size_t k = 0; ok && k < s->n_items; k++)
        if (s->items[k].table == i && !s->items[k].ready) {
            s->items[k].ready = 1;
            s->ready[s->n_ready++] = k;
        }
    if (!ok) s->failed = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void *rb_loader_run(void *arg) {
    rb_loader *w = arg;
    rb_shared *s = w->s;
    size_t i = 0;
    const char *item = NULL;
    while (rb_next(s, &i, &item)) {
        if (item) w->rc = pgx_exec(w->c, item, "building an index or key (post-data section of the schema archive)",
                                   &w->err);
        else {
            w->rc = rb_load_table(w, &s->m->tables[i], &w->err);
            rb_loaded(s, i, w->rc == FB_OK);
        }
        if (w->rc) break;
    }
    if (!w->rc && (s->failed || (s->o->abort && *s->o->abort)))
        w->rc = fb_err_set(&w->err, FB_ERR_ABORTED, s->failed ? "stopped because another restore connection failed"
                                                             : "restore aborted; nothing was committed");
    if (w->rc) {
        pthread_mutex_lock(&s->mu);
        s->failed = 1;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

/* --- post-data: the indexes and keys of each loaded table ---------------------------------------------------- */

/* An identifier as pg_dump writes it (fmtId: bare lowercase, or double-quoted with "" doubled) at *p; advances
 * *p. 0 when there is none. */
static int rb_ident(const char **p, char *out, size_t cap) {
    const char *q = *p;
    size_t k = 0;
    if (*q == '"') {
        for (q++; *q; q++) {
            if (*q == '"' && q[1] != '"') break;
            if (*q == '"') q++;
            if (k + 1 >= cap) return 0;
            out[k++] = *q;
        }
        if (*q != '"') return 0;
        q++;
    } else {
        while ((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '_' || *q == '$') {
            if (k + 1 >= cap) return 0;
            out[k++] = *q++;
        }
    }
    out[k] = '\0';
    *p = q;
    return k > 0;
}

/* The table an index or key statement is on: "CREATE [UNIQUE] INDEX name ON [ONLY] s.t " or "ALTER TABLE ONLY
 * s.t\n    ADD CONSTRAINT " (the caller takes only INDEX and CONSTRAINT entries: not foreign keys, which are
 * "FK CONSTRAINT" entries and wait for every table's indexes). */
static int rb_item_table(const char *body, char *schema, char *name, size_t cap) {
    const char *p = body;
    char idx[256];
    while (*p == '\n') p++;
    if (strncmp(p, "ALTER TABLE ONLY ", 17) == 0) {
        p += 17;
        if (!rb_ident(&p, schema, cap) || *p++ != '.' || !rb_ident(&p, name, cap)) return 0;
        return strncmp(p, "\n    ADD CONSTRAINT ", 20) == 0; /* foreign keys are "FK CONSTRAINT" entries */
    }
    if (strncmp(p, "CREATE UNIQUE INDEX ", 20) == 0) p += 20;
    else if (strncmp(p, "CREATE INDEX ", 13) == 0) p += 13;
    else return 0;
    if (!rb_ident(&p, idx, sizeof idx) || strncmp(p, " ON ", 4) != 0) return 0;
    p += 4;
    if (strncmp(p, "ONLY ", 5) == 0) p += 5;
    return rb_ident(&p, schema, cap) && *p++ == '.' && rb_ident(&p, name, cap) && *p == ' ';
}

static int rb_starts(const char *line, const char *prefix) { return strncmp(line, prefix, strlen(prefix)) == 0; }

/* Takes the INDEX and CONSTRAINT entries on the tables sel[0..n) out of the post-data script (blanked in place:
 * the rest still runs as one script, after every table) into items. Each entry is "--\n-- Name: ...; Type: T;
 * ...\n--\n" then its statements up to the next "--" line; SET default_tablespace / default_table_access_method
 * lines between entries are pg_restore's session state, copied in front of each item. */
static fb_code rb_split_post(char *sql, const arc_manifest *m, const size_t *sel, size_t n, rb_item **items,
                             size_t *n_items, fb_err *err) {
    char ts[300] = "", am[300] = "", schema[256], name[256];
    size_t cap = 0;
    *items = NULL;
    *n_items = 0;
    for (char *line = sql; line && *line;) {
        char *nl = strchr(line, '\n');
        char *next = nl ? nl + 1 : NULL;
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (rb_starts(line, "SET default_tablespace = ") && len < sizeof ts) snprintf(ts, sizeof ts, "%.*s", (int)len, line);
        if (rb_starts(line, "SET default_table_access_method = ") && len < sizeof am)
            snprintf(am, sizeof am, "%.*s", (int)len, line);
        int entry = len == 2 && next && rb_starts(next, "-- Name: ");
        char *hdr_end = entry ? strchr(next, '\n') : NULL;
        if (!entry || !hdr_end) {
            line = next;
            continue;
        }
        *hdr_end = '\0'; /* the header line alone, for strstr */
        int wanted = strstr(next, "; Type: INDEX; ") || strstr(next, "; Type: CONSTRAINT; ");
        *hdr_end = '\n';
        char *body = hdr_end + 1;
        if (rb_starts(body, "--\n")) body += 3;
        char *end = body; /* up to the next "--" or SET line, or COMMIT; */
        while (*end && !rb_starts(end, "--\n") && !rb_starts(end, "SET ") && !rb_starts(end, "COMMIT;\n")) {
            char *e = strchr(end, '\n');
            end = e ? e + 1 : end + strlen(end);
        }
        size_t t = (size_t)-1;
        if (wanted && rb_item_table(body, schema, name, sizeof schema))
            for (size_t k = 0; k < n && t == (size_t)-1; k++)
                if (strcmp(m->tables[sel[k]].schema, schema) == 0 && strcmp(m->tables[sel[k]].name, name) == 0)
                    t = sel[k];
        if (t != (size_t)-1) {
            if (*n_items == cap) {
                cap = cap ? 2 * cap : 64;
                rb_item *v = realloc(*items, cap * sizeof *v);
                if (!v) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
                *items = v;
            }
            char *text = dump_strf("%s\n%s\n%.*s", ts, am, (int)(end - body), body);
            if (!text) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
            (*items)[(*n_items)++] = (rb_item){t, text, 0};
            for (char *c = line; c < end; c++)
                if (*c != '\n') *c = ' ';
        }
        line = end;
    }
    return FB_OK;
}

static void rb_items_free(rb_item *items, size_t n) {
    for (size_t i = 0; i < n; i++) free(items[i].sql);
    free(items);
}

typedef struct rb_size {
    size_t idx;
    int64_t bytes;
} rb_size;

static int rb_by_size_desc(const void *a, const void *b) {
    const rb_size *x = a, *y = b;
    return x->bytes < y->bytes ? 1 : x->bytes > y->bytes ? -1 : (x->idx > y->idx) - (x->idx < y->idx);
}

/* Settings of every connection to the temporary database: the catalog session (the COPY text's formats) and
 * commits that do not wait for the WAL flush (dump_rebuild.h, "Durability"). */
static fb_code rb_session(PGconn *c, fb_err *err) {
    fb_code rc = dump_catalog_session(c, err);
    return rc ? rc : pgx_exec(c, "SET synchronous_commit = off; SET maintenance_work_mem = '" RB_MAINTENANCE_MEM "'",
                              "setting up a loading session", err);
}

/* The rows of sel[0..n) on `jobs` connections: w[0] uses c0 and rd, the others their own connection and reader. */
static fb_code rb_load(arc_reader *rd, PGconn *c0, const dump_restore_opts *o, const char *tmp, const size_t *sel,
                       size_t n, rb_item *items, size_t n_items, size_t jobs, dump_restore_stats *st, fb_err *err) {
    const arc_manifest *m = arc_reader_manifest(rd);
    rb_shared s = {.m = m, .o = o, .n = n, .items = items, .n_items = n_items};
    rb_size *sz = calloc(n + 1, sizeof *sz);
    size_t *order = calloc(n + 1, sizeof *order), started = 0;
    rb_loader *w = calloc(jobs, sizeof *w);
    pthread_t *th = calloc(jobs, sizeof *th);
    fb_code rc = FB_OK;
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    s.ready = calloc(n_items + 1, sizeof *s.ready);
    if (!sz || !order || !w || !th || !s.ready) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) sz[i] = (rb_size){sel[i], m->tables[sel[i]].raw_bytes};
    qsort(sz, n, sizeof *sz, rb_by_size_desc);
    for (size_t i = 0; i < n; i++) order[i] = sz[i].idx;
    s.order = order;
    for (size_t k = 0; k < jobs; k++) {
        w[k].s = &s;
        if (k == 0) {
            w[k].c = c0;
            w[k].rd = rd;
            continue;
        }
        if (!(w[k].c = dump_rebuild_connect_db(o->conninfo, tmp, err))) {
            rc = err->code;
            goto out;
        }
        if ((rc = rb_session(w[k].c, err)) || (rc = arc_reader_dup(rd, &w[k].rd, err))) goto out;
    }
    for (; started < jobs; started++)
        if (pthread_create(&th[started], NULL, rb_loader_run, &w[started]) != 0) {
            pthread_mutex_lock(&s.mu);
            s.failed = 1;
            pthread_cond_broadcast(&s.cv);
            pthread_mutex_unlock(&s.mu);
            rc = fb_err_set(err, FB_ERR_INTERNAL, "could not start a restore thread");
            break;
        }
    for (size_t k = 0; k < started; k++) pthread_join(th[k], NULL);
    for (size_t k = 0; k < started; k++) dump_restore_first_error(&rc, err, w[k].rc, &w[k].err);
    for (size_t k = 0; k < started; k++) {
        st->tables += w[k].st.tables;
        st->rows += w[k].st.rows;
        st->raw_bytes += w[k].st.raw_bytes;
    }
out:
    for (size_t k = 1; w && k < jobs; k++) {
        arc_reader_free(w[k].rd);
        if (w[k].c) PQfinish(w[k].c);
    }
    pthread_mutex_destroy(&s.mu);
    pthread_cond_destroy(&s.cv);
    free(s.ready);
    free(sz);
    free(order);
    free(w);
    free(th);
    return rc;
}

static double rb_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* --- the commit point --------------------------------------------------------------------------------------- */

/* Nobody but us may be connected to tmp (the rename waits a few seconds for our closed sessions to end). */
static fb_code rb_rename(PGconn *admin, const char *tmp, const char *target, fb_err *err) {
    char qt[200], qn[200], *sql;
    if (pgx_quote_ident(tmp, qt, sizeof qt) || pgx_quote_ident(target, qn, sizeof qn))
        return fb_err_set(err, FB_ERR_USAGE, "database name \"%s\" is too long", target);
    sql = dump_strf("BEGIN; SET LOCAL synchronous_commit = on; COMMENT ON DATABASE %s IS NULL; "
                    "ALTER DATABASE %s RENAME TO %s", qt, qt, qn);
    if (!sql) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    PGresult *r = PQexec(admin, sql);
    free(sql);
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    int taken = state && strcmp(state, "42P04") == 0;
    fb_code rc = pgx_check(admin, r, PGRES_COMMAND_OK, "renaming the restored database to its name", err);
    if (rc == FB_OK) PQclear(r);
    if (rc == FB_OK) rc = pgx_exec(admin, "COMMIT", "committing the restore (the rename)", err);
    else PQclear(PQexec(admin, "ROLLBACK"));
    if (taken) {
        err->code = rc = FB_ERR_CONFLICT;
        fb_err_prefix(err, "database \"%s\" was created by someone else while the restore ran; it is left as it "
                      "is: ", target);
    }
    return rc;
}

fb_code dump_rebuild(arc_reader *rd, const dump_restore_opts *o, const size_t *sel, size_t n, dump_restore_stats *st,
                     fb_err *err) {
    const arc_manifest *m = arc_reader_manifest(rd);
    size_t jobs = o->jobs < 1 ? 1 : (size_t)o->jobs;
    char tmp[64], *sql[3] = {NULL, NULL, NULL};
    PGconn *admin = NULL, *c0 = NULL;
    rb_item *items = NULL;
    size_t n_items = 0;
    int fd = -1, created = 0;
    fb_code rc = FB_OK;
    if (jobs > n && n > 0) jobs = n;
    if (!o->commit || o->compare)
        return fb_err_set(err, FB_ERR_USAGE, "a dry-run restore needs an existing empty database");

    /* 1. The schema archive authenticated and turned into scripts before anything is created. */
    if ((rc = dump_restore_schema_scripts(rd, o, &fd, sql, err))) goto out;
    if (!(admin = rb_admin(o->conninfo, err))) {
        rc = err->code;
        goto out;
    }
    rb_drop_leftovers(admin);
    int exists = rb_db_exists(admin, o->new_db, err);
    if (exists) {
        rc = exists < 0 ? err->code : fb_err_set(err, FB_ERR_CONFLICT, "database \"%s\" exists already", o->new_db);
        goto out;
    }
    /* 2. The temporary database. */
    rb_tmp_name(m->job_id, tmp, sizeof tmp);
    created = 1;
    if ((rc = rb_create_tmp(admin, tmp, o->new_db, m->job_id, err))) goto out;
    FB_INFO("restore: building database \"%s\" as \"%s\" with --jobs %zu; renamed to its name when complete", o->new_db, tmp,
            jobs);
    /* 3. Pre-data, rows, data section, post-data. */
    if (!(c0 = dump_rebuild_connect_db(o->conninfo, tmp, err))) {
        rc = err->code;
        goto out;
    }
    if ((rc = rb_session(c0, err))) goto out;
    double t[5];
    t[0] = rb_now();
    if ((rc = dump_restore_exec_script(c0, sql[0], "creating the schema (pre-data section of the schema archive)",
                                       err)) ||
        (rc = rb_session(c0, err)))
        goto out;
    t[1] = rb_now();
    if ((rc = rb_split_post(sql[2], m, sel, n, &items, &n_items, err))) goto out;
    if ((rc = rb_load(rd, c0, o, tmp, sel, n, items, n_items, jobs, st, err))) goto out;
    t[2] = rb_now();
    if ((rc = dump_restore_exec_script(c0, sql[1], "setting sequences and large objects (data section of the schema "
                                       "archive)", err)))
        goto out;
    t[3] = rb_now();
    if ((rc = dump_restore_exec_script(c0, sql[2], "adding keys, triggers, rules, policies, refreshing materialized "
                                       "views (the rest of the post-data section of the schema archive)", err)))
        goto out;
    t[4] = rb_now();
    if (o->before_rename && (rc = o->before_rename(o->before_rename_opaque, c0, err))) goto out;
    if (o->abort && *o->abort) {
        rc = fb_err_set(err, FB_ERR_ABORTED, "restore aborted");
        goto out;
    }
    /* 4. The commit point. */
    PQfinish(c0);
    c0 = NULL;
    if ((rc = rb_rename(admin, tmp, o->new_db, err))) goto out;
    created = 0;
    FB_INFO("restore: database \"%s\" complete: pre-data %.2f s, rows and %zu of their indexes and keys %.2f s, "
            "sequences and large objects %.2f s, rest of post-data %.2f s, rename %.2f s", o->new_db, t[1] - t[0],
            n_items, t[2] - t[1], t[3] - t[2], t[4] - t[3], rb_now() - t[4]);
out:
    if (c0) PQfinish(c0);
    if (created && admin) {
        fb_err e2;
        if (rb_drop(admin, tmp, &e2))
            fb_err_prefix(err, "(the temporary database \"%s\" could not be dropped: %s; the next restore drops it) ",
                          tmp, e2.msg);
        else
            fb_err_prefix(err, "database \"%s\" was not created (its temporary database was dropped): ", o->new_db);
    }
    if (admin) PQfinish(admin);
    rb_items_free(items, n_items);
    if (fd >= 0) close(fd);
    for (int i = 0; i < 3; i++) free(sql[i]);
    return rc;
}
