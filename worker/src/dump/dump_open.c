/* dump_open: see dump_open.h. The resolver is a list of folders, owned by the reader it is attached to. */
#include "dump/dump_open.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact/arc_index.h"
#include "artifact/arc_key.h"

typedef struct dump_chain_dirs {
    char **dirs;
    size_t n;
} dump_chain_dirs;

static void dump_chain_free(void *opaque) {
    dump_chain_dirs *d = opaque;
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) free(d->dirs[i]);
    free(d->dirs);
    free(d);
}

static fb_code dump_chain_resolve(void *opaque, const char *job_id, stor_rfile **out, fb_err *err) {
    const dump_chain_dirs *d = opaque;
    char path[4200], where[2048] = "";
    size_t wl = 0;
    *out = NULL;
    if (strchr(job_id, '/') || strcmp(job_id, "..") == 0 || !*job_id)
        return fb_err_set(err, FB_ERR_FORMAT, "a reference names job \"%s\", which is not a job id", job_id);
    for (size_t i = 0; i < d->n; i++) {
        fb_err e2;
        snprintf(path, sizeof path, "%s/%s%s", d->dirs[i], job_id, ARC_ARTIFACT_SUFFIX);
        fb_code rc = stor_open_file(path, NULL, out, &e2);
        if (rc == FB_OK) return FB_OK;
        if (rc != FB_ERR_NOTFOUND) {
            if (err) *err = e2;
            return rc;
        }
        wl += (size_t)snprintf(where + wl, wl < sizeof where ? sizeof where - wl : 0, "%s\"%s\"", i ? ", " : "",
                               d->dirs[i]);
        if (wl >= sizeof where) wl = sizeof where - 1;
    }
    return fb_err_set(err, FB_ERR_NOTFOUND, "backup %s (%s%s) is in none of: %s; give the folder that holds it with "
                      "--chain-dir DIR", job_id, job_id, ARC_ARTIFACT_SUFFIX, where);
}

fb_code dump_open_chain(const char *path, const char *secret_key_file, const char *const *chain_dirs, size_t n_dirs,
                        stor_rfile **f, arc_reader **r, fb_err *err) {
    unsigned char sk[ARC_SK_BYTES], pk[ARC_PK_BYTES];
    dump_chain_dirs *d = NULL;
    *f = NULL;
    *r = NULL;
    fb_code rc = stor_open_file(path, NULL, f, err);
    if (rc == FB_OK) rc = arc_key_load_secret(secret_key_file, sk, pk, err);
    if (rc == FB_OK) rc = arc_reader_open(*f, sk, pk, r, err);
    sodium_memzero(sk, sizeof sk);
    if (rc == FB_OK) {
        d = calloc(1, sizeof *d);
        if (d) d->dirs = calloc(n_dirs + 1, sizeof *d->dirs);
        if (!d || !d->dirs) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    if (rc == FB_OK) {
        const char *slash = strrchr(path, '/');
        d->dirs[d->n++] = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
        for (size_t i = 0; i < n_dirs; i++) d->dirs[d->n++] = strdup(chain_dirs[i]);
        for (size_t i = 0; i < d->n; i++)
            if (!d->dirs[i]) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    if (rc == FB_OK) {
        arc_reader_set_resolver(*r, dump_chain_resolve, d, dump_chain_free);
        d = NULL;
    }
    dump_chain_free(d);
    if (rc) {
        arc_reader_free(*r);
        *r = NULL;
        stor_rfile_close(*f);
        *f = NULL;
    }
    return rc;
}

fb_code dump_open_artifact(const char *path, const char *secret_key_file, stor_rfile **f, arc_reader **r, fb_err *err) {
    return dump_open_chain(path, secret_key_file, NULL, 0, f, r, err);
}
