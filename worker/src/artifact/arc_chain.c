/* arc_chain: see arc_chain.h. One listing, then per artifact its header, trailer and chain index (three small
 * reads; of a version-3 index only its head, whose size does not grow with the data) and one MAC check; no
 * artifact is decrypted. */
#include "artifact/arc_chain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact/arc_clist.h"
#include "artifact/arc_reader.h"

static fb_code cha_on_file(void *opaque, const stor_entry *se, fb_err *err) {
    arc_chain *c = opaque;
    size_t n = strlen(se->name), s = strlen(ARC_ARTIFACT_SUFFIX);
    if (se->name[0] == '.' || n <= s || strcmp(se->name + n - s, ARC_ARTIFACT_SUFFIX) != 0) return FB_OK;
    arc_chain_entry *v = realloc(c->e, (c->n + 1) * sizeof *v);
    if (!v) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    c->e = v;
    arc_chain_entry *e = &c->e[c->n];
    memset(e, 0, sizeof *e);
    if (!(e->job_id = strndup(se->name, n - s))) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    e->artifact_size = se->size;
    e->artifact_mtime_ms = se->mtime_ms;
    c->n++;
    return FB_OK;
}

fb_code arc_chain_load(stor *st, const char *rel_dir, const unsigned char key[ARC_INDEX_KEY_BYTES],
                       const fb_keyring *signers, arc_chain *out, fb_err *err) {
    memset(out, 0, sizeof *out);
    fb_code rc = stor_list(st, rel_dir, cha_on_file, out, err);
    if (rc) goto out;
    for (size_t i = 0; i < out->n; i++) {
        arc_chain_entry *e = &out->e[i];
        char rel[1400], *buf = NULL;
        size_t len = 0;
        fb_err e2;
        stor_rfile *f = NULL;
        fb_code r2 = arc_artifact_name(rel_dir, e->job_id, rel, sizeof rel, &e2);
        if (r2 == FB_OK) r2 = stor_open(st, rel, &f, &e2);
        if (r2 == FB_OK) r2 = arc_reader_peek_version(f, &e->artifact_version, &e2);
        if (r2 == FB_OK) {
            /* Who wrote it: the signatures (format 5) with this file's job id; unsigned ones are listed as such. */
            arc_trust trust = {signers, 1, e->job_id};
            fb_err e3;
            if (arc_sign_peek(f, &trust, &e->sig, &e3) != FB_OK) {
                e->sig.state = ARC_SIG_UNTRUSTED;
                snprintf(e->untrusted_why, sizeof e->untrusted_why, "%s", e3.msg);
            }
        }
        if (r2 == FB_OK && e->artifact_version == 1) {
            stor_rfile_close(f);
            continue; /* a FULL written before chains: no index, nothing references it as a base */
        }
        uint64_t ioff = 0, iall = 0;
        if (r2 == FB_OK) r2 = arc_reader_peek_index_at(f, &buf, &len, &ioff, &iall, &e2);
        if (r2 == FB_OK) r2 = arc_index_parse(buf, len, key, &e->ix, &e2);
        /* Version >= 3: only the head was read; it must be the version the artifact's format names and its records
         * must fill the rest of the index exactly. */
        if (r2 == FB_OK && e->artifact_version >= 5 && e->ix->version != arc_index_version_of(e->artifact_version))
            r2 = fb_err_set(&e2, FB_ERR_FORMAT, "an artifact of format %d holds a chain index of version %d (%d "
                            "expected; altered)", e->artifact_version, e->ix->version,
                            arc_index_version_of(e->artifact_version));
        if (r2 == FB_OK && e->ix->version >= 3 && iall - len != e->ix->n_record_bytes)
            r2 = fb_err_set(&e2, FB_ERR_FORMAT, "its chain index has %llu bytes of chunk records for %llu records "
                            "of %llu bytes (truncated or altered)", (unsigned long long)(iall - len),
                            (unsigned long long)e->ix->n_records, (unsigned long long)e->ix->n_record_bytes);
        e->records_off = ioff + len;
        free(buf);
        stor_rfile_close(f);
        if (r2 != FB_OK) {
            snprintf(e->problem, sizeof e->problem, "%s", e2.msg);
            continue;
        }
        if (!e->ix->job_id || strcmp(e->ix->job_id, e->job_id) != 0)
            snprintf(e->problem, sizeof e->problem, "its chain index names job %s, not %s (a renamed file)",
                     e->ix->job_id ? e->ix->job_id : "?", e->job_id);
    }
out:
    if (rc) arc_chain_clear(out);
    return rc;
}

void arc_chain_clear(arc_chain *c) {
    for (size_t i = 0; i < c->n; i++) {
        free(c->e[i].job_id);
        arc_index_free(c->e[i].ix);
    }
    free(c->e);
    memset(c, 0, sizeof *c);
}

arc_chain_entry *arc_chain_find(const arc_chain *c, const char *job_id) {
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->e[i].job_id, job_id) == 0) return &c->e[i];
    return NULL;
}

int arc_chain_usable(const arc_chain_entry *e) {
    return e->ix && e->problem[0] == '\0' && e->sig.state == ARC_SIG_TRUSTED;
}

int64_t arc_chain_time(const arc_chain_entry *e) { return e->ix ? e->ix->completed_ms : e->artifact_mtime_ms; }

const char *arc_chain_type(const arc_chain_entry *e) {
    if (e->ix) return e->ix->type;
    if (e->artifact_version == 1 && !e->problem[0]) return "FULL";
    return NULL;
}
