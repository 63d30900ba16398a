/* cap_incr: backups made of captured changes (see cap_incr.h). */
#include "capture/cap_incr.h"

#include <dirent.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "artifact/arc_index.h"
#include "artifact/arc_open.h"
#include "capture/cap_base.h"
#include "capture/cap_pgoutput.h"
#include "capture/cap_slot.h"
#include "common/fb_log.h"
#include "pg/pgx.h"

#define CI_HEAD_BYTES (CAP_SEG_NAME_MAX + 8)
#define CI_POLL_MS 10

static int64_t ci_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- the point -------------------------------------------------------------------------------------------------- */

/* The request's WAL position, time and database, on c. */
static fb_code ci_start(PGconn *c, cap_incr_point *p, fb_err *err) {
    PGresult *r = PQexec(c, "SELECT pg_catalog.pg_current_wal_lsn()::text, "
                            "(extract(epoch FROM pg_catalog.now()) * 1000)::int8, pg_catalog.current_database(), "
                            "pg_catalog.current_setting('server_version')");
    fb_code rc = pgx_check(c, r, PGRES_TUPLES_OK, "reading the WAL position of the backup's start", err);
    if (rc) return rc;
    if (cap_lsn_parse(PQgetvalue(r, 0, 0), &p->wal_lsn) != 0)
        rc = fb_err_set(err, FB_ERR_PG, "pg_current_wal_lsn() returned \"%s\"", PQgetvalue(r, 0, 0));
    p->now_ms = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    snprintf(p->database, sizeof p->database, "%s", PQgetvalue(r, 0, 2));
    snprintf(p->server_version, sizeof p->server_version, "%s", PQgetvalue(r, 0, 3));
    PQclear(r);
    return rc;
}

/* Asks the capture to write what it holds now (cap_pgoutput.h, CAP_FLUSH_PREFIX), after the position was read, so
 * the wait is one segment write rather than up to capture-flush-s. Transactional, so that its commit flushes the
 * WAL at once (a non-transactional message waits for the WAL writer, wal_writer_delay, before the walsender can
 * decode it). A server that refuses the message only makes the wait longer: a warning, not a failure. */
static fb_code ci_ask_flush(PGconn *c, fb_err *err) {
    (void)err;
    PGresult *r = PQexec(c, "SELECT pg_catalog.pg_logical_emit_message(true, '" CAP_FLUSH_PREFIX "', '')");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        FB_WARN("could not ask the capture to flush now (%s): waiting for its flush deadline (capture-flush-s)",
                PQresultErrorMessage(r));
    PQclear(r);
    return FB_OK;
}

