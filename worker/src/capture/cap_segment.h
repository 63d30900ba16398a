/* cap_segment: change segments — committed transactions, durable, compressed, encrypted and signed — and the
 * chain they form.
 *
 * A segment holds one or more whole transactions in commit order and the relation definitions they use, and
 * claims an LSN range [start, end): start is the previous segment's end (the first segment's is the slot's
 * consistent point, recorded with the FULL), end is its last transaction's commit end. So the chain has no gap
 * when every segment starts where the one before it ended, and a transaction's place is its commit LSN; nothing
 * else (file dates, listing order) is trusted.
 *
 * File "cap-SSSSSSSSSSSSSSSS-EEEEEEEEEEEEEEEE.fbcap" (start and end LSN, 16 upper-case hex digits each, so names
 * sort as LSNs do), written through stor (temp + fsync + rename: a crash leaves no file that looks complete):
 *
 *   offset size
 *   0      8    magic "FBCAPSG1"
 *   8      2    format version (1), u16 big-endian like every integer here
 *   10     6    zero
 *   16     80   the segment's data key, sealed to the backup public key: crypto_box_seal(key[32], pk), as in
 *               artifacts (FORMAT.md): a worker can write segments but never read one
 *   96     8    start LSN           104  8  end LSN
 *   112    8    first commit time   120  8  last commit time (Unix epoch microseconds)
 *   128    4    transaction count   132  4  zero
 *   136    8    payload length (decompressed)    144  8  ciphertext length C
 *   152    24   nonce (random)
 *   176    64   stream id: what this chain captures (e.g. "fusion/slot"), NUL-padded; a segment of another
 *               stream is refused, so segments cannot be moved between chains
 *   240    C    crypto_aead_xchacha20poly1305_ietf(zstd(payload)), additional data = bytes 0..240
 *   240+C  16   signing key id (hex)  256+C  64  Ed25519 signature (fb_sign.h, context "capture-segment") of
 *               BLAKE2b-256("fusion-backup capture segment v1" | bytes 0..240 | ciphertext)
 *
 * The signature is checked before the data key is unsealed, and the header's LSNs against the file name, so a
 * forged, re-signed-by-a-stranger, renamed or truncated segment is refused with nothing decrypted. Payload:
 * records 'R' (relation definition) and 'X' (transaction) in the cap_wire framing, every relation defined before
 * a change refers to it. The reader checks the transactions against the header: count, LSN order inside
 * [start, end], last end = end, commit times.
 *
 * Beside the segments, the chain's folder holds schema.fbcaps (cap_schema.h) and the chain's tip, tip-*.fbtip
 * (cap_tip.h: how far past the last segment the chain is known complete); the chain walk reads neither.
 *
 * Ownership: cap_segment_read returns a segment the caller frees with cap_segment_free (NULL ok); its
 * transactions point into its own relation set.
 */
#ifndef CAP_SEGMENT_H
#define CAP_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

#include "artifact/arc_key.h"
#include "capture/cap_txn.h"
#include "common/fb_err.h"
#include "common/fb_sign.h"
#include "storage/stor.h"

#define CAP_SEG_MAGIC "FBCAPSG1"
#define CAP_SEG_VERSION 1
#define CAP_SEG_HEADER_BYTES 240
#define CAP_SEG_TRAILER_BYTES (16 + FB_SIGN_BYTES)
#define CAP_SEG_STREAM_MAX 63
#define CAP_SEG_SIGN_CONTEXT "capture-segment"
#define CAP_SEG_NAME_MAX 48
/* The reader holds a segment in memory: writers flush long before (capture-flush-s, a size threshold). */
#define CAP_SEG_MAX_PAYLOAD (UINT64_C(1) << 30)

/* What writing needs. pk and signer are borrowed. */
typedef struct cap_seg_out {
    const char *stream;                  /* 1..63 bytes */
    const unsigned char *pk;             /* ARC_PK_BYTES */
    const fb_signer *signer;             /* must be loaded */
    int zstd_level;
} cap_seg_out;

/* What reading accepts. sk NULL: check signature and header only (no payload), e.g. to find a chain's end. */
typedef struct cap_seg_in {
    const char *stream;
    const fb_keyring *signers;
    const unsigned char *sk, *pk;        /* ARC_SK_BYTES, ARC_PK_BYTES */
} cap_seg_in;

typedef struct cap_segment {
    char name[CAP_SEG_NAME_MAX];
    uint64_t start_lsn, end_lsn;
    int64_t first_commit_us, last_commit_us;
    uint32_t ntxn;
    char signer[FB_SIGN_KEY_ID_HEX];
    cap_relset rels;
    cap_txn **txns;                      /* ntxn, commit order; NULL when read without the secret key */
} cap_segment;

/* Writes txns[0..n) (n >= 1, in commit order, the first committing at or after start_lsn) as one durable segment
 * in folder dir of st; its name goes to name (CAP_SEG_NAME_MAX) and its end LSN to *end_lsn. Returns only after
 * the file is durable under its final name: then, and only then, the caller may confirm *end_lsn to the slot. */
fb_code cap_segment_write(stor *st, const char *dir, const cap_seg_out *o, uint64_t start_lsn, cap_txn *const *txns,
                          size_t n, char *name, uint64_t *end_lsn, fb_err *err);

/* Reads and verifies dir/name. FB_ERR_UNTRUSTED: signature; FB_ERR_CRYPTO: decryption; FB_ERR_FORMAT: framing,
 * name or payload; FB_ERR_VERIFY: another stream's segment. */
fb_code cap_segment_read(stor *st, const char *dir, const char *name, const cap_seg_in *in, cap_segment **out,
                         fb_err *err);
void cap_segment_free(cap_segment *s);

/* The file name of a range, and back: cap_segment_parse_name returns 0, or -1 when name is not a segment's. */
void cap_segment_name(uint64_t start_lsn, uint64_t end_lsn, char name[CAP_SEG_NAME_MAX]);
int cap_segment_parse_name(const char *name, uint64_t *start_lsn, uint64_t *end_lsn);
/* The two LSNs of a chain file named PREFIX%016X-%016XSUFFIX (segments "cap-"/".fbcap", tips "tip-"/".fbtip":
 * capture/cap_tip.h): 0, or -1 when name is not exactly that (upper-case hex, 4-byte prefix, 6-byte suffix). */
int cap_lsn_pair_parse_name(const char *name, const char *prefix, const char *suffix, uint64_t *a, uint64_t *b);

/* Called for each segment of a chain, in LSN order; the segment is freed after the call. Non-zero stops. */
typedef fb_code (*cap_chain_fn)(void *opaque, const cap_segment *seg, fb_err *err);

/* Walks the chain in dir from base_lsn: every segment verified (with in->sk NULL: signatures and headers only),
 * each starting where the previous ended, the first at base_lsn. *end_lsn: the chain's end (base_lsn when there
 * are no segments). fn may be NULL. FB_ERR_VERIFY naming the gap or overlap when the chain is broken. Files of
 * other names (temporaries of an interrupted write) are ignored. */
fb_code cap_segment_chain(stor *st, const char *dir, const cap_seg_in *in, uint64_t base_lsn, cap_chain_fn fn,
                          void *opaque, uint64_t *end_lsn, fb_err *err);

#endif
