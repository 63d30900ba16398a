/* job_backup: the backup job, FULL, INCREMENTAL and DIFFERENTIAL (see job_backup.h).
 *
 * The story: check the request (storage path, key) before touching the database; for INCREMENTAL/DIFFERENTIAL
 * pick the base from the chain indexes of the storage folder (arc_chain); open one REPEATABLE READ READ ONLY
 * transaction, lock the tables ACCESS SHARE (so no DDL changes them under the dump), resolve and describe them
 * from the catalog; then per table: COPY TO STDOUT rows go to the artifact writer, whose thread compresses and
 * encrypts while this thread keeps reading; then the manifest, the trailer, fsync + rename, the chain index, the
 * copies, retention. Any failure or an abort removes the temporary file: the storage root only ever holds
 * complete artifacts.
 *
 * Parallel (dump-connections, FULL only): the tables are read on several connections that import the job's
 * exported snapshot (SET TRANSACTION SNAPSHOT, as pg_dump -j), largest first, so the server's COPY work, the
 * dominant cost, runs on several cores. Each further connection writes its segments through an arc_writer lane to
 * a temporary file; the job's own connection copies them into the artifact between its own segments, so the
 * artifact is the same format, checked the same way (see "the tables, on one or more connections" below). A
 * backup on a base uses one connection (its change detection and chunk map are driven by one thread).
 *
 * Change detection never trusts statistics: a table the base has is first read in full (COPY, hashed, not
 * stored); only when its hash's tag equals the base's, with the same byte and row counts, is it referenced
 * instead of stored. Otherwise it is read a second time, in the same snapshot, into the artifact. Deletes,
 * TRUNCATE, a crash or a statistics reset all change the COPY stream or leave it equal, so the result is exact
 * in every case. synchronize_seqscans is off (as in pg_dump) so an unchanged table yields the same byte order.
 *
 * Chunks (format 3, arc_chunk.h): every table written whole (a FULL, or a job without a base) is also cut into
 * content-defined chunks as it streams, and the chain index lists each chunk's keyed id and place in the segment.
 * On a base, a changed (or new) table is read the second time through the chunker instead: chunks the chain
 * already holds (the chunks of every table of the base, found in the indexes of the artifacts that hold them) are
 * only referenced, the others go into one segment per table, concatenated, so zstd compresses across them. The
 * table is then "assembled": its manifest entry lists every chunk's artifact, segment, offset and length, and
 * records the BLAKE2b of the whole stream read from the database, which restore checks after assembling.
 *
 * Chunk lists (format >= 5, arc_clist.h): no list is held in memory. Each chunk's record goes to a spool file
 * as the table streams and is copied after the index head at the end; the chain's chunks, on a base, are looked up
 * in an on-disk hash table (job_chunkmap.h). Before the dump, jb_project checks that $TMPDIR has room for both.
 *
 * Schema (format 4, dump_schema.h): before the tables, pg_dump runs on this transaction's exported snapshot and
 * its custom-format archive of every object but the tables' rows becomes the first segment, so what a restore
 * --create rebuilds (types, functions, views, triggers, policies, grants, large objects, ...) is exactly the
 * state the rows were read in.
 *
 * Signed (format 5, artifact/arc_sign.h): the worker signs the manifest and the chain index with its own key
 * (`sign-key`); a base is only ever taken from an artifact a trusted key signed (`trusted-signer`, which lists the
 * worker's own key too). Artifacts are immutable: when this job's artifact already exists, signed by a trusted
 * key, for this job, with an index that authenticates (a replay, a redelivery after a lost status), the job
 * records its success from it and writes nothing, so an INCREMENTAL that references it keeps its chain.
 */
#include "job/job_backup.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#include "artifact/arc_chunk.h"
#include "artifact/arc_clist.h"
#include "artifact/arc_format.h"
#include "artifact/arc_index.h"
#include "artifact/arc_key.h"
#include "artifact/arc_reader.h"
#include "artifact/arc_sign.h"
#include "artifact/arc_writer.h"
#include "capture/cap_base.h"
#include "capture/cap_incr.h"
#include "common/fb_log.h"
#include "common/fb_time.h"
#include "dump/dump_catalog.h"
#include "dump/dump_schema.h"
#include "job/job_authority.h"
#include "artifact/arc_chain.h"
#include "job/job_chunkmap.h"
#include "job/job_rebase.h"
#include "artifact/arc_retention.h"
#include "pg/pgx.h"
#include "storage/stor.h"

#define JB_ABORT_CHECK_ROWS 4096
#define JB_LANE_LOCK_TIMEOUT_MS 5000 /* a further dump connection's, when lock-timeout-ms is 0 (see jb_lane_open) */

static const char *jb_type_name(ev_backup_type t) {
    switch (t) {
    case EV_FULL: return "FULL";
    case EV_INCREMENTAL: return "INCREMENTAL";
    case EV_DIFFERENTIAL: return "DIFFERENTIAL";
    }
    return "FULL";
}

int job_backup_artifact_path(const char *storage_path, const char *job_id, char *out, size_t cap) {
    fb_err e;
    return arc_artifact_name(storage_path, job_id, out, cap, &e) == FB_OK ? 0 : -1;
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

/* Where COPY rows go: the artifact writer, or only a hash (the change-detection pass). */
typedef fb_code (*jb_put_fn)(void *opaque, const void *buf, size_t len, fb_err *err);

/* Where the job stands, for RUNNING events while a big table streams (the daemon rate-limits them). */
typedef struct jb_progress {
    int64_t done_tables, total_tables, rows_before, bytes_before;
    int quiet;               /* a parallel dump's other connections: only the job's own thread reports */
    const atomic_int *stop;  /* set when another connection of the dump failed: this one stops too */
} jb_progress;

static void jb_report(const job_ctx *ctx, const jb_progress *p, int64_t rows, int64_t bytes) {
    if (p->quiet) return;
    job_result prog;
    job_result_init(&prog);
    job_result_set(&prog, "done_tables", p->done_tables);
    job_result_set(&prog, "total_tables", p->total_tables);
    job_result_set(&prog, "done_rows", p->rows_before + rows);
    job_result_set(&prog, "done_bytes", p->bytes_before + bytes);
    job_report_progress(ctx, &prog);
}

/* Rows go to the sink in batches of up to JB_BATCH_BYTES (a row that size or larger alone): one call of the sink's
 * work (BLAKE2b update, chunker, the writer's block copy) per ~1000 rows of ~100 bytes instead of one per row, at
 * the price of one memcpy. Same bytes, same order: chunk boundaries and hashes do not depend on how the stream is
 * cut into calls (tests/c/test_chunk_golden.c, "independent_of_feed_sizes"). */
#define JB_BATCH_BYTES (128u << 10)

typedef struct jb_batch {
    jb_put_fn put;
    void *opaque;
    unsigned char *buf;
    size_t len;
} jb_batch;

static fb_code jb_batch_flush(jb_batch *b, fb_err *err) {
    fb_code rc = b->len ? b->put(b->opaque, b->buf, b->len, err) : FB_OK;
    b->len = 0;
    return rc;
}

static fb_code jb_batch_add(jb_batch *b, const char *row, size_t n, fb_err *err) {
    if (b->len + n > JB_BATCH_BYTES) {
        fb_code rc = jb_batch_flush(b, err);
        if (rc) return rc;
    }
    if (n >= JB_BATCH_BYTES) return b->put(b->opaque, row, n, err);
    memcpy(b->buf + b->len, row, n);
    b->len += n;
    return FB_OK;
}

/* Streams one table's COPY output to put, in batches (jb_batch). Counts rows; every JB_ABORT_CHECK_ROWS rows checks
 * for an abort and reports progress. On an abort or a sink error the server's COPY is cancelled (the caller drops
 * the connection anyway). */
static fb_code jb_copy_table(const job_ctx *ctx, PGconn *c, jb_put_fn put, void *opaque, const arc_table *t,
                             const jb_progress *prog, int64_t *rows, fb_err *err) {
    fb_code rc = FB_OK;
    int copying = 0;
    char what[400];
    char *sql = dump_copy_sql(t, 1);
    jb_batch batch = {put, opaque, malloc(JB_BATCH_BYTES), 0};
    snprintf(what, sizeof what, "COPY of table \"%s\".\"%s\"", t->schema, t->name);
    *rows = 0;
    if (!sql || !batch.buf) {
        free(sql);
        free(batch.buf);
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    PGresult *r = PQexec(c, sql);
    free(sql);
    if ((rc = pgx_check(c, r, PGRES_COPY_OUT, what, err))) goto out;
    PQclear(r);
    copying = 1;
    int64_t bytes = 0;
    for (;;) {
        char *buf = NULL;
        int n = PQgetCopyData(c, &buf, 0);
        if (n == -1) break;
        if (n < 0) {
            rc = fb_err_set(err, FB_ERR_TRANSIENT, "%s failed: %s", what, PQerrorMessage(c));
            copying = 0;
            goto out;
        }
        rc = jb_batch_add(&batch, buf, (size_t)n, err);
        PQfreemem(buf);
        if (rc) goto out;
        bytes += n;
        if (++*rows % JB_ABORT_CHECK_ROWS == 0) {
            if (job_aborted(ctx)) {
                rc = fb_err_set(err, FB_ERR_ABORTED, "backup aborted (shutdown) during %s; nothing was kept", what);
                goto out;
            }
            if (prog->stop && atomic_load(prog->stop)) {
                rc = fb_err_set(err, FB_ERR_ABORTED, "%s stopped: another connection of the dump failed", what);
                goto out;
            }
            jb_report(ctx, prog, *rows, bytes);
        }
    }
    copying = 0;
    if ((rc = jb_batch_flush(&batch, err))) goto out;
    r = PQgetResult(c);
    if ((rc = pgx_check(c, r, PGRES_COMMAND_OK, what, err))) goto out;
    PQclear(r);
    while ((r = PQgetResult(c))) PQclear(r);
out:
    free(batch.buf);
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

/* --- chunks --------------------------------------------------------------------------------------------------- */

/* The jobs this backup's chunk records name: record src 0 is this job, k >= 1 is v[k - 1] (borrowed from the
 * chain, which outlives the job). They become the index's `source` lines. */
typedef struct jb_sources {
    const char **v;
    size_t n, cap;
} jb_sources;

static fb_code jb_source(jb_sources *s, const char *job, uint32_t *k, fb_err *err) {
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], job) == 0) {
            *k = (uint32_t)i + 1;
            return FB_OK;
        }
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        const char **v = realloc(s->v, cap * sizeof *v);
        if (!v) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = job;
    *k = (uint32_t)s->n;
    return FB_OK;
}

/* The index entry that lists the chunks of base table bt: the base's own, or that of the artifact holding it
 * (references are direct); NULL when unusable. Every artifact holding some of its chunks must be a complete
 * backup of the chain. */
