/* job_backup: the FULL backup job (see job_backup.h).
 *
 * The story: check the request (storage path, key) before touching the database; open one REPEATABLE READ READ
 * ONLY transaction, lock the tables ACCESS SHARE (so no DDL changes them under the dump), resolve and describe them
 * from the catalog; then per table: COPY TO STDOUT rows go to the artifact writer, whose thread compresses and
 * encrypts while this thread keeps reading; then the manifest, the trailer, fsync + rename. Any failure or an
 * abort removes the temporary file: the storage root only ever holds complete artifacts.
 */
#include "job/job_backup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "artifact/arc_key.h"
#include "artifact/arc_writer.h"
#include "common/fb_log.h"
#include "dump/dump_catalog.h"
#include "pg/pgx.h"
#include "storage/stor.h"

#define JB_ABORT_CHECK_ROWS 4096

static int64_t jb_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *jb_type_name(ev_backup_type t) {
    switch (t) {
    case EV_FULL: return "FULL";
    case EV_INCREMENTAL: return "INCREMENTAL";
    case EV_DIFFERENTIAL: return "DIFFERENTIAL";
    }
    return "FULL";
}

int job_backup_artifact_path(const char *storage_path, const char *job_id, char *out, size_t cap) {
    int n = snprintf(out, cap, "%s/%s.fbak", storage_path, job_id);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* Locks every table ACCESS SHARE (in statements of up to 200 names). */
static fb_code jb_lock(PGconn *c, const dump_rel *rels, size_t n, fb_err *err) {
    fb_code rc = FB_OK;
    for (size_t i = 0; i < n && rc == FB_OK; i += 200) {
        size_t cap = 64, len = 0;
        for (size_t k = i; k < n && k < i + 200; k++) cap += 2 * (strlen(rels[k].schema) + strlen(rels[k].name)) + 8;
        char *sql = malloc(cap);
        if (!sql) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        len = (size_t)snprintf(sql, cap, "LOCK TABLE ");
        for (size_t k = i; k < n && k < i + 200; k++) {
            if (k > i) sql[len++] = ',';
            pgx_qualified(rels[k].schema, rels[k].name, sql + len, cap - len);
            len += strlen(sql + len);
        }
        snprintf(sql + len, cap - len, " IN ACCESS SHARE MODE");
        rc = pgx_exec(c, sql, "locking the tables to back up (ACCESS SHARE; a long-running DDL may hold them)", err);
        free(sql);
    }
    return rc;
}

/* Streams one table's COPY output into the open segment. Counts rows. On an abort or a writer error the
 * server's COPY is cancelled (the caller drops the connection anyway). */
static fb_code jb_copy_table(const job_ctx *ctx, PGconn *c, arc_writer *w, const arc_table *t, int64_t *rows,
                             fb_err *err) {
    fb_code rc = FB_OK;
    int copying = 0;
    char what[400];
    char *sql = dump_copy_sql(t, 1);
    snprintf(what, sizeof what, "COPY of table \"%s\".\"%s\"", t->schema, t->name);
    *rows = 0;
    if (!sql) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    PGresult *r = PQexec(c, sql);
    free(sql);
    if ((rc = pgx_check(c, r, PGRES_COPY_OUT, what, err))) goto out;
    PQclear(r);
    copying = 1;
    for (;;) {
        char *buf = NULL;
        int n = PQgetCopyData(c, &buf, 0);
        if (n == -1) break;
        if (n < 0) {
            rc = fb_err_set(err, FB_ERR_TRANSIENT, "%s failed: %s", what, PQerrorMessage(c));
            copying = 0;
            goto out;
        }
        rc = arc_writer_write(w, buf, (size_t)n, err);
        PQfreemem(buf);
        if (rc) goto out;
        if (++*rows % JB_ABORT_CHECK_ROWS == 0 && job_aborted(ctx)) {
            rc = fb_err_set(err, FB_ERR_ABORTED, "backup aborted (shutdown) during %s; nothing was kept", what);
            goto out;
        }
    }
    copying = 0;
    r = PQgetResult(c);
    if ((rc = pgx_check(c, r, PGRES_COMMAND_OK, what, err))) goto out;
    PQclear(r);
    while ((r = PQgetResult(c))) PQclear(r);
out:
    if (rc && copying) {
        PGcancel *cn = PQgetCancel(c);
        char eb[256];
        if (cn) {
            PQcancel(cn, eb, sizeof eb);
            PQfreeCancel(cn);
        }
    }
    return rc;
}

fb_code job_backup_run(const job_ctx *ctx, job_result *res, fb_err *err) {
    const fb_config *cfg = ctx->cfg;
    const ev_event *ev = ctx->ev;
    const ev_backup_requested *rq = &ev->u.backup;
    int64_t t0 = jb_now_ms();
    unsigned char pk[ARC_PK_BYTES];
    char rel[1200];
    fb_code rc = FB_OK;
    stor *st = NULL;
    stor_wfile *wf = NULL;
    arc_writer *w = NULL;
    PGconn *c = NULL;
    PGresult *r = NULL;
    dump_rel *rels = NULL;
    size_t n_rels = 0;
    arc_tref *req = NULL;
    arc_manifest m = {0};
    char *mbuf = NULL;
    size_t mlen = 0;
    int64_t total_rows = 0, total_raw = 0;
    job_result prog;

    if (ev->type != EV_BACKUP_REQUESTED) return fb_err_set(err, FB_ERR_INTERNAL, "job_backup_run: not a backup event");
    /* 1. The request and the worker's settings, before any side effect. */
    if ((rc = stor_path_check(rq->storage_path, err))) {
        fb_err_prefix(err, "refusing the backup: ");
        goto out;
    }
    if (job_backup_artifact_path(rq->storage_path, ev->job_id, rel, sizeof rel) != 0 ||
        (rc = stor_path_check(rel, err))) {
        rc = fb_err_set(err, FB_ERR_INVALID, "storage path \"%s\" is too long for the artifact name", rq->storage_path);
        goto out;
    }
    if ((rc = arc_key_load_public(cfg->public_key, pk, err))) goto out;
    if ((rc = stor_posix_new(cfg->storage_root, &st, err))) goto out;

    /* 2. One snapshot for everything. */
    c = pgx_connect(cfg->pg, "fusion-backup backup", err);
    if (!c) {
        rc = err ? err->code : FB_ERR_TRANSIENT;
        goto out;
    }
    if ((rc = dump_catalog_session(c, err))) goto out;
    if ((rc = pgx_exec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "starting the snapshot", err))) goto out;
    {
        char sql[96];
        snprintf(sql, sizeof sql, "SET LOCAL lock_timeout = %lld", (long long)cfg->lock_timeout_ms);
        if ((rc = pgx_exec(c, sql, "setting lock_timeout", err))) goto out;
    }
    r = PQexec(c, "SELECT (extract(epoch FROM pg_catalog.now()) * 1000)::int8, pg_catalog.current_database(), "
                  "pg_catalog.current_setting('server_version')");
    if ((rc = pgx_check(c, r, PGRES_TUPLES_OK, "reading the snapshot time", err))) {
        r = NULL;
        goto out;
    }
    m.snapshot_ms = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    m.database = strdup(PQgetvalue(r, 0, 1));
    m.server_version = strdup(PQgetvalue(r, 0, 2));
    PQclear(r);
    r = NULL;

    if (rq->n_tables) {
        req = calloc(rq->n_tables, sizeof *req);
        if (!req) {
            rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < rq->n_tables; i++) {
            req[i].schema = (char *)(rq->tables[i].schema ? rq->tables[i].schema : "public");
            req[i].name = (char *)rq->tables[i].name;
        }
    }
    if ((rc = dump_catalog_resolve(c, req, rq->n_tables, &rels, &n_rels, err))) goto out;
    if ((rc = jb_lock(c, rels, n_rels, err))) goto out;

    /* 3. The artifact. */
    if ((rc = stor_create(st, rel, &wf, err))) goto out;
    if ((rc = arc_writer_new(wf, pk, (int)cfg->zstd_level, &w, err))) goto out;
    m.tables = calloc(n_rels ? n_rels : 1, sizeof *m.tables);
    if (!m.tables) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }
    FB_INFO("job=%s backup of %zu tables of database \"%s\" into \"%s\"", ev->job_id, n_rels, m.database, rel);
    for (size_t i = 0; i < n_rels; i++) {
        arc_table *t = &m.tables[m.n_tables++];
        arc_seg_info si;
        uint32_t seg;
        if (job_aborted(ctx)) {
            rc = fb_err_set(err, FB_ERR_ABORTED, "backup aborted (shutdown) after %zu of %zu tables; nothing was kept",
                            i, n_rels);
            goto out;
        }
        if ((rc = dump_catalog_describe(c, &rels[i], t, err))) goto out;
        if ((rc = arc_writer_begin(w, &seg, err))) goto out;
        if ((rc = jb_copy_table(ctx, c, w, t, &t->rows, err))) goto out;
        if ((rc = arc_writer_end(w, &si, err))) goto out;
        t->segment = si.segment;
        t->offset = si.offset;
        t->length = si.length;
        t->raw_bytes = si.raw_bytes;
        t->stored_bytes = (int64_t)si.length;
        memcpy(t->blake2b, si.blake2b, sizeof t->blake2b);
        total_rows += t->rows;
        total_raw += t->raw_bytes;
        FB_DEBUG("job=%s table=\"%s\".\"%s\" rows=%lld raw=%lld stored=%lld", ev->job_id, t->schema, t->name,
                 (long long)t->rows, (long long)t->raw_bytes, (long long)t->stored_bytes);
        job_result_init(&prog);
        job_result_set(&prog, "done_tables", (int64_t)i + 1);
        job_result_set(&prog, "total_tables", (int64_t)n_rels);
        job_result_set(&prog, "done_rows", total_rows);
        job_result_set(&prog, "done_bytes", total_raw);
        job_report_progress(ctx, &prog);
    }
    if ((rc = pgx_exec(c, "COMMIT", "ending the snapshot", err))) goto out;

    /* 4. Manifest, trailer, durable rename. */
    m.format = 1;
    m.tool = strdup("fusion-backup 1");
    m.job_id = strdup(ev->job_id);
    m.record_id = rq->record_id;
    m.config_id = rq->config_id;
    m.config_name = strdup(rq->config_name ? rq->config_name : "");
    m.backup_type = strdup("FULL");
    m.requested_type = strdup(jb_type_name(rq->backup_type));
    m.started_ms = t0;
    m.completed_ms = jb_now_ms();
    m.zstd_level = cfg->zstd_level;
    m.data_end = arc_writer_offset(w);
    if ((rc = arc_manifest_pack(&m, &mbuf, &mlen, err))) goto out;
    if ((rc = arc_writer_finish(w, mbuf, mlen, err))) goto out;
    res->file_size = (int64_t)wf->written;
    rc = stor_wfile_commit(wf, err);
    wf = NULL;
    if (rc) goto out;

    snprintf(res->file_path, sizeof res->file_path, "%s", rel);
    job_result_set(res, "tables", (int64_t)n_rels);
    job_result_set(res, "rows", total_rows);
    job_result_set(res, "raw_bytes", total_raw);
    job_result_set(res, "stored_bytes", res->file_size);
    job_result_set(res, "duration_ms", jb_now_ms() - t0);
    if (rq->backup_type != EV_FULL) job_result_set(res, "ran_as_full", 1);
    FB_INFO("job=%s backup done: %zu tables, %lld rows, %lld raw bytes -> %lld stored (%s) in %lld ms", ev->job_id,
            n_rels, (long long)total_rows, (long long)total_raw, (long long)res->file_size, rel,
            (long long)(jb_now_ms() - t0));
out:
    if (r) PQclear(r);
    arc_writer_free(w);
    stor_wfile_abort(wf); /* removes the temporary on any failure */
    stor_free(st);
    if (c) PQfinish(c);
    dump_rels_free(rels, n_rels);
    free(req);
    free(mbuf);
    arc_manifest_clear(&m);
    sodium_memzero(pk, sizeof pk);
    return rc;
}
