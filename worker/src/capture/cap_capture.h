/* cap_capture: the capture loop — transactions from a slot (cap_stream) into durable change segments
 * (cap_segment), confirming the slot's position only after the segment holding it is durable.
 *
 * Pending transactions are kept in memory and written as one segment early enough for the oldest to be durable
 * flush_ms after it arrived (the RPO bound: capture-flush-s; the last write's duration is allowed for), or when
 * they hold flush_bytes. After the write returns (stor: fsync + rename) the
 * segment's end LSN is confirmed to the slot.
 *
 * The tip (cap_tip.h). When nothing is pending and the stream is between transactions, every transaction that
 * committed before the server's reported position is durable; the capture says so in a signed tip beside the
 * chain, at most every flush_ms (and at once for a flush request, at most every CAP_ASK_MIN_MS), so the
 * recoverable window of a quiet database ends about flush_ms ago rather than at its last commit. The time in it is
 * a server commit time from the stream: before a periodic tip the capture commits a heartbeat (cap_stream_heartbeat,
 * a logical message, PostgreSQL 14+) and writes the tip when that commit arrives. The slot's position is confirmed
 * only to what the chain and its durable tip prove (a segment's end, or the tip's end), never further, so a
 * restart streams from where the proof ends and a new tip continues the old one. This also keeps a slot on a
 * database whose writes are all outside the publication from holding WAL forever.
 *
 * Resuming: cap_capture_begin finds the chain's end in storage (signatures and headers checked, nothing
 * decrypted: a worker holds no secret key) and starts streaming there. After a crash between a durable write and
 * its confirmation the slot's confirmed position is behind the chain's end; PostgreSQL starts at the later of
 * the requested and the confirmed position, so nothing durable is sent again. As a guard against a server that
 * does, a transaction committing before the chain's end is dropped (counted): none is ever written twice. The
 * chain's tip, when one counts (its start is the chain's end), is loaded too: the stream is then proven complete up
 * to its end, which is at least the slot's confirmed position (nothing else confirms), so the next tip, from the
 * same chain end, covers what the old one did plus what this stream sees. (A slot confirmed further by a version
 * before tips, which confirmed the server's position when idle, is trusted as the next segment trusts it.)
 *
 * Safety (cap_slot.h, cap_schema.h): cap_capture_begin refuses a slot that is missing, invalidated ('lost') or not
 * pgoutput, and a chain that has ended, with a message saying that a new base is needed and how; nothing here
 * ever creates a slot. Every relation a transaction uses is checked against the chain's recorded column sets:
 * the first transaction under a changed definition (a migration) is not written; everything before it is made
 * durable and confirmed, the end is recorded in the chain's schema file, and FB_ERR_CONFLICT says why. Before
 * each segment write the optional fence is asked whether this process still leads (dmn_capture: it holds the
 * advisory lock); a fenced capture writes nothing more, so a deposed leader cannot fork the chain.
 *
 * Ownership: cap_capture borrows the stream, storage and keys given to it (they must outlive it) and owns its
 * pending transactions; cap_capture_free (NULL ok) drops them unconfirmed, so the slot sends them again.
 */
#ifndef CAP_CAPTURE_H
#define CAP_CAPTURE_H

#include <stddef.h>
#include <stdint.h>

#include "capture/cap_segment.h"
#include "capture/cap_stream.h"
#include "common/fb_err.h"
#include "storage/stor.h"

typedef struct cap_capture_opts {
    stor *st;
    const char *dir;              /* the chain's folder in st */
    cap_seg_out out;              /* stream id, public key, signer */
    const fb_keyring *signers;    /* trusted to have written the chain's segments (the worker's own key) */
    int flush_ms;                 /* capture-flush-s in ms */
    size_t flush_bytes;           /* 0: 64 MiB */
    /* NULL, or returns 0 while this process may write the chain (leadership held), else non-zero. */
    int (*fence)(void *opaque);
    void *fence_opaque;
} cap_capture_opts;

typedef struct cap_capture cap_capture;

/* Starts streaming slot/pub from the end of the chain in o->dir that begins at base_lsn (the slot's consistent
 * point, recorded with the FULL). The stream must not be streaming yet. FB_ERR_NOTFOUND when the slot cannot be
 * streamed from (cap_slot_usable), FB_ERR_CONFLICT when the chain has ended (cap_schema): both need a new base. */
fb_code cap_capture_begin(cap_stream *s, const cap_capture_opts *o, const char *slot, const char *pub,
                          uint64_t base_lsn, cap_capture **out, fb_err *err);
/* Waits up to wait_ms for a transaction, then writes a segment or a tip if one is due. FB_ERR_CONFLICT when a schema change ended
 * the chain (what came before it is durable), FB_ERR_ABORTED when the fence said leadership is lost. */
fb_code cap_capture_step(cap_capture *c, int wait_ms, fb_err *err);
/* Writes what is pending now as a segment, then, between transactions, a tip to the server's position, and
 * confirms what they prove (e.g. when stopping). */
fb_code cap_capture_flush(cap_capture *c, fb_err *err);
/* The chain's base: its first segment's start, or, before the first segment, the slot's confirmed position (until
 * the FULL taken in the slot's snapshot records it). Before cap_capture_begin on the same stream. */
fb_code cap_capture_base(stor *st, const char *dir, cap_stream *s, const char *slot, uint64_t *base, fb_err *err);
/* The stream id "DB/SLOT" and folder "STORAGE_PATH/capture/DB/SLOT" of a database's chain (what `capture
 * --storage-path` uses). FB_ERR_USAGE for a database name that cannot be one. */
fb_code cap_capture_names(const char *storage_path, const char *db, const char *slot, char stream[CAP_SEG_STREAM_MAX + 1],
                          char *dir, size_t dir_cap, fb_err *err);
uint64_t cap_capture_chain_end(const cap_capture *c);
size_t cap_capture_pending(const cap_capture *c);
/* Transactions dropped because a durable segment already holds them (re-sent after a crash). */
uint64_t cap_capture_dropped(const cap_capture *c);
void cap_capture_free(cap_capture *c);

#endif
