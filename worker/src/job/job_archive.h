/* job_archive: the `archive.due` job (moves old rows into ArchivedRecord) and its inverse, unarchive.
 *
 * What a run does, batch by batch, each batch ONE transaction and ONE SQL statement (data-modifying CTEs, so rows
 * never travel to the client):
 *   - take up to batch_size due rows (timestamp_column < cutoff) of the table, in primary-key order after the last
 *     key of the previous batch, locked FOR UPDATE SKIP LOCKED (rows another session holds are left for next time);
 *   - decide per row whether it may go: a row is skipped (and counted) when a PROTECT or DO_NOTHING relation has a
 *     live referencing row (skipped_protected), when a foreign key in the catalog that the event's relations do not
 *     cover still references it (skipped_referenced; with relations = nil this is every referenced row), or when
 *     an ArchivedRecord with the same (module, model_name, original_id) already exists (skipped_conflict, see
 *     below). The decision looks through CASCADE children recursively: a row goes only if its whole subtree can;
 *   - insert one ArchivedRecord per moved row (the root rows and every CASCADE descendant, each with its own
 *     module/model_name), delete them, and null (SET_NULL) or default (SET_DEFAULT) the referencing columns;
 *   - check that as many rows were deleted as archived (else roll back: never both, never neither), commit.
 * A table nothing references (no relation, no catalog foreign key: logs, notifications) is archived with a
 * shorter statement that does the same with less work per row: the DELETE takes the row locks itself and the
 * unique index of ArchivedRecord refuses a conflict. It cannot skip a held row or count a conflict, so a batch that
 * meets one fails at once (it waits at most JA_FAST_LOCK_MS for a lock), is rolled back, and the job runs it and
 * every later batch with the statement above, which skips and counts them.
 * A batch that cannot get its locks (lock_timeout, deadlock, or a referencing row that appeared meanwhile and
 * fails the deferred foreign-key check at COMMIT) is rolled back and retried after a growing pause, at most
 * JOB_ARCHIVE_LOCK_RETRIES times; then the job fails with FB_ERR_TRANSIENT and the daemon retries it later.
 * Committed batches stay: re-running the job (redelivery, replay) simply continues with what is still due.
 *
 * ArchivedRecord.data, the envelope (version 1), one JSON object as text:
 *   {"v": 1, "table": ["public", "leave_leave"], "pk": "id", "row": { ...row_to_json(row)... }}
 * "row" is the row exactly as PostgreSQL prints it (row_to_json: bytea as "\\x..." hex, numeric and floats in
 * their exact text, timestamps in ISO 8601 with offset, arrays as JSON arrays, json/jsonb embedded); the session
 * pins DateStyle/IntervalStyle/bytea_output/extra_float_digits so the text does not depend on server settings.
 * json_populate_record(NULL::table, data::json->'row') gives the row back, which is how unarchive restores it.
 * "table" and "pk" tell unarchive where the row goes without a schema change to ArchivedRecord.
 *
 * Conflicts (unique (module, model_name, original_id)): a redelivered job never meets one, because a committed
 * batch removed its rows from the table and a rolled back one archived nothing. A conflict means a row with the
 * same primary key was archived earlier and has since been re-created (varchar keys such as roll numbers, or a
 * manual insert) and is due again. Both versions are real data and only one may be stored, so the live row is
 * left in its table and counted as skipped_conflict (with a warning naming table and count); it moves once the
 * old ArchivedRecord is purged (purge_before) or unarchived. Nothing is ever overwritten.
 *
 * max_rows counts rows examined at the top level (archived + skipped), so a table full of protected rows cannot
 * keep a job busy forever. purge_before deletes ArchivedRecords of the job's module+model only (not those of its
 * CASCADE children, which belong to their own models and policies), in batches of batch_size.
 */
#ifndef JOB_ARCHIVE_H
#define JOB_ARCHIVE_H

#include <stddef.h>
#include <stdint.h>

#include "common/fb_err.h"
#include "job/job.h"

#define JOB_ARCHIVE_LOCK_RETRIES 5   /* retries of one batch that could not get its locks */
#define JOB_ARCHIVE_MAX_DEPTH 12     /* CASCADE levels below the archived table (deeper: a cycle in relations) */
#define JOB_ARCHIVE_TABLE "backup_archive_archivedrecord" /* in schema public */

/* Runs ctx->ev (type EV_ARCHIVE_DUE) against ctx->cfg->pg. Counters in res (job_result_set): archived, cascaded,
 * nulled, skipped_protected, skipped_referenced, skipped_conflict, purged, batches, lock_retries, total_due,
 * done_rows, total_rows, duration_ms, and the throttling: batch_ms (the last batch), throttle_ms (paused for the
 * database's load, in total), throttle_lock_waits and throttle_lag_waits (batches after which sessions were
 * waiting for a lock / a replica lagged), throttle_live_batches (batches after which other sessions of the
 * database were busy: a live load, which gets smaller batches and longer pauses) and live_sessions (how many, at
 * the last look); fb_config.c's archive-* settings. Reports progress after the first batch and then at most once a
 * second, only what is durable (batches commit asynchronously; see job_archive.c); stops between batches when
 * job_aborted(ctx) (FB_ERR_ABORTED; committed batches stay). Errors: FB_ERR_DENIED (job_authority.h: no active
 * policy authorises this request; checked before anything is changed), FB_ERR_NOTFOUND (table or column missing,
 * named in the message), FB_ERR_INVALID (relations that do not fit the catalog), FB_ERR_TRANSIENT (database down,
 * locks not obtained after retries), FB_ERR_PG. res is filled as far as the job got, also on error. */
fb_code job_archive_run(const job_ctx *ctx, job_result *res, fb_err *err);

/* unarchive: which ArchivedRecords to put back. Strings and the ids array are borrowed. */
typedef struct job_unarchive_opts {
    const char *conninfo;
    const char *module;
    const char *model_name;
    const char *const *ids;        /* original_id values; n_ids == 0: use archived_before */
    size_t n_ids;
    const char *archived_before;   /* a timestamptz literal PostgreSQL accepts ("2026-01-01 00:00+00"), or NULL */
    int dry_run;                   /* do everything, then roll back */
    int64_t lock_timeout_ms, statement_timeout_ms;
} job_unarchive_opts;

/* What unarchive did. conflicts is a malloc'd array of malloc'd original_id strings (free with
 * job_unarchive_result_free); not_found counts requested ids that have no ArchivedRecord. */
typedef struct job_unarchive_result {
    int64_t restored;
    int64_t not_found;
    char **conflicts;
    size_t n_conflicts;
} job_unarchive_result;

/* Puts the selected rows back into their tables (json_populate_record, generated columns left out, identity
 * columns given their old values) and deletes their ArchivedRecords, all in one transaction. A row whose primary
 * key exists in its table again is not overwritten: it stays archived and is listed in res->conflicts; the others
 * are restored. Returns FB_OK also when there were conflicts (the caller decides the exit code). */
fb_code job_unarchive_run(const job_unarchive_opts *o, job_unarchive_result *res, fb_err *err);
void job_unarchive_result_free(job_unarchive_result *res);

#endif
