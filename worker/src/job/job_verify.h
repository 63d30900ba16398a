/* job_verify: runs one `backup.verify` event: checks an artifact under the storage root.
 *
 * mode "integrity": opens the artifact with the secret key, authenticates and decompresses every segment and
 * compares sizes and BLAKE2b hashes with the manifest (no database). mode "restore": also restores everything
 * into a scratch database created on cfg->scratch_pg (--create), re-dumps each table and compares its hash with
 * the manifest, then drops the scratch database. A worker holding only the public key cannot verify: it fails
 * with a message saying the secret key is needed.
 */
#ifndef JOB_VERIFY_H
#define JOB_VERIFY_H

#include "job/job.h"

/* Uses ctx->cfg->storage_root, secret_key, scratch_pg. Stats: tables, rows, raw_bytes, stored_bytes, duration_ms,
 * and restore_ms in restore mode. res->file_path / file_size describe the checked artifact.
 * Errors: FB_ERR_DENIED (job_authority.h: the record did not ask for this verification), FB_ERR_USAGE (no secret key / no scratch server), FB_ERR_NOTFOUND, FB_ERR_CRYPTO (tampered, truncated,
 * wrong key), FB_ERR_FORMAT, FB_ERR_VERIFY (restored data differs from the manifest), FB_ERR_PG, FB_ERR_TRANSIENT. */
fb_code job_verify_run(const job_ctx *ctx, job_result *res, fb_err *err);

#endif
