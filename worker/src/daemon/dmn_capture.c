/* dmn_capture: see dmn_capture.h. */
#include "daemon/dmn_capture.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "artifact/arc_chain.h"
#include "artifact/arc_index.h"
#include "artifact/arc_key.h"
#include "capture/cap_capture.h"
#include "capture/cap_rebase.h"
#include "capture/cap_slot.h"
#include "capture/cap_stream.h"
#include "common/fb_flag.h"
#include "common/fb_log.h"
#include "daemon/dmn_metrics.h"
#include "pg/pgx.h"
#include "storage/stor.h"

#define DC_LOCK_CLASS "1178813264" /* 'F' 'C' 'A' 'P': apart from the other advisory locks of the project */
#define DC_PING_MS 1000
#define DC_LEASE_MS 5000
#define DC_IDLE_TIMEOUT_S 15
#define DC_STOPPED_RECHECK_S 30
#define DC_MAX_DBS 64
#define DC_BASE_WAIT_MAX_MS 30000 /* a newer slot whose base FULL runs: its folder's indexes read at most this often */

typedef struct dc_db {
    struct dmn_capture *owner;
    char db[128];
    unsigned gen;                  /* the slot generation streamed (cap_rebase.h); 1: capture-slot itself */
    char slot[CAP_NAME_MAX + 1];
    char stream[CAP_SEG_STREAM_MAX + 1];
    char dir[1024];
    pthread_t thread;
    int started;
    PGconn *lock;        /* the advisory lock's session */
    int leader;
    int64_t last_ping_ms; /* last successful ping of the lock session (the lease) */
    int64_t last_poll_ms;
    int64_t last_follow_ms;
    int64_t follow_every_ms;       /* capture-lock-retry-s; doubles (to DC_BASE_WAIT_MAX_MS) while a base is taken */
    cap_slot_lag lag;
    const char *state;   /* standby | streaming | retrying | stopped */
} dc_db;

struct dmn_capture {
    const fb_config *cfg;
    const fb_signer *signer;
    fb_flag *signals;
    char app_name[200];
    unsigned char pk[ARC_PK_BYTES], ikey[ARC_INDEX_KEY_BYTES];
    fb_keyring signers;
    stor *st;
    dc_db dbs[DC_MAX_DBS];
    size_t n;
};

static int64_t dc_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int dc_stopping(const dc_db *d) { return *d->owner->signals != 0; }

/* Sleeps up to ms, waking early when the worker stops. */
static void dc_sleep(const dc_db *d, int64_t ms) {
    for (int64_t t = 0; t < ms && !dc_stopping(d); t += 100) usleep(100000);
}

/* ---- the lock session ---------------------------------------------------------------------------------------- */

/* An ordinary connection that the server ends when it goes idle for DC_IDLE_TIMEOUT_S (the leader pings every
 * second) and that gives up on an unanswered send within seconds (a partition), so a lost leader's lock frees
 * itself. */
static PGconn *dc_connect(const dc_db *d, fb_err *err) {
    char opts[64], tcp[16];
    snprintf(opts, sizeof opts, "-c idle_session_timeout=%ds", DC_IDLE_TIMEOUT_S);
    snprintf(tcp, sizeof tcp, "%d", DC_LEASE_MS - 1000);
    const char *kw[] = {"dbname", "dbname", "application_name", "options", "tcp_user_timeout", "keepalives",
                        "keepalives_idle", "keepalives_interval", "keepalives_count", "connect_timeout", NULL};
    const char *val[] = {d->owner->cfg->pg, d->db, d->owner->app_name, opts, tcp, "1", "5", "2", "2", "10", NULL};
    PGconn *c = PQconnectdbParams(kw, val, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        fb_err_set(err, FB_ERR_TRANSIENT, "could not connect to database \"%s\" for its capture lock: %s", d->db,
                   c ? PQerrorMessage(c) : "out of memory");
        PQfinish(c);
        return NULL;
    }
    return c;
}

static void dc_lock_lost(dc_db *d, const char *why) {
    if (d->leader) FB_ERROR("capture %s: lost the lead (%s): stopping this worker's capture", d->stream, why);
    PQfinish(d->lock);
    d->lock = NULL;
    d->leader = 0;
}