static const arc_index_table *jb_chunk_owner(const arc_chain *ch, const arc_chain_entry *base,
                                             const arc_index_table *bt, const arc_chain_entry **owner) {
    int held = arc_index_table_kind(base->ix, bt) != ARC_TABLE_REFERENCED;
    const arc_chain_entry *h = held ? base : arc_chain_find(ch, bt->stored_in);
    if (!h || !arc_chain_usable(h)) return NULL;
    const arc_index_table *ht = h == base ? bt : arc_index_find(h->ix, bt->schema, bt->name);
    if (!ht || arc_index_table_kind(h->ix, ht) == ARC_TABLE_REFERENCED) return NULL; /* references are direct */
    for (size_t k = 0; k < ht->n_deps; k++) {
        const arc_chain_entry *src = arc_chain_find(ch, ht->deps[k]);
        if (!src || !arc_chain_usable(src)) return NULL;
    }
    *owner = h;
    return ht;
}

/* Every chunk of every table of the base into the on-disk map m, read a block at a time: from the index in
 * memory (version 2) or streamed from the holder's chunk records (version 3 and 4, checked against the range's BLAKE2b
 * in its MAC'd head). Memory does not grow with the chain. */
static fb_code jb_cmap_load(job_chunkmap *m, stor *st, const char *dir, const arc_chain *ch,
                            const arc_chain_entry *base, jb_sources *srcs, fb_err *err) {
    fb_code rc = FB_OK;
    for (size_t i = 0; i < base->ix->n_tables && !rc; i++) {
        const arc_chain_entry *h = NULL;
        const arc_index_table *ht = jb_chunk_owner(ch, base, &base->ix->tables[i], &h);
        if (!ht) continue;
        arc_clist_rec rec;
        for (size_t k = 0; k < ht->n_chunks && !rc; k++) {
            const arc_chunk *ck = &ht->chunks[k];
            memcpy(rec.id, ck->id, sizeof rec.id);
            rec.segment = ck->segment;
            rec.offset = ck->offset;
            rec.length = ck->length;
            rc = jb_source(srcs, ck->src ? ck->src : h->job_id, &rec.src, err);
            if (!rc && rec.length) rc = job_chunkmap_put(m, &rec, err);
        }
        if (rc || !ht->rec_count) continue;
        char rel[1400];
        stor_rfile *f = NULL;
        arc_clist_iter it = {0};
        int got = 1;
        snprintf(rel, sizeof rel, "%s/%s%s", dir, h->job_id, ARC_ARTIFACT_SUFFIX);
        rc = stor_open(st, rel, &f, err);
        arc_clist_range rg = arc_index_table_range(h->ix, ht);
        if (!rc) rc = arc_clist_iter_open(&it, f, h->records_off, h->ix->n_record_bytes, &rg, err);
        while (!rc && got) {
            rc = arc_clist_iter_next(&it, &rec, &got, err);
            if (rc || !got) break;
            if (rec.src > h->ix->n_sources) {
                rc = fb_err_set(err, FB_ERR_FORMAT, "\"%s\": a chunk record names source %u of %zu", rel, rec.src,
                                h->ix->n_sources);
                break;
            }
            rc = jb_source(srcs, rec.src ? h->ix->sources[rec.src - 1] : h->job_id, &rec.src, err);
            if (!rc) rc = job_chunkmap_put(m, &rec, err);
        }
        arc_clist_iter_close(&it);
        stor_rfile_close(f);
        if (rc) fb_err_prefix(err, "reading the base chain's chunks (run a FULL if the chain is damaged): ");
    }
    return rc;
}

/* One table going through the chunker: whole (written as one segment, chunks only recorded) or assembled. Its
 * chunk records go to the spool as they come; only the sources it uses are remembered. */
typedef struct jb_chunking {
    arc_chunker ck;
    arc_writer *w;
    arc_clist_spool *spool;
    uint32_t segment;         /* whole: the table's segment; assembled: the new chunks' segment once begun */
    int begun;
    uint64_t pos;             /* bytes in the segment so far (decompressed) */
    job_chunkmap *map;        /* assembled: what the chain and this job already hold */
    uint32_t *deps;           /* source numbers (>= 1) its records use */
    size_t n_deps, cap_deps;
    crypto_generichash_state hs;
    int64_t raw, reused, stored;
} jb_chunking;

static fb_code jb_chunk_add(jb_chunking *c, const unsigned char *id, uint32_t src, uint32_t segment, uint64_t off,
                            uint64_t len, fb_err *err) {
    arc_clist_rec rec;
    memcpy(rec.id, id, ARC_CHUNK_ID_BYTES);
    rec.src = src;
    rec.segment = segment;
    rec.offset = off;
    rec.length = len;
    if (src) {
        size_t k = 0;
        while (k < c->n_deps && c->deps[k] != src) k++;
        if (k == c->n_deps) {
            if (c->n_deps == c->cap_deps) {
                size_t cap = c->cap_deps ? 2 * c->cap_deps : 8;
                uint32_t *v = realloc(c->deps, cap * sizeof *v);
                if (!v) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
                c->deps = v;
                c->cap_deps = cap;
            }
            c->deps[c->n_deps++] = src;
        }
    }
    return arc_clist_spool_add(c->spool, &rec, err);
}

static fb_code jb_chunk_whole(void *opaque, const unsigned char id[ARC_CHUNK_ID_BYTES], const void *bytes, size_t len,
                              fb_err *err) {
    jb_chunking *c = opaque;
    (void)bytes;
    fb_code rc = jb_chunk_add(c, id, 0, c->segment, c->pos, len, err);
    c->pos += len;
    return rc;
}

static fb_code jb_chunk_assemble(void *opaque, const unsigned char id[ARC_CHUNK_ID_BYTES], const void *bytes,
                                 size_t len, fb_err *err) {
    jb_chunking *c = opaque;
    arc_clist_rec have;
    int found = 0;
    fb_code rc = job_chunkmap_get(c->map, id, &have, &found, err);
    if (rc) return rc;
    if (found && have.length == len) {
        c->reused++;
        return jb_chunk_add(c, id, have.src, have.segment, have.offset, len, err);
    }
    if (!c->begun) {
        if ((rc = arc_writer_begin(c->w, &c->segment, err))) return rc;
        c->begun = 1;
    }
    if ((rc = arc_writer_write(c->w, bytes, len, err))) return rc;
    if ((rc = jb_chunk_add(c, id, 0, c->segment, c->pos, len, err))) return rc;
    arc_clist_rec mine = {.src = 0, .segment = c->segment, .offset = c->pos, .length = len};
    memcpy(mine.id, id, ARC_CHUNK_ID_BYTES);
    if ((rc = job_chunkmap_put(c->map, &mine, err))) return rc;
    c->pos += len;
    c->stored++;
    return FB_OK;
}

/* Ends table it's range of chunk records; its deps name the jobs of the sources it used. */
static fb_code jb_chunk_close(jb_chunking *c, const jb_sources *srcs, arc_index_table *it, fb_err *err) {
    arc_clist_spool_table_end(c->spool, &it->rec_first, &it->rec_count, &it->rec_bytes, it->rec_blake2b);
    if (c->n_deps && !(it->deps = calloc(c->n_deps, sizeof *it->deps)))
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    for (size_t k = 0; k < c->n_deps; k++) it->deps[k] = srcs->v[c->deps[k] - 1];
    it->n_deps = c->n_deps;
    return FB_OK;
}

static fb_code jb_put_whole(void *opaque, const void *buf, size_t len, fb_err *err) {
    jb_chunking *c = opaque;
    fb_code rc = arc_writer_write(c->w, buf, len, err);
    return rc ? rc : arc_chunker_feed(&c->ck, buf, len, err);
}

static fb_code jb_put_assemble(void *opaque, const void *buf, size_t len, fb_err *err) {
    jb_chunking *c = opaque;
    crypto_generichash_update(&c->hs, buf, len);
    c->raw += (int64_t)len;
    return arc_chunker_feed(&c->ck, buf, len, err);
}

/* --- the projection --------------------------------------------------------------------------------------------- */

/* Before the long part: the tables' size on disk projects the chunk records (one per ~4 KiB of data, at most
 * ARC_CLIST_COMPACT_MAX bytes each, 19 in a FULL) and, on a base, the chunk map (2 x 40 bytes per chunk of the
 * chain and of this job, twice that while it doubles), all in $TMPDIR; a folder without that room fails now, with
 * the numbers, not after hours of dump. The index head grows only with the number of tables. */
static fb_code jb_project(PGconn *c, const char *job_id, const dump_rel *rels, size_t n, uint64_t base_chunks,
                          fb_err *err) {
    size_t cap = 160 + 12 * n, len = 0;
    char *sql = malloc(cap);
    if (!sql) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    len = (size_t)snprintf(sql, cap, "SELECT coalesce(sum(pg_catalog.pg_table_size(o)), 0)::int8 FROM unnest('{");
    for (size_t i = 0; i < n; i++) len += (size_t)snprintf(sql + len, cap - len, "%s%u", i ? "," : "", rels[i].oid);
    snprintf(sql + len, cap - len, "}'::pg_catalog.oid[]) o");
    PGresult *r = PQexec(c, sql);
    free(sql);
    fb_code rc = pgx_check(c, r, PGRES_TUPLES_OK, "measuring the tables (pg_table_size)", err);
    if (rc) return rc;
    uint64_t bytes = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    uint64_t chunks = bytes / 4096 + n, records = chunks * ARC_CLIST_COMPACT_MAX;
    uint64_t map = base_chunks ? 4 * (base_chunks + chunks) * ARC_CLIST_REC_BYTES : 0, head = (uint64_t)n * 600 + 4096;
    const char *dir = getenv("TMPDIR");
    struct statvfs vs;
    if (!dir || !*dir) dir = "/tmp";
    FB_INFO("job=%s projected: %zu tables, %llu MB on disk, ~%llu chunks, chunk records ~%llu MB, chunk map ~%llu MB, "
            "index head ~%llu KB", job_id, n, (unsigned long long)(bytes >> 20), (unsigned long long)chunks,
            (unsigned long long)(records >> 20), (unsigned long long)(map >> 20), (unsigned long long)(head >> 10));
    if (head > ARC_INDEX_HEAD_MAX)
        return fb_err_set(err, FB_ERR_INVALID, "refusing the backup: %zu tables would make a chain index head of "
                          "~%llu bytes, above the %u readers accept; back them up in several configurations",
                          n, (unsigned long long)head, ARC_INDEX_HEAD_MAX);
    if (statvfs(dir, &vs) == 0) {
        uint64_t avail = (uint64_t)vs.f_bavail * vs.f_frsize;
        if (avail < records + map)
            return fb_err_set(err, FB_ERR_IO, "refusing the backup before the dump: its chunk records and chunk map "
                              "need about %llu MB in \"%s\" (TMPDIR), which has %llu MB free (%llu MB of tables); "
                              "free space there or point TMPDIR at a larger file system",
                              (unsigned long long)((records + map) >> 20), dir, (unsigned long long)(avail >> 20),
                              (unsigned long long)(bytes >> 20));
    }
    return FB_OK;
}

