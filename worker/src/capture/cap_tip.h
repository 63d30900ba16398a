/* cap_tip: the chain's tip — a small signed statement, beside the chain's segments, of how far the chain is
 * complete beyond its last segment: "no transaction of the publication committed between LSN from (the chain's
 * end) and LSN to, and the server's commit at LSN mark, at or before to, was at time T". With it the recoverable
 * window of a quiet database ends at T (about now minus capture-flush-s) instead of at its last commit.
 *
 * Why it is true when the capture writes it (cap_capture.h): the capture holds nothing pending and the stream is
 * between transactions, so every transaction committed before the server's reported position (`to`, the
 * walsender's keepalive or last message) has been handed over and is in a durable segment (PostgreSQL decodes in
 * commit order). The time is never the worker's clock nor a keepalive's send time (an in-flight commit can have an
 * earlier commit time than a keepalive yet a later LSN: a WAL flush or an asynchronous commit away): it is the
 * commit time PostgreSQL wrote into a commit record the stream decoded at or before `to`, normally the capture's
 * own heartbeat (a transactional logical message, cap_stream_heartbeat). So every commit after `to` has a later
 * commit time, except for the instants between a commit taking its timestamp and inserting its record — the same
 * ordering PostgreSQL's own recovery_target_time lives with (cap_apply.h: TIME stops at the first commit past it).
 *
 * Why a file beside the chain and not an empty segment: a tip is superseded every capture-flush-s; an empty
 * segment would be part of the chain's LSN ranges (the next segment starts at its end, so it can never go away,
 * and a backup of captured changes, cap_incr.h, that packed it would no longer join the next one), and readers
 * before this version refuse a segment without transactions. A tip is bound to the chain by `from`: it counts only
 * while from is the chain's end (the last segment's end, or the base when there is none); once a segment is
 * written it is stale and ignored, so a crash anywhere leaves at worst a stale tip, never a wrong window.
 *
 * File "tip-FFFFFFFFFFFFFFFF-TTTTTTTTTTTTTTTT.fbtip" (from and to, 16 upper-case hex digits), written through
 * stor (temp + fsync + rename) under a new name each time, the previous one removed afterwards (S3 never
 * overwrites), so a crash in between leaves two, and readers take the authentic one that counts with the largest
 * `to`. CAP_TIP_BYTES bytes, integers big-endian:
 *   0    8  magic "FBCAPTP1"      8   2  version (1)      10  6  zero
 *   16   8  from LSN              24  8  to LSN (from < to)
 *   32   8  mark LSN (<= to)      40  8  time: the server's commit time at mark, Unix epoch microseconds (0: none)
 *   48  64  stream id, NUL-padded (as segments: a tip of another chain is refused)
 *   112 16  signing key id (hex)  128 64  Ed25519 signature (fb_sign.h, context "capture-tip") of
 *           BLAKE2b-256("fusion-backup capture tip v1" | bytes 0..112)
 * A worker signs tips with the key it signs segments with (it holds no secret key of the backups); readers accept
 * only a tip signed by a trusted signer, of this stream, whose name says its header. A forged or damaged tip
 * never extends the window: it is reported (verify fails on it, list shows it) and ignored. An authentic tip whose
 * from lies past the chain's end means segments at the chain's end are missing: reported too.
 *
 * Ownership: plain values; nothing here keeps memory.
 */
#ifndef CAP_TIP_H
#define CAP_TIP_H

#include <stddef.h>
#include <stdint.h>

#include "common/fb_err.h"
#include "common/fb_sign.h"
#include "storage/stor.h"

#define CAP_TIP_MAGIC "FBCAPTP1"
#define CAP_TIP_VERSION 1
#define CAP_TIP_BYTES 192
#define CAP_TIP_SIGN_CONTEXT "capture-tip"
#define CAP_TIP_NAME_MAX 48
#define CAP_TIP_MAX_FILES 8 /* more tip files than this in one folder: refused (a writer leaves at most two) */

typedef struct cap_tip {
    uint64_t from_lsn, to_lsn;  /* no commit of the publication in [from, to) */
    uint64_t mark_lsn;          /* end of the commit whose server time is time_us */
    int64_t time_us;            /* 0: the tip extends the window by LSN only */
    char signer[FB_SIGN_KEY_ID_HEX];
} cap_tip;

/* The file name of a tip, and back: cap_tip_parse_name returns 0, or -1 when name is not a tip's. */
void cap_tip_name(uint64_t from_lsn, uint64_t to_lsn, char name[CAP_TIP_NAME_MAX]);
int cap_tip_parse_name(const char *name, uint64_t *from_lsn, uint64_t *to_lsn);

/* Encodes t (from < to, mark <= to) as signed by signer into buf (CAP_TIP_BYTES). FB_ERR_INTERNAL on a bad t. */
fb_code cap_tip_encode(const cap_tip *t, const char *stream, const fb_signer *signer, unsigned char buf[CAP_TIP_BYTES],
                       fb_err *err);
/* Parses and verifies the len bytes of file `name` (any len: only CAP_TIP_BYTES can be one). FB_ERR_FORMAT
 * (framing, name, fields), FB_ERR_UNTRUSTED (signature), FB_ERR_VERIFY (another stream's). */
fb_code cap_tip_parse(const unsigned char *buf, size_t len, const char *name, const char *stream,
                      const fb_keyring *signers, cap_tip *out, fb_err *err);

/* Writes t durably as dir/<its name> (the name into name). Returns after fsync + rename only. */
fb_code cap_tip_write(stor *st, const char *dir, const char *stream, const fb_signer *signer, const cap_tip *t,
                      char name[CAP_TIP_NAME_MAX], fb_err *err);

typedef enum cap_tip_state {
    CAP_TIP_NONE = 0,   /* no tip that counts (none, or only stale ones): the window ends at the last commit */
    CAP_TIP_VALID,      /* tip: from is the chain's end */
} cap_tip_state;

/* What dir holds for a chain ending at chain_end. */
typedef struct cap_tip_found {
    cap_tip_state state;
    cap_tip tip;                                     /* when VALID: the one with the largest to */
    char problem[400];                               /* "" or why a tip file was refused or segments are missing */
    int ahead;                                       /* an authentic tip starts past chain_end: segments missing */
    char names[CAP_TIP_MAX_FILES][CAP_TIP_NAME_MAX]; /* every authentic tip file (the writer removes them later) */
    size_t n_names;
} cap_tip_found;

/* Reads every tip file of dir. FB_OK with f filled (problems are in f->problem, not errors: a bad tip only does not
 * count); an error only when the folder cannot be listed or a file cannot be read. */
fb_code cap_tip_find(stor *st, const char *dir, const char *stream, const fb_keyring *signers, uint64_t chain_end,
                     cap_tip_found *f, fb_err *err);

#endif