/* One boolean query on the lock session; -1 when the session failed (then it is closed). */
static int dc_bool(dc_db *d, const char *sql) {
    const char *p[1] = {d->owner->cfg->capture_slot};
    PGresult *r = PQexecParams(d->lock, sql, 1, NULL, p, NULL, NULL, 0);
    int v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? PQgetvalue(r, 0, 0)[0] == 't' : -1;
    if (v < 0) FB_DEBUG("capture %s: lock session: %s", d->stream, PQerrorMessage(d->lock));
    PQclear(r);
    if (v < 0) dc_lock_lost(d, "its lock session failed");
    return v;
}

static void dc_ping(dc_db *d) {
    if (d->lock && dc_bool(d, "SELECT $1::text IS NOT NULL") == 1) d->last_ping_ms = dc_now_ms();
}

/* The fence cap_capture asks before every segment write: non-zero once the lease has run out. */
static int dc_fence(void *opaque) {
    dc_db *d = opaque;
    if (d->lock && dc_now_ms() - d->last_ping_ms >= DC_LEASE_MS / 2) dc_ping(d);
    return !d->lock || !d->leader || dc_now_ms() - d->last_ping_ms >= DC_LEASE_MS;
}

/* Slot state for the metrics, on the lock session, every capture-lock-retry-s. */
static void dc_poll(dc_db *d) {
    int64_t now = dc_now_ms();
    if (!d->lock || now - d->last_poll_ms < d->owner->cfg->capture_lock_retry_s * 1000) return;
    d->last_poll_ms = now;
    cap_slot_health h;
    fb_err err;
    if (cap_slot_health_read(d->lock, d->slot, &h, &err) != FB_OK) {
        FB_WARN("capture %s: could not read the slot's state: %s", d->stream, err.msg);
        if (PQstatus(d->lock) != CONNECTION_OK) dc_lock_lost(d, "its lock session failed");
        return;
    }
    double lag_s = cap_slot_lag_seconds(&d->lag, &h, now);
    dmn_metrics_capture(d->db, d->slot, d->leader, d->state, &h, lag_s);
}

/* ---- slot generations (cap_rebase.h) ------------------------------------------------------------------------ */

/* Streams generation gen from now on: its slot, stream id and folder, all derived from capture-slot. */
static fb_code dc_set_gen(dc_db *d, unsigned gen, fb_err *err) {
    const fb_config *cfg = d->owner->cfg;
    fb_code rc = cap_rebase_slot_name(cfg->capture_slot, gen, d->slot, err);
    if (rc == FB_OK)
        rc = cap_capture_names(cfg->capture_storage_path, d->db, d->slot, d->stream, d->dir, sizeof d->dir, err);
    if (rc == FB_OK) d->gen = gen;
    return rc;
}

/* 1 when the capture folder holds a usable base FULL of generation gen's stream (the new base committed). */
static int dc_has_base(dc_db *d, unsigned gen) {
    const fb_config *cfg = d->owner->cfg;
    char slot[CAP_NAME_MAX + 1], stream[CAP_SEG_STREAM_MAX + 1], dir[1024];
    arc_chain ch = {0};
    fb_err err;
    int found = 0;
    if (cap_rebase_slot_name(cfg->capture_slot, gen, slot, &err) ||
        cap_capture_names(cfg->capture_storage_path, d->db, slot, stream, dir, sizeof dir, &err) ||
        arc_chain_load(d->owner->st, cfg->capture_storage_path, d->owner->ikey, &d->owner->signers, &ch, &err)) {
        FB_DEBUG("capture %s: generation %u: %s", d->stream, gen, err.msg);
        return 0;
    }
    for (size_t i = 0; i < ch.n && !found; i++)
        found = arc_chain_usable(&ch.e[i]) && strcmp(ch.e[i].ix->type, "FULL") == 0 && ch.e[i].ix->cap_stream &&
                strcmp(ch.e[i].ix->cap_stream, stream) == 0;
    arc_chain_clear(&ch);
    return found;
}

static int dc_follow_due(const dc_db *d) {
    int64_t every = d->owner->cfg->capture_lock_retry_s * 1000;
    return dc_now_ms() - d->last_follow_ms >= (d->follow_every_ms > every ? d->follow_every_ms : every);
}