/* --- schema archive ------------------------------------------------------------------------------------------ */

static fb_code jb_put_writer(void *opaque, const void *buf, size_t len, fb_err *err) {
    return arc_writer_write(opaque, buf, len, err);
}

/* pg_dump of every object but the tables' rows, on this transaction's snapshot, into the next segment; recorded
 * in m->schema (FORMAT.md, "Schema archive"). Runs before the tables so that a missing or too old pg_dump fails
 * the job before the long part. */
static fb_code jb_schema_archive(const fb_config *cfg, PGconn *c, arc_writer *w, int all_tables, arc_manifest *m,
                                 fb_err *err) {
    char ver[256] = "";
    arc_seg_info si;
    uint32_t seg;
    fb_code rc = arc_writer_begin(w, &seg, err);
    if (!rc) rc = dump_schema_dump(c, cfg->pg_dump, (long long)cfg->lock_timeout_ms, jb_put_writer, w, ver, sizeof ver, err);
    if (!rc) rc = arc_writer_end(w, &si, err);
    if (rc) return rc;
    if (!(m->schema = calloc(1, sizeof *m->schema)) || !(m->schema->pg_dump_version = strdup(ver)))
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    FB_DEBUG("schema archive: %lld bytes by %s, stored in %llu", (long long)si.raw_bytes, ver,
             (unsigned long long)si.length);
    m->schema->segment = si.segment;
    m->schema->offset = si.offset;
    m->schema->length = si.length;
    m->schema->raw_bytes = si.raw_bytes;
    m->schema->all_tables = all_tables;
    memcpy(m->schema->blake2b, si.blake2b, sizeof si.blake2b);
    return FB_OK;
}

/* A capture base (job.h, job_snapshot_import): the snapshot the capture slot exported instead of a fresh one, so
 * this FULL holds exactly the transactions committed before the slot's consistent point; the manifest says so.
 * First statement of the transaction, as SET TRANSACTION SNAPSHOT must be. */
static fb_code jb_import_snapshot(const job_snapshot_import *im, const ev_backup_requested *rq, int as_full,
                                  PGconn *c, arc_manifest *m, fb_err *err) {
    char sql[160];
    if (!as_full)
        return fb_err_set(err, FB_ERR_USAGE, "a capture base is a FULL backup (this request is %s)",
                          jb_type_name(rq->backup_type));
    if (rq->n_tables)
        return fb_err_set(err, FB_ERR_USAGE, "a capture base backs up every table, as its chain holds them all (this "
                          "request names %zu): use a configuration without a table list", rq->n_tables);
    if (strspn(im->snapshot, "0123456789ABCDEFabcdef-") != strlen(im->snapshot) || strlen(im->snapshot) > 100)
        return fb_err_set(err, FB_ERR_INVALID, "snapshot id \"%s\" is not one the server exports", im->snapshot);
    snprintf(sql, sizeof sql, "SET TRANSACTION SNAPSHOT '%s'", im->snapshot);
    fb_code rc = pgx_exec(c, sql, "importing the capture slot's snapshot (the replication connection that exported "
                          "it must stay open and idle)", err);
    if (rc) return rc;
    if (!(m->capture = calloc(1, sizeof *m->capture)) || !(m->capture->slot = strdup(im->slot)) ||
        !(m->capture->stream = strdup(im->stream)))
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    m->capture->lsn = im->lsn;
    return FB_OK;
}

/* The base of an INCREMENTAL (the newest complete backup of the configuration) or DIFFERENTIAL (the newest
 * complete FULL) in the chain; NULL when there is none (the job runs as FULL). */
static const arc_chain_entry *jb_pick_base(const arc_chain *ch, const ev_event *ev, fb_err *why) {
    const ev_backup_requested *rq = &ev->u.backup;
    const arc_chain_entry *best = NULL;
    size_t skipped = 0;
    for (size_t i = 0; i < ch->n; i++) {
        const arc_chain_entry *e = &ch->e[i];
        if (strcmp(e->job_id, ev->job_id) == 0) continue; /* our own earlier attempt */
        if (!arc_chain_usable(e)) {
            if (e->problem[0] || e->sig.state != ARC_SIG_TRUSTED) {
                skipped++;
                FB_WARN("job=%s not a base: backup %s: %s", ev->job_id, e->job_id,
                        e->problem[0] ? e->problem
                        : e->sig.state == ARC_SIG_UNSIGNED ? "unsigned (written before format 5)"
                                                           : e->untrusted_why);
            }
            continue;
        }
        if (e->ix->config_id != rq->config_id) continue;
        if (rq->backup_type == EV_DIFFERENTIAL && strcmp(e->ix->type, "FULL") != 0) continue;
        if (!best || e->ix->completed_ms > best->ix->completed_ms) best = e;
    }
    if (!best)
        fb_err_set(why, FB_ERR_NOTFOUND, "no complete %s of configuration %lld in the storage folder%s",
                   rq->backup_type == EV_DIFFERENTIAL ? "FULL backup" : "backup", (long long)rq->config_id,
                   skipped ? " (some indexes were unusable, see the log)" : "");
    return best;
}

/* The base entry of table t, when its data can be referenced: the base has it and its holder is complete. */
static const arc_index_table *jb_base_table(const arc_chain *ch, const arc_chain_entry *base, const arc_table *t) {
    if (!base) return NULL;
    const arc_index_table *bt = arc_index_find(base->ix, t->schema, t->name);
    if (!bt) return NULL;
    const arc_chain_entry *owner = NULL;
    if (!jb_chunk_owner(ch, base, bt, &owner)) return NULL; /* its holder and every chunk source are usable */
    return bt;
}

/* Copies rel from src to dst (temporary, fsync, rename), then reads the copy back and compares its BLAKE2b with
 * want (the digest of the bytes the job wrote). */
static fb_code jb_copy_file(stor *src, stor *dst, const char *dst_root, const char *rel, const unsigned char want[32],
                            fb_err *err) {
    stor_rfile *in = NULL, *back = NULL;
    stor_wfile *wf = NULL;
    unsigned char got[32];
    size_t cap = 1u << 20;
    unsigned char *buf = malloc(cap);
    fb_code rc = buf ? FB_OK : fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    if (!rc) rc = stor_open(src, rel, &in, err);
    if (!rc) rc = stor_create(dst, rel, &wf, err);
    for (uint64_t off = 0; !rc && off < in->size; off += cap) {
        size_t n = in->size - off < cap ? (size_t)(in->size - off) : cap;
        rc = stor_rfile_pread(in, buf, n, off, err);
        if (!rc) rc = stor_wfile_write(wf, buf, n, err);
    }
    if (!rc) {
        stor_wfile_digest(wf, got);
        if (sodium_memcmp(got, want, 32) != 0)
            rc = fb_err_set(err, FB_ERR_IO, "\"%s\" changed while it was copied to \"%s\" (BLAKE2b differs)", rel,
                            dst_root);
    }
    if (!rc) {
        rc = stor_wfile_commit(wf, err);
        wf = NULL;
    }
    if (!rc) rc = stor_open(dst, rel, &back, err);
    if (!rc) rc = stor_rfile_digest(back, got, err);
    if (!rc && sodium_memcmp(got, want, 32) != 0)
        rc = fb_err_set(err, FB_ERR_IO, "the copy of \"%s\" in \"%s\" reads back different bytes (BLAKE2b): check "
                        "that storage", rel, dst_root);
    if (rc) fb_err_prefix(err, "copy to \"%s\": ", dst_root);
    stor_wfile_abort(wf);
    stor_rfile_close(in);
    stor_rfile_close(back);
    free(buf);
    return rc;
}

/* Step 2 of job_backup_run: this job's artifact already exists. Returns 1 when it is a complete backup of this
 * job that a trusted key signed and whose index authenticates: res is then filled from its index, and nothing is
 * written. Otherwise 0 (nothing there, or something that is not this job's backup, which the new artifact
 * replaces; *why says what). */
static int jb_existing(stor *st, const char *rel, const ev_event *ev, const fb_keyring *kr,
                       const unsigned char ikey[ARC_INDEX_KEY_BYTES], job_result *res, char *why, size_t cap) {
    stor_rfile *f = NULL;
    char *buf = NULL;
    size_t len = 0;
    arc_index *ix = NULL;
    arc_trust trust = {kr, 0, ev->job_id};
    fb_err e;
    int ok = 0;
    why[0] = '\0';
    if (stor_open(st, rel, &f, &e) != FB_OK) goto out; /* none: the normal case */
    if (arc_sign_peek(f, &trust, NULL, &e) || arc_reader_peek_index(f, &buf, &len, &e) ||
        arc_index_parse(buf, len, ikey, &ix, &e)) {
        snprintf(why, cap, "%s", e.msg);
        goto out;
    }
    if (!ix->job_id || strcmp(ix->job_id, ev->job_id) != 0 || ix->config_id != ev->u.backup.config_id) {
        snprintf(why, cap, "its index names job %s of configuration %lld", ix->job_id ? ix->job_id : "?",
                 (long long)ix->config_id);
        goto out;
    }
    int64_t rows = 0, raw = 0, n_ref = 0;
    for (size_t i = 0; i < ix->n_tables; i++) {
        rows += ix->tables[i].rows;
        raw += ix->tables[i].raw_bytes;
        if (arc_index_table_kind(ix, &ix->tables[i]) == ARC_TABLE_REFERENCED) n_ref++;
    }
    snprintf(res->file_path, sizeof res->file_path, "%s", rel);
    res->file_size = (int64_t)f->size;
    job_result_set(res, "tables", (int64_t)ix->n_tables);
    job_result_set(res, "rows", rows);
    job_result_set(res, "raw_bytes", raw);
    job_result_set(res, "stored_bytes", (int64_t)f->size);
    job_result_set(res, "artifact_reused", 1);
    if (ev->u.backup.backup_type != EV_FULL) {
        job_result_set(res, "ran_as_full", ix->base_job ? 0 : 1);
        job_result_set(res, "tables_referenced", n_ref);
    }
    ok = 1;
out:
    arc_index_free(ix);
    free(buf);
    stor_rfile_close(f);
    return ok;
}

typedef struct jb_prune_log {
    const char *job_id, *root;
} jb_prune_log;

static void jb_prune_report(void *opaque, const char *job_id, int removed, const char *reason) {
    const jb_prune_log *l = opaque;
    FB_INFO("job=%s retention in \"%s\": %s backup %s: %s", l->job_id, l->root, removed ? "removed" : "kept", job_id,
            reason);
}

/* --- the tables, on one or more connections ---------------------------------------------------------------- */

