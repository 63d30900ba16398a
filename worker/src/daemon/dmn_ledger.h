/* dmn_ledger: which jobs already succeeded, so a redelivered or replayed backup is not run twice.
 *
 * One file per job under <storage root>/.ledger/<job_id>.success holding the encoded SUCCESS status event,
 * written through the storage driver of the root (a folder or an s3:// bucket: all-or-nothing either way) only
 * after the job's artifact is durable. The storage root is shared by all workers (they all write artifacts there), so the ledger is too.
 * A job left RUNNING by a crashed worker has no entry and simply runs again. Archive jobs need no ledger: their
 * effect is idempotent in the database itself.
 */
#ifndef DMN_LEDGER_H
#define DMN_LEDGER_H

#include <stddef.h>

#include "common/fb_config.h"
#include "common/fb_err.h"

/* Looks up job_id in the ledger of cfg->storage_root. Returns FB_OK with *out (malloc'd, caller frees) and *len set when it succeeded before;
 * FB_ERR_NOTFOUND when not; another code on an I/O error. */
fb_code dmn_ledger_get(const fb_config *cfg, const char *job_id, unsigned char **out, size_t *len, fb_err *err);

/* Records job_id's SUCCESS (the encoded status event). Durable when it returns FB_OK. */
fb_code dmn_ledger_put(const fb_config *cfg, const char *job_id, const unsigned char *value, size_t len,
                       fb_err *err);

#endif
