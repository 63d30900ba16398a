/* arc_retention: see arc_retention.h.
 *
 * The plan (arc_retention_plan_make, apart from storage so that it can be tested on a chain built in memory), on the
 * loaded chain: candidates are in-scope entries older than the cutoff; the newest restorable
 * FULL in scope and protect_job are never candidates; then, until nothing changes, a candidate referenced by a
 * table of any entry that stays is no longer a candidate (references are direct: every manifest and index names
 * the artifact that holds each table, so one level is the whole need, but the loop costs nothing). Then each
 * candidate goes: rename both files to trash, unlink.
 */
#include "artifact/arc_retention.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fb_assert.h"
#include "common/fb_log.h"
#include "common/fb_time.h"
#include "artifact/arc_chain.h"

#define JP_DAY_MS 86400000LL
/* Writes begun longer ago than this are leftovers of a crashed writer, not a backup still running. */
#define JP_SWEEP_AGE_MS JP_DAY_MS

typedef struct ret_sweep {
    arc_retention_report_fn report;
    void *opaque;
} ret_sweep;

static fb_code ret_on_swept(void *opaque, const stor_entry *e, fb_err *err) {
    const ret_sweep *sw = opaque;
    if (sw->report) sw->report(sw->opaque, e->name, 1, "unfinished write of an interrupted run (begun over a day ago)");
    return FB_OK;
}

typedef struct ret_trash {
    char **names;
    size_t n;
} ret_trash;

static fb_code ret_on_file(void *opaque, const stor_entry *e, fb_err *err) {
    ret_trash *t = opaque;
    size_t n = strlen(e->name);
    if (e->name[0] != '.' || n < 7 || strcmp(e->name + n - 6, ".trash") != 0) return FB_OK;
    char **v = realloc(t->names, (t->n + 1) * sizeof *v);
    if (!v) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    t->names = v;
    if (!(t->names[t->n] = strdup(e->name))) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    t->n++;
    return FB_OK;
}

/* Renames the artifact to trash, then unlinks it. */
static fb_code ret_remove(stor *st, const char *dir, const arc_chain_entry *e, fb_err *err) {
    char name[600], trash[620], rel[2000];
    fb_code rc = arc_artifact_name("", e->job_id, name, sizeof name, err);
    if (rc) return rc;
    snprintf(trash, sizeof trash, ".%s.trash", name);
    rc = stor_rename(st, dir, name, trash, err);
    if (rc == FB_ERR_NOTFOUND) return FB_OK; /* removed meanwhile by another worker's retention */
    if (rc) return rc;
    snprintf(rel, sizeof rel, "%s/%s", dir, trash);
    return stor_remove(st, rel, err);
}

/* Step 0: trash left by an interrupted run, and (object stores) its unfinished uploads. */
static fb_code ret_clean_leftovers(stor *st, const char *dir, const arc_retention_opts *o, arc_retention_report_fn report,
                                  void *opaque, fb_err *err) {
    ret_trash tr = {0};
    fb_code rc = FB_OK;
    if (!o->dry_run) {
        ret_sweep sw = {report, opaque};
        if ((rc = stor_sweep(st, dir, o->now_ms - JP_SWEEP_AGE_MS, ret_on_swept, &sw, err))) return rc;
    }
    rc = stor_list(st, dir, ret_on_file, &tr, err);
    for (size_t i = 0; rc == FB_OK && i < tr.n && !o->dry_run; i++) {
        char rel[2000];
        snprintf(rel, sizeof rel, "%s/%s", dir, tr.names[i]);
        if ((rc = stor_remove(st, rel, err))) break;
        if (report) report(opaque, tr.names[i], 1, "leftover of an interrupted removal");
    }
    for (size_t i = 0; i < tr.n; i++) free(tr.names[i]);
    free(tr.names);
    return rc;
}

/* Plan step 2: what is in scope, which are candidates (older than the cutoff), and the newest restorable FULL,
 * which stays whatever its age. */