/* The newest slot generation on the database when it is newer than the one streamed and its base FULL has
 * committed (never before: a base that fails drops its slot, which must not be streamed then; never back to an
 * older one); 0 otherwise. Asked at most every capture-lock-retry-s. */
static unsigned dc_newer(dc_db *d) {
    unsigned newest = 0;
    fb_err err;
    if (!d->lock || !dc_follow_due(d)) return 0;
    d->last_follow_ms = dc_now_ms();
    if (cap_rebase_newest_slot(d->lock, d->owner->cfg->capture_slot, &newest, NULL, &err) != FB_OK) {
        FB_WARN("capture %s: could not list the database's slots: %s", d->stream, err.msg);
        return 0;
    }
    if (newest <= d->gen) {
        d->follow_every_ms = 0;
        return 0;
    }
    if (dc_has_base(d, newest)) return newest;
    /* Its base FULL is being taken (or was interrupted): the folder's indexes are read less and less often. */
    int64_t every = d->owner->cfg->capture_lock_retry_s * 1000;
    d->follow_every_ms = d->follow_every_ms < every ? 2 * every : 2 * d->follow_every_ms;
    if (d->follow_every_ms > DC_BASE_WAIT_MAX_MS) d->follow_every_ms = DC_BASE_WAIT_MAX_MS;
    return 0;
}

/* Moves to generation newest (no capture may be open: it borrows the names). 1 when it moved. */
static int dc_move(dc_db *d, unsigned newest) {
    fb_err err;
    char old_slot[CAP_NAME_MAX + 1], old_stream[CAP_SEG_STREAM_MAX + 1];
    snprintf(old_slot, sizeof old_slot, "%s", d->slot);
    snprintf(old_stream, sizeof old_stream, "%s", d->stream);
    if (dc_set_gen(d, newest, &err) != FB_OK) {
        FB_ERROR("capture %s: cannot follow slot generation %u: %s", d->stream, newest, err.msg);
        return 0;
    }
    FB_WARN("capture %s: following the new capture base: slot %s (generation %u) into %s; chain %s (slot %s) is no "
            "longer the current one", d->db, d->slot, d->gen, d->dir, old_stream, old_slot);
    dmn_metrics_capture_stopped(d->db, old_slot, 0);
    dmn_metrics_capture_leader(d->db, old_slot, 0);
    dmn_metrics_capture_leader(d->db, d->slot, d->leader);
    d->lag = (cap_slot_lag){0};
    d->follow_every_ms = 0;
    return 1;
}

/* dc_newer, then dc_move: for when no capture is open. */
static int dc_follow(dc_db *d) {
    unsigned newest = dc_newer(d);
    return newest && dc_move(d, newest);
}

/* ---- leading ------------------------------------------------------------------------------------------------- */

static fb_code dc_begin(dc_db *d, cap_stream **s, cap_capture **c, fb_err *err) {
    const fb_config *cfg = d->owner->cfg;
    cap_capture_opts o = {.st = d->owner->st, .dir = d->dir, .signers = &d->owner->signers,
                          .flush_ms = (int)cfg->capture_flush_s * 1000, .fence = dc_fence, .fence_opaque = d};
    o.out.stream = d->stream;
    o.out.pk = d->owner->pk;
    o.out.signer = d->owner->signer;
    o.out.zstd_level = (int)cfg->zstd_level;
    uint64_t base = 0;
    fb_code rc = cap_stream_open_db(cfg->pg, d->db, d->owner->app_name, s, err);
    if (rc == FB_OK) rc = cap_capture_base(o.st, d->dir, *s, d->slot, &base, err);
    if (rc == FB_OK) rc = cap_capture_begin(*s, &o, d->slot, cfg->capture_publication, base, c, err);
    return rc;
}

static void dc_end(cap_stream **s, cap_capture **c) {
    cap_capture_free(*c);
    cap_stream_free(*s);
    *c = NULL;
    *s = NULL;
}