/* A parallel dump (FULL): lane 0 is the job's own connection, writing into the artifact itself; lanes 1.. are
 * further connections on the same exported snapshot (SET TRANSACTION SNAPSHOT, as pg_dump -j does), each with its
 * own artifact writer lane (arc_writer_new_lane: its segments go to a temporary file) and chunk record spool. The
 * tables are taken largest first from one queue; between its own tables, lane 0 copies the segments the other
 * lanes finished into the artifact, so every segment stays contiguous and the artifact is the same format as a
 * one-connection dump (only the order of the segments in the file differs). At the end the other lanes' chunk
 * records are appended to lane 0's spool and their tables' record ranges shifted. The first failure in any lane
 * sets `stop`, every lane ends within JB_ABORT_CHECK_ROWS rows, and the job fails with that first error: the
 * temporary artifact is removed as on any failure. */
typedef struct jb_ready {
    size_t table;
    const arc_writer *lane;
    arc_seg_info si;
} jb_ready;

typedef struct jb_run {
    const job_ctx *ctx;
    const ev_event *ev;
    const dump_rel *rels;
    size_t n_rels;
    arc_manifest *m;
    arc_index *ix;
    const arc_chain *ch;
    const arc_chain_entry *base;
    job_chunkmap *cmap;
    jb_sources *srcs;
    const unsigned char *ikey, *ckey;
    arc_writer *w;
    size_t *order;       /* the tables in the order they are taken */
    size_t *lane_of;     /* which lane dumped each table */
    size_t *seq;         /* when it was taken (its place in order) */
    pthread_mutex_t mu;  /* guards what follows (with more than one lane) */
    size_t next;         /* of order */
    jb_ready *ready;     /* the other lanes' finished segments; [n_imported, n_ready) not yet in the artifact */
    size_t n_ready, n_imported;
    int64_t done_tables, total_rows, total_raw, n_ref, chunks_reused, chunks_stored;
    atomic_int stop;
    fb_code first_rc;
    fb_err first_err;
} jb_run;

typedef struct jb_lane {
    jb_run *run;
    size_t k, n_lanes;
    PGconn *c;
    arc_writer *w;
    arc_clist_spool *spool;
    arc_clist_spool own;  /* lanes >= 1 */
    pthread_t thread;
    int started;
} jb_lane;

/* --- one table: detect, then store whole, reference or assemble ---------------------------------------------- */

/* Change detection against the base entry bt: hashes the whole COPY stream, stores nothing. When its tag, byte
 * and row counts equal bt's, t becomes a reference to bt's holder and *unchanged is 1. */
static fb_code jb_table_detect(jb_lane *L, arc_table *t, const arc_index_table *bt, const jb_progress *tp,
                               int *unchanged, fb_err *err) {
    arc_hasher h;
    int64_t rows = 0;
    unsigned char hash[ARC_HASH_BYTES], tag[32];
    fb_code rc;
    *unchanged = 0;
    arc_hasher_init(&h);
    if ((rc = jb_copy_table(L->run->ctx, L->c, arc_hasher_put, &h, t, tp, &rows, err))) return rc;
    arc_hasher_final(&h, hash);
    arc_index_tag(L->run->ikey, hash, tag);
    if (sodium_memcmp(tag, bt->tag, sizeof tag) != 0 || h.bytes != bt->raw_bytes || rows != bt->rows) return FB_OK;
    *unchanged = 1;
    t->rows = rows;
    t->raw_bytes = h.bytes;
    t->stored_bytes = 0;
    memcpy(t->blake2b, hash, sizeof hash);
    if (!(t->stored_in = strdup(bt->stored_in))) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    return FB_OK;
}

/* Stored whole, in one segment of its own; its chunks are recorded for later backups to reuse. */
static fb_code jb_table_store_whole(jb_lane *L, arc_table *t, jb_chunking *ck, const jb_progress *tp,
                                    arc_seg_info *si, fb_err *err) {
    uint32_t seg;
    arc_chunker_init(&ck->ck, L->run->ckey, 0, jb_chunk_whole, ck);
    fb_code rc = arc_writer_begin(L->w, &seg, err);
    ck->segment = seg;
    if (!rc) rc = jb_copy_table(L->run->ctx, L->c, jb_put_whole, ck, t, tp, &t->rows, err);
    if (!rc) rc = arc_chunker_finish(&ck->ck, err);
    arc_chunker_clear(&ck->ck);
    if (!rc) rc = arc_writer_end(L->w, si, err);
    if (rc) return rc;
    t->segment = si->segment;
    t->offset = si->offset; /* another lane's: in its temporary file until lane 0 imports it */
    t->length = si->length;
    t->raw_bytes = si->raw_bytes;
    t->stored_bytes = (int64_t)si->length;
    memcpy(t->blake2b, si->blake2b, sizeof t->blake2b);
    return FB_OK;
}

/* Changed or new since the base: assembled from the chain's chunks, the new ones stored in one segment here. */
static fb_code jb_table_assemble(jb_lane *L, arc_table *t, jb_chunking *ck, const jb_progress *tp,
                                 arc_seg_info *si, fb_err *err) {
    arc_chunker_init(&ck->ck, L->run->ckey, 1, jb_chunk_assemble, ck);
    crypto_generichash_init(&ck->hs, NULL, 0, ARC_HASH_BYTES);
    fb_code rc = jb_copy_table(L->run->ctx, L->c, jb_put_assemble, ck, t, tp, &t->rows, err);
    if (!rc) rc = arc_chunker_finish(&ck->ck, err);
    arc_chunker_clear(&ck->ck);
    if (!rc && ck->begun) rc = arc_writer_end(L->w, si, err);
    if (rc) return rc;
    if (ck->begun) {
        t->segment = si->segment;
        t->offset = si->offset;
        t->length = si->length;
        t->stored_bytes = (int64_t)si->length;
    }
    t->assembled = 1;
    t->raw_bytes = ck->raw;
    crypto_generichash_final(&ck->hs, t->blake2b, sizeof t->blake2b);
    return FB_OK;
}

/* Table i's index entry (its strings borrowed from the manifest until the index is encoded), and the run's
 * counters; a further lane's segment is queued for lane 0 to import. */
static void jb_table_record(jb_lane *L, size_t i, arc_table_kind kind, const jb_chunking *ck,
                            const arc_seg_info *si) {
    jb_run *run = L->run;
    const arc_table *t = &run->m->tables[i];
    arc_index_table *it = &run->ix->tables[i];
    int referenced = kind == ARC_TABLE_REFERENCED;
    it->schema = t->schema;
    it->name = t->name;
    it->stored_in = referenced ? t->stored_in : (char *)run->ev->job_id;
    it->rows = t->rows;
    it->raw_bytes = t->raw_bytes;
    it->assembled = kind == ARC_TABLE_ASSEMBLED;
    arc_index_tag(run->ikey, t->blake2b, it->tag);
    FB_DEBUG("job=%s table=\"%s\".\"%s\" rows=%lld raw=%lld stored=%lld%s%s (connection %zu)", run->ev->job_id,
             t->schema, t->name, (long long)t->rows, (long long)t->raw_bytes, (long long)t->stored_bytes,
             referenced ? " unchanged, in " : "", referenced ? t->stored_in : "", L->k);
    pthread_mutex_lock(&run->mu);
    run->lane_of[i] = L->k;
    if (L->k > 0 && !referenced) run->ready[run->n_ready++] = (jb_ready){i, L->w, *si};
    run->n_ref += referenced;
    run->chunks_reused += ck->reused;
    run->chunks_stored += ck->stored;
    run->total_rows += t->rows;
    run->total_raw += t->raw_bytes;
    jb_progress after = {++run->done_tables, (int64_t)run->n_rels, run->total_rows, run->total_raw, L->k > 0, NULL};
    pthread_mutex_unlock(&run->mu);
    jb_report(run->ctx, &after, 0, 0);
}

/* Dumps table i on lane L (see the file's head): a table the base has is first checked for change; an unchanged
 * one is referenced, any other stored whole (no base) or assembled (on a base). */
static fb_code jb_dump_table(jb_lane *L, size_t i, fb_err *err) {
    jb_run *run = L->run;
    arc_table *t = &run->m->tables[i];
    arc_seg_info si = {0};
    fb_code rc;
    if ((rc = dump_catalog_describe(L->c, &run->rels[i], t, err))) return rc;
    pthread_mutex_lock(&run->mu);
    jb_progress tp = {run->done_tables, (int64_t)run->n_rels, run->total_rows, run->total_raw, L->k > 0, &run->stop};
    pthread_mutex_unlock(&run->mu);
    jb_chunking ck = {.w = L->w, .spool = L->spool, .map = run->cmap};
    arc_clist_spool_table(L->spool);
    const arc_index_table *bt = jb_base_table(run->ch, run->base, t);
    int unchanged = 0;
    if (bt && (rc = jb_table_detect(L, t, bt, &tp, &unchanged, err))) return rc;
    arc_table_kind kind = unchanged ? ARC_TABLE_REFERENCED : run->base ? ARC_TABLE_ASSEMBLED : ARC_TABLE_WHOLE;
    if (kind == ARC_TABLE_WHOLE) rc = jb_table_store_whole(L, t, &ck, &tp, &si, err);
    if (kind == ARC_TABLE_ASSEMBLED) rc = jb_table_assemble(L, t, &ck, &tp, &si, err);
    if (!rc) rc = jb_chunk_close(&ck, run->srcs, &run->ix->tables[i], err);
    if (!rc) jb_table_record(L, i, kind, &ck, &si);
    free(ck.deps);
    return rc;
}

/* Lane 0, between its own segments: the other lanes' finished segments into the artifact. */
static fb_code jb_import_ready(jb_run *run, fb_err *err) {
    for (;;) {
        pthread_mutex_lock(&run->mu);
        int have = run->n_imported < run->n_ready;
        jb_ready rd = have ? run->ready[run->n_imported++] : (jb_ready){0};
        pthread_mutex_unlock(&run->mu);
        if (!have) return FB_OK;
        uint64_t at = 0;
        fb_code rc = arc_writer_import(run->w, rd.lane, &rd.si, &at, err);
        if (rc) return rc;
        run->m->tables[rd.table].offset = at;
    }
}

static void jb_fail(jb_run *run, fb_code rc, const fb_err *err) {
    pthread_mutex_lock(&run->mu);
    if (!run->first_rc) {
        run->first_rc = rc;
        run->first_err = *err;
    }
    pthread_mutex_unlock(&run->mu);
    atomic_store(&run->stop, 1);
}

/* Lane k starts with the k-th table of the order (so the largest tables start at once, whichever thread runs
 * first), then takes the next one left. */
