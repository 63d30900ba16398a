/* job_rebase: a backup that becomes the new capture base of a chain that cannot continue (job_rebase.h). */
#include "job/job_rebase.h"

#include <stdio.h>
#include <string.h>

#include "common/fb_log.h"
#include "pg/pgx.h"

#define JR_DROP_WAIT_MS 5000 /* for a capture still letting go of the old slot */

/* The generation of e's chain when it is one of database db's in the family of cfg->capture_slot, else 0. The
 * name in the index is only parsed: the one used later is rebuilt from the number. */
static unsigned jr_gen_of(const fb_config *cfg, const char *db, const arc_chain_entry *e) {
    const char *s = e->ix ? e->ix->cap_stream : NULL;
    const char *slash = s ? strrchr(s, '/') : NULL;
    size_t dl = strlen(db);
    if (!slash || (size_t)(slash - s) != dl || strncmp(s, db, dl) != 0) return 0;
    return cap_rebase_slot_gen(cfg->capture_slot, slash + 1);
}

/* The newest generation on which the configuration has a usable backup (0: none, not captured), and whether a
 * usable FULL of that generation (its base) is there. */
static unsigned jr_newest(const fb_config *cfg, const ev_backup_requested *rq, const arc_chain *ch, const char *db,
                          int *base_ok) {
    unsigned g = 0;
    *base_ok = 0;
    for (size_t i = 0; i < ch->n; i++) {
        const arc_chain_entry *e = &ch->e[i];
        if (!arc_chain_usable(e) || e->ix->config_id != rq->config_id) continue;
        unsigned n = jr_gen_of(cfg, db, e);
        if (n > g) {
            g = n;
            *base_ok = 0;
        }
        if (n && n == g && strcmp(e->ix->type, "FULL") == 0) *base_ok = 1;
    }
    return g;
}

/* The next generation whose folder holds no segment (a new base never reuses one), at most CAP_REBASE_SKIP_MAX
 * past the first candidate. */
static fb_code jr_next(const fb_config *cfg, const ev_backup_requested *rq, stor *st, job_rebase *rb, fb_err *err) {
    char stream[CAP_SEG_STREAM_MAX + 1], dir[CAP_BASE_DIR_MAX];
    for (unsigned n = rb->old_gen + 1; n <= rb->old_gen + 1 + CAP_REBASE_SKIP_MAX; n++) {
        fb_code rc = cap_rebase_slot_name(cfg->capture_slot, n, rb->slot, err);
        if (!rc) rc = cap_base_names(cfg->pg, rb->slot, rq->storage_path, stream, dir, err);
        if (rc) return rc;
        fb_err used;
        if ((rc = cap_base_folder_empty(st, dir, &used)) == FB_OK) {
            rb->gen = n;
            return FB_OK;
        }
        if (rc != FB_ERR_CONFLICT) {
            *err = used;
            return rc;
        }
        FB_WARN("capture rebase: generation %u (%s) is not free: %s; trying the next", n, rb->slot, used.msg);
    }
    return fb_err_set(err, FB_ERR_CONFLICT, "no free slot generation after %u of \"%s\" within %u tries (each folder "
                      "holds segments of a base that failed): check storage and the slots", rb->old_gen,
                      cfg->capture_slot, CAP_REBASE_SKIP_MAX + 1);
}

/* The chain of generation rb->old_gen: why it cannot continue (rb->reason, rb->detail), read on c; and, when it
 * cannot, no newer generation's slot may exist yet. */
static fb_code jr_check(const fb_config *cfg, const ev_backup_requested *rq, PGconn *c, stor *st,
                        const fb_keyring *kr, int base_ok, job_rebase *rb, fb_err *err) {
    char stream[CAP_SEG_STREAM_MAX + 1], dir[CAP_BASE_DIR_MAX];
    fb_code rc = cap_base_names(cfg->pg, rb->old_slot, rq->storage_path, stream, dir, err);
    if (rc) return rc;
    if (!base_ok) {
        rb->reason = CAP_REBASE_BASE_UNUSABLE;
        snprintf(rb->detail, sizeof rb->detail, "no usable base FULL of chain %s in folder %s", stream,
                 rq->storage_path);
    } else if ((rc = cap_rebase_check(c, st, dir, stream, rb->old_slot, kr, &rb->reason, rb->detail,
                                      sizeof rb->detail, err))) {
        return rc;
    }
    if (rb->reason == CAP_REBASE_NONE) return FB_OK;
    unsigned newest = 0;
    if ((rc = cap_rebase_newest_slot(c, cfg->capture_slot, &newest, NULL, err))) return rc;
    if (newest > rb->old_gen) {
        char name[CAP_NAME_MAX + 1] = "?";
        (void)cap_rebase_slot_name(cfg->capture_slot, newest, name, err);
        return fb_err_set(err, FB_ERR_CONFLICT, "chain %s needs a new base (%s), but slot %s of a newer generation "
                          "already exists without a base in folder %s: another backup is taking it now, or one was "
                          "interrupted (then drop it: SELECT pg_drop_replication_slot('%s')); no slot created",
                          stream, rb->detail, name, rq->storage_path, name);
    }
    return FB_OK;
}

