/* cap_base: a new slot and the FULL in its snapshot as one unit; the slot check before streaming (cap_base.h). */
#include "capture/cap_base.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capture/cap_capture.h"
#include "capture/cap_tip.h"
#include "common/fb_log.h"
#include "pg/pgx.h"

fb_code cap_base_names(const char *conninfo, const char *slot, const char *storage_path, char *stream, char *dir,
                       fb_err *err) {
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (!opts) {
        fb_code rc = fb_err_set(err, FB_ERR_USAGE, "--pg: %s", perr ? perr : "cannot be parsed");
        PQfreemem(perr);
        return rc;
    }
    const char *db = NULL, *user = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "dbname") == 0 && o->val) db = o->val;
        if (strcmp(o->keyword, "user") == 0 && o->val) user = o->val;
    }
    if (!db) db = user;
    if (!db) db = getenv("PGDATABASE");
    /* One rule for a chain's names, shared with the workers' capture (cap_capture_names). */
    fb_code rc = db && *db ? cap_capture_names(storage_path, db, slot, stream, dir, CAP_BASE_DIR_MAX, err)
                           : fb_err_set(err, FB_ERR_USAGE, "--pg must name the database (dbname=...)");
    PQconninfoFree(opts);
    return rc;
}

/* first[0]: the smallest segment start; first[1]: the smallest tip start (a chain with no segment yet). */
static fb_code cb_first_start(void *opaque, const stor_entry *e, fb_err *err) {
    (void)err;
    uint64_t *first = opaque, a, b;
    if (cap_segment_parse_name(e->name, &a, &b) == 0 && (first[0] == 0 || a < first[0])) first[0] = a;
    if (cap_tip_parse_name(e->name, &a, &b) == 0 && (first[1] == 0 || a < first[1])) first[1] = a;
    return FB_OK;
}

fb_code cap_base_chain_first(stor *st, const char *dir, uint64_t *first, fb_err *err) {
    uint64_t v[2] = {0, 0};
    fb_code rc = stor_list(st, dir, cb_first_start, v, err);
    *first = v[0] ? v[0] : v[1];
    return rc == FB_ERR_NOTFOUND ? FB_OK : rc;
}

static fb_code cb_any_segment(void *opaque, const stor_entry *e, fb_err *err) {
    uint64_t a, b;
    if (cap_segment_parse_name(e->name, &a, &b) != 0) return FB_OK;
    snprintf(opaque, CAP_SEG_NAME_MAX, "%s", e->name);
    return fb_err_set(err, FB_ERR_CONFLICT, "found");
}

fb_code cap_base_folder_empty(stor *st, const char *dir, fb_err *err) {
    char first[CAP_SEG_NAME_MAX] = "";
    fb_code rc = stor_list(st, dir, cb_any_segment, first, err);
    if (rc == FB_ERR_CONFLICT)
        return fb_err_set(err, FB_ERR_CONFLICT, "chain folder \"%s\" already holds segments (%s, ...) of an earlier "
                          "base: a new base needs a new slot name (--capture-slot NAME), so the two chains never "
                          "look like one; nothing was created", dir, first);
    if (rc == FB_ERR_NOTFOUND) return FB_OK; /* no folder yet */
    return rc;
}

fb_code cap_base_slot_check(const char *conninfo, const char *slot, fb_err *err) {
    PGconn *c = pgx_connect(conninfo, "fusion-backup capture slot check", err);
    if (!c) return err->code;
    const char *p[1] = {slot};
    PGresult *r = PQexecParams(c, "SELECT coalesce(wal_status, ''), plugin FROM pg_catalog.pg_replication_slots "
                                  "WHERE slot_name = $1 AND database = pg_catalog.current_database()",
                               1, NULL, p, NULL, NULL, 0);
    fb_code rc = pgx_check(c, r, PGRES_TUPLES_OK, "reading the capture slot's state", err);
    if (rc) r = NULL; /* pgx_check cleared it */
    if (rc == FB_OK && PQntuples(r) == 0)
        rc = fb_err_set(err, FB_ERR_NOTFOUND, "capture slot \"%s\" does not exist on this database (dropped?): the "
                        "chain cannot continue without a gap. Take a new base under a new slot name: "
                        "fusion-backup backup CONFIG --type FULL --capture-base --capture-slot NEW, then capture "
                        "with --capture-slot NEW (or, for a chain without a FULL, capture --create-slot)", slot);
    else if (rc == FB_OK && strcmp(PQgetvalue(r, 0, 0), "lost") == 0)
        rc = fb_err_set(err, FB_ERR_VERIFY, "capture slot \"%s\" is invalidated (wal_status 'lost': the server "
                        "removed WAL it still needed, max_slot_wal_keep_size): changes are missing from it and the "
                        "chain ends here. Take a new base under a new slot name: fusion-backup backup CONFIG --type "
                        "FULL --capture-base --capture-slot NEW, then capture with --capture-slot NEW; drop the old "
                        "slot", slot);
    else if (rc == FB_OK && strcmp(PQgetvalue(r, 0, 1), "pgoutput") != 0)
        rc = fb_err_set(err, FB_ERR_USAGE, "slot \"%s\" uses plugin \"%s\", not pgoutput: not a capture slot", slot,
                        PQgetvalue(r, 0, 1));
    if (r) PQclear(r);
    PQfinish(c);
    return rc;
}

