/* cap_rebase: slot generations and whether a chain needs a new base (cap_rebase.h). */
#include "capture/cap_rebase.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "capture/cap_schema.h"
#include "capture/cap_slot.h"
#include "capture/cap_txn.h"
#include "common/fb_log.h"
#include "pg/pgx.h"

static int cr_slot_chars(const char *s) {
    size_t n = strlen(s);
    return n >= 1 && n <= CAP_NAME_MAX && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

fb_code cap_rebase_slot_name(const char *base, unsigned gen, char out[CAP_NAME_MAX + 1], fb_err *err) {
    if (!base || !cr_slot_chars(base))
        return fb_err_set(err, FB_ERR_USAGE, "capture-slot \"%s\" is not a slot name (1 to %d of a-z, 0-9, _)",
                          base ? base : "", CAP_NAME_MAX);
    if (gen < 1 || gen > CAP_REBASE_GEN_MAX)
        return fb_err_set(err, FB_ERR_USAGE, "slot generation %u of \"%s\" is out of range (1..%u)", gen, base,
                          CAP_REBASE_GEN_MAX);
    int n = gen == 1 ? snprintf(out, CAP_NAME_MAX + 1, "%s", base)
                     : snprintf(out, CAP_NAME_MAX + 1, "%s_%u", base, gen);
    if (n < 0 || n > CAP_NAME_MAX)
        return fb_err_set(err, FB_ERR_USAGE, "generation %u of capture slot \"%s\" would be longer than %d bytes: "
                          "configure a shorter capture-slot (its generations add \"_N\")", gen, base, CAP_NAME_MAX);
    return FB_OK;
}

unsigned cap_rebase_slot_gen(const char *base, const char *name) {
    size_t bl = strlen(base);
    if (!cr_slot_chars(base) || strncmp(name, base, bl) != 0) return 0;
    if (name[bl] == '\0') return 1;
    const char *d = name + bl + 1;
    size_t nd = strspn(d, "0123456789");
    if (name[bl] != '_' || nd == 0 || nd > 4 || d[nd] != '\0' || d[0] == '0') return 0;
    unsigned gen = (unsigned)strtoul(d, NULL, 10);
    return gen >= 2 && gen <= CAP_REBASE_GEN_MAX ? gen : 0;
}

const char *cap_rebase_reason_name(cap_rebase_reason r) {
    switch (r) {
    case CAP_REBASE_SLOT_MISSING: return "slot_missing";
    case CAP_REBASE_SLOT_LOST: return "slot_lost";
    case CAP_REBASE_SCHEMA_ENDED: return "schema_ended";
    case CAP_REBASE_BASE_UNUSABLE: return "base_unusable";
    case CAP_REBASE_NONE: break;
    }
    return "none";
}

fb_code cap_rebase_check(PGconn *c, stor *st, const char *dir, const char *stream, const char *slot,
                         const fb_keyring *signers, cap_rebase_reason *why, char *detail, size_t cap, fb_err *err) {
    cap_slot_health h;
    *why = CAP_REBASE_NONE;
    detail[0] = '\0';
    fb_code rc = cap_slot_health_read(c, slot, &h, err);
    if (rc) return rc;
    const char *state = cap_slot_state(&h);
    if (strcmp(state, "missing") == 0 || strcmp(state, "not_pgoutput") == 0) {
        *why = CAP_REBASE_SLOT_MISSING;
        snprintf(detail, cap, "slot %s %s", slot, h.exists ? "is not a pgoutput slot" : "does not exist (dropped?)");
        return FB_OK;
    }
    if (strcmp(state, "lost") == 0) {
        *why = CAP_REBASE_SLOT_LOST;
        snprintf(detail, cap, "slot %s was invalidated (wal_status lost: max_slot_wal_keep_size) at " CAP_LSN_FMT,
                 slot, CAP_LSN_ARGS(h.confirmed_lsn));
        return FB_OK;
    }
    cap_schema *s = NULL;
    if ((rc = cap_schema_load(st, dir, stream, signers, &s, err))) return rc;
    uint64_t at = 0;
    const char *ended_why = NULL;
    if (cap_schema_ended(s, &at, &ended_why)) {
        *why = CAP_REBASE_SCHEMA_ENDED;
        snprintf(detail, cap, "chain %s ended before " CAP_LSN_FMT ": %s", stream, CAP_LSN_ARGS(at),
                 ended_why ? ended_why : "a schema change");
    }
    cap_schema_free(s);
    return FB_OK;
}

fb_code cap_rebase_newest_slot(PGconn *c, const char *base, unsigned *gen, int *active, fb_err *err) {
    *gen = 0;
    if (active) *active = 0;
    PGresult *r = PQexec(c, "SELECT slot_name, active FROM pg_catalog.pg_replication_slots WHERE database = "
                            "pg_catalog.current_database() AND plugin = 'pgoutput' AND NOT temporary");
    fb_code rc = pgx_check(c, r, PGRES_TUPLES_OK, "listing the database's replication slots", err);
    if (rc) return rc;
    for (int i = 0; i < PQntuples(r); i++) {
        unsigned g = cap_rebase_slot_gen(base, PQgetvalue(r, i, 0));
        if (g > *gen) {
            *gen = g;
            if (active) *active = PQgetvalue(r, i, 1)[0] == 't';
        }
    }
    PQclear(r);
    return FB_OK;
}

/* The slot's row: 1 present (then *active), 0 absent, -1 on error. */
static int cr_slot_row(PGconn *c, const char *slot, int *active, fb_err *err) {
    const char *p[1] = {slot};
    PGresult *r = PQexecParams(c, "SELECT active FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND "
                                  "database = pg_catalog.current_database() AND plugin = 'pgoutput' AND NOT temporary",
                               1, NULL, p, NULL, NULL, 0);
    if (pgx_check(c, r, PGRES_TUPLES_OK, "reading the old slot's state", err)) return -1;
    int n = PQntuples(r);
    if (n) *active = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    return n ? 1 : 0;
}

fb_code cap_rebase_drop_old(PGconn *c, const char *base, const char *slot, unsigned keep_gen, int wait_ms,
                            int *dropped, fb_err *err) {
    *dropped = 0;
    unsigned g = cap_rebase_slot_gen(base, slot);
    if (g == 0 || g >= keep_gen)
        return fb_err_set(err, FB_ERR_INTERNAL, "refusing to drop slot \"%s\": not a generation of \"%s\" older than "
                          "the current one (%u)", slot, base, keep_gen);
    int active = 0, present;
    for (int waited = 0;; waited += 200) {
        if ((present = cr_slot_row(c, slot, &active, err)) <= 0) return present < 0 ? err->code : FB_OK;
        if (!active) break;
        if (waited >= wait_ms)
            return fb_err_set(err, FB_ERR_CONFLICT, "old capture slot %s is still streamed by a walsender (a capture "
                              "not yet moved to generation %u): not dropped; drop it once it is idle (SELECT "
                              "pg_drop_replication_slot('%s')) or it keeps WAL", slot, keep_gen, slot);
        usleep(200000);
    }
    const char *p[1] = {slot};
    PGresult *r = PQexecParams(c, "SELECT pg_catalog.pg_drop_replication_slot($1)", 1, NULL, p, NULL, NULL, 0);
    fb_code rc = pgx_check(c, r, PGRES_TUPLES_OK, "dropping the old capture slot", err);
    if (rc) return rc;
    PQclear(r);
    *dropped = 1;
    return FB_OK;
}
