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

#include "capture/cap_txn.h"
#include "common/fb_err.h"

/* Applies t atomically on c (which must be idle, outside a transaction). */
fb_code cap_apply_txn(PGconn *c, const cap_txn *t, fb_err *err);

#endif