static fb_code jb_lane_loop(jb_lane *L, size_t n_lanes, fb_err *err) {
    jb_run *run = L->run;
    for (int first = 1;; first = 0) {
        fb_code rc = L->k == 0 ? jb_import_ready(run, err) : FB_OK;
        if (rc) return rc;
        pthread_mutex_lock(&run->mu);
        size_t at = first ? L->k : (run->next > n_lanes ? run->next : n_lanes);
        int have = at < run->n_rels && !atomic_load(&run->stop);
        size_t i = have ? run->order[at] : 0;
        if (have) run->seq[i] = at;
        if (have && !first) run->next = at + 1;
        size_t done = at + 1;
        pthread_mutex_unlock(&run->mu);
        if (!have) return FB_OK;
        if (job_aborted(run->ctx))
            return fb_err_set(err, FB_ERR_ABORTED, "backup aborted (shutdown) after %zu of %zu tables; nothing was "
                              "kept", done - 1, run->n_rels);
        if ((rc = jb_dump_table(L, i, err))) return rc;
    }
}

static void *jb_lane_thread(void *arg) {
    jb_lane *L = arg;
    fb_err e;
    fb_code rc = jb_lane_loop(L, L->n_lanes, &e);
    if (rc) {
        fb_err_prefix(&e, "dump connection %zu of %zu: ", L->k + 1, L->n_lanes);
        jb_fail(L->run, rc, &e);
    }
    return NULL;
}

/* Lane k >= 1: its connection on the snapshot lane 0 exported, its writer lane and its spool. */
static fb_code jb_lane_open(jb_lane *L, const fb_config *cfg, const char *snapshot, fb_err *err) {
    char sql[160];
    fb_code rc;
    if (!(L->c = pgx_connect(cfg->pg, "fusion-backup backup", err))) return err->code ? err->code : FB_ERR_TRANSIENT;
    if ((rc = dump_catalog_session(L->c, err))) return rc;
    if ((rc = pgx_exec(L->c, "SET synchronize_seqscans = off", "turning off synchronized scans", err))) return rc;
    if ((rc = pgx_exec(L->c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "starting the snapshot", err)))
        return rc;
    snprintf(sql, sizeof sql, "SET TRANSACTION SNAPSHOT '%s'", snapshot); /* the server's own id: [0-9A-F-] */
    if ((rc = pgx_exec(L->c, sql, "sharing the backup's snapshot with a second dump connection", err))) return rc;
    /* Lane 0 holds ACCESS SHARE on every table; a DDL queued behind it would make this connection's COPY wait
     * for ever, and lane 0 for this connection: a deadlock the server cannot see (pg_dump -j uses NOWAIT for the
     * same reason). lock_timeout turns it into a failed job, even when the setting is 0 (none) for lane 0. */
    snprintf(sql, sizeof sql, "SET LOCAL lock_timeout = %lld",
             (long long)(cfg->lock_timeout_ms > 0 ? cfg->lock_timeout_ms : JB_LANE_LOCK_TIMEOUT_MS));
    if ((rc = pgx_exec(L->c, sql, "setting lock_timeout", err))) return rc;
    if ((rc = arc_writer_new_lane(L->run->w, &L->w, err))) return rc;
    if ((rc = arc_clist_spool_open(&L->own, err))) return rc;
    L->spool = &L->own;
    return FB_OK;
}

/* The order tables are taken in: largest (pg_table_size) first, so that the longest COPY starts first. */
static fb_code jb_order(PGconn *c, jb_run *run, fb_err *err) {
    size_t cap = 200 + 12 * run->n_rels, len = 0;
    char *sql = malloc(cap);
    if (!sql) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    len = (size_t)snprintf(sql, cap, "SELECT (u.i - 1)::int8 FROM unnest('{");
    for (size_t i = 0; i < run->n_rels; i++)
        len += (size_t)snprintf(sql + len, cap - len, "%s%u", i ? "," : "", run->rels[i].oid);
    snprintf(sql + len, cap - len, "}'::pg_catalog.oid[]) WITH ORDINALITY u(o, i) "
             "ORDER BY pg_catalog.pg_table_size(u.o) DESC, u.i");
    PGresult *r = PQexec(c, sql);
    free(sql);
    fb_code rc = pgx_check(c, r, PGRES_TUPLES_OK, "ordering the tables by size", err);
    if (rc) return rc;
    for (int k = 0; k < PQntuples(r) && (size_t)k < run->n_rels; k++) {
        unsigned long long i = strtoull(PQgetvalue(r, k, 0), NULL, 10);
        if (i < run->n_rels) run->order[k] = (size_t)i;
    }
    PQclear(r);
    return FB_OK;
}

static const jb_run *jb_sort_run; /* qsort has no context argument; only jb_record_order sets it */

static int jb_cmp_record_order(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    const jb_run *run = jb_sort_run;
    if (run->lane_of[x] != run->lane_of[y]) return run->lane_of[x] < run->lane_of[y] ? -1 : 1;
    return run->seq[x] < run->seq[y] ? -1 : run->seq[x] > run->seq[y];
}

/* The index lists tables in the order of their chunk record ranges (each range follows the one before it,
 * FORMAT.md): after a parallel dump that is lane by lane, each lane's tables in the order it read them. The
 * manifest takes the same order, so its tables and the index's stay side by side. */
static fb_code jb_record_order(jb_run *run, fb_err *err) {
    static pthread_mutex_t sort_mu = PTHREAD_MUTEX_INITIALIZER; /* concurrent jobs of one worker */
    size_t n = run->n_rels;
    size_t *perm = malloc((n ? n : 1) * sizeof *perm);
    arc_table *mt = malloc((n ? n : 1) * sizeof *mt);
    arc_index_table *it = malloc((n ? n : 1) * sizeof *it);
    if (!perm || !mt || !it) {
        free(perm);
        free(mt);
        free(it);
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) perm[i] = i;
    pthread_mutex_lock(&sort_mu);
    jb_sort_run = run;
    qsort(perm, n, sizeof *perm, jb_cmp_record_order);
    pthread_mutex_unlock(&sort_mu);
    for (size_t i = 0; i < n; i++) {
        mt[i] = run->m->tables[perm[i]];
        it[i] = run->ix->tables[perm[i]];
    }
    memcpy(run->m->tables, mt, n * sizeof *mt);
    memcpy(run->ix->tables, it, n * sizeof *it);
    free(perm);
    free(mt);
    free(it);
    return FB_OK;
}

/* Every table of run on n_lanes connections (lane 0 on c, writing to run->w and spool). On success the artifact
 * holds every stored table's segment and spool every chunk record, ranges in ix. */
static fb_code jb_dump_tables(jb_run *run, const fb_config *cfg, PGconn *c, arc_clist_spool *spool, size_t n_lanes,
                              fb_err *err) {
    fb_code rc = FB_OK;
    jb_lane *lanes = calloc(n_lanes, sizeof *lanes);
    size_t n = run->n_rels ? run->n_rels : 1;
    run->order = calloc(n, sizeof *run->order);
    run->lane_of = calloc(n, sizeof *run->lane_of);
    run->seq = calloc(n, sizeof *run->seq);
    run->ready = calloc(n, sizeof *run->ready);
    pthread_mutex_init(&run->mu, NULL);
    if (!lanes || !run->order || !run->lane_of || !run->seq || !run->ready) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < run->n_rels; i++) run->order[i] = i;
    for (size_t k = 0; k < n_lanes; k++) lanes[k] = (jb_lane){.run = run, .k = k, .n_lanes = n_lanes};
    lanes[0].c = c;
    lanes[0].w = run->w;
    lanes[0].spool = spool;
    if (n_lanes > 1) {
        char snapshot[128];
        PGresult *r = PQexec(c, "SELECT pg_catalog.pg_export_snapshot()");
        if ((rc = pgx_check(c, r, PGRES_TUPLES_OK, "exporting the snapshot for the dump connections", err))) goto out;
        snprintf(snapshot, sizeof snapshot, "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
        if ((rc = jb_order(c, run, err))) goto out;
        for (size_t k = 1; k < n_lanes && !rc; k++) rc = jb_lane_open(&lanes[k], cfg, snapshot, err);
        if (rc) goto out;
        FB_INFO("job=%s reading %zu tables on %zu connections (one snapshot), largest first", run->ev->job_id,
                run->n_rels, n_lanes);
    }
    for (size_t k = 1; k < n_lanes && !rc; k++) {
        if (pthread_create(&lanes[k].thread, NULL, jb_lane_thread, &lanes[k]) != 0)
            rc = fb_err_set(err, FB_ERR_INTERNAL, "could not start a dump connection's thread");
        else
            lanes[k].started = 1;
    }
    if (rc) atomic_store(&run->stop, 1);
    if (!rc) {
        fb_err e;
        fb_code r0 = jb_lane_loop(&lanes[0], n_lanes, &e);
        if (r0) jb_fail(run, r0, &e);
    }
    for (size_t k = 1; k < n_lanes; k++)
        if (lanes[k].started) pthread_join(lanes[k].thread, NULL);
    if (!rc && run->first_rc) {
        rc = run->first_rc;
        *err = run->first_err;
    }
    if (!rc) rc = jb_import_ready(run, err); /* every lane has ended: lane 0's writer is between segments */
    for (size_t k = 1; k < n_lanes && !rc; k++) {
        uint64_t first = 0;
        if ((rc = arc_clist_spool_append(spool, &lanes[k].own, &first, err))) break;
        for (size_t i = 0; i < run->n_rels; i++)
            if (run->lane_of[i] == k) run->ix->tables[i].rec_first += first;
    }
    if (!rc && n_lanes > 1) rc = jb_record_order(run, err);
out:
    for (size_t k = 1; lanes && k < n_lanes; k++) {
        arc_writer_free(lanes[k].w);
        arc_clist_spool_close(&lanes[k].own);
        if (lanes[k].c) PQfinish(lanes[k].c);
    }
    free(lanes);
    free(run->order);
    free(run->lane_of);
    free(run->seq);
    free(run->ready);
    pthread_mutex_destroy(&run->mu);
    return rc;
}

/* --- the job, in named steps -------------------------------------------------------------------------------- */

/* Everything one backup job holds, from its first step to its clean-up (jb_job_clear). */
typedef struct jb_job {
    const job_ctx *ctx;
    const fb_config *cfg;
    const ev_event *ev;
    const ev_backup_requested *rq;
    job_result *res;
    int64_t t0;
    char rel[1200];  /* the artifact, relative to the storage root */
    unsigned char pk[ARC_PK_BYTES], ikey[ARC_INDEX_KEY_BYTES], ckey[32], digest[32];
    fb_signer signer;
    fb_keyring kr;
    stor *st;
    arc_chain ch;
    const arc_chain_entry *base;  /* NULL: runs as FULL */
    uint64_t base_chunks;
    job_chunkmap *cmap;
    jb_sources srcs;
    PGconn *c;
    dump_rel *rels;
    size_t n_rels;
    arc_clist_spool spool;
    stor_wfile *wf;
    arc_writer *w;
    arc_manifest m;
    arc_index ix;
    char *mbuf, *ibuf;
    size_t mlen, ilen;
    int64_t total_rows, total_raw, n_ref, chunks_reused, chunks_stored, n_conns, copies, pruned;
    int64_t prune_now_ms;  /* the one "now" retention measures age from, in every location */
    /* Made of captured changes (capture/cap_incr.h): the base is on a live change chain of this database. */
    int cap_on, cap_fallback;
    char cap_slot[CAP_NAME_MAX + 1], cap_dir[CAP_BASE_DIR_MAX];
    /* A new capture base (job_rebase.h), or the caller's (--capture-base): the snapshot the FULL imports. */
    job_rebase rb;
    const job_snapshot_import *import;
    int ch_loaded;
    cap_incr_point cap_pt;
    cap_incr_stats cap_st;
} jb_job;