fb_code job_rebase_plan(const fb_config *cfg, const ev_event *ev, stor *st, const arc_chain *ch, const fb_keyring *kr,
                        job_rebase *rb, fb_err *err) {
    const ev_backup_requested *rq = &ev->u.backup;
    char stream[CAP_SEG_STREAM_MAX + 1], dir[CAP_BASE_DIR_MAX], db[CAP_SEG_STREAM_MAX + 1];
    int base_ok = 0;
    fb_err none;
    memset(rb, 0, sizeof *rb);
    if (cap_base_names(cfg->pg, cfg->capture_slot, rq->storage_path, stream, dir, &none) != FB_OK)
        return FB_OK; /* this database cannot name a chain: it has none */
    snprintf(db, sizeof db, "%.*s", (int)(strrchr(stream, '/') - stream), stream);
    if (!(rb->old_gen = jr_newest(cfg, rq, ch, db, &base_ok))) return FB_OK; /* not captured */
    fb_code rc = cap_rebase_slot_name(cfg->capture_slot, rb->old_gen, rb->old_slot, err);
    if (rc) return rc;
    PGconn *c = pgx_connect(cfg->pg, "fusion-backup backup capture check", err);
    if (!c) return err->code ? err->code : FB_ERR_TRANSIENT;
    rc = jr_check(cfg, rq, c, st, kr, base_ok, rb, err);
    PQfinish(c);
    if (rc == FB_ERR_UNTRUSTED || rc == FB_ERR_FORMAT) {
        /* A forged or damaged schema file decides nothing: no slot on its word; the backup itself still runs. */
        FB_WARN("job=%s not deciding whether chain of slot %s needs a new base: %s", ev->job_id, rb->old_slot,
                err->msg);
        rb->reason = CAP_REBASE_NONE;
        return FB_OK;
    }
    if (rc || rb->reason == CAP_REBASE_NONE) return rc;
    if (rq->n_tables) {
        FB_WARN("job=%s database %s's change chain cannot continue (%s), but this request names %zu tables and a "
                "capture base holds every table: no new base taken; back up the whole configuration (no table "
                "list) to start a new chain", ev->job_id, db, rb->detail, rq->n_tables);
        rb->reason = CAP_REBASE_NONE;
        return FB_OK;
    }
    if ((rc = jr_next(cfg, rq, st, rb, err))) return rc;
    FB_WARN("job=%s CAPTURE REBASE: database %s's change chain (slot %s, generation %u) cannot continue: %s. This "
            "%s backup runs as a FULL that takes a new capture base under slot %s (generation %u); the workers' "
            "capture follows it by itself", ev->job_id, db, rb->old_slot, rb->old_gen, rb->detail,
            ev_backup_type_name(rq->backup_type), rb->slot, rb->gen);
    return FB_OK;
}

fb_code job_rebase_begin(const fb_config *cfg, const ev_event *ev, stor *st, job_rebase *rb, fb_err *err) {
    fb_code rc = cap_base_begin_slot(cfg, rb->slot, st, ev->u.backup.storage_path, &rb->base, err);
    if (rc) {
        fb_err_prefix(err, "taking the new capture base (slot %s, generation %u): ", rb->slot, rb->gen);
        return rc;
    }
    rb->import = (job_snapshot_import){.snapshot = rb->base.info.snapshot, .slot = rb->base.info.slot,
                                       .stream = rb->base.stream, .lsn = rb->base.info.consistent_lsn};
    return FB_OK;
}

void job_rebase_end(const fb_config *cfg, const ev_event *ev, job_rebase *rb, int full_ok) {
    if (!rb->base.s) return;
    cap_base_end(&rb->base, full_ok);
    if (!full_ok) return;
    FB_WARN("job=%s CAPTURE REBASE done: new base of chain %s committed (slot %s, generation %u, consistent point "
            CAP_LSN_FMT "); restore --until from here on starts from this backup", ev->job_id, rb->import.stream,
            rb->slot, rb->gen, CAP_LSN_ARGS(rb->import.lsn));
    if (rb->reason == CAP_REBASE_BASE_UNUSABLE) {
        FB_WARN("job=%s old capture slot %s left in place (its chain only lacked a usable base FULL; the slot is "
                "alive): drop it once it is no longer needed (SELECT pg_drop_replication_slot('%s')) or it keeps WAL",
                ev->job_id, rb->old_slot, rb->old_slot);
        return;
    }
    fb_err e;
    PGconn *c = pgx_connect(cfg->pg, "fusion-backup backup capture rebase", &e);
    fb_code rc = c ? cap_rebase_drop_old(c, cfg->capture_slot, rb->old_slot, rb->gen, JR_DROP_WAIT_MS,
                                         &rb->old_dropped, &e)
                   : e.code;
    PQfinish(c);
    if (rc)
        FB_WARN("job=%s old capture slot %s not dropped: %s", ev->job_id, rb->old_slot, e.msg);
    else if (rb->old_dropped)
        FB_WARN("job=%s old capture slot %s dropped (its chain ended: %s; it would only hold WAL)", ev->job_id,
                rb->old_slot, rb->detail);
}
