/* job_rebase: a backup job whose configuration's change chain cannot continue becomes that database's new capture
 * base — a FULL in the snapshot of the next slot generation (capture/cap_rebase.h) — and says so loudly (issue 16).
 *
 * How a job knows the database is captured: its configuration's folder holds a backup on a change chain of this
 * database (the chain index's `capture` line, signed by a trusted worker and authenticated with the index key, as
 * jb_capture_plan already reads it) whose slot is a generation of the worker's capture-slot. Not the worker's
 * capture-databases setting: that says where a worker streams, not which configuration's folder holds the bases,
 * `fusion-backup backup` has none, and a worker that only runs backups would then never rebase. The index is also
 * what makes a rebase safe to take: it names the generation in use, so the next one is derived, not chosen, and a
 * configuration that never had a capture base never gets a slot from a request.
 *
 * When (cap_rebase_check on the newest generation g in the folder): its slot is missing or lost, its chain's signed
 * schema file records its end (a migration), or no usable base FULL of g is in the folder. Never when the chain is
 * healthy: a request, whatever its type, cannot make a worker create a slot then. Never for a request naming tables
 * (a base holds every table; the job then runs as before, with a warning). At most one new slot per job: generation
 * g+1 (or the next whose folder holds no segments, at most CAP_REBASE_SKIP_MAX on); and none while a slot of a
 * newer generation than g already exists (another job is taking that base, or one was interrupted and its slot
 * must be dropped by hand: the job fails saying so), so retries and forged requests cannot multiply slots.
 *
 * The old slot is dropped only after the new base committed, and only when it is of no use: lost, or its chain
 * ended by a migration (it would hold WAL forever). A slot whose chain only lacks a usable base FULL is left, with a
 * warning: it is alive, and what storage says about a FULL is not a reason to destroy a live slot.
 *
 * The record: the job reports stats ran_as_full = 1 (for an INCREMENTAL/DIFFERENTIAL request), capture_rebase (the
 * reason's number), capture_generation and capture_old_generation; the recorder then stores backup_type FULL on the
 * record (dmn_recorder.c), so the record never claims a type its artifact is not; the manifest keeps both the
 * type and the requested type.
 */
#ifndef JOB_REBASE_H
#define JOB_REBASE_H

#include "artifact/arc_chain.h"
#include "capture/cap_base.h"
#include "capture/cap_rebase.h"
#include "job/job.h"

typedef struct job_rebase {
    cap_rebase_reason reason;     /* CAP_REBASE_NONE: this job takes no new base */
    unsigned old_gen, gen;
    char old_slot[CAP_NAME_MAX + 1], slot[CAP_NAME_MAX + 1];
    char detail[600];
    int old_dropped;
    cap_base base;                /* open from job_rebase_begin to job_rebase_end */
    job_snapshot_import import;   /* what the FULL imports */
} job_rebase;

/* Decides for the request ev (its configuration's folder already loaded as ch, from st; kr the trusted signers)
 * whether it must take a new base; rb->reason says. FB_ERR_CONFLICT when a newer generation's slot already exists
 * without a base; errors of the server or of the chain's schema file otherwise. */
fb_code job_rebase_plan(const fb_config *cfg, const ev_event *ev, stor *st, const arc_chain *ch, const fb_keyring *kr,
                        job_rebase *rb, fb_err *err);

/* Creates the new generation's slot (cap_base_begin_slot) and fills rb->import for the FULL. */
fb_code job_rebase_begin(const fb_config *cfg, const ev_event *ev, stor *st, job_rebase *rb, fb_err *err);

/* full_ok: the FULL committed, the new slot stays and the old one is dropped when of no use (logged). Otherwise the
 * new slot is dropped. Safe on a zeroed or ended rb. */
void job_rebase_end(const fb_config *cfg, const ev_event *ev, job_rebase *rb, int full_ok);

#endif
