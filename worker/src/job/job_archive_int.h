/* job_archive_int: what the job_archive*.c files share; not for other modules.
 *
 * A plan is the tree of tables one archival touches, read from the event's relations and checked against the
 * catalog before anything is changed: node 0 is the archived table, every other node a CASCADE descendant. Each
 * node lists the foreign keys that point at it (edges): CASCADE (to a child node), SET_NULL / SET_DEFAULT (a
 * column to update), PROTECT / DO_NOTHING (a live reference blocks the row) and UNLISTED (a catalog foreign key
 * the relations do not mention: it blocks the row too, counted as skipped_referenced). The SQL of one batch is
 * generated from the plan (job_archive_sql.c). Names are stored unquoted and quoted when SQL is written.
 */
#ifndef JOB_ARCHIVE_INT_H
#define JOB_ARCHIVE_INT_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/ev_event.h"
#include "common/fb_err.h"
#include "common/fb_sbuf.h"

#define JA_NAME 64      /* NAMEDATALEN */
#define JA_FK_MAX 8     /* columns in one foreign key (Django makes one) */

/* SQL text is an fb_sbuf (common/fb_sbuf.h; out of memory is sticky in `oom`); names go in with pgx_sb_ident and
 * pgx_sb_qualified (pg/pgx.h). */

/* ---- the plan ---- */
typedef enum ja_edge_kind {
    JA_EDGE_CASCADE = 1,
    JA_EDGE_SET_NULL,
    JA_EDGE_SET_DEFAULT,
    JA_EDGE_PROTECT,    /* PROTECT and DO_NOTHING: a live reference blocks the row */
    JA_EDGE_UNLISTED,   /* a catalog foreign key not covered by the relations */
} ja_edge_kind;

typedef struct ja_edge {
    ja_edge_kind kind;
    char schema[JA_NAME], table[JA_NAME];  /* the referencing table */
    char ccol[JA_FK_MAX][JA_NAME];         /* its columns */
    char pcol[JA_FK_MAX][JA_NAME];         /* the referenced columns of the node */
    int ncols;
    int child;                             /* CASCADE: index of the child node */
} ja_edge;

typedef struct ja_node {
    char schema[JA_NAME], table[JA_NAME], pk[JA_NAME];
    char module[256], model_name[256];
    unsigned int oid;
    int parent;   /* -1 for the root */
    int depth;
    int dup;      /* another node has the same table (a diamond): archive rows DISTINCT */
    int partitioned; /* the root only: a partitioned table (its partitions' ctids overlap) */
    ja_edge *edges;
    size_t n_edges, cap_edges;
} ja_node;

typedef struct ja_plan {
    ja_node *nodes;
    size_t n_nodes, cap_nodes;
    char ts_column[JA_NAME];
    int any_dup;
} ja_plan;

/* Builds the plan of ev->u.archive against the catalog of c. FB_ERR_NOTFOUND names a missing table or column;
 * FB_ERR_INVALID a relation that does not fit (no primary key, too deep). The plan owns its memory:
 * ja_plan_free(). */
fb_code ja_plan_build(PGconn *c, const ev_event *ev, ja_plan *plan, fb_err *err);
void ja_plan_free(ja_plan *plan);

/* Parameters of the batch statement (all sent as text):
 *   $1 cutoff ms, $2 first batch (t/f, a guard that the right variant runs), $3 last key of the previous batch (NULL on the first), $4 limit,
 *   $5 archived_by (NULL: system), $6 job_id, then per node k: $(7+5k) module, $(8+5k) model_name,
 *   $(9+5k) schema, $(10+5k) table, $(11+5k) primary-key column. */
#define JA_P_FIXED 6
#define JA_P_PER_NODE 5

/* The parameter values and types of the batch statement for one job. prm points into q's buffers, into ev (job
 * id, archived_by) and into plan (names): both must outlive q. ja_params_batch sets the per-batch ones ($2, $3,
 * $4; last_key NULL for the first batch, borrowed). Free with ja_params_free (accepts NULL). */
typedef struct ja_params {
    size_t n;
    Oid *types;
    const char **prm;
    char cutoff[32], by[32], limit[32];
} ja_params;
fb_code ja_params_init(const ja_plan *plan, const ev_event *ev, ja_params *q, fb_err *err);
void ja_params_batch(ja_params *q, const char *last_key, int64_t limit);
void ja_params_free(ja_params *q);

/* The statement of one batch. dry: no locks, no changes, same counts. first: the variant for the first batch,
 * which does not use $3 (send $3 with type text, see ja_param_types). Its one result row:
 *   seen, protected, referenced, conflict, archived (root rows), cascaded, inserted, nulled, last_key. */
fb_code ja_sql_batch(const ja_plan *plan, int dry, int first, fb_sbuf *out, fb_err *err);
enum { JA_R_SEEN, JA_R_PROT, JA_R_REF, JA_R_CONF, JA_R_ARCHIVED, JA_R_CASCADED, JA_R_INSERTED, JA_R_NULLED,
       JA_R_LASTKEY, JA_R_NCOLS };

/* The fast statement of one batch, for a plain table nothing references (ja_sql_fast_fits: one node, no edges, not
 * partitioned: its DELETE by ctid must name one row; never for a dry run): same parameters and result row as ja_sql_batch, but no row lock before the DELETE (the DELETE
 * takes it) and no conflict probe (the unique index of ArchivedRecord refuses a conflict). So it never skips
 * a row another session holds and never counts a conflict: it fails instead, and the job must then run the batch
 * again with ja_sql_batch, which skips and counts. The batch transaction sets lock_timeout to JA_FAST_LOCK_MS so
 * that a held row makes it fail at once rather than wait (ja_fast_fell_back in job_archive.c decides). */
#define JA_FAST_LOCK_MS 1
int ja_sql_fast_fits(const ja_plan *plan);
fb_code ja_sql_fast(const ja_plan *plan, int first, fb_sbuf *out, fb_err *err);

/* Session settings every archive / unarchive connection uses (pinned output formats, timeouts, planner settings: see ja_session_setup). */
fb_code ja_session_setup(PGconn *c, long long lock_timeout_ms, long long statement_timeout_ms, fb_err *err);

#endif