fb_code cap_incr_wait(const char *conninfo, const char *slot, int64_t wait_ms, const fb_flag *abort, cap_incr_point *p,
                      fb_err *err) {
    memset(p, 0, sizeof *p);
    fb_code rc = cap_base_slot_check(conninfo, slot, err);
    if (rc) return rc;
    PGconn *c = pgx_connect(conninfo, "fusion-backup backup (captured changes)", err);
    if (!c) return err->code ? err->code : FB_ERR_TRANSIENT;
    rc = ci_start(c, p, err);
    if (!rc) rc = ci_ask_flush(c, err);
    int64_t t0 = ci_mono_ms();
    cap_slot_health h;
    while (!rc) {
        if ((rc = cap_slot_health_read(c, slot, &h, err)) || (rc = cap_slot_usable(&h, p->database, slot, err))) break;
        p->confirmed_lsn = h.confirmed_lsn;
        p->waited_ms = ci_mono_ms() - t0;
        if (h.confirmed_lsn >= p->wal_lsn) break;
        if (abort && *abort) rc = fb_err_set(err, FB_ERR_ABORTED, "stopped while waiting for the capture");
        else if (p->waited_ms >= wait_ms)
            rc = fb_err_set(err, FB_ERR_TRANSIENT, "the capture of slot \"%s\" has not made the changes up to "
                            CAP_LSN_FMT " (the WAL position when this backup started) durable within %lld s: its "
                            "slot is confirmed up to " CAP_LSN_FMT ". Is `fusion-backup capture` (or a worker with "
                            "capture-databases) running and keeping up? Nothing was written; the backup can be "
                            "retried (capture-incr-wait-s sets the wait)", slot, CAP_LSN_ARGS(p->wal_lsn),
                            (long long)(wait_ms / 1000), CAP_LSN_ARGS(h.confirmed_lsn));
        else {
            struct timespec ts = {0, CI_POLL_MS * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    PQfinish(c);
    return rc;
}

/* --- the pack --------------------------------------------------------------------------------------------------- */

typedef struct ci_pack {
    stor *st;
    const char *dir;
    cap_incr_put_fn put;
    void *opaque;
    cap_incr_stats *s;
    unsigned char *buf;
    size_t cap;
} ci_pack;

static void ci_be64(unsigned char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (unsigned char)(v & 0xff);
}

static uint64_t ci_get_be64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}

/* One verified segment of the chain walk: its file's bytes, framed, into the pack. */
static fb_code ci_pack_segment(void *opaque, const cap_segment *seg, fb_err *err) {
    ci_pack *k = opaque;
    char rel[1200];
    stor_rfile *f = NULL;
    snprintf(rel, sizeof rel, "%s/%s", k->dir, seg->name);
    fb_code rc = stor_open(k->st, rel, &f, err);
    if (!rc && f->size > k->cap) {
        unsigned char *nb = realloc(k->buf, f->size);
        if (!nb) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory copying %s", seg->name);
        else k->buf = nb, k->cap = f->size;
    }
    uint64_t size = f ? f->size : 0;
    if (!rc) rc = stor_rfile_pread(f, k->buf, size, 0, err);
    stor_rfile_close(f);
    unsigned char head[CI_HEAD_BYTES] = {0};
    memcpy(head, seg->name, strnlen(seg->name, CAP_SEG_NAME_MAX - 1));
    ci_be64(head + CAP_SEG_NAME_MAX, size);
    if (!rc) rc = k->put(k->opaque, head, sizeof head, err);
    if (!rc) rc = k->put(k->opaque, k->buf, size, err);
    if (rc) return rc;
    k->s->segments++;
    k->s->transactions += seg->ntxn;
    k->s->bytes += (int64_t)size;
    if (seg->ntxn && seg->last_commit_us > k->s->last_commit_us) k->s->last_commit_us = seg->last_commit_us;
    return FB_OK;
}

fb_code cap_incr_pack(stor *st, const char *dir, const cap_seg_in *in, uint64_t start_lsn, cap_incr_put_fn put,
                      void *opaque, cap_incr_stats *out, fb_err *err) {
    memset(out, 0, sizeof *out);
    ci_pack k = {.st = st, .dir = dir, .put = put, .opaque = opaque, .s = out};
    fb_code rc = put(opaque, CAP_INCR_PACK_MAGIC, sizeof CAP_INCR_PACK_MAGIC - 1, err);
    if (!rc) rc = cap_segment_chain(st, dir, in, start_lsn, ci_pack_segment, &k, &out->end_lsn, err);
    free(k.buf);
    return rc;
}

/* --- unpacking -------------------------------------------------------------------------------------------------- */

typedef struct ci_unpack {
    stor *st;
    const char *dir;
    uint64_t at, end;                 /* where the next segment must start; where the last must end */
    int64_t segments;
    unsigned char head[CI_HEAD_BYTES];
    size_t have;
    int magic_done;
    stor_wfile *wf;                   /* the segment being written */
    uint64_t left;
} ci_unpack;

/* A segment's frame head: its name continues the chain inside the pack's range; its file is created. */
static fb_code ci_unpack_head(ci_unpack *u, fb_err *err) {
    char name[CAP_SEG_NAME_MAX], rel[1300];
    uint64_t a = 0, b = 0, size = ci_get_be64(u->head + CAP_SEG_NAME_MAX);
    memcpy(name, u->head, CAP_SEG_NAME_MAX);
    if (name[CAP_SEG_NAME_MAX - 1] || cap_segment_parse_name(name, &a, &b) != 0)
        return fb_err_set(err, FB_ERR_FORMAT, "captured changes: entry %lld is not a change segment's name",
                          (long long)u->segments + 1);
    if (a != u->at || b > u->end)
        return fb_err_set(err, FB_ERR_VERIFY, "captured changes: segment %s does not continue the chain at "
                          CAP_LSN_FMT " inside the backup's range (to " CAP_LSN_FMT ")", name, CAP_LSN_ARGS(u->at),
                          CAP_LSN_ARGS(u->end));
    if (size < CAP_SEG_HEADER_BYTES + CAP_SEG_TRAILER_BYTES || size > CAP_SEG_MAX_PAYLOAD * 2)
        return fb_err_set(err, FB_ERR_FORMAT, "captured changes: segment %s has %" PRIu64 " bytes", name, size);
    snprintf(rel, sizeof rel, "%s%s%s", u->dir, *u->dir ? "/" : "", name);
    fb_code rc = stor_create(u->st, rel, &u->wf, err);
    if (rc) return rc;
    u->left = size;
    u->at = b;
    u->segments++;
    u->have = 0;
    return FB_OK;
}

static fb_code ci_unpack_put(void *opaque, const void *buf, size_t len, fb_err *err) {
    ci_unpack *u = opaque;
    const unsigned char *p = buf;
    fb_code rc = FB_OK;
    while (len && !rc) {
        if (u->wf) {
            size_t n = len < u->left ? len : (size_t)u->left;
            rc = stor_wfile_write(u->wf, p, n, err);
            p += n, len -= n, u->left -= n;
            if (!rc && !u->left) {
                rc = stor_wfile_commit(u->wf, err);
                u->wf = NULL;
            }
            continue;
        }
        size_t need = u->magic_done ? CI_HEAD_BYTES : sizeof CAP_INCR_PACK_MAGIC - 1;
        size_t n = need - u->have < len ? need - u->have : len;
        memcpy(u->head + u->have, p, n);
        p += n, len -= n, u->have += n;
        if (u->have < need) continue;
        if (u->magic_done) {
            rc = ci_unpack_head(u, err);
        } else if (memcmp(u->head, CAP_INCR_PACK_MAGIC, need) != 0) {
            rc = fb_err_set(err, FB_ERR_FORMAT, "captured changes: not a pack of change segments (bad magic)");
        } else {
            u->magic_done = 1;
            u->have = 0;
        }
    }
    return rc;
}

fb_code cap_incr_unpack(arc_reader *r, stor *out_st, const char *dir, fb_err *err) {
    const arc_capture_changes *ch = arc_reader_manifest(r)->changes;
    if (!ch) return fb_err_set(err, FB_ERR_USAGE, "this backup holds no captured changes");
    ci_unpack u = {.st = out_st, .dir = dir, .at = ch->start_lsn, .end = ch->end_lsn};
    fb_code rc = arc_reader_read_changes(r, ci_unpack_put, &u, err);
    stor_wfile_abort(u.wf);
    if (!rc && (!u.magic_done || u.have || u.wf || u.at != ch->end_lsn || u.segments != ch->segments))
        rc = fb_err_set(err, FB_ERR_VERIFY, "captured changes of backup %s: the pack ends at " CAP_LSN_FMT " after %lld "
                        "segments, its manifest says " CAP_LSN_FMT " and %lld", arc_reader_manifest(r)->job_id,
                        CAP_LSN_ARGS(u.at), (long long)u.segments, CAP_LSN_ARGS(ch->end_lsn), (long long)ch->segments);
    return rc;
}

/* --- the chain of backups down to the FULL ---------------------------------------------------------------------- */

/* Opens job's artifact, signed for that job: in path's folder, then in each chain folder. */
static fb_code ci_open(const char *path, const char *job, const char *sk_file, const char *const *dirs, size_t n_dirs,
                       const arc_trust *trust, stor_rfile **f, arc_reader **r, fb_err *err) {
    const char *slash = strrchr(path, '/');
    char folder[1100], cand[1300];
    snprintf(folder, sizeof folder, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    arc_trust t = *trust;
    t.job_id = job;
    fb_code rc = FB_ERR_NOTFOUND;
    for (size_t i = 0; i <= n_dirs; i++) {
        if ((rc = arc_artifact_name(i ? dirs[i - 1] : folder, job, cand, sizeof cand, err))) return rc;
        rc = arc_open_chain(cand, sk_file, dirs, n_dirs, &t, f, r, err);
        if (rc != FB_ERR_NOTFOUND && rc != FB_ERR_IO) return rc;
    }
    return fb_err_set(err, FB_ERR_NOTFOUND, "backup %s, which the captured changes need, is neither beside \"%s\" nor "
                      "in any --chain-dir (%zu given): nothing was restored", job, path, n_dirs);
}

/* One backup of changes on the walk: same stream, FULL and FULL digest as the top one, ending at want_end. */
static fb_code ci_link_check(const arc_manifest *m, const arc_capture_changes *top, uint64_t want_end, fb_err *err) {
    const arc_capture_changes *ch = m->changes;
    if (!ch || strcmp(ch->stream, top->stream) != 0 || strcmp(ch->full_job, top->full_job) != 0 ||
        ch->full_snapshot_ms != top->full_snapshot_ms)
        return fb_err_set(err, FB_ERR_VERIFY, "backup %s, a link of the chain of captured changes, is not one of "
                          "stream %s on FULL %s: refusing to mix chains", m->job_id, top->stream, top->full_job);
    if (ch->end_lsn != want_end || !m->base_job)
        return fb_err_set(err, FB_ERR_VERIFY, "backup %s holds captured changes up to " CAP_LSN_FMT ", the backup "
                          "after it starts at " CAP_LSN_FMT ": a gap or an overlap", m->job_id,
                          CAP_LSN_ARGS(ch->end_lsn), CAP_LSN_ARGS(want_end));
    return FB_OK;
}

/* The FULL at the bottom: the capture base of the same stream, at the first range's start, the very artifact. */
static fb_code ci_full_check(const arc_manifest *m, const arc_capture_changes *top, uint64_t want_start, fb_err *err) {
    if (!m->capture || strcmp(m->backup_type, "FULL") != 0 || strcmp(m->capture->stream, top->stream) != 0)
        return fb_err_set(err, FB_ERR_VERIFY, "backup %s is not the capture base FULL of stream %s that the captured "
                          "changes were taken on", m->job_id, top->stream);
    if (m->capture->lsn != want_start)
        return fb_err_set(err, FB_ERR_VERIFY, "the captured changes start at " CAP_LSN_FMT ", the base FULL %s's "
                          "chain at " CAP_LSN_FMT ": a gap or an overlap", CAP_LSN_ARGS(want_start), m->job_id,
                          CAP_LSN_ARGS(m->capture->lsn));
    if (m->snapshot_ms != top->full_snapshot_ms)
        return fb_err_set(err, FB_ERR_VERIFY, "backup %s is not the base FULL the captured changes were taken on (its "
                          "snapshot time differs from the one recorded): another artifact under its name?", m->job_id);
    return FB_OK;
}

fb_code cap_incr_collect(const char *path, arc_reader *r, const char *secret_key_file, const char *const *chain_dirs,
                         size_t n_dirs, const arc_trust *trust, stor *out_st, const char *dir, stor_rfile **full_f,
                         arc_reader **full_r, cap_incr_chain *out, fb_err *err) {
    const arc_capture_changes *top = arc_reader_manifest(r)->changes;
    memset(out, 0, sizeof *out);
    *full_f = NULL;
    *full_r = NULL;
    if (!top) return fb_err_set(err, FB_ERR_USAGE, "\"%s\" holds no captured changes", path);
    out->end_lsn = top->end_lsn;
    out->end_us = top->end_us;
    snprintf(out->full_job, sizeof out->full_job, "%s", top->full_job);
    arc_reader *cur = r;
    stor_rfile *cf = NULL;
    uint64_t want = top->end_lsn;
    fb_code rc = FB_OK;
    for (;;) {
        const arc_manifest *m = arc_reader_manifest(cur);
        if ((rc = ci_link_check(m, top, want, err)) || (rc = cap_incr_unpack(cur, out_st, dir, err))) break;
        out->links++;
        out->segments += m->changes->segments;
        want = m->changes->start_lsn;
        char next[130];
        snprintf(next, sizeof next, "%s", m->base_job);
        if (strcmp(next, top->full_job) == 0) break;
        if (strcmp(m->backup_type, "INCREMENTAL") != 0 || out->links >= CAP_INCR_MAX_LINKS) {
            rc = fb_err_set(err, FB_ERR_VERIFY, "backup %s (%s) of captured changes is not on FULL %s", m->job_id,
                            m->backup_type, top->full_job);
            break;
        }
        if (cur != r) arc_reader_free(cur), stor_rfile_close(cf);
        cur = NULL, cf = NULL;
        if ((rc = ci_open(path, next, secret_key_file, chain_dirs, n_dirs, trust, &cf, &cur, err))) break;
    }
    if (cur != r) arc_reader_free(cur), stor_rfile_close(cf);
    if (!rc) rc = ci_open(path, top->full_job, secret_key_file, chain_dirs, n_dirs, trust, full_f, full_r, err);
    if (!rc) rc = ci_full_check(arc_reader_manifest(*full_r), top, want, err);
    if (!rc) {
        out->base_lsn = want;
        if (!out->end_us) out->end_us = arc_reader_manifest(*full_r)->capture->time_us;
    } else if (*full_r) {
        arc_reader_free(*full_r), stor_rfile_close(*full_f);
        *full_r = NULL, *full_f = NULL;
    }
    return rc;
}

/* --- the scratch folder ----------------------------------------------------------------------------------------- */

fb_code cap_incr_scratch_open(char *path, size_t cap, stor **st, fb_err *err) {
    const char *tmpdir = getenv("TMPDIR");
    *st = NULL;
    if ((size_t)snprintf(path, cap, "%s/fusion-backup-changes-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp") >= cap ||
        !mkdtemp(path)) {
        path[0] = '\0';
        return fb_err_set(err, FB_ERR_IO, "cannot create a private folder in $TMPDIR for the captured changes");
    }
    return stor_posix_new(path, st, err);
}

void cap_incr_scratch_remove(char *path) {
    char sub[1300];
    if (!path[0]) return;
    snprintf(sub, sizeof sub, "%s/" CAP_INCR_SCRATCH_DIR, path);
    DIR *d = opendir(sub);
    for (struct dirent *e = d ? readdir(d) : NULL; e; e = readdir(d)) {
        char p[1600];
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", sub, e->d_name);
        unlink(p);
    }
    if (d) closedir(d);
    rmdir(sub);
    rmdir(path);
    path[0] = '\0';
}