/* A condition no retry soon can fix (the slot is gone or lost, the chain ended, a bad setting). */
static void dc_stopped(dc_db *d, const fb_err *err) {
    d->state = "stopped";
    FB_ERROR("capture %s (slot %s): capture stopped: %s (checked again every %d s; a backup of the database's "
             "configuration takes the new base by itself, and this capture follows its slot)", d->stream, d->slot,
             err->msg, DC_STOPPED_RECHECK_S);
    dmn_metrics_capture_stopped(d->db, d->slot, 1);
    d->last_poll_ms = 0;
    for (int64_t t0 = dc_now_ms(); d->lock && !dc_stopping(d) && dc_now_ms() - t0 < DC_STOPPED_RECHECK_S * 1000;) {
        dc_sleep(d, DC_PING_MS);
        dc_ping(d);
        dc_poll(d);
        if (dc_follow(d)) break; /* a new base: stream it now */
    }
}

/* Runs the capture while this worker leads: until the worker stops or the lock session is lost. */
static void dc_lead(dc_db *d) {
    cap_stream *s = NULL;
    cap_capture *c = NULL;
    fb_err err;
    int pause_s = 1;
    d->last_ping_ms = dc_now_ms();
    while (d->leader && !dc_stopping(d)) {
        if (!c) (void)dc_follow(d);
        fb_code rc = c ? cap_capture_step(c, 500, &err) : dc_begin(d, &s, &c, &err);
        if (dc_now_ms() - d->last_ping_ms >= DC_PING_MS) dc_ping(d);
        dc_poll(d);
        unsigned newer = rc == FB_OK && c ? dc_newer(d) : 0;
        if (newer) {
            /* A newer generation has its base: this chain is no longer the current one. What is pending is made
             * durable in it first (the capture borrows this chain's names, so they change only after dc_end). */
            if (!dc_fence(d) && cap_capture_flush(c, &err) != FB_OK)
                FB_WARN("capture %s: final flush of the older generation: %s", d->stream, err.msg);
            dc_end(&s, &c);
            (void)dc_move(d, newer);
            continue;
        }
        if (rc == FB_OK) {
            d->state = "streaming";
            dmn_metrics_capture_stopped(d->db, d->slot, 0);
            pause_s = 1;
            continue;
        }
        dc_end(&s, &c);
        if (rc == FB_ERR_ABORTED) break; /* the fence: leadership lost */
        if (rc == FB_ERR_TRANSIENT) {
            d->state = "retrying";
            FB_WARN("capture %s: %s; retrying in %d s (the chain in storage says where to resume)", d->stream, err.msg,
                    pause_s);
            for (int i = 0; i < pause_s && d->lock && !dc_stopping(d); i++) {
                dc_sleep(d, 1000);
                dc_ping(d);
            }
            pause_s = pause_s < 16 ? pause_s * 2 : 30;
        } else {
            dc_stopped(d, &err);
        }
    }
    if (c && d->leader && !dc_fence(d) && cap_capture_flush(c, &err) != FB_OK) /* stopping: pending made durable */
        FB_WARN("capture %s: final flush: %s (the slot still holds what was not written)", d->stream, err.msg);
    if (c) FB_INFO("capture %s stopped: chain ends at " CAP_LSN_FMT, d->stream, CAP_LSN_ARGS(cap_capture_chain_end(c)));
    dc_end(&s, &c);
}

static void *dc_thread(void *arg) {
    dc_db *d = arg;
    fb_err err;
    int64_t last_warn = 0;
    while (!dc_stopping(d)) {
        if (!d->lock && !(d->lock = dc_connect(d, &err))) {
            if (dc_now_ms() - last_warn > 60000) {
                FB_WARN("capture %s: %s", d->stream, err.msg);
                last_warn = dc_now_ms();
            }
            dc_sleep(d, d->owner->cfg->capture_lock_retry_s * 1000);
            continue;
        }
        int got = dc_bool(d, "SELECT pg_catalog.pg_try_advisory_lock(" DC_LOCK_CLASS ", pg_catalog.hashtext($1))");
        if (got == 1) {
            d->leader = 1;
            FB_INFO("capture %s: this worker leads the capture of database %s (advisory lock taken)", d->stream, d->db);
            dmn_metrics_capture_leader(d->db, d->slot, 1);
            dc_lead(d);
            dmn_metrics_capture_leader(d->db, d->slot, 0);
            if (d->lock && d->leader) { /* stopping: closing the session frees the lock for the next leader */
                d->leader = 0;
                FB_INFO("capture %s: releasing the capture lock", d->stream);
                dc_lock_lost(d, "stopping");
            }
            d->leader = 0;
            continue;
        }
        d->state = "standby";
        dc_poll(d);
        dc_sleep(d, d->owner->cfg->capture_lock_retry_s * 1000);
    }
    return NULL;
}

