/* arc_retention: retention. Removes a configuration's backups older than retention_days from one storage folder,
 * never one that a kept backup needs (a table it references, FORMAT.md "Chains") and never the last restorable
 * FULL. Run by the backup job after each success (primary root and every --copy-to root) and by
 * `fusion-backup prune`.
 *
 * Safety first: if any chain index in the folder cannot be authenticated or parsed, its references are unknown
 * and nothing is removed (FB_ERR_VERIFY, saying which). Removal is whole and crash-safe: the artifact and its
 * index are renamed to ".<name>.trash" (atomic, fsynced), then unlinked; leftover trash of an interrupted run is
 * unlinked by the next run. Artifacts without an index (format 1, written before chains) count as FULLs, dated by
 * their mtime, and are considered only when config_id is -1 (the CLI; the worker cannot tell their config).
 * Ledger entries (<root>/.ledger) are not touched.
 */
#ifndef ARC_RETENTION_H
#define ARC_RETENTION_H

#include <stdint.h>

#include "artifact/arc_index.h"
#include "common/fb_err.h"
#include "common/fb_sign.h"
#include "artifact/arc_chain.h"
#include "storage/stor.h"

typedef struct arc_retention_opts {
    int64_t retention_days;   /* 0: keep everything (nothing is removed) */
    int64_t now_ms;
    int64_t config_id;        /* -1: every backup in the folder; else only those whose index names this config */
    int dry_run;              /* report only */
    const char *protect_job;  /* never removed (the backup just made); may be NULL */
    const fb_keyring *signers; /* trusted artifact signers: only a signed FULL is "the last restorable FULL" */
} arc_retention_opts;

/* Called once per backup of the folder that is older than the retention (and for trash cleanup), saying whether
 * it is (or would be) removed and why. */
typedef void (*arc_retention_report_fn)(void *opaque, const char *job_id, int removed, const char *reason);

/* The plan on a loaded chain, apart from storage (arc_retention_run makes it, then applies it; tests make it on a chain
 * built in memory). Arrays of n, indexed like the chain's entries; owned by the plan. */
typedef struct arc_retention_plan {
    size_t n;
    int64_t cutoff_ms;        /* now_ms - retention_days: older than this is a candidate */
    int *in_scope;            /* of this configuration (every entry when config_id is -1) */
    int *remove;              /* 1: in scope, older than the cutoff, and needed by no backup that stays */
    char **kept_why;          /* for a candidate that stays: why (the last restorable FULL, needed by ...) */
} arc_retention_plan;

/* Plans retention of chain ch (of folder dir, for messages) under o (o->now_ms, retention_days, config_id,
 * protect_job; dry_run and signers play no part here: ch was loaded with the signers). FB_ERR_VERIFY, and no plan,
 * when any entry has a problem: what it references is unknown. retention_days <= 0 plans to keep everything.
 * Clear *p with arc_retention_plan_clear (also after an error: it is then empty). */
fb_code arc_retention_plan_make(const arc_chain *ch, const char *dir, const arc_retention_opts *o, arc_retention_plan *p,
                            fb_err *err);
void arc_retention_plan_clear(arc_retention_plan *p);

/* *removed (may be NULL) gets the number of backups removed (or that would be, with dry_run). */
fb_code arc_retention_run(stor *st, const char *rel_dir, const unsigned char key[ARC_INDEX_KEY_BYTES],
                      const arc_retention_opts *o, arc_retention_report_fn report, void *opaque, int64_t *removed,
                      fb_err *err);

#endif
