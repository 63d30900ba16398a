/* cap_apply: applies captured transactions to a database — the second half of restore --until (the first is the
 * FULL taken in the slot's snapshot, restored as any FULL is).
 *
 * Each transaction runs in its own database transaction, in commit order, so the target passes only through
 * states the source had. Rows are found by their replica identity, as logical replication's apply worker does:
 * the key columns the Relation message flags (primary key or REPLICA IDENTITY INDEX) compared with `=`, or, for
 * REPLICA IDENTITY FULL, every column compared by its text output (`IS NOT DISTINCT FROM`, one row by ctid, so a
 * type without equality still matches and duplicates lose only one). An UPDATE or DELETE that matches no row,
 * or a column the target lacks, means the target is not the chain's base: the transaction is rolled back and
 * the error says which change, so nothing half-applied is left. Unchanged TOASTed values ('u') are left out of
 * the SET list, so the stored value stays.
 *
 * Values are bound as parameters of unknown type ($n, text form), which the server casts to the column's type,
 * so no value is ever spliced into SQL; names go through pgx_quote_ident.
 */
#ifndef CAP_APPLY_H
#define CAP_APPLY_H

#include <libpq-fe.h>

#include "capture/cap_segment.h"
#include "capture/cap_txn.h"
#include "common/fb_err.h"
#include "storage/stor.h"

/* Applies t atomically on c (which must be idle, outside a transaction). */
fb_code cap_apply_txn(PGconn *c, const cap_txn *t, fb_err *err);

/* --- a chain up to a target (restore --until, capture --apply-into) -------------------------------------------
 *
 * The target is an LSN or a time. LSN: every transaction whose commit ends at or before it (so the LSN
 * pg_current_wal_lsn() returned right after a commit includes that commit). Time: in commit order up to the first
 * transaction committing after it, as PostgreSQL's recovery_target_time stops at the first commit record past the
 * target (commit times are not strictly ordered across sessions; the order applied is always the commit order).
 *
 * The recoverable window of a chain is [base, end]: base is the FULL's consistent point (and, as a time, the
 * moment its snapshot was taken: arc_capture_base.time_us), end the end of the last durable segment (and, as a
 * time, its last commit) or, when the chain's signed tip counts (cap_tip.h: it starts at the chain's end), the
 * tip's end and time: nothing committed in between, so a target there is the chain's end state (every transaction
 * applied). A target outside it is refused before anything is applied: before the base, the FULL already holds
 * later transactions; after the end, transactions may exist that the chain does not hold yet. A tip that is not
 * authentic never extends the window (tip_problem says why; verify fails on it). */

typedef struct cap_window {
    uint64_t base_lsn, end_lsn;   /* end: the tip's end when it counts, else chain_end_lsn */
    int64_t base_us, end_us;      /* end_us: the tip's time when later, else chain_end_us */
    uint64_t chain_end_lsn;       /* the last durable segment's end (base_lsn when there is none) */
    int64_t chain_end_us;         /* the last commit of the chain; base_us when it has none */
    int tip;                      /* 1: the chain's tip counts and set end_lsn (and end_us when later) */
    char tip_problem[400];        /* "" or why a tip file was refused, or that segments are missing at the end */
    uint64_t segments, transactions;
} cap_window;

/* Walks the chain in dir of st from base_lsn, every signature and header checked, reads its tip, and fills w;
 * base_us is the base's time. in->sk NULL: nothing is decrypted (enough to know the window); set: every segment is decrypted and
 * its transactions checked too (verify). FB_ERR_VERIFY when the chain has a gap, FB_ERR_UNTRUSTED, FB_ERR_CRYPTO
 * or FB_ERR_FORMAT when a segment is not authentic or not well-formed. */
fb_code cap_apply_window(stor *st, const char *dir, const cap_seg_in *in, uint64_t base_lsn, int64_t base_us,
                         cap_window *w, fb_err *err);

typedef struct cap_target {
    int by_time;              /* 0: lsn; 1: time_us */
    uint64_t lsn;
    int64_t time_us;
    const char *text;         /* as the user wrote it, for messages */
} cap_target;

/* FB_OK when t lies in w; FB_ERR_NOTFOUND saying the window otherwise. */
fb_code cap_apply_check_target(const cap_window *w, const cap_target *t, fb_err *err);

typedef struct cap_apply_stats {
    uint64_t applied;          /* transactions */
    uint64_t last_end;         /* end LSN of the last one applied (the base when none) */
    int64_t last_commit_us;    /* its commit time (0 when none) */
} cap_apply_stats;

/* Applies the chain's transactions up to t on c (idle, superuser: session_replication_role = replica, so the
 * target's triggers do not fire again; their effects are in the stream), each atomically in commit order, then
 * moves column sequences past the applied rows (pgoutput carries no sequence changes). in->sk must be set. A
 * failure names the transaction; those before it stay committed, so callers apply into a database that is
 * dropped on failure (restore --until: before the rename of dump_rebuild). */
fb_code cap_apply_chain(PGconn *c, stor *st, const char *dir, const cap_seg_in *in, uint64_t base_lsn,
                        const cap_target *t, cap_apply_stats *out, fb_err *err);

#endif
