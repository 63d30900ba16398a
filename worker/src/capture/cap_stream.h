/* cap_stream: the walsender side of change capture — a logical replication connection to one database, its
 * publication and slot, and the CopyBoth stream of pgoutput messages decoded into committed transactions.
 *
 * Protocol: the connection is opened with replication=database (a walsender that also accepts simple SQL, used
 * for the publication); CREATE_REPLICATION_SLOT ... LOGICAL pgoutput (SNAPSHOT 'export') makes the slot (see
 * cap_pgoutput.h for why the snapshot matters); START_REPLICATION SLOT s LOGICAL lsn (proto_version '1',
 * publication_names 'p') turns the connection into a CopyBoth stream of XLogData ('w': wal start, wal end, send
 * time, payload) and keepalive ('k': wal end, send time, reply requested) messages; the client answers with
 * standby status updates ('r': write, flush, apply positions, time, reply flag). The slot's confirmed position is
 * the flush position we report, and it is only ever what the caller passed to cap_stream_confirm(): the caller
 * confirms a transaction's end LSN after the segment holding it is durable, never before.
 *
 * Ownership: cap_stream_open returns a stream the caller frees with cap_stream_free (NULL ok), which closes the
 * connection (and the heartbeat's ordinary connection, cap_stream_heartbeat, when one was opened); transactions returned by cap_stream_next are the caller's (cap_txn_free) and point into the
 * stream's relation set, so they must be freed before the stream.
 */
#ifndef CAP_STREAM_H
#define CAP_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "capture/cap_txn.h"
#include "common/fb_err.h"

#define CAP_NAME_MAX 63  /* slot and publication names: PostgreSQL identifiers */

typedef struct cap_stream cap_stream;

/* What CREATE_REPLICATION_SLOT returned. The snapshot is usable (SET TRANSACTION SNAPSHOT) only until the next
 * command on this stream, cap_stream_start included. */
typedef struct cap_slot_info {
    char slot[CAP_NAME_MAX + 1];
    uint64_t consistent_lsn;
    char snapshot[64];
} cap_slot_info;

/* Connects to conninfo (key=value or URI) as a logical walsender. FB_ERR_TRANSIENT when the server is down;
 * FB_ERR_PG with a hint when it refuses replication (wal_level, pg_hba, the role's REPLICATION attribute). */
fb_code cap_stream_open(const char *conninfo, const char *application_name, cap_stream **out, fb_err *err);
/* The same on database dbname instead of conninfo's (NULL: conninfo's own). */
fb_code cap_stream_open_db(const char *conninfo, const char *dbname, const char *application_name, cap_stream **out,
                           fb_err *err);
void cap_stream_free(cap_stream *s);

/* Creates publication `name` if it does not exist: FOR ALL TABLES when ntables is 0, else FOR TABLE the given
 * schema-qualified tables ("schema.table"; names quoted here). An existing publication is left as it is. */
fb_code cap_stream_publication_ensure(cap_stream *s, const char *name, const char *const *tables, size_t ntables,
                                      fb_err *err);
/* Tables a FOR ALL TABLES publication would break: with no replica identity (no primary key and REPLICA IDENTITY
 * DEFAULT, or REPLICA IDENTITY NOTHING) PostgreSQL refuses UPDATE and DELETE on a published table ("cannot update
 * table ... because it does not have a replica identity"), so creating the publication would make Fusion's own
 * writes fail. Returns FB_OK when there are none; otherwise FB_ERR_USAGE naming them (up to 20) with the fix.
 * When it returns FB_OK it also warns (log) about each published table without a primary key (REPLICA IDENTITY
 * FULL or USING INDEX): allowed, but every UPDATE and DELETE writes the whole old row to the WAL. */
fb_code cap_stream_identity_check(cap_stream *s, fb_err *err);

