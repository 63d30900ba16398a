/* job_backup: runs one `backup.requested` event: a FULL backup of the requested tables (all user tables when the
 * list is empty) into one artifact under the storage root.
 *
 * One snapshot for all tables (one REPEATABLE READ READ ONLY transaction holding ACCESS SHARE locks, as pg_dump
 * does). Each table streams COPY TO STDOUT -> arc_writer (zstd, secretstream) -> storage, never held in memory.
 * The artifact is "<storage_path>/<job_id>.fbak": written as a temporary, fsynced and renamed, so re-running a
 * job replaces its artifact atomically and a crash leaves no file that looks complete. INCREMENTAL and
 * DIFFERENTIAL store only the tables whose content differs from the base's (FORMAT.md, "Chains"); without a base
 * they run as FULL (stat ran_as_full = 1). A backup of a captured configuration whose change chain cannot continue
 * runs as the FULL of a new capture base under the next slot generation (job_rebase.h; stats capture_rebase,
 * capture_generation). Then the artifact is copied to every --copy-to root and checked there,
 * and the configuration's backups past retention_days are removed (arc_retention.h) from every location.
 */
#ifndef JOB_BACKUP_H
#define JOB_BACKUP_H

#include "job/job.h"

/* Uses ctx->cfg->pg, storage_root, public_key, index_key, copy_to, zstd_level, lock_timeout_ms. On success res has
 * file_path (relative to the storage root), file_size and the stats tables, rows, raw_bytes, stored_bytes,
 * duration_ms; for INCREMENTAL/DIFFERENTIAL requests ran_as_full, tables_stored, tables_referenced; copies (when
 * --copy-to is set) and pruned (backups removed by retention). A copy that cannot be written or read back equal
 * fails the job (FB_ERR_IO); a retention problem is only logged.
 * Errors: FB_ERR_DENIED (job_authority.h: the database does not authorise this request; checked before anything
 * is written), FB_ERR_INVALID (storage path escapes the root, bad table), FB_ERR_NOTFOUND (unknown table),
 * FB_ERR_TRANSIENT (database down, lock timeout), FB_ERR_ABORTED, FB_ERR_IO, FB_ERR_PG. */
fb_code job_backup_run(const job_ctx *ctx, job_result *res, fb_err *err);

/* The artifact's path for a request: "<storage_path>/<job_id>.fbak". Returns 0, or -1 if it does not fit. */
int job_backup_artifact_path(const char *storage_path, const char *job_id, char *out, size_t cap);

#endif
