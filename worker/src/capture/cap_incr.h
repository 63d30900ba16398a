/* cap_incr: INCREMENTAL and DIFFERENTIAL backups made of captured changes (issue 16) — the point such a backup
 * stops at, the pack of change segments it carries, and, for restore, the chain of such backups down to their
 * capture base FULL.
 *
 * Why. On a database with a capture base (a FULL in a slot's snapshot, cap_base.h) and a live chain, everything
 * an INCREMENTAL would find by reading every table is already in the chain's change segments. So such a backup
 * reads no table: it copies the segments since its base (INCREMENTAL: since the previous backup; DIFFERENTIAL:
 * since the FULL) into its own artifact, and its bytes are what changed. It carries copies rather than pointing at
 * the chain folder, so it does not depend on how long the chain's segments are kept there.
 *
 * The point. The backup waits (up to capture-incr-wait-s) until the slot's confirmed position has passed
 * pg_current_wal_lsn() read when the backup started: the capture confirms a position only once every transaction
 * committed before it is in a durable segment (cap_capture.h), so then every transaction committed before the
 * request is in the chain. On PostgreSQL 14+ it first asks the capture to write at once (a logical message the
 * capture receives in its stream); on 13, whose pgoutput carries no messages, it waits for the capture's own
 * flush (capture-flush-s). The backup's end is the end of the chain's last durable segment at that moment (a
 * segment end, so the ranges of successive backups join exactly). No fallback to a shorter point: a capture that
 * is not keeping up fails the backup (FB_ERR_TRANSIENT, retried like any transient failure) rather than let an
 * INCREMENTAL silently miss a commit the caller already saw. The chain's tip (cap_tip.h) is ignored here: the
 * capture confirms past the last segment only once a tip proving it is durable, which is what the wait relies
 * on, but the backup's end stays a segment end (a tip is superseded every capture-flush-s and is no LSN range of
 * the chain), and restoring a backup of captured changes goes to its own end, where no --until needs a tip.
 *
 * The pack (the plaintext of one artifact segment, encrypted and authenticated like a table's; the manifest's
 * `capture_changes` records its BLAKE2b): "FBCAPPK1", then per segment its file name (48 bytes, NUL-padded), its
 * length (u64 big-endian) and its file's bytes, in LSN order. Each segment stays what it was: signed by the
 * capture's key and bound to its stream, so restore checks it again (signature, stream, name against header, no
 * gap) when it applies it; a segment of another chain or another database, or a pack with a gap, is refused.
 *
 * Restore (cap_incr_collect): from the backup named, through each base_job (every one a backup of captured
 * changes of the same stream and FULL, each range ending where the next one's starts) to the FULL its manifest
 * names, whose capture base must be the same stream at the first range's start and whose snapshot time must be
 * the one the backup recorded (job, stream, point and snapshot time name the FULL; a hash of its index would
 * change with `rekey`). Every pack is unpacked into one local folder, which cap_apply_chain then walks
 * from the FULL's consistent point up to the backup's end, like restore --until.
 *
 * Ownership: everything here borrows its arguments; cap_incr_collect returns a reader and file of the FULL that
 * the caller frees (arc_reader_free, then stor_rfile_close).
 */
#ifndef CAP_INCR_H
#define CAP_INCR_H

#include <stddef.h>
#include <stdint.h>

#include "artifact/arc_reader.h"
#include "capture/cap_segment.h"
#include "common/fb_err.h"
#include "common/fb_flag.h"
#include "storage/stor.h"

#define CAP_INCR_PACK_MAGIC "FBCAPPK1"
#define CAP_INCR_MAX_LINKS 100000 /* backups between one and its FULL: a bound on a walk the manifests steer */

/* The database side of the point. */
typedef struct cap_incr_point {
    uint64_t wal_lsn;          /* pg_current_wal_lsn() when the backup started */
    uint64_t confirmed_lsn;    /* the slot's confirmed position once it passed wal_lsn */
    int64_t now_ms;            /* the server's now() at the start */
    int64_t waited_ms;
    char database[128], server_version[64];
} cap_incr_point;

/* Waits up to wait_ms (polling) for slot's confirmed position to reach pg_current_wal_lsn() as of the call.
 * FB_ERR_TRANSIENT when it does not (the capture is not running or not keeping up), FB_ERR_ABORTED on *abort,
 * FB_ERR_NOTFOUND / FB_ERR_VERIFY when the slot is missing or lost (cap_base_slot_check's messages). */
fb_code cap_incr_wait(const char *conninfo, const char *slot, int64_t wait_ms, const fb_flag *abort, cap_incr_point *p,
                      fb_err *err);

typedef fb_code (*cap_incr_put_fn)(void *opaque, const void *buf, size_t len, fb_err *err);

typedef struct cap_incr_stats {
    uint64_t end_lsn;          /* the last packed segment's end (start_lsn when none) */
    int64_t segments, transactions, bytes;
    int64_t last_commit_us;    /* 0 when none */
} cap_incr_stats;

/* Packs the chain in dir of st from start_lsn to its end into put: each segment's signature and header checked on
 * the way (in->sk NULL: nothing decrypted), each starting where the previous ended (FB_ERR_VERIFY at a gap). */
fb_code cap_incr_pack(stor *st, const char *dir, const cap_seg_in *in, uint64_t start_lsn, cap_incr_put_fn put,
                      void *opaque, cap_incr_stats *out, fb_err *err);

/* The chain of backups of captured changes under the one at path (already open as r), unpacked into folder dir of
 * out_st. The artifacts are looked for in path's folder, then in each chain_dirs folder. */
typedef struct cap_incr_chain {
    uint64_t base_lsn, end_lsn;   /* the FULL's consistent point; the backup's end */
    int64_t end_us;               /* the backup's last commit time (the FULL's time when none) */
    int64_t links, segments;      /* backups of changes walked; change segments unpacked */
    char full_job[130];
} cap_incr_chain;

fb_code cap_incr_collect(const char *path, arc_reader *r, const char *secret_key_file, const char *const *chain_dirs,
                         size_t n_dirs, const arc_trust *trust, stor *out_st, const char *dir, stor_rfile **full_f,
                         arc_reader **full_r, cap_incr_chain *out, fb_err *err);

/* Unpacks r's captured changes (its manifest's capture_changes) into dir of out_st, checking that the pack's
 * segments are named within [start_lsn, end_lsn], in order and without a gap, and that their number is the
 * manifest's. Used by cap_incr_collect and verify. */
fb_code cap_incr_unpack(arc_reader *r, stor *out_st, const char *dir, fb_err *err);

/* A private folder for an unpacked chain: "$TMPDIR/fusion-backup-changes-XXXXXX" (mode 0700) into path (cap
 * bytes) and a storage on it into *st; the chain goes into its folder CAP_INCR_SCRATCH_DIR. cap_incr_scratch_remove
 * removes that folder's files, the folders (path "": nothing) and sets path to "". */
#define CAP_INCR_SCRATCH_DIR "changes"
fb_code cap_incr_scratch_open(char *path, size_t cap, stor **st, fb_err *err);
void cap_incr_scratch_remove(char *path);

#endif