static void ret_candidates(const arc_chain *ch, const arc_retention_opts *o, arc_retention_plan *p) {
    size_t last_full = (size_t)-1;
    for (size_t i = 0; i < ch->n; i++) {
        const arc_chain_entry *e = &ch->e[i];
        p->in_scope[i] = o->config_id < 0 ? 1 : (e->ix && e->ix->config_id == o->config_id);
        if (!p->in_scope[i]) continue;
        const char *type = arc_chain_type(e);
        int restorable = arc_chain_usable(e) || (e->artifact_version == 1 && !e->problem[0]);
        if (type && strcmp(type, "FULL") == 0 && restorable &&
            (last_full == (size_t)-1 || arc_chain_time(e) > arc_chain_time(&ch->e[last_full])))
            last_full = i;
        p->remove[i] = arc_chain_time(e) < p->cutoff_ms;
        if (o->protect_job && strcmp(e->job_id, o->protect_job) == 0) p->remove[i] = 0;
    }
    if (last_full != (size_t)-1 && p->remove[last_full]) {
        p->remove[last_full] = 0;
        p->kept_why[last_full] = strdup("the last restorable FULL");
    }
}

/* Keeps job `holder` (when it is in the chain and planned for removal) because e needs it for `what`; 1 when that
 * changed the plan. */
static int ret_pin(const arc_chain *ch, arc_retention_plan *p, const arc_chain_entry *e, const char *holder,
                   const char *what) {
    arc_chain_entry *h = holder ? arc_chain_find(ch, holder) : NULL;
    if (!h || h == e || !p->remove[h - ch->e]) return 0;
    size_t hi = (size_t)(h - ch->e);
    char b[600];
    p->remove[hi] = 0;
    snprintf(b, sizeof b, "needed by backup %s (%s)", e->job_id, what);
    free(p->kept_why[hi]);
    p->kept_why[hi] = strdup(b);
    return 1;
}

/* Plan step 3: what stays pins what it references, until nothing changes. A backup made of captured changes
 * (index line `capture`) also needs its base FULL and, as an INCREMENTAL, the backup before it (whose changes
 * come before its own). */
static void ret_pin_references(const arc_chain *ch, arc_retention_plan *p) {
    for (int changed = 1; changed;) {
        changed = 0;
        for (size_t i = 0; i < ch->n; i++) {
            const arc_chain_entry *e = &ch->e[i];
            if (p->remove[i] || !e->ix) continue;
            if (e->ix->cap_stream && strcmp(e->ix->type, "FULL") != 0) {
                changed |= ret_pin(ch, p, e, e->ix->cap_full, "the base FULL of its captured changes");
                changed |= ret_pin(ch, p, e, e->ix->base_job, "the captured changes before its own");
            }
            for (size_t t = 0; t < e->ix->n_tables; t++) {
                /* The table's holder, then (format 3) the artifacts holding some of its chunks (deps). */
                const arc_index_table *it = &e->ix->tables[t];
                for (size_t k = 0; k <= it->n_deps; k++) {
                    const char *holder = k == 0 ? it->stored_in : it->deps[k - 1];
                    arc_chain_entry *h = holder ? arc_chain_find(ch, holder) : NULL;
                    if (!h || h == e) continue;
                    size_t hi = (size_t)(h - ch->e);
                    if (!p->remove[hi]) continue;
                    char b[600];
                    p->remove[hi] = 0;
                    changed = 1;
                    snprintf(b, sizeof b, "needed by backup %s (table \"%s\".\"%s\"%s)", e->job_id, it->schema,
                             it->name, k ? ", some of its chunks" : "");
                    free(p->kept_why[hi]);
                    p->kept_why[hi] = strdup(b);
                }
            }
        }
    }
}

