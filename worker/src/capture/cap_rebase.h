/* cap_rebase: slot generations — how a captured database gets a new base under a new slot without an operator —
 * and the one test of whether a chain needs one (issue 16).
 *
 * Generations. A chain that cannot continue (its slot dropped or invalidated, its end recorded by cap_schema after
 * a migration, its base FULL unusable) needs a new base, and a new base needs a new slot name (cap_base.h: a folder
 * holding segments is never reused, so two chains never look like one). The names are derived, never chosen: the
 * configured capture-slot S is generation 1, then S_2, S_3, ... (decimal, no leading zero, at most
 * CAP_REBASE_GEN_MAX; the whole name within PostgreSQL's 63 bytes, and "DB/" + name within a stream id's). Each
 * generation has its own slot, stream (DB/S_N) and folder (capture/DB/S_N). Every reader keeps working across
 * generations because each base FULL names its own stream in its authenticated manifest (restore, verify);
 * `list` walks the generations' folders.
 *
 * Who does what:
 * - A backup job (job_rebase.h) that finds its configuration's chain needing a new base takes it: a FULL in the
 *   snapshot of generation g+1's new slot (cap_base_begin_slot), and only after that FULL committed drops the old
 *   generation's slot when it is of no use any more (lost, or its chain ended by a migration).
 * - The workers' capture (dmn_capture.h) streams the newest generation whose slot exists on the database:
 *   cap_rebase_newest_slot, read from the server, is the one source of "which slot now", so it needs no setting
 *   changed and follows a new base within capture-lock-retry-s (or falls back to the older slot when a new base
 *   failed and its slot was dropped).
 *
 * Names from elsewhere are never used as they come: a slot name read from the server or from a chain index is
 * parsed into a generation of the configured family (cap_rebase_slot_gen) and the name used is rebuilt from that
 * number (cap_rebase_slot_name), so nothing outside the family is ever created, streamed or dropped.
 */
#ifndef CAP_REBASE_H
#define CAP_REBASE_H

#include <libpq-fe.h>
#include <stddef.h>

#include "capture/cap_stream.h"
#include "common/fb_err.h"
#include "common/fb_sign.h"
#include "storage/stor.h"

#define CAP_REBASE_GEN_MAX 9999u
/* A new base skips at most this many generations whose folders already hold segments (a new slot of a failed base
 * the capture had begun to stream): a bound on what one job may look at, not on the family. */
#define CAP_REBASE_SKIP_MAX 8u

/* Generation gen (1..CAP_REBASE_GEN_MAX) of family base into out: base itself for 1, "base_GEN" after. FB_ERR_USAGE
 * when base is not a slot name (1..63 of a-z, 0-9, _) or the result would not fit 63 bytes. */
fb_code cap_rebase_slot_name(const char *base, unsigned gen, char out[CAP_NAME_MAX + 1], fb_err *err);

/* The generation of name in family base (1 for base itself), 0 when name is not one of its generations. */
unsigned cap_rebase_slot_gen(const char *base, const char *name);

/* Why a chain needs a new base. The numbers are the `capture_rebase` counter of a backup's job.status (SPEC.md). */
typedef enum cap_rebase_reason {
    CAP_REBASE_NONE = 0,           /* the chain is healthy: never rebased */
    CAP_REBASE_SLOT_MISSING = 1,   /* the slot is gone (dropped) or is not a pgoutput slot */
    CAP_REBASE_SLOT_LOST = 2,      /* wal_status 'lost': max_slot_wal_keep_size removed WAL it needed */
    CAP_REBASE_SCHEMA_ENDED = 3,   /* the chain's signed schema file records its end (a migration) */
    CAP_REBASE_BASE_UNUSABLE = 4,  /* no usable base FULL of the chain in the configuration's folder */
} cap_rebase_reason;

/* "slot_missing", "slot_lost", "schema_ended", "base_unusable" ("none" for CAP_REBASE_NONE). */
const char *cap_rebase_reason_name(cap_rebase_reason r);

/* Whether the chain of slot (stream, folder dir in st) can continue: *why CAP_REBASE_NONE when it can, otherwise
 * the reason with a sentence in detail (cap bytes). Reads the slot's row on c and the chain's schema file (signed by
 * one of signers). FB_ERR_PG / FB_ERR_TRANSIENT when the server cannot say; FB_ERR_UNTRUSTED / FB_ERR_FORMAT when
 * the schema file is forged or damaged (then nothing is decided). */
fb_code cap_rebase_check(PGconn *c, stor *st, const char *dir, const char *stream, const char *slot,
                         const fb_keyring *signers, cap_rebase_reason *why, char *detail, size_t cap, fb_err *err);

/* The newest generation of family base whose slot exists on c's database (pgoutput, not temporary) into *gen, its
 * active flag into *active (NULL ok); *gen 0 when there is none. */
fb_code cap_rebase_newest_slot(PGconn *c, const char *base, unsigned *gen, int *active, fb_err *err);

/* Drops slot (a generation of family base older than keep_gen, checked here) on c's database when it exists, is a
 * pgoutput slot and no walsender streams it, waiting up to wait_ms for one to let go. *dropped 1 when it was
 * dropped; FB_OK with *dropped 0 when there was nothing to drop; FB_ERR_CONFLICT when it is still in use. */
fb_code cap_rebase_drop_old(PGconn *c, const char *base, const char *slot, unsigned keep_gen, int wait_ms,
                            int *dropped, fb_err *err);

#endif