/* ---- start and stop ------------------------------------------------------------------------------------------ */

static fb_code dc_setup(dmn_capture *c, fb_err *err) {
    const fb_config *cfg = c->cfg;
    fb_code rc = arc_key_load_public(cfg->public_key, c->pk, err);
    if (rc == FB_OK) rc = arc_index_key(cfg->index_key, c->pk, c->ikey, err);
    if (rc == FB_OK) rc = fb_keyring_load(&c->signers, cfg->trusted_signers, "--trusted-signer", err);
    if (rc == FB_OK && !fb_keyring_find(&c->signers, c->signer->key_id))
        rc = fb_err_set(err, FB_ERR_USAGE, "capture-databases: the worker's signing key %s is not among trusted-signer: "
                        "the capture could not verify its own chain to resume it; add the worker's .pub",
                        c->signer->key_id);
    if (rc == FB_OK && (!cfg->storage_root || !*cfg->storage_root))
        rc = fb_err_set(err, FB_ERR_USAGE, "capture-databases needs storage-root (where change segments go)");
    if (rc == FB_OK) rc = stor_open_location(cfg->storage_root, cfg, &c->st, err);
    /* One row per database: "a,b" (list settings are comma-separated). */
    char list[4096];
    snprintf(list, sizeof list, "%s", cfg->capture_databases);
    for (char *save = NULL, *t = strtok_r(list, ", ", &save); rc == FB_OK && t; t = strtok_r(NULL, ", ", &save)) {
        if (c->n == DC_MAX_DBS) return fb_err_set(err, FB_ERR_USAGE, "capture-databases: at most %d", DC_MAX_DBS);
        dc_db *d = &c->dbs[c->n++];
        d->owner = c;
        d->state = "standby";
        snprintf(d->db, sizeof d->db, "%s", t);
        rc = dc_set_gen(d, 1, err);
    }
    return rc;
}

fb_code dmn_capture_start(const fb_config *cfg, const char *worker_name, const fb_signer *signer,
                          fb_flag *signals, dmn_capture **out, fb_err *err) {
    *out = NULL;
    if (!cfg->capture_databases || !*cfg->capture_databases) return FB_OK;
    dmn_capture *c = calloc(1, sizeof *c);
    if (!c) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    c->cfg = cfg;
    c->signer = signer;
    c->signals = signals;
    snprintf(c->app_name, sizeof c->app_name, "fusion-backup capture %.150s", worker_name);
    fb_code rc = dc_setup(c, err);
    for (size_t i = 0; rc == FB_OK && i < c->n; i++) {
        if (pthread_create(&c->dbs[i].thread, NULL, dc_thread, &c->dbs[i]) != 0)
            rc = fb_err_set(err, FB_ERR_INTERNAL, "could not start the capture thread of database %s", c->dbs[i].db);
        else c->dbs[i].started = 1;
    }
    if (rc != FB_OK) {
        if (!*signals) *signals = 1; /* the threads started so far stop with the worker */
        dmn_capture_stop(c);
        return rc;
    }
    FB_INFO("capture: %zu database(s) (%s), slot %s, standing by for their advisory locks", c->n,
            cfg->capture_databases, cfg->capture_slot);
    *out = c;
    return FB_OK;
}

void dmn_capture_stop(dmn_capture *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) {
        if (c->dbs[i].started) pthread_join(c->dbs[i].thread, NULL);
        PQfinish(c->dbs[i].lock);
    }
    stor_free(c->st);
    fb_keyring_free(&c->signers);
    sodium_memzero(c->pk, sizeof c->pk);
    sodium_memzero(c->ikey, sizeof c->ikey);
    free(c);
}
