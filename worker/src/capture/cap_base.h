/* cap_base: the base of a change chain — a new slot and the FULL taken in its snapshot, as one unit — and the
 * check that a chain's slot is still there to stream from.
 *
 * Why a base is one unit. A chain is only worth something on top of a FULL that holds exactly the transactions
 * committed before the slot's consistent point (cap_pgoutput.h, "How the FULL joins the stream"). The snapshot
 * the slot exports lives only while its replication connection stays open and idle, so slot creation and the
 * FULL cannot be separate commands: cap_base_begin creates the slot and keeps its connection idle, the caller
 * runs the FULL with the snapshot (job_backup.c imports it through job_ctx.import and records the base in the
 * manifest), then cap_base_end closes the connection (the slot stays, its confirmed position is the consistent
 * point, where `fusion-backup capture` starts). A FULL that failed gets cap_base_end(b, 0): the slot is dropped,
 * since a slot without a base would only hold WAL.
 *
 * Who calls it: `fusion-backup backup CONFIG --type FULL --capture-base` (cmd_backup.c, which owns the backup's
 * record), and any backup job whose configuration's chain needs a new base (job_rebase.h: the next slot
 * generation, cap_rebase.h), in a worker or in `backup`, through cap_base_begin_slot around its FULL.
 *
 * Never a silent gap. A new base never goes into a folder that already holds segments (FB_ERR_CONFLICT): the old
 * chain ends where its slot stopped, and a new slot's chain must not look like its continuation, so a new base
 * takes a new slot name (--capture-slot, or the next generation, cap_rebase.h) and thereby a new folder and stream
 * id. cap_base_slot_check refuses to
 * stream from a slot that is missing or whose WAL was removed (pg_replication_slots.wal_status 'lost':
 * max_slot_wal_keep_size was exceeded), saying that a new base is needed: streaming would skip what was lost.
 *
 * Names: the chain of database DBNAME and slot SLOT has stream id "DBNAME/SLOT" and folder
 * "<storage-path>/capture/DBNAME/SLOT"; restore finds it beside the base FULL's artifact as capture/<stream>.
 */
#ifndef CAP_BASE_H
#define CAP_BASE_H

#include <stddef.h>
#include <stdint.h>

#include "capture/cap_segment.h"
#include "capture/cap_stream.h"
#include "common/fb_config.h"
#include "common/fb_err.h"
#include "storage/stor.h"

#define CAP_BASE_DIR_MAX 1200

/* The stream id (CAP_SEG_STREAM_MAX + 1 bytes) and folder (CAP_BASE_DIR_MAX) of slot's chain on the database
 * conninfo names (no connection made). FB_ERR_USAGE when conninfo names no database or the names do not fit. */
fb_code cap_base_names(const char *conninfo, const char *slot, const char *storage_path, char *stream, char *dir,
                       fb_err *err);

/* The start of the folder's first segment into *first — or, before the first segment, of its tip (cap_tip.h:
 * a tip then starts at the base; the slot is confirmed past the base only once a tip says so) — 0 when it holds
 * neither: a chain's base as the chain's file names alone say it (the FULL's manifest says it for sure; with every
 * segment removed, a later tip's start looks like the base here, while restore and verify, from the manifest,
 * see the missing segments). */
fb_code cap_base_chain_first(stor *st, const char *dir, uint64_t *first, fb_err *err);

/* FB_OK when the folder holds no segment; FB_ERR_CONFLICT naming its first one otherwise. */
fb_code cap_base_folder_empty(stor *st, const char *dir, fb_err *err);

/* FB_OK when slot exists on conninfo's database and its WAL is all there; FB_ERR_NOTFOUND (missing) or
 * FB_ERR_VERIFY (wal_status 'lost') with what to do: take a new base under a new slot name. */
fb_code cap_base_slot_check(const char *conninfo, const char *slot, fb_err *err);

/* The chain of a capture base FULL, found beside its artifact: *st is the artifact's folder (a path or s3:// URL,
 * caller frees with stor_free) and dir (CAP_BASE_DIR_MAX) "capture/<stream>" in it. The stream comes from the
 * authenticated manifest; a name that could leave the folder is still refused (FB_ERR_FORMAT). */
fb_code cap_base_chain_open(const fb_config *cfg, const char *artifact_path, const char *stream, stor **st, char *dir,
                            fb_err *err);

typedef struct cap_base {
    cap_stream *s;                      /* open and idle until cap_base_end */
    cap_slot_info info;                 /* slot, consistent point, snapshot */
    char stream[CAP_SEG_STREAM_MAX + 1];
    char dir[CAP_BASE_DIR_MAX];
} cap_base;

/* Checks cfg->capture_slot's folder in st under storage_path is empty, connects as a walsender to cfg->pg, checks
 * replica identities, ensures cfg->capture_publication and creates the slot with an exported snapshot. On FB_OK
 * the caller runs the FULL with b->info.snapshot, then calls cap_base_end. On failure nothing is left (no slot). */
fb_code cap_base_begin(const fb_config *cfg, stor *st, const char *storage_path, cap_base *b, fb_err *err);
/* The same with slot instead of cfg->capture_slot (a generation the caller derived, cap_rebase_slot_name). */
fb_code cap_base_begin_slot(const fb_config *cfg, const char *slot, stor *st, const char *storage_path, cap_base *b,
                            fb_err *err);

/* full_ok: the FULL committed, the slot stays. Otherwise the slot is dropped (errors only logged). Closes the
 * connection. Safe on a zeroed or ended b. */
void cap_base_end(cap_base *b, int full_ok);

#endif