fb_code arc_retention_plan_make(const arc_chain *ch, const char *dir, const arc_retention_opts *o, arc_retention_plan *p,
                            fb_err *err) {
    memset(p, 0, sizeof *p);
    p->n = ch->n;
    p->cutoff_ms = o->now_ms - o->retention_days * JP_DAY_MS;
    p->remove = calloc(ch->n + 1, sizeof *p->remove);
    p->in_scope = calloc(ch->n + 1, sizeof *p->in_scope);
    p->kept_why = calloc(ch->n + 1, sizeof *p->kept_why);
    if (!p->remove || !p->in_scope || !p->kept_why) {
        arc_retention_plan_clear(p);
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    if (o->retention_days <= 0) return FB_OK; /* keep everything: nothing is a candidate */
    /* Step 1: refuse when any index is unreadable: its references are unknown. */
    for (size_t i = 0; i < ch->n; i++) {
        const arc_chain_entry *e = &ch->e[i];
        if (e->problem[0]) {
            arc_retention_plan_clear(p);
            return fb_err_set(err, FB_ERR_VERIFY, "retention in \"%s\" removed nothing: backup %s: %s; what it "
                              "references is unknown, so no backup there can be removed safely (restore the index "
                              "from a copy, or remove that backup by hand)", dir, e->job_id, e->problem);
        }
    }
    ret_candidates(ch, o, p);
    ret_pin_references(ch, p);
    for (size_t i = 0; i < ch->n; i++) FB_ASSERT(!p->remove[i] || p->in_scope[i]); /* only in-scope ones go */
    return FB_OK;
}

void arc_retention_plan_clear(arc_retention_plan *p) {
    for (size_t i = 0; p->kept_why && i < p->n; i++) free(p->kept_why[i]);
    free(p->kept_why);
    free(p->remove);
    free(p->in_scope);
    memset(p, 0, sizeof *p);
}

/* Step 4: report each in-scope backup older than the cutoff, and remove those the plan lets go. */
static fb_code ret_apply(stor *st, const char *dir, const arc_chain *ch, const arc_retention_plan *p,
                        const arc_retention_opts *o, arc_retention_report_fn report, void *opaque, int64_t *n_removed,
                        fb_err *err) {
    for (size_t i = 0; i < ch->n; i++) {
        const arc_chain_entry *e = &ch->e[i];
        char when[32], b[900];
        if (!p->in_scope[i] || arc_chain_time(e) >= p->cutoff_ms) continue;
        fb_time_format_utc(arc_chain_time(e), when, sizeof when);
        const char *type = arc_chain_type(e);
        if (!p->remove[i]) {
            if (p->kept_why[i]) {
                snprintf(b, sizeof b, "%s of %s, older than %lld days, kept: %s", type ? type : "backup", when,
                         (long long)o->retention_days, p->kept_why[i]);
                if (report) report(opaque, e->job_id, 0, b);
            }
            continue;
        }
        snprintf(b, sizeof b, "%s of %s, older than %lld days, needed by no kept backup", type ? type : "backup",
                 when, (long long)o->retention_days);
        fb_code rc;
        if (!o->dry_run && (rc = ret_remove(st, dir, e, err))) {
            fb_err_prefix(err, "retention: removing backup %s: ", e->job_id);
            return rc;
        }
        (*n_removed)++;
        if (report) report(opaque, e->job_id, 1, b);
    }
    return FB_OK;
}

fb_code arc_retention_run(stor *st, const char *dir, const unsigned char key[ARC_INDEX_KEY_BYTES],
                      const arc_retention_opts *o, arc_retention_report_fn report, void *opaque, int64_t *removed,
                      fb_err *err) {
    arc_chain ch = {0};
    arc_retention_plan plan = {0};
    int64_t n_removed = 0;
    if (removed) *removed = 0;
    if (o->retention_days <= 0) return FB_OK;
    /* Step 0: what an interrupted run left. */
    fb_code rc = ret_clean_leftovers(st, dir, o, report, opaque, err);
    /* Steps 1 to 3: the chain's indexes and the plan (refused on an unreadable index; candidates; pins). */
    if (!rc) rc = arc_chain_load(st, dir, key, o->signers, &ch, err);
    if (!rc) rc = arc_retention_plan_make(&ch, dir, o, &plan, err);
    /* Step 4: reported, and removed what the plan lets go. */
    if (!rc) rc = ret_apply(st, dir, &ch, &plan, o, report, opaque, &n_removed, err);
    if (!rc && removed) *removed = n_removed;
    arc_retention_plan_clear(&plan);
    arc_chain_clear(&ch);
    return rc;
}
