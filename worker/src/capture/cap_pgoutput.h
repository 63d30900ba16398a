/* cap_pgoutput: continuous change capture (issue 16), part 1: decoding PostgreSQL's pgoutput messages.
 *
 * Design notes for the capture module (cap_*.c)
 * ---------------------------------------------
 * Why pgoutput. It is built into every PostgreSQL from 10 on (no extension to install on a managed server, unlike
 * wal2json or decoderbufs), it is the plugin built-in logical replication uses and so is maintained and tested
 * with every release, and it sends values in their text output form with the relation's columns, key flags and
 * type oids up front (Relation messages), which is exactly what a restore needs to re-apply a row with `$n::type`
 * parameters. test_decoding's output is for humans (and ambiguous with quotes in names); wal2json adds JSON
 * escaping on top of text. We use protocol version 1 (PostgreSQL 10+): no streaming of in-progress transactions,
 * so every transaction arrives whole, after its commit, in commit order — the order a restore must apply them in.
 *
 * The pieces: cap_wire (bounded big-endian framing), cap_txn (a committed transaction), this decoder (pgoutput
 * bytes -> cap_txn, no I/O, so it is tested and fuzzed on bytes alone), cap_stream (the walsender connection:
 * slot, publication, START_REPLICATION, CopyBoth, standby status), cap_segment (durable, compressed, encrypted,
 * signed change segments and their reader).
 *
 * How the FULL joins the stream without a gap or an overlap. CREATE_REPLICATION_SLOT ... LOGICAL pgoutput
 * (SNAPSHOT 'export') returns a consistent point LSN and a snapshot name, valid until the next command on that
 * replication connection or its end. Every transaction whose commit record is at or after the consistent point is
 * streamed by the slot; every transaction committed before it is visible in the snapshot, and no other. So a FULL
 * taken with `SET TRANSACTION SNAPSHOT 'name'` (REPEATABLE READ) holds exactly the transactions the stream does
 * not, and the first change segment starts at the consistent point (cap_segment: each segment's start LSN is the
 * previous one's end, the first one's is the consistent point recorded with the FULL). What job_backup.c needs
 * for that (owned by another helper, not changed here): an option to import a given snapshot name instead of
 * exporting its own (today it runs pg_export_snapshot() itself and hands that name to pg_dump --snapshot and its
 * COPY connections), to keep the capture's replication connection idle until its own COPYs have all imported the
 * snapshot (cap_stream_slot_create() returns the name; the caller must not call cap_stream_start() before the FULL
 * says it imported), and to record the consistent point LSN and the slot name in the FULL's manifest so restore
 * and verify can find the first segment of the chain.
 *
 * Exactly once. The slot's confirmed position only moves when cap_stream_confirm() sends a standby status update,
 * and the capture job calls it only after the segment holding the transaction is durable (stor commit: fsync +
 * rename). After a crash the writer resumes from the chain's end in storage, which may be beyond the confirmed
 * position (the crash fell between a durable write and its confirmation): START_REPLICATION at that LSN starts
 * decoding at the later of it and the confirmed position, and cap_capture drops any transaction committing
 * before the chain's end as a guard. A transaction is never in two segments, and never in none.
 *
 * Leadership (one active capture per database): a session advisory lock on the captured database, argued and
 * built in daemon/dmn_capture.h (the slot's single active walsender is the second guard).
 *
 * DDL. pgoutput sends a new Relation message when a table's definition changed; the decoder keeps every version
 * (cap_relset) and each change points at the one current when it was decoded, and segments carry the definitions
 * their changes use. DDL itself is not in the stream (logical decoding does not decode it), nor what it did to
 * existing rows, so the capture ends the chain before the first change under a changed column set
 * (cap_schema.h argues why and records the chain's known definitions across restarts); a new base follows.
 *
 * This file: a decoder fed the payload of each XLogData message in order. It builds the current transaction
 * between Begin and Commit and hands it over complete on Commit. Every message is parsed with bounds checks; a
 * malformed or out-of-order one (a change outside a transaction, an unknown relation, a tuple whose column count
 * differs from its relation's) is FB_ERR_FORMAT naming the LSN, never a crash or a guess.
 */
#ifndef CAP_PGOUTPUT_H
#define CAP_PGOUTPUT_H

#include <stddef.h>
#include <stdint.h>

#include "capture/cap_txn.h"
#include "common/fb_err.h"

typedef struct cap_decoder cap_decoder;

/* A new decoder (NULL when out of memory); free with cap_decoder_free (NULL ok), which frees its relset, so every
 * transaction it returned must be freed first. */
cap_decoder *cap_decoder_new(void);
void cap_decoder_free(cap_decoder *d);

/* The prefix of the logical message (pg_logical_emit_message(true|false, CAP_FLUSH_PREFIX, ...)) that asks a
 * capture to make what it holds durable at once instead of at its flush deadline: a backup of captured changes
 * (cap_incr.h) sends it, so it waits for a segment write, not for capture-flush-s. A transactional one asks when
 * its transaction commits, and a transaction holding nothing but it is dropped (it changes no row). Anyone who
 * may connect can send it; all it can do is make the capture write a segment early. */
#define CAP_FLUSH_PREFIX "fusion-backup.flush"

/* 1 once after a CAP_FLUSH_PREFIX message was decoded (then 0 until the next); _pending only looks. */
int cap_decoder_take_flush(cap_decoder *d);
int cap_decoder_flush_pending(const cap_decoder *d);

/* The prefix of the capture's heartbeat (cap_stream_heartbeat): a transactional logical message whose only use is
 * its transaction's commit record, which gives the stream a server commit time and position when the
 * publication's tables are quiet (the chain's tip, cap_tip.h). Its transaction holds no change and is dropped, as a
 * flush request's is. Anyone who may connect can send one; all it can do is wake the capture. */
#define CAP_HEARTBEAT_PREFIX "fusion-backup.heartbeat"

/* 1 once after a transaction carrying a CAP_HEARTBEAT_PREFIX message committed; _pending only looks. */
int cap_decoder_take_heartbeat(cap_decoder *d);
int cap_decoder_heartbeat_pending(const cap_decoder *d);

/* The end LSN and server commit time of the last Commit decoded, whether its transaction was handed over or
 * dropped (0, 0 before the first). */
void cap_decoder_last_commit(const cap_decoder *d, uint64_t *end_lsn, int64_t *commit_us);

/* Decodes one pgoutput message (the data of one XLogData message; wal_start is its WAL position, for messages).
 * On a Commit, *done is the finished transaction (the caller owns it: cap_txn_free); otherwise *done is NULL.
 * Messages this module does not need (Origin, Type, logical messages other than CAP_FLUSH_PREFIX's) are skipped. */
fb_code cap_decoder_feed(cap_decoder *d, const void *msg, size_t len, uint64_t wal_start, cap_txn **done,
                         fb_err *err);

/* 1 between a Begin and its Commit. */
int cap_decoder_in_txn(const cap_decoder *d);

/* The relation definitions seen so far (borrowed; valid until cap_decoder_free). */
const cap_relset *cap_decoder_relset(const cap_decoder *d);

#endif