/* Creates a logical pgoutput slot with an exported snapshot. FB_ERR_CONFLICT when the slot exists. */
fb_code cap_stream_slot_create(cap_stream *s, const char *slot, cap_slot_info *info, fb_err *err);
/* Drops a slot (waits while another connection uses it). FB_ERR_NOTFOUND when there is none. */
fb_code cap_stream_slot_drop(cap_stream *s, const char *slot, fb_err *err);

/* The slot's confirmed position (where a chain without segments begins). FB_ERR_NOTFOUND with a hint when there
 * is no such slot on this database. */
fb_code cap_stream_slot_position(cap_stream *s, const char *slot, uint64_t *lsn, fb_err *err);

/* The slot's state (cap_slot.h), read on this connection; only before cap_stream_start. */
struct cap_slot_health;
fb_code cap_stream_slot_health(cap_stream *s, const char *slot, struct cap_slot_health *h, fb_err *err);
/* The database this stream's connection is on (borrowed). */
const char *cap_stream_dbname(const cap_stream *s);

/* Starts streaming slot from start_lsn (the chain's end; the server starts at the later of it and the slot's
 * confirmed position) with publication pub. After this only cap_stream_next/confirm are allowed. FB_ERR_TRANSIENT
 * when another walsender streams the slot ("replication slot ... is active for PID"). */
fb_code cap_stream_start(cap_stream *s, const char *slot, const char *pub, uint64_t start_lsn, fb_err *err);

/* Waits up to timeout_ms for the next committed transaction (0: reads what the socket holds, without waiting).
 * FB_OK with *out a transaction, or *out NULL when the time ran out first or a flush request or a heartbeat
 * arrived (cap_stream_take_flush_request, cap_stream_take_heartbeat). Answers keepalives that ask for a reply, and sends a status update at least every
 * 10 s so the server does not time the connection out (wal_sender_timeout). */
fb_code cap_stream_next(cap_stream *s, int timeout_ms, cap_txn **out, fb_err *err);

/* 1 once after a flush request arrived (cap_pgoutput.h, CAP_FLUSH_PREFIX; cap_stream_next returns at once when
 * one does): the caller should make what it holds durable now. */
int cap_stream_take_flush_request(cap_stream *s);

/* 1 once after a heartbeat's transaction (cap_pgoutput.h, CAP_HEARTBEAT_PREFIX) committed in the stream
 * (cap_stream_next returns at once when one does). */
int cap_stream_take_heartbeat(cap_stream *s);

/* The end LSN and server commit time of the last commit the stream decoded, kept or dropped (0, 0 before any). */
void cap_stream_last_commit(const cap_stream *s, uint64_t *end_lsn, int64_t *commit_us);

/* 1 when the server's pgoutput carries logical messages (PostgreSQL 14+), so heartbeats reach the stream. */
int cap_stream_can_heartbeat(const cap_stream *s);
/* Commits a heartbeat (pg_logical_emit_message(true, CAP_HEARTBEAT_PREFIX, '')) on an ordinary connection to the
 * streamed database (opened on the first call, kept; synchronous_commit local, statement_timeout 5 s): its commit
 * reaches the stream soon after, with the server's commit time. FB_ERR_USAGE before PostgreSQL 14; the server's
 * error otherwise (e.g. no EXECUTE on the function). The stream must be streaming. */
fb_code cap_stream_heartbeat(cap_stream *s, fb_err *err);

/* Reports lsn as written and flushed (the slot's new confirmed position) and sends it now. Positions only move
 * forward: a smaller lsn than already confirmed is ignored. */
fb_code cap_stream_confirm(cap_stream *s, uint64_t lsn, fb_err *err);

/* 1 when every transaction committed before cap_stream_received_lsn() has been returned (no transaction is
 * half-received): then that position may be confirmed once everything returned is durable. */
int cap_stream_between_txns(const cap_stream *s);

/* The last WAL end the server reported (XLogData or keepalive), and the confirmed position. */
uint64_t cap_stream_received_lsn(const cap_stream *s);
uint64_t cap_stream_confirmed_lsn(const cap_stream *s);

#endif