/* The database authorises this exact request (record, configuration, tables, folder, retention); then the request
 * and the worker's settings (paths, keys, signer, storage) are checked, before any side effect. */
static fb_code jb_init(jb_job *j, fb_err *err) {
    const fb_config *cfg = j->cfg;
    fb_code rc;
    if ((rc = job_authority_authorise(cfg, j->ev, err))) return rc;
    if ((rc = stor_path_check(j->rq->storage_path, err))) {
        fb_err_prefix(err, "refusing the backup: ");
        return rc;
    }
    if (job_backup_artifact_path(j->rq->storage_path, j->ev->job_id, j->rel, sizeof j->rel) != 0 ||
        stor_path_check(j->rel, err))
        return fb_err_set(err, FB_ERR_INVALID, "storage path \"%s\" is too long for the artifact name",
                          j->rq->storage_path);
    if ((rc = arc_key_load_public(cfg->public_key, j->pk, err))) return rc;
    if ((rc = arc_index_key(cfg->index_key, j->pk, j->ikey, err))) return rc;
    arc_chunk_key(j->ikey, j->ckey);
    if ((rc = fb_signer_load(&j->signer, cfg->sign_key, "--sign-key", err))) {
        fb_err_prefix(err, "refusing the backup (artifacts are signed): ");
        return rc;
    }
    if ((rc = fb_keyring_load(&j->kr, cfg->trusted_signers, "--trusted-signer", err))) return rc;
    if (!fb_keyring_find(&j->kr, j->signer.key_id))
        FB_WARN("job=%s this worker's own signing key %s is not among --trusted-signer: its backups will not serve "
                "as bases of later INCREMENTAL/DIFFERENTIAL backups", j->ev->job_id, j->signer.key_id);
    return stor_open_location(cfg->storage_root, cfg, &j->st, err);
}

/* Immutable artifacts: 1 when this job's artifact already exists and holds up (j->res is then filled from it). */
static int jb_reuse_existing(jb_job *j) {
    char why[600];
    if (jb_existing(j->st, j->rel, j->ev, &j->kr, j->ikey, j->res, why, sizeof why)) {
        FB_INFO("job=%s artifact \"%s\" already exists, signed and complete: recording its success from it, writing "
                "nothing", j->ev->job_id, j->rel);
        return 1;
    }
    if (why[0])
        FB_WARN("job=%s \"%s\" exists but is not a valid backup of this job (%s): writing the backup over it",
                j->ev->job_id, j->rel, why);
    return 0;
}

/* Whether this INCREMENTAL / DIFFERENTIAL is made of captured changes (capture/cap_incr.h): its base is on a
 * change chain (index line `capture`), the chain is of this worker's database, its FULL is a usable backup of the
 * folder and its slot is alive. Otherwise the backup reads the tables as any INCREMENTAL does, with a warning
 * saying why: a chain that ended (slot dropped or lost, another database) gives no changes to copy, and a backup
 * that reads tables is still a correct one; changes are used again from a new capture base on. A chain of this
 * configuration that cannot continue has usually been rebased before this point (jb_rebase, job_rebase.h); what
 * remains here is a request naming tables, a chain of another database or of another slot family. */
static int jb_capture_plan(jb_job *j) {
    const arc_index *bx = j->base->ix;
    const char *slash = bx->cap_stream ? strrchr(bx->cap_stream, '/') : NULL;
    const arc_chain_entry *full = bx->cap_stream ? arc_chain_find(&j->ch, bx->cap_full) : NULL;
    char stream[CAP_SEG_STREAM_MAX + 1], why[800] = "";
    fb_err e;
    if (!bx->cap_stream) return 0;
    if (!slash || strlen(slash + 1) > CAP_NAME_MAX) {
        snprintf(why, sizeof why, "its stream \"%s\" does not name a slot", bx->cap_stream);
    } else {
        snprintf(j->cap_slot, sizeof j->cap_slot, "%s", slash + 1);
        if (cap_base_names(j->cfg->pg, j->cap_slot, j->rq->storage_path, stream, j->cap_dir, &e))
            snprintf(why, sizeof why, "%s", e.msg);
        else if (strcmp(stream, bx->cap_stream) != 0)
            snprintf(why, sizeof why, "the chain %s is not of this worker's database (--pg names %s)", bx->cap_stream,
                     stream);
        else if (!full || !arc_chain_usable(full) || strcmp(full->ix->type, "FULL") != 0 || !full->ix->cap_stream ||
                 strcmp(full->ix->cap_stream, bx->cap_stream) != 0)
            snprintf(why, sizeof why, "its capture base FULL %s is missing or not a usable backup", bx->cap_full);
        else if (cap_base_slot_check(j->cfg->pg, j->cap_slot, &e))
            snprintf(why, sizeof why, "%s", e.msg);
    }
    if (why[0]) {
        FB_WARN("job=%s %s on base %s reads the tables instead of copying captured changes: %s. The change chain "
                "ended; for later backups to be made of changes again, a new capture base is needed (a backup of the "
                "whole configuration with the workers' capture-slot takes it, or fusion-backup backup CONFIG --type "
                "FULL --capture-base --capture-slot NEW)", j->ev->job_id,
                jb_type_name(j->rq->backup_type), j->base->job_id, why);
        j->cap_fallback = 1;
        return 0;
    }
    j->cap_on = 1;
    FB_INFO("job=%s %s of captured changes of %s from " CAP_LSN_FMT " (base %s, FULL %s)", j->ev->job_id,
            jb_type_name(j->rq->backup_type), bx->cap_stream, CAP_LSN_ARGS(bx->cap_end), j->base->job_id,
            bx->cap_full);
    return 1;
}

/* INCREMENTAL / DIFFERENTIAL: the base, from the chain indexes (the worker cannot read manifests), and every chunk
 * of the chain into the on-disk chunk map. Without a usable base the job runs as FULL. */
static fb_code jb_base(jb_job *j, fb_err *err) {
    const ev_event *ev = j->ev;
    fb_err why;
    fb_code rc;
    if (j->rq->backup_type == EV_FULL || j->rb.reason) return FB_OK;
    if (!j->ch_loaded && (rc = arc_chain_load(j->st, j->rq->storage_path, j->ikey, &j->kr, &j->ch, err))) return rc;
    j->ch_loaded = 1;
    if (!(j->base = jb_pick_base(&j->ch, ev, &why))) {
        FB_INFO("job=%s %s requested, runs as FULL: %s", ev->job_id, jb_type_name(j->rq->backup_type), why.msg);
        return FB_OK;
    }
    FB_INFO("job=%s %s on base %s (%s of %lld)", ev->job_id, jb_type_name(j->rq->backup_type), j->base->job_id,
            j->base->ix->type, (long long)j->base->ix->completed_ms);
    if (jb_capture_plan(j)) return FB_OK; /* no table is read: no chunk map */
    for (size_t i = 0; i < j->base->ix->n_tables; i++) {
        const arc_chain_entry *h = NULL;
        const arc_index_table *ht = jb_chunk_owner(&j->ch, j->base, &j->base->ix->tables[i], &h);
        if (ht) j->base_chunks += ht->n_chunks + ht->rec_count;
    }
    if ((rc = job_chunkmap_new(j->base_chunks, &j->cmap, err))) return rc;
    if ((rc = jb_cmap_load(j->cmap, j->st, j->rq->storage_path, &j->ch, j->base, &j->srcs, err))) return rc;
    FB_DEBUG("job=%s chunk map: %llu chunks of the chain", ev->job_id, (unsigned long long)job_chunkmap_count(j->cmap));
    return FB_OK;
}

/* Whether this job must be the new base of its configuration's change chain (job_rebase.h), then its slot. An
 * explicit base (ctx->import, --capture-base) is the caller's. A FULL request looks at the chain's indexes only when
 * the first generation's folder has anything in it (an uncaptured configuration's FULL reads no index). */
static fb_code jb_rebase(jb_job *j, fb_err *err) {
    char stream[CAP_SEG_STREAM_MAX + 1], dir[CAP_BASE_DIR_MAX];
    fb_err e;
    fb_code rc;
    j->import = j->ctx->import;
    if (j->import) return FB_OK;
    if (j->rq->backup_type == EV_FULL &&
        (cap_base_names(j->cfg->pg, j->cfg->capture_slot, j->rq->storage_path, stream, dir, &e) != FB_OK ||
         cap_base_folder_empty(j->st, dir, &e) == FB_OK))
        return FB_OK;
    if ((rc = arc_chain_load(j->st, j->rq->storage_path, j->ikey, &j->kr, &j->ch, err))) return rc;
    j->ch_loaded = 1;
    if ((rc = job_rebase_plan(j->cfg, j->ev, j->st, &j->ch, &j->kr, &j->rb, err)) || !j->rb.reason) return rc;
    if ((rc = job_rebase_begin(j->cfg, j->ev, j->st, &j->rb, err))) return rc;
    j->import = &j->rb.import;
    return FB_OK;
}

/* One snapshot for everything: a REPEATABLE READ READ ONLY transaction on the job's connection, its time, the
 * database's name and the server's version into the manifest. */
static fb_code jb_snapshot(jb_job *j, fb_err *err) {
    char sql[96];
    fb_code rc;
    if (!(j->c = pgx_connect(j->cfg->pg, "fusion-backup backup", err))) return err->code ? err->code : FB_ERR_TRANSIENT;
    if ((rc = dump_catalog_session(j->c, err))) return rc;
    if ((rc = pgx_exec(j->c, "SET synchronize_seqscans = off", "turning off synchronized scans", err))) return rc;
    if ((rc = pgx_exec(j->c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "starting the snapshot", err)))
        return rc;
    if (j->import && (rc = jb_import_snapshot(j->import, j->rq, !j->base, j->c, &j->m, err))) return rc;
    snprintf(sql, sizeof sql, "SET LOCAL lock_timeout = %lld", (long long)j->cfg->lock_timeout_ms);
    if ((rc = pgx_exec(j->c, sql, "setting lock_timeout", err))) return rc;
    PGresult *r = PQexec(j->c, "SELECT (extract(epoch FROM pg_catalog.now()) * 1000)::int8, "
                               "pg_catalog.current_database(), pg_catalog.current_setting('server_version')");
    if ((rc = pgx_check(j->c, r, PGRES_TUPLES_OK, "reading the snapshot time", err))) return rc;
    j->m.snapshot_ms = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    /* now() is this transaction's start, after the slot's snapshot: every transaction the snapshot holds committed
     * before it (rounded up to the next millisecond), none of the chain's before the consistent point. */
    if (j->m.capture) j->m.capture->time_us = (j->m.snapshot_ms + 1) * 1000;
    j->m.database = strdup(PQgetvalue(r, 0, 1));
    j->m.server_version = strdup(PQgetvalue(r, 0, 2));
    PQclear(r);
    return j->m.database && j->m.server_version ? FB_OK : fb_err_set(err, FB_ERR_NOMEM, "out of memory");
}