fb_code cap_base_chain_open(const fb_config *cfg, const char *artifact_path, const char *stream, stor **st, char *dir,
                            fb_err *err) {
    *st = NULL;
    if (!*stream || stream[0] == '/' || strstr(stream, "..") || strlen(stream) > CAP_SEG_STREAM_MAX)
        return fb_err_set(err, FB_ERR_FORMAT, "the manifest's capture stream \"%s\" is not a chain name", stream);
    char folder[1024];
    const char *slash = strrchr(artifact_path, '/');
    if ((size_t)snprintf(folder, sizeof folder, "%.*s", slash ? (int)(slash - artifact_path) : 1,
                         slash ? artifact_path : ".") >= sizeof folder)
        return fb_err_set(err, FB_ERR_USAGE, "artifact path \"%s\" is too long", artifact_path);
    snprintf(dir, CAP_BASE_DIR_MAX, "capture/%s", stream);
    fb_code rc = stor_open_location(folder, cfg, st, err);
    if (rc) fb_err_prefix(err, "the change chain's folder %s/%s: ", folder, dir);
    return rc;
}

fb_code cap_base_begin(const fb_config *cfg, stor *st, const char *storage_path, cap_base *b, fb_err *err) {
    return cap_base_begin_slot(cfg, cfg->capture_slot, st, storage_path, b, err);
}

fb_code cap_base_begin_slot(const fb_config *cfg, const char *slot, stor *st, const char *storage_path, cap_base *b,
                            fb_err *err) {
    memset(b, 0, sizeof *b);
    fb_code rc = cap_base_names(cfg->pg, slot, storage_path, b->stream, b->dir, err);
    if (!rc) rc = cap_base_folder_empty(st, b->dir, err);
    if (!rc) rc = cap_stream_open(cfg->pg, "fusion-backup capture base", &b->s, err);
    if (!rc) rc = cap_stream_identity_check(b->s, err);
    if (!rc) rc = cap_stream_publication_ensure(b->s, cfg->capture_publication, NULL, 0, err);
    if (!rc)
        FB_INFO("capture base: creating slot %s; PostgreSQL returns its consistent point once every transaction "
                "running on the server now has ended (a long one, in any database, delays the base)",
                slot);
    if (!rc) rc = cap_stream_slot_create(b->s, slot, &b->info, err);
    /* The folder is empty (checked above), so the slot is either a base's whose capture has not started yet or
     * one a killed --capture-base left behind (cap_base_end never ran): only the artifacts can tell, so say both. */
    if (rc == FB_ERR_CONFLICT && b->s)
        fb_err_prefix(err, "a new base needs a new slot (--capture-slot NAME; drop the old one when its chain is no "
                      "longer needed; if no FULL backup in this configuration's folder was taken as its base, it was "
                      "left by an interrupted --capture-base and only holds WAL: SELECT "
                      "pg_drop_replication_slot('%s')): ", slot);
    if (rc) {
        cap_stream_free(b->s);
        b->s = NULL;
        return rc;
    }
    FB_INFO("capture base: slot %s created on %s, consistent point " CAP_LSN_FMT ", snapshot %s; taking the FULL in it",
            b->info.slot, b->stream, CAP_LSN_ARGS(b->info.consistent_lsn), b->info.snapshot);
    return FB_OK;
}

void cap_base_end(cap_base *b, int full_ok) {
    if (!b->s) return;
    if (!full_ok) {
        fb_err e;
        /* The exported snapshot ends with this command, which is what we want: the FULL is over. */
        if (cap_stream_slot_drop(b->s, b->info.slot, &e) != FB_OK)
            FB_WARN("capture base: the FULL failed and slot %s could not be dropped (%s): drop it by hand "
                    "(SELECT pg_drop_replication_slot('%s')) or it holds WAL", b->info.slot, e.msg, b->info.slot);
        else
            FB_WARN("capture base: the FULL failed; slot %s dropped (it would hold WAL without a base)", b->info.slot);
    }
    cap_stream_free(b->s);
    b->s = NULL;
}
