/* cap_slot: the health of a capture's replication slot — how much WAL it holds, how long since it last moved,
 * and whether it can still be streamed from.
 *
 * Why this matters: a logical slot keeps every WAL segment from its restart position on until the capture
 * confirms past it. A capture that stops (crashed worker, no leader, a chain ended by a migration) makes the slot
 * fill the server's disk, unless max_slot_wal_keep_size bounds it; then PostgreSQL invalidates the slot
 * (pg_replication_slots.wal_status = 'lost') and the transactions it no longer holds are gone from the stream.
 * Either way the chain has a gap from then on, so the one safe reaction is to stop, say so loudly (log naming the
 * slot, metric, `status`, a non-zero exit) and require a new base (a FULL in a new slot's snapshot). Quietly
 * creating a new slot under the same name would resume the chain after a hole that no check could see later; a
 * new base is a new chain instead, under the next slot generation with its own stream and folder, taken by the
 * next backup of the configuration (job/job_rebase.h, cap_rebase.h).
 *
 * Lag in bytes: pg_current_wal_lsn() - confirmed_flush_lsn (the WAL the slot makes the server keep beyond what the
 * chain holds; WAL of other databases of the cluster counts too, because the slot holds it all the same).
 * Lag in seconds: the time since the slot's confirmed position last moved while WAL beyond it exists, measured by
 * whoever polls (cap_slot_lag). A working capture confirms at least every capture-flush-s under load and on the
 * server's keepalives when idle, so this stays within seconds; a stopped one grows by one second per second. It is
 * what an alert needs and needs no commit timestamps (track_commit_timestamp is off by default).
 *
 * The query runs on an ordinary connection or a replication=database walsender (simple protocol only).
 */
#ifndef CAP_SLOT_H
#define CAP_SLOT_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "common/fb_err.h"

typedef struct cap_slot_health {
    int exists;             /* a slot of that name on this database */
    int active;             /* a walsender streams from it now */
    int logical;            /* pgoutput */
    char wal_status[16];    /* reserved | extended | unreserved | lost ("" when missing) */
    int64_t safe_wal_size;  /* bytes PostgreSQL may still write before the slot is lost; -1: unbounded (NULL) */
    uint64_t lag_bytes;     /* pg_current_wal_lsn() - confirmed_flush_lsn (0 when missing) */
    uint64_t confirmed_lsn, current_lsn;
} cap_slot_health;

/* Reads slot's row (on the connection's database) into h. FB_ERR_PG / FB_ERR_TRANSIENT when the query fails. */
fb_code cap_slot_health_read(PGconn *c, const char *slot, cap_slot_health *h, fb_err *err);

/* FB_OK when the slot can be streamed from. Otherwise FB_ERR_NOTFOUND, with a message naming the slot and the
 * database, saying that the chain cannot continue and what to run: the slot is missing (dropped) or lost
 * (invalidated by max_slot_wal_keep_size), or it is not a pgoutput slot. */
fb_code cap_slot_usable(const cap_slot_health *h, const char *db, const char *slot, fb_err *err);

/* "ok", "missing", "lost", "unreserved" (about to be lost), or "not_pgoutput": the state label of metrics and
 * status. */
const char *cap_slot_state(const cap_slot_health *h);

/* Seconds since the confirmed position last moved while the slot lags (0 when it does not), from successive
 * polls: the first poll of a lagging slot counts from then. */
typedef struct cap_slot_lag {
    uint64_t last_confirmed;
    int64_t moved_ms;  /* 0: not polled yet */
} cap_slot_lag;
double cap_slot_lag_seconds(cap_slot_lag *t, const cap_slot_health *h, int64_t now_ms);

/* The hint every "a new base is needed" message ends with (one place, so they cannot drift apart). */
#define CAP_NEW_BASE_HINT                                                                                          \
    "the chain cannot continue (transactions after its end are no longer in any slot, so continuing would hide a " \
    "gap); a new base is needed: the next backup of the database's configuration takes it under the next slot "  \
    "generation (run `fusion-backup backup CONFIG` to take it now; by hand: `fusion-backup capture --create-slot " \
    "--capture-slot NEW_NAME ...` and a FULL in its snapshot, then drop the old slot if it still exists, SELECT "  \
    "pg_drop_replication_slot('SLOT'))"

#endif