/* The tables: the requested ones (or every table) resolved in the snapshot, locked ACCESS SHARE, their temporary
 * space projected; the chunk record spool opened. */
static fb_code jb_table_list(jb_job *j, fb_err *err) {
    const ev_backup_requested *rq = j->rq;
    arc_tref *req = rq->n_tables ? calloc(rq->n_tables, sizeof *req) : NULL;
    if (rq->n_tables && !req) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < rq->n_tables; i++) {
        req[i].schema = (char *)(rq->tables[i].schema ? rq->tables[i].schema : "public");
        req[i].name = (char *)rq->tables[i].name;
    }
    fb_code rc = dump_catalog_resolve(j->c, req, rq->n_tables, &j->rels, &j->n_rels, err);
    free(req);
    if (rc) return rc;
    for (size_t i = 0; i < j->n_rels; i++)
        if (job_authority_system_schema(j->rels[i].schema)) /* the enumeration never yields one: a guard */
            return fb_err_set(err, FB_ERR_DENIED, "refusing the backup: table \"%s\".\"%s\" is in a system schema, "
                              "which this system never backs up; nothing was written", j->rels[i].schema,
                              j->rels[i].name);
    if ((rc = jb_lock(j->c, j->rels, j->n_rels, err))) return rc;
    if ((rc = jb_project(j->c, j->ev->job_id, j->rels, j->n_rels, j->base_chunks, err))) return rc;
    return arc_clist_spool_open(&j->spool, err);
}

/* The artifact's temporary file and writer (format 5: signed, the schema archive as segment 1), and room for the
 * tables' manifest and index entries. */
static fb_code jb_artifact_open(jb_job *j, fb_err *err) {
    const fb_config *cfg = j->cfg;
    fb_code rc;
    if ((rc = stor_create(j->st, j->rel, &j->wf, err))) return rc;
    j->m.format = ARC_FORMAT_VERSION;
    if ((rc = arc_writer_new_version(j->wf, j->pk, (int)cfg->zstd_level, (int)j->m.format, &j->w, err))) return rc;
    if ((rc = arc_writer_set_zstd_workers(j->w, (int)cfg->zstd_workers, err))) return rc;
    if ((rc = arc_writer_set_signer(j->w, &j->signer, j->ev->job_id, err))) return rc;
    if ((rc = jb_schema_archive(cfg, j->c, j->w, j->rq->n_tables == 0, &j->m, err))) return rc;
    j->m.tables = calloc(j->n_rels ? j->n_rels : 1, sizeof *j->m.tables);
    j->ix.tables = calloc(j->n_rels ? j->n_rels : 1, sizeof *j->ix.tables);
    if (!j->m.tables || !j->ix.tables) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    j->m.n_tables = j->ix.n_tables = j->n_rels;
    FB_INFO("job=%s backup of %zu tables of database \"%s\" into \"%s\"", j->ev->job_id, j->n_rels, j->m.database,
            j->rel);
    return FB_OK;
}

/* Every table's rows into the artifact, then the snapshot ends. A base means change detection and the chain's
 * chunk map, which one connection drives (the map is not shared between threads); a FULL reads its tables on
 * dump-connections connections. */
static fb_code jb_dump(jb_job *j, fb_err *err) {
    jb_run run = {.ctx = j->ctx, .ev = j->ev, .rels = j->rels, .n_rels = j->n_rels, .m = &j->m, .ix = &j->ix,
                  .ch = &j->ch, .base = j->base, .cmap = j->cmap, .srcs = &j->srcs, .ikey = j->ikey,
                  .ckey = j->ckey, .w = j->w};
    size_t lanes = j->base ? 1 : (size_t)j->cfg->dump_connections;
    j->n_conns = (int64_t)(lanes < j->n_rels ? lanes : (j->n_rels ? j->n_rels : 1));
    fb_code rc = jb_dump_tables(&run, j->cfg, j->c, &j->spool, (size_t)j->n_conns, err);
    j->total_rows = run.total_rows;
    j->total_raw = run.total_raw;
    j->n_ref = run.n_ref;
    j->chunks_reused = run.chunks_reused;
    j->chunks_stored = run.chunks_stored;
    return rc ? rc : pgx_exec(j->c, "COMMIT", "ending the snapshot", err);
}

/* The manifest's job fields and the chain index's head: what the next INCREMENTAL / DIFFERENTIAL and retention
 * need, readable without a key (the manifest records the index's hash, so a reader with the secret key
 * authenticates it too). */
static fb_code jb_manifest(jb_job *j, fb_err *err) {
    arc_manifest *m = &j->m;
    arc_index *ix = &j->ix;
    const ev_backup_requested *rq = j->rq;
    m->tool = strdup("fusion-backup 1");
    m->job_id = strdup(j->ev->job_id);
    m->record_id = rq->record_id;
    m->config_id = rq->config_id;
    m->config_name = strdup(rq->config_name ? rq->config_name : "");
    m->backup_type = strdup(j->base ? jb_type_name(rq->backup_type) : "FULL");
    m->requested_type = strdup(jb_type_name(rq->backup_type));
    m->base_job = j->base ? strdup(j->base->job_id) : NULL;
    if (!m->tool || !m->job_id || !m->config_name || !m->backup_type || !m->requested_type ||
        (j->base && !m->base_job))
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    m->started_ms = j->t0;
    m->completed_ms = fb_now_ms();
    m->zstd_level = j->cfg->zstd_level;
    m->data_end = arc_writer_offset(j->w);
    ix->job_id = (char *)j->ev->job_id;
    ix->config_id = rq->config_id;
    ix->type = m->backup_type;
    ix->base_job = m->base_job;
    ix->snapshot_ms = m->snapshot_ms;
    ix->completed_ms = m->completed_ms;
    /* Format >= 5: the head, then the spooled chunk records (the manifest hashes the head, which hashes them). */
    ix->version = arc_index_version_of((int)m->format);
    ix->sources = (char **)j->srcs.v; /* borrowed from the chain */
    ix->n_sources = j->srcs.n;
    ix->n_records = j->spool.n;
    ix->n_record_bytes = j->spool.bytes;
    /* The chain's place, for the next backup of captured changes (arc_index.h). */
    if (m->capture) {
        ix->cap_stream = m->capture->stream;
        ix->cap_full = m->job_id;
        ix->cap_start = ix->cap_end = m->capture->lsn;
    } else if (m->changes) {
        ix->cap_stream = m->changes->stream;
        ix->cap_full = m->changes->full_job;
        ix->cap_start = m->changes->start_lsn;
        ix->cap_end = m->changes->end_lsn;
    }
    return FB_OK;
}

/* The chain index and the manifest into the artifact, its trailer, then fsync and the durable rename. */
static fb_code jb_commit(jb_job *j, fb_err *err) {
    fb_code rc;
    if ((rc = arc_clist_spool_flush(&j->spool, err))) return rc;
    if ((rc = arc_index_format(&j->ix, j->ikey, &j->ibuf, &j->ilen, err))) return rc;
    crypto_generichash(j->m.index_blake2b, sizeof j->m.index_blake2b, (const unsigned char *)j->ibuf, j->ilen, NULL,
                       0);
    j->m.has_index_hash = 1;
    if ((rc = arc_manifest_pack(&j->m, &j->mbuf, &j->mlen, err))) return rc;
    if ((rc = arc_writer_set_index(j->w, j->ibuf, j->ilen, err))) return rc;
    arc_writer_set_index_records(j->w, j->spool.fd, j->spool.bytes);
    if ((rc = arc_writer_finish(j->w, j->mbuf, j->mlen, err))) return rc;
    j->res->file_size = (int64_t)j->wf->written;
    stor_wfile_digest(j->wf, j->digest);
    rc = stor_wfile_commit(j->wf, err);
    j->wf = NULL;
    return rc;
}

/* Calls fn for every location of copy-to (a comma-separated list, blanks around names ignored), in order; stops
 * at the first failure. */
typedef fb_code (*jb_root_fn)(jb_job *j, const char *root, fb_err *err);

static fb_code jb_each_copy_root(jb_job *j, jb_root_fn fn, fb_err *err) {
    if (!j->cfg->copy_to || !*j->cfg->copy_to) return FB_OK;
    char *list = strdup(j->cfg->copy_to), *save = NULL;
    fb_code rc = list ? FB_OK : fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    for (char *root = list ? strtok_r(list, ",", &save) : NULL; root && !rc; root = strtok_r(NULL, ",", &save)) {
        while (*root == ' ') root++;
        if (*root) rc = fn(j, root, err);
    }
    free(list);
    return rc;
}

/* One copy: written, fsynced, renamed, read back and compared. */
static fb_code jb_copy_to(jb_job *j, const char *root, fb_err *err) {
    stor *cs = NULL;
    fb_code rc = stor_open_location(root, j->cfg, &cs, err);
    if (!rc) rc = jb_copy_file(j->st, cs, root, j->rel, j->digest, err);
    stor_free(cs);
    if (rc) return rc;
    j->copies++;
    FB_INFO("job=%s copy %lld: \"%s/%s\" checked (BLAKE2b of %lld bytes)", j->ev->job_id, (long long)j->copies, root,
            j->rel, (long long)j->res->file_size);
    return FB_OK;
}

/* Retention in one location (st, named root); a failure is only logged. Counts only the storage root's removals,
 * as the job's result always has. */
static void jb_prune_in(jb_job *j, stor *st, const char *root) {
    arc_retention_opts po = {j->rq->retention_days, j->prune_now_ms, j->rq->config_id, 0, j->ev->job_id, &j->kr};
    jb_prune_log pl = {j->ev->job_id, root};
    fb_err perr;
    int64_t n = 0;
    if (arc_retention_run(st, j->rq->storage_path, j->ikey, &po, jb_prune_report, &pl, &n, &perr) != FB_OK)
        FB_WARN("job=%s retention in \"%s\": %s", j->ev->job_id, root, perr.msg);
    if (st == j->st) j->pruned += n;
}

static fb_code jb_prune_copy(jb_job *j, const char *root, fb_err *err) {
    stor *cs = NULL;
    fb_err oerr;
    (void)err;
    if (stor_open_location(root, j->cfg, &cs, &oerr) != FB_OK) return FB_OK; /* an unreachable copy: next time */
    jb_prune_in(j, cs, root);
    stor_free(cs);
    return FB_OK;
}

