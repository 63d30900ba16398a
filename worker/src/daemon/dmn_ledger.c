/* dmn_ledger: see dmn_ledger.h. Entries go through the stor driver of the storage root, so a bucket root keeps its
 * ledger in the bucket, beside the artifacts, as a folder root does. */
#include "daemon/dmn_ledger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/ev_event.h"
#include "storage/stor.h"

static fb_code dmn_ledger_path(const fb_config *cfg, const char *job_id, char *rel, size_t cap, fb_err *err) {
    if (!cfg->storage_root || !*cfg->storage_root)
        return fb_err_set(err, FB_ERR_USAGE, "no storage root configured (--storage-root / FB_STORAGE_ROOT)");
    if (!ev_uuid_valid(job_id)) return fb_err_set(err, FB_ERR_INVALID, "job id \"%s\" is not a UUID", job_id);
    snprintf(rel, cap, ".ledger/%s.success", job_id);
    return FB_OK;
}

fb_code dmn_ledger_get(const fb_config *cfg, const char *job_id, unsigned char **out, size_t *len, fb_err *err) {
    char rel[128];
    stor *st = NULL;
    stor_rfile *f = NULL;
    unsigned char *buf = NULL;
    *out = NULL;
    *len = 0;
    fb_code rc = dmn_ledger_path(cfg, job_id, rel, sizeof rel, err);
    if (!rc) rc = stor_open_location(cfg->storage_root, cfg, &st, err);
    if (!rc) {
        fb_err e2;
        rc = stor_open(st, rel, &f, &e2);
        if (rc == FB_ERR_NOTFOUND) goto out; /* never succeeded: no message needed */
        if (rc) {
            if (err) *err = e2;
            fb_err_prefix(err, "reading the job ledger: ");
        }
    }
    if (!rc && (f->size == 0 || f->size > (1u << 22)))
        rc = fb_err_set(err, FB_ERR_IO, "job ledger entry \"%s\" is empty or too large: remove it to rerun the job",
                        f->name);
    if (!rc && !(buf = malloc((size_t)f->size))) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    if (!rc) rc = stor_rfile_pread(f, buf, (size_t)f->size, 0, err);
    if (!rc) {
        *out = buf;
        *len = (size_t)f->size;
        buf = NULL;
    }
out:
    free(buf);
    stor_rfile_close(f);
    stor_free(st);
    return rc;
}

fb_code dmn_ledger_put(const fb_config *cfg, const char *job_id, const unsigned char *value, size_t len,
                       fb_err *err) {
    char rel[128];
    stor *st = NULL;
    stor_wfile *wf = NULL;
    fb_code rc = dmn_ledger_path(cfg, job_id, rel, sizeof rel, err);
    if (!rc) rc = stor_open_location(cfg->storage_root, cfg, &st, err);
    if (!rc) {
        rc = stor_create(st, rel, &wf, err);
        /* An object store never overwrites: an entry already there is this same success, recorded by another run. */
        if (rc == FB_ERR_CONFLICT) rc = FB_OK;
        else if (!rc) {
            rc = stor_wfile_write(wf, value, len, err);
            if (rc) stor_wfile_abort(wf);
            else rc = stor_wfile_commit(wf, err);
        }
    }
    if (rc) fb_err_prefix(err, "recording the job's success in the ledger: ");
    stor_free(st);
    return rc;
}
