/* dmn_ledger: which jobs already succeeded, so a redelivered or replayed backup is not run twice, and how often
 * each request was delivered without an outcome, so none runs forever.
 *
 * Success entries: one file per job under <storage root>/.ledger/<job_id>.success holding a header line with the
 * request's digest and then the encoded SUCCESS status event, written through the storage driver of the root (a
 * folder: temporary file, fsync, rename; an s3:// bucket: a completed upload; all or nothing either way) only
 * after the job's artifact is durable. The storage root is shared by all workers (they
 * all write artifacts there), so the ledger is too. A job left RUNNING by a crashed worker has no entry and simply
 * runs again. Archive jobs need no ledger: their effect is idempotent in the database itself.
 *
 * Why a digest: job ids are predictable (scheduled ones were uuid5 of public values) and anyone who can produce to
 * the brokers can send a request under any id. An entry keyed by the id alone let a tiny decoy run first and turn
 * the real request into a no-op reported as SUCCESS. The digest (BLAKE2b-256 of the request re-encoded with ts,
 * attempt and requested_by neutralised) is the same for a redelivery or a replay of the same request and differs
 * for any other request under that id; on a mismatch the caller runs the job (its authority check decides).
 * Entries without a digest (written before it existed) never match.
 *
 * Delivery counters: <storage root>/.ledger/<job_id>.<attempt>.<digest prefix>.deliveries, a decimal count
 * fsynced before each run of the job, removed once its outcome is published. They bound the runs of a request
 * whose outcome cannot be published or recorded, or that kills the worker (OOM): after max_deliveries the caller
 * stops running it. Without a storage root (archive-only workers) the counters live in memory, which bounds
 * publish and ledger failures but not crashes; so do workers whose storage root is a bucket (a counter fsynced
 * per delivery is a local file: callers pass the root only when it is a folder). A replay (attempt + 1) starts a
 * fresh count.
 */
#ifndef DMN_LEDGER_H
#define DMN_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "codec/ev_event.h"
#include "common/fb_config.h"
#include "common/fb_err.h"

#define DMN_DIGEST_BYTES 32

/* The request digest of req (see above). FB_ERR_NOMEM or the encoder's error when req cannot be encoded. */
fb_code dmn_ledger_digest(const ev_event *req, unsigned char digest[DMN_DIGEST_BYTES], fb_err *err);

/* Looks up job_id. Returns FB_OK with *out (malloc'd, caller frees), *len and *digest_match (1 when the entry
 * was made for a request with this digest) when it succeeded before; FB_ERR_NOTFOUND when not; another code on
 * an I/O error. */
fb_code dmn_ledger_get(const fb_config *cfg, const char *job_id, const unsigned char digest[DMN_DIGEST_BYTES],
                       unsigned char **out, size_t *len, int *digest_match, fb_err *err);

/* Records job_id's SUCCESS (the encoded status event) for the request of this digest. Durable when it returns
 * FB_OK. */
fb_code dmn_ledger_put(const fb_config *cfg, const char *job_id, const unsigned char digest[DMN_DIGEST_BYTES],
                       const unsigned char *value, size_t len, fb_err *err);

/* Counts one more delivery of (job_id, attempt, digest) and returns the new count in *count: durable (fsynced)
 * when storage_root is set, in memory otherwise. */
fb_code dmn_ledger_delivery(const char *storage_root, const char *job_id, int64_t attempt,
                            const unsigned char digest[DMN_DIGEST_BYTES], int64_t *count, fb_err *err);

/* The count so far, without changing it (0 when none). */
fb_code dmn_ledger_delivery_count(const char *storage_root, const char *job_id, int64_t attempt,
                                  const unsigned char digest[DMN_DIGEST_BYTES], int64_t *count, fb_err *err);

/* Forgets the count (the outcome was published). Never fails: a stale counter only makes a later redelivery
 * give up sooner. */
void dmn_ledger_delivery_clear(const char *storage_root, const char *job_id, int64_t attempt,
                               const unsigned char digest[DMN_DIGEST_BYTES]);

#endif
