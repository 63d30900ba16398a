/* arc_open: see arc_open.h. The resolver is a list of folders, owned by the reader it is attached to. */
#include "artifact/arc_open.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact/arc_index.h"
#include "artifact/arc_key.h"
#include "common/fb_log.h"
#include "common/fb_time.h"

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
    for (size_t i = 0; i < d->n; i++) {
        fb_err e2;
        fb_code rc = arc_artifact_name(d->dirs[i], job_id, path, sizeof path, err);
        if (rc == FB_OK) rc = stor_open_file(path, NULL, out, &e2);
        else return rc;
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

fb_code arc_open_chain(const char *path, const char *secret_key_file, const char *const *chain_dirs, size_t n_dirs,
                        const arc_trust *trust, stor_rfile **f, arc_reader **r, fb_err *err) {
    unsigned char sk[ARC_SK_BYTES], pk[ARC_PK_BYTES];
    dump_chain_dirs *d = NULL;
    char named[ARC_SIG_JOB_MAX + 1];
    arc_trust t = *trust;
    *f = NULL;
    *r = NULL;
    /* The file name says which job it must be (FORMAT.md: "<job>.fbak"): a copy of another job's artifact under
     * this name is refused. A name of another form cannot say, so the signed job id is only shown. */
    if (!t.job_id) {
        if (arc_sign_job_from_name(path, named, sizeof named) == 0) t.job_id = named;
        else FB_WARN("\"%s\" is not named JOB%s, so which backup it must be is not checked: compare the job id "
                     "shown with the one you expect", path, ARC_ARTIFACT_SUFFIX);
    }
    fb_code rc = stor_open_file(path, NULL, f, err);
    if (rc == FB_OK) rc = arc_key_load_secret(secret_key_file, sk, pk, err);
    if (rc == FB_OK) rc = arc_reader_open(*f, sk, pk, &t, r, err);
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

fb_code arc_open_artifact(const char *path, const char *secret_key_file, const arc_trust *trust, stor_rfile **f,
                           arc_reader **r, fb_err *err) {
    return arc_open_chain(path, secret_key_file, NULL, 0, trust, f, r, err);
}

fb_code arc_open_trust(const fb_config *cfg, fb_keyring *kr, arc_trust *t, fb_err *err) {
    memset(t, 0, sizeof *t);
    fb_code rc = fb_keyring_load(kr, cfg->trusted_signers, "--trusted-signer", err);
    if (rc) return rc;
    t->signers = kr;
    t->allow_unsigned = cfg->allow_unsigned != 0;
    return FB_OK;
}

void arc_open_describe(const arc_reader *r, FILE *out) {
    const arc_manifest *m = arc_reader_manifest(r);
    const arc_sig_status *s = arc_reader_signature(r);
    char when[40];
    fb_time_format(m->snapshot_ms, when, sizeof when);
    fprintf(out, "backup %s: %s of configuration %lld \"%s\", database \"%s\", snapshot %s, %s%s%s\n",
            m->job_id ? m->job_id : "?", m->backup_type ? m->backup_type : "?", (long long)m->config_id,
            m->config_name ? m->config_name : "", m->database ? m->database : "?", when,
            s->state == ARC_SIG_TRUSTED ? "signed by key " : "UNSIGNED (format before 5)",
            s->state == ARC_SIG_TRUSTED ? s->manifest_key : "",
            s->state == ARC_SIG_TRUSTED && strcmp(s->index_key, s->manifest_key) != 0 ? " (index re-signed)" : "");
}
