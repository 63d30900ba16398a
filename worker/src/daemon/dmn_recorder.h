/* dmn_recorder: applies `job.status` events from the completion topic to BackupRecord and ArchiveRun.
 *
 * Idempotent and monotonic, whatever order events arrive in and however often: the UPDATE's WHERE clause only
 * lets a record move forward (QUEUED -> RUNNING -> SUCCESS | FAILED; FAILED -> SUCCESS for a replayed job; RUNNING
 * stays RUNNING while progress arrives), never from an older attempt, and SUCCESS or FAILED never return to
 * RUNNING. Verification results go to the verified record's last_verified_at / verify_status / verify_message.
 * The database is the authority, not the event (anyone who can produce to the topic can forge one): a backup
 * status applies only when its job id, record_id and config_id all name the same record and its attempt is at
 * most the record's + 1; a verify result only when the record's verify_job_id is the status's job id and the
 * configuration matches; every time is clamped to now() + 5 min. What is not applied is logged with the reason
 * and counted (fusion_backup_recorder_ignored_total{reason}).
 * Before any of that, a status must be signed by a trusted worker key (`signers`, --trusted-signer; kfk_sign.h):
 * an unsigned or wrongly signed one changes nothing, is counted (reason "untrusted") and logged, at most once a
 * minute per key id, so a flood of forgeries cannot flood the log.
 * Archive statuses go to the job's ArchiveRun (Django creates it under the job id it publishes; migration 0005) on
 * the same forward-only rules, when job id and policy_id name the same run; an archive job with no run (sent by
 * hand) is counted and not applied, and before migration 0005 they are acknowledged with one warning. The offset of an event is
 * stored only after its UPDATE committed; while PostgreSQL is down the recorder waits and retries.
 */
#ifndef DMN_RECORDER_H
#define DMN_RECORDER_H

#include <libpq-fe.h>
#include <signal.h>

#include "codec/ev_event.h"
#include "common/fb_config.h"
#include "common/fb_err.h"
#include "common/fb_flag.h"
#include "common/fb_sign.h"

/* Applies one job.status event. *applied is 1 when a record changed, 0 when the event was stale, a duplicate, or
 * about no known record. Errors are PostgreSQL's (FB_ERR_TRANSIENT when worth retrying). */
fb_code dmn_recorder_apply(PGconn *c, const ev_event *status, int *applied, fb_err *err);

/* Consumes <prefix>jobs.completed in group <group_id>-recorder until *signals is non-zero. */
fb_code dmn_recorder_run(const fb_config *cfg, const fb_keyring *signers, fb_flag *signals, fb_err *err);

#endif
