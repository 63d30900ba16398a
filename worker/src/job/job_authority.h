/* job_authority: may this request run? The database decides, never the message.
 *
 * A Kafka message is a request from a sender nobody authenticated. Before a job changes or writes anything it
 * asks the rows the Django app keeps (schemas/sql/backup_archive.sql, migration 0003) whether they authorise
 * exactly this request, field by field:
 *   backup.requested  record_id names a record of config_id with this job_id, QUEUED or RUNNING (or FAILED when
 *                     the event's attempt is later than the record's: a replay); its configuration is active;
 *                     backup_type and the table list equal the record's (a name equals ["public", name], order
 *                     does not matter), storage_path and retention_days the configuration's (so retention only
 *                     ever acts on the configuration's own folder); no named table is forbidden (below).
 *   backup.verify     record_id names a SUCCESS record of config_id whose verify_job_id is this job_id and whose
 *                     file_path is the event's.
 *   archive.due       policy_id names an active policy whose module, model_name, db_schema, db_table, pk_column
 *                     and timestamp_column equal the event's; cutoff <= now - archive_after_days (+ skew);
 *                     purge_before nil, or the policy has delete_after_days and purge_before <= now -
 *                     delete_after_days (+ skew); root and relation tables are not forbidden; every relation is a
 *                     foreign key in pg_constraint (child table.column -> references.(to_column or its pk)).
 * A refusal is FB_ERR_DENIED (never retried) with a message naming the field, what the database holds and that
 * nothing was changed; a database that cannot be reached stays FB_ERR_TRANSIENT (retried later).
 *
 * Forbidden tables, declared here once: every table of a system schema (pg_catalog, information_schema,
 * pg_toast*, any schema starting with pg_) and the project's own tables (backup_archive_*, in any schema).
 */
#ifndef JOB_AUTHORITY_H
#define JOB_AUTHORITY_H

#include <libpq-fe.h>
#include <stdint.h>

#include "codec/ev_event.h"
#include "common/fb_config.h"
#include "common/fb_err.h"

#define JOB_AUTHORITY_PROJECT_PREFIX "backup_archive_"

/* 1 when schema is a system schema (pg_catalog, information_schema, pg_*). */
int job_authority_system_schema(const char *schema);

/* NULL when schema.name may be archived; else why not, as a static phrase that follows the table's name in a
 * message ("pg_catalog.pg_authid <reason>"). Used for archive roots and relation tables. Backups refuse only
 * system schemas (job_authority_system_schema): the app's own tables hold the archived rows and are backed up,
 * named or as part of every user table. */
const char *job_authority_forbidden_table(const char *schema, const char *name);

/* Checks req (backup.requested, backup.verify or archive.due) against the rows and catalog of c, as described
 * above. now_ms is the wall clock (ms since the epoch), skew_ms the allowed clock skew. Any other event type is
 * FB_ERR_INTERNAL. Returns FB_OK, FB_ERR_DENIED, FB_ERR_TRANSIENT (connection lost) or FB_ERR_NOMEM. */
fb_code job_authority_check(PGconn *c, const ev_event *req, int64_t now_ms, int64_t skew_ms, fb_err *err);

/* The conninfo whose rows authorise a request of type t: cfg->authority_pg for backups and verifications when it
 * is set, else cfg->pg (an archive job writes ArchivedRecord into --pg, so its policy is read there too). */
const char *job_authority_conninfo(const fb_config *cfg, ev_type t);

/* Connects to job_authority_conninfo(), runs job_authority_check with the current time and
 * cfg->authority_skew_ms, and disconnects. No conninfo configured: FB_ERR_USAGE. Cannot connect:
 * FB_ERR_TRANSIENT. */
fb_code job_authority_authorise(const fb_config *cfg, const ev_event *req, fb_err *err);

#endif
