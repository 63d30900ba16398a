/* arc_sign: who wrote an artifact (format 5, FORMAT.md "Signatures (format 5)").
 *
 * Why: the data key is sealed with crypto_box_seal, which is anonymous. Anyone holding backup.pub and write access
 * to the storage can build an artifact that decrypts and authenticates, and restore would then run the DDL and
 * schema archive its manifest carries. So every artifact from format 5 on carries a signature block, between the
 * chain index and the trailer (its place is fixed by the trailer, so a reader never searches for it), with two
 * Ed25519 signatures (fb_sign.h, context "artifact"):
 *
 *   manifest signature: over the header's fixed part (bytes 0..16), the job id, the manifest segment's offset and
 *     length and the BLAKE2b of its ciphertext. The manifest authenticates every other segment (their hashes,
 *     under the data key), so this one signature decides everything restore executes. The sealed data key is left
 *     out: replacing it only makes the manifest undecryptable, and `rekey` must be able to re-seal without a
 *     signing key.
 *   index signature: over the header's fixed part, the job id, the manifest signature (so an index cannot be moved
 *     to another artifact), the index's offset and length and its bytes. Separate so that `rekey`, which re-MACs
 *     the index for the new key, can re-sign only the index with an operator's trusted key (--sign-key).
 *
 * Both are checked against a keyring (`trusted-signer`) before the manifest is decrypted or the index is used,
 * and the signed job id must equal the one the caller expects (the file name, the record), so one job's artifact
 * copied over another's name is refused. Artifacts of format <= 4 carry no signature: arc_trust.allow_unsigned
 * decides whether they are read at all.
 */
#ifndef ARC_SIGN_H
#define ARC_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include "common/fb_err.h"
#include "common/fb_sign.h"
#include "storage/stor.h"

#define ARC_SIGN_CONTEXT "artifact"
#define ARC_SIG_MAGIC "FBAKSIG1"
#define ARC_SIG_JOB_MAX 128
/* magic 8 | manifest key id 16 | manifest signature 64 | index key id 16 | index signature 64 | job id length 2 |
 * job id 128 (NUL-padded) */
#define ARC_SIG_BLOCK_BYTES (8 + 16 + FB_SIGN_BYTES + 16 + FB_SIGN_BYTES + 2 + ARC_SIG_JOB_MAX) /* 298 */
#define ARC_SIG_FIRST_VERSION 5

/* What a reader accepts. signers is borrowed and must outlive every reader opened with it. job_id: the job the
 * artifact must be (from its file name or the record); NULL when nothing names it (then any signed job id is
 * accepted and the caller shows it). */
typedef struct arc_trust {
    const fb_keyring *signers;
    int allow_unsigned;
    const char *job_id;
} arc_trust;

/* The decoded signature block. */
typedef struct arc_sig_block {
    char manifest_key[FB_SIGN_KEY_ID_HEX];
    unsigned char manifest_sig[FB_SIGN_BYTES];
    char index_key[FB_SIGN_KEY_ID_HEX];
    unsigned char index_sig[FB_SIGN_BYTES];
    char job_id[ARC_SIG_JOB_MAX + 1];
} arc_sig_block;

/* Where the signed parts of a format-5 file are (from its trailer). */
typedef struct arc_sig_layout {
    uint64_t moff, mlen, ioff, ilen, soff;
} arc_sig_layout;

/* The outcome of a check, for `list` and messages. */
typedef enum { ARC_SIG_UNSIGNED, ARC_SIG_UNTRUSTED, ARC_SIG_TRUSTED } arc_sig_state;

typedef struct arc_sig_status {
    arc_sig_state state;
    char manifest_key[FB_SIGN_KEY_ID_HEX]; /* who signed ("" when unsigned) */
    char index_key[FB_SIGN_KEY_ID_HEX];
    char job_id[ARC_SIG_JOB_MAX + 1];      /* the signed job id */
} arc_sig_status;

/* The two digests (the framing is in FORMAT.md). header16: the header's first 16 bytes. ct_hash: BLAKE2b-256 of
 * the manifest segment's bytes. */
void arc_sign_manifest_digest(const unsigned char *header16, const char *job_id, uint64_t moff, uint64_t mlen,
                              const unsigned char ct_hash[32], unsigned char out[FB_SIGN_DIGEST_BYTES]);
void arc_sign_index_digest(const unsigned char *header16, const char *job_id,
                           const unsigned char manifest_sig[FB_SIGN_BYTES], uint64_t ioff, const void *index,
                           size_t ilen, unsigned char out[FB_SIGN_DIGEST_BYTES]);

fb_code arc_sign_block_encode(const arc_sig_block *b, unsigned char out[ARC_SIG_BLOCK_BYTES], fb_err *err);
fb_code arc_sign_block_decode(const unsigned char in[ARC_SIG_BLOCK_BYTES], arc_sig_block *b, fb_err *err);

/* Signs the manifest part, then the index part (fills b). */
void arc_sign_manifest(const fb_signer *s, const unsigned char *header16, const char *job_id, uint64_t moff,
                       uint64_t mlen, const unsigned char ct_hash[32], arc_sig_block *b);
void arc_sign_index(const fb_signer *s, const unsigned char *header16, uint64_t ioff, const void *index, size_t ilen,
                    arc_sig_block *b);

/* Checks both signatures of b against trust->signers, then the signed job id against trust->job_id. `name` names
 * the file in messages. FB_ERR_UNTRUSTED with the key id when a key is unknown or a signature bad; FB_ERR_VERIFY
 * when the artifact is another job's. */
fb_code arc_sign_check(const arc_sig_block *b, const arc_trust *trust, const char *name,
                       const unsigned char *header16, uint64_t moff, uint64_t mlen, const unsigned char ct_hash[32],
                       uint64_t ioff, const void *index, size_t ilen, fb_err *err);

/* The trailer of a format-5 file: where manifest, index and signature block are (checks they tile the end). */
fb_code arc_sign_layout(stor_rfile *f, arc_sig_layout *l, fb_err *err);

/* Without any secret key: reads the header, trailer, manifest ciphertext, index and signature block of f and
 * checks them as arc_sign_check does. FB_OK with st->state TRUSTED; for an unsigned artifact (format <= 4)
 * st->state UNSIGNED and FB_ERR_UNTRUSTED unless trust->allow_unsigned (no warning: listings show the state);
 * otherwise the error and st->state
 * UNTRUSTED (with the key ids the block names). st may be NULL. */
fb_code arc_sign_peek(stor_rfile *f, const arc_trust *trust, arc_sig_status *st, fb_err *err);

/* The job id a file name says: "DIR/JOB.fbak" -> JOB in out; returns 0, or -1 when the name is not of that form. */
int arc_sign_job_from_name(const char *path, char *out, size_t cap);

/* The message for an unsigned artifact (format version) refused or accepted with allow_unsigned. */
fb_code arc_sign_unsigned(const arc_trust *trust, const char *name, int version, fb_err *err);

#endif