/* Retention, on every location; a failure here does not undo the backup (it is only logged). */
static void jb_retention(jb_job *j) {
    fb_err err;
    if (j->rq->retention_days <= 0) return;
    j->prune_now_ms = fb_now_ms();
    jb_prune_in(j, j->st, j->cfg->storage_root);
    (void)jb_each_copy_root(j, jb_prune_copy, &err);
}

/* The job's result: the artifact and the numbers of what it holds. */
static void jb_result(jb_job *j) {
    job_result *res = j->res;
    snprintf(res->file_path, sizeof res->file_path, "%s", j->rel);
    job_result_set(res, "tables", (int64_t)j->n_rels);
    job_result_set(res, "rows", j->total_rows);
    job_result_set(res, "raw_bytes", j->total_raw);
    job_result_set(res, "schema_bytes", j->m.schema ? j->m.schema->raw_bytes : 0);
    job_result_set(res, "stored_bytes", res->file_size);
    job_result_set(res, "duration_ms", fb_now_ms() - j->t0);
    job_result_set(res, "dump_connections", j->n_conns);
    if (j->rq->backup_type != EV_FULL) {
        job_result_set(res, "ran_as_full", j->base ? 0 : 1);
        job_result_set(res, "tables_referenced", j->n_ref);
        job_result_set(res, "tables_stored", (int64_t)j->n_rels - j->n_ref);
        job_result_set(res, "chunks_reused", j->chunks_reused);
        job_result_set(res, "chunks_stored", j->chunks_stored);
    }
    if (j->cap_on) {
        job_result_set(res, "captured_changes", 1);
        job_result_set(res, "capture_segments", j->cap_st.segments);
        job_result_set(res, "capture_transactions", j->cap_st.transactions);
        job_result_set(res, "capture_bytes", j->cap_st.bytes);
        job_result_set(res, "capture_wait_ms", j->cap_pt.waited_ms);
    }
    if (j->cap_fallback) job_result_set(res, "capture_fallback", 1);
    if (j->rb.reason) { /* a new capture base (job_rebase.h): said in the status, so the record can say it too */
        job_result_set(res, "capture_rebase", (int64_t)j->rb.reason);
        job_result_set(res, "capture_generation", (int64_t)j->rb.gen);
        job_result_set(res, "capture_old_generation", (int64_t)j->rb.old_gen);
        job_result_set(res, "capture_old_slot_dropped", j->rb.old_dropped);
        job_result_set(res, "capture_base_lsn", (int64_t)j->rb.import.lsn); /* < 2^63: WAL positions of this era */
    }
    if (j->copies) job_result_set(res, "copies", j->copies);
    if (j->pruned) job_result_set(res, "pruned", j->pruned);
    FB_INFO("job=%s %s backup done: %zu tables (%lld unchanged, referenced), %lld rows, %lld raw bytes -> %lld stored "
            "(%s) in %lld ms", j->ev->job_id, j->m.backup_type, j->n_rels, (long long)j->n_ref,
            (long long)j->total_rows, (long long)j->total_raw, (long long)res->file_size, j->rel,
            (long long)(fb_now_ms() - j->t0));
}

/* Frees what j holds; an artifact not yet committed is removed (its temporary file), keys are erased. */
static void jb_job_clear(jb_job *j) {
    job_rebase_end(j->cfg, j->ev, &j->rb, 0); /* a new base whose FULL did not commit: its slot is dropped */
    arc_writer_free(j->w);
    stor_wfile_abort(j->wf);
    stor_free(j->st);
    if (j->c) PQfinish(j->c);
    dump_rels_free(j->rels, j->n_rels);
    free(j->mbuf);
    free(j->ibuf);
    for (size_t i = 0; i < j->ix.n_tables; i++) free(j->ix.tables[i].deps);
    free(j->ix.tables); /* its strings are borrowed from m, ev and the chain */
    arc_manifest_clear(&j->m);
    job_chunkmap_free(j->cmap);
    free(j->srcs.v);
    arc_clist_spool_close(&j->spool);
    arc_chain_clear(&j->ch);
    fb_keyring_free(&j->kr);
    fb_signer_wipe(&j->signer);
    sodium_memzero(j->ckey, sizeof j->ckey);
    sodium_memzero(j->pk, sizeof j->pk);
    sodium_memzero(j->ikey, sizeof j->ikey);
}

/* --- made of captured changes (capture/cap_incr.h) ------------------------------------------------------------- */

/* The index's tables are the base's, each pointing where the base's does (stored_in, tag, counts; no chunk
 * records): what a later table-reading INCREMENTAL compares with and retention follows. They describe the data
 * of the chain's FULL, not the tables now; that is what such an INCREMENTAL needs (an equal tag means the FULL's
 * data may be referenced), while the manifest's `capture_changes` says what this backup restores to. */
static fb_code jb_changes_index(jb_job *j, fb_err *err) {
    const arc_index *bx = j->base->ix;
    if (!(j->ix.tables = calloc(bx->n_tables + 1, sizeof *j->ix.tables)))
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < bx->n_tables; i++) {
        arc_index_table *t = &j->ix.tables[i];
        const arc_index_table *b = &bx->tables[i];
        *t = (arc_index_table){.schema = b->schema, .name = b->name, .stored_in = b->stored_in, .rows = b->rows,
                               .raw_bytes = b->raw_bytes};
        memcpy(t->tag, b->tag, sizeof t->tag);
        crypto_generichash(t->rec_blake2b, sizeof t->rec_blake2b, NULL, 0, NULL, 0); /* an empty range */
    }
    j->ix.n_tables = bx->n_tables;
    return arc_clist_spool_open(&j->spool, err);
}

/* Steps 4 to 7 of a backup of captured changes: the point (every commit before the request durable in the chain),
 * the artifact with the chain's segments since the base as its one data segment, the manifest's capture_changes
 * and the index's tables. No table is read. */
static fb_code jb_changes(jb_job *j, fb_err *err) {
    const arc_index *bx = j->base->ix;
    cap_seg_in in = {.stream = bx->cap_stream, .signers = &j->kr}; /* signatures and headers; no key to decrypt */
    arc_seg_info si;
    uint32_t seg = 0;
    arc_capture_changes *ch = j->m.changes = calloc(1, sizeof *j->m.changes);
    if (!ch) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    fb_code rc = cap_incr_wait(j->cfg->pg, j->cap_slot, j->cfg->capture_incr_wait_s * 1000, j->ctx->abort, &j->cap_pt,
                               err);
    if (!rc) rc = stor_create(j->st, j->rel, &j->wf, err);
    j->m.format = ARC_FORMAT_VERSION;
    if (!rc) rc = arc_writer_new_version(j->wf, j->pk, (int)j->cfg->zstd_level, (int)j->m.format, &j->w, err);
    if (!rc) rc = arc_writer_set_signer(j->w, &j->signer, j->ev->job_id, err);
    if (!rc) rc = arc_writer_begin(j->w, &seg, err);
    if (!rc) rc = cap_incr_pack(j->st, j->cap_dir, &in, bx->cap_end, jb_put_writer, j->w, &j->cap_st, err);
    if (!rc) rc = arc_writer_end(j->w, &si, err);
    if (rc) return rc;
    *ch = (arc_capture_changes){.segment = si.segment, .offset = si.offset, .length = si.length,
                                .raw_bytes = si.raw_bytes, .stream = strdup(bx->cap_stream),
                                .slot = strdup(j->cap_slot), .full_job = strdup(bx->cap_full),
                                .start_lsn = bx->cap_end, .end_lsn = j->cap_st.end_lsn,
                                .end_us = j->cap_st.last_commit_us, .segments = j->cap_st.segments};
    memcpy(ch->blake2b, si.blake2b, ARC_HASH_BYTES);
    ch->full_snapshot_ms = arc_chain_find(&j->ch, bx->cap_full)->ix->snapshot_ms; /* jb_capture_plan found it */
    j->m.snapshot_ms = j->cap_pt.now_ms;
    j->m.database = strdup(j->cap_pt.database);
    j->m.server_version = strdup(j->cap_pt.server_version);
    if (!ch->stream || !ch->slot || !ch->full_job || !j->m.database || !j->m.server_version)
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    FB_INFO("job=%s captured changes " CAP_LSN_FMT " to " CAP_LSN_FMT ": %lld segments, %lld transactions, %lld bytes "
            "(waited %lld ms for the capture)", j->ev->job_id, CAP_LSN_ARGS(ch->start_lsn), CAP_LSN_ARGS(ch->end_lsn),
            (long long)ch->segments, (long long)j->cap_st.transactions, (long long)j->cap_st.bytes,
            (long long)j->cap_pt.waited_ms);
    return jb_changes_index(j, err);
}

/* The backup as pgBackRest's cmdBackup reads: named steps, each a function above with one job. */
fb_code job_backup_run(const job_ctx *ctx, job_result *res, fb_err *err) {
    if (ctx->ev->type != EV_BACKUP_REQUESTED)
        return fb_err_set(err, FB_ERR_INTERNAL, "job_backup_run: not a backup event");
    jb_job j = {.ctx = ctx, .cfg = ctx->cfg, .ev = ctx->ev, .rq = &ctx->ev->u.backup, .res = res, .t0 = fb_now_ms()};
    fb_code rc;
    /* 1. Authorised by the database; the request and the settings checked before any side effect. */
    if ((rc = jb_init(&j, err))) goto out;
    /* 2. An artifact of this job that already exists and holds up is the answer: nothing is written. */
    if (jb_reuse_existing(&j)) goto out;
    /* 3. A captured database whose chain cannot continue: this backup is its new base. Else the base of an
     * INCREMENTAL / DIFFERENTIAL and the chain's chunk map. */
    if ((rc = jb_rebase(&j, err)) || (rc = jb_base(&j, err))) goto out;
    if (j.cap_on) {
        /* 4-7 of a backup made of captured changes: the chain's segments since the base, no table read. */
        if ((rc = jb_changes(&j, err))) goto out;
    } else {
        /* 4. One snapshot for everything. */
        if ((rc = jb_snapshot(&j, err))) goto out;
        /* 5. The tables, resolved and locked in it. */
        if ((rc = jb_table_list(&j, err))) goto out;
        /* 6. The artifact, its schema archive first. */
        if ((rc = jb_artifact_open(&j, err))) goto out;
        /* 7. Every table: referenced, stored whole or assembled; then the snapshot ends. */
        if ((rc = jb_dump(&j, err))) goto out;
    }
    /* 8. Manifest and chain index, trailer, durable rename. */
    if ((rc = jb_manifest(&j, err)) || (rc = jb_commit(&j, err))) goto out;
    job_rebase_end(j.cfg, j.ev, &j.rb, 1); /* the new base committed: its slot stays, the old one goes */
    /* 9. Copies, each read back and compared. */
    if ((rc = jb_each_copy_root(&j, jb_copy_to, err))) goto out;
    /* 10. Retention on every location, then the result. */
    jb_retention(&j);
    jb_result(&j);
out:
    jb_job_clear(&j);
    return rc;
}
