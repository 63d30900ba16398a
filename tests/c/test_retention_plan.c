/* test_retention_plan: arc_retention_plan_make on chains built in memory, no storage involved. What retention must
 * never do (arc_retention.h): remove a backup that a kept one needs (a table it references, or some of its chunks,
 * however long the chain), remove the last restorable FULL, touch another configuration's backups, remove the
 * protected job, or remove anything when one index cannot be read. And what it must do: let go of the rest. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact/arc_retention.h"
#include "tap.h"

#define DAY 86400000LL
#define NOW (100 * DAY)
#define MAXE 8

/* A chain of up to MAXE entries, each with one table that may name its holder and one chunk dependency. */
typedef struct chain {
    arc_chain ch;
    arc_chain_entry e[MAXE];
    arc_index ix[MAXE];
    arc_index_table t[MAXE];
    const char *deps[MAXE][1];
} chain;

/* Adds backup id of config, type, completed on `day`, whose table is stored in `holder` (NULL: itself) and has
 * chunks in `chunks_in` (NULL: none). trusted: signed by a trusted key. */
static arc_chain_entry *add(chain *c, const char *id, int64_t config, const char *type, int day, const char *holder,
                            const char *chunks_in, int trusted) {
    size_t i = c->ch.n++;
    arc_chain_entry *e = &c->e[i];
    arc_index *ix = &c->ix[i];
    arc_index_table *t = &c->t[i];
    t->schema = "public";
    t->name = "leave";
    t->stored_in = (char *)(holder ? holder : id);
    if (chunks_in) {
        c->deps[i][0] = chunks_in;
        t->deps = c->deps[i];
        t->n_deps = 1;
    }
    ix->job_id = (char *)id;
    ix->config_id = config;
    ix->type = (char *)type;
    ix->completed_ms = day * DAY;
    ix->tables = t;
    ix->n_tables = 1;
    ix->version = 3;
    e->job_id = (char *)id;
    e->artifact_version = 5;
    e->ix = ix;
    e->sig.state = trusted ? ARC_SIG_TRUSTED : ARC_SIG_UNTRUSTED;
    return e;
}

static void init(chain *c) {
    memset(c, 0, sizeof *c);
    c->ch.e = c->e;
}

static arc_retention_opts opts(int64_t days, int64_t config) {
    arc_retention_opts o = {0};
    o.retention_days = days;
    o.now_ms = NOW;
    o.config_id = config;
    return o;
}

/* Plans and checks the outcome: `removed` lists the ids removed, space-separated, in chain order; for kept
 * candidates, why must contain the fragment given in kept_why for that index (NULL: not checked). */
static void expect_plan(const char *what, chain *c, const arc_retention_opts *o, const char *removed,
                        const char *const kept_why[MAXE]) {
    arc_retention_plan p;
    fb_err err;
    fb_code rc = arc_retention_plan_make(&c->ch, "cfg/7", o, &p, &err);
    CHECKF(rc == FB_OK, "%s: %s", what, rc ? err.msg : "");
    if (rc) return;
    char got[256] = "";
    for (size_t i = 0; i < c->ch.n; i++)
        if (p.remove[i]) snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", *got ? " " : "", c->e[i].job_id);
    CHECKF(strcmp(got, removed) == 0, "%s: removes \"%s\", expected \"%s\"", what, got, removed);
    for (size_t i = 0; kept_why && i < c->ch.n; i++)
        if (kept_why[i])
            CHECKF(p.kept_why[i] && strstr(p.kept_why[i], kept_why[i]), "%s: %s kept because \"%s\", expected \"%s\"",
                   what, c->e[i].job_id, p.kept_why[i] ? p.kept_why[i] : "(no reason)", kept_why[i]);
    arc_retention_plan_clear(&p);
}

/* Two chains: the old one (F1 <- I1) goes whole; the newer FULL is older than the cutoff but an INCREMENTAL that
 * stays references it. */
static void chains(void) {
    chain c;
    init(&c);
    add(&c, "F1", 7, "FULL", 10, NULL, NULL, 1);
    add(&c, "I1", 7, "INCREMENTAL", 20, "F1", NULL, 1);
    add(&c, "F2", 7, "FULL", 50, NULL, NULL, 1);
    add(&c, "I2", 7, "INCREMENTAL", 80, "F2", NULL, 1);
    add(&c, "F3", 7, "FULL", 85, NULL, NULL, 1);
    arc_retention_opts o = opts(30, 7);
    const char *why[MAXE] = {NULL, NULL, "needed by backup I2 (table \"public\".\"leave\")"};
    expect_plan("old chain goes, newer base stays", &c, &o, "F1 I1", why);
    /* Retention 0 keeps everything. */
    o = opts(0, 7);
    expect_plan("retention 0", &c, &o, "", NULL);
}

/* A chain longer than one link, listed base first: the fixpoint pins every link, whatever the order. */
static void long_chain(void) {
    static const int orders[2][4] = {{0, 1, 2, 3}, {3, 2, 1, 0}};
    for (int k = 0; k < 2; k++) {
        chain c;
        init(&c);
        for (int j = 0; j < 4; j++) {
            switch (orders[k][j]) {
            case 0: add(&c, "F", 7, "FULL", 10, NULL, NULL, 1); break;
            case 1: add(&c, "D1", 7, "DIFFERENTIAL", 20, "F", NULL, 1); break;
            case 2: add(&c, "D2", 7, "INCREMENTAL", 30, "D1", NULL, 1); break;
            case 3: add(&c, "D3", 7, "INCREMENTAL", 90, "D2", NULL, 1); break;
            }
        }
        arc_retention_opts o = opts(30, 7);
        expect_plan(k ? "chain of four, newest first: all stay" : "chain of four, base first: all stay", &c, &o, "",
                    NULL);
    }
}

/* Chunks in another artifact pin it too (format 3 deps), and a reference to a job not in the folder, or to
 * itself, changes nothing. */
static void chunk_deps(void) {
    chain c;
    init(&c);
    add(&c, "F0", 7, "FULL", 5, NULL, NULL, 1);
    add(&c, "Fx", 7, "FULL", 6, NULL, NULL, 1);
    add(&c, "I3", 7, "INCREMENTAL", 90, NULL, "F0", 1);
    add(&c, "I4", 7, "INCREMENTAL", 91, "gone-elsewhere", NULL, 1);
    add(&c, "F9", 7, "FULL", 95, NULL, NULL, 1); /* the last FULL, so that Fx is not kept as that */
    arc_retention_opts o = opts(30, 7);
    const char *why[MAXE] = {"some of its chunks"};
    expect_plan("chunk holder stays, the unreferenced FULL goes", &c, &o, "Fx", why);
}

/* The newest restorable FULL stays even when old; an untrusted FULL is not restorable, so an older trusted one
 * is the one kept. */
static void last_full(void) {
    chain c;
    init(&c);
    add(&c, "F1", 7, "FULL", 10, NULL, NULL, 1);
    add(&c, "F2", 7, "FULL", 20, NULL, NULL, 1);
    arc_retention_opts o = opts(30, 7);
    const char *why[MAXE] = {NULL, "the last restorable FULL"};
    expect_plan("newest old FULL kept", &c, &o, "F1", why);
    c.e[1].sig.state = ARC_SIG_UNTRUSTED;
    const char *why2[MAXE] = {"the last restorable FULL"};
    expect_plan("untrusted newest FULL: the trusted older one is kept", &c, &o, "F2", why2);
    /* An INCREMENTAL is never "the last restorable FULL". */
    init(&c);
    add(&c, "I", 7, "INCREMENTAL", 10, "gone", NULL, 1);
    expect_plan("no FULL at all", &c, &o, "I", NULL);
}

/* Only this configuration's backups are candidates; another configuration's kept backup still pins ours. */
static void scope_and_protect(void) {
    chain c;
    init(&c);
    add(&c, "A7", 7, "FULL", 10, NULL, NULL, 1);
    add(&c, "B7", 7, "FULL", 11, NULL, NULL, 1);
    add(&c, "C8", 8, "FULL", 12, NULL, NULL, 1);
    add(&c, "D8", 8, "INCREMENTAL", 13, "A7", NULL, 1);
    add(&c, "E7", 7, "FULL", 14, NULL, NULL, 1);
    arc_retention_opts o = opts(30, 7);
    const char *why[MAXE] = {"needed by backup D8"};
    expect_plan("config 7 only; config 8 pins A7", &c, &o, "B7", why);
    o.protect_job = "B7";
    expect_plan("protected job stays", &c, &o, "", NULL);
    /* config_id -1 (the CLI): every backup in the folder is in scope. */
    o = opts(30, -1);
    expect_plan("every config", &c, &o, "A7 B7 C8 D8", NULL);
}

/* A format-1 artifact (no index) counts as a FULL dated by its mtime, in scope only for config_id -1. */
static void format1(void) {
    chain c;
    init(&c);
    arc_chain_entry *e = add(&c, "old1", 7, "FULL", 1, NULL, NULL, 0);
    e->ix = NULL;
    e->artifact_version = 1;
    e->artifact_mtime_ms = 2 * DAY;
    add(&c, "F", 7, "FULL", 95, NULL, NULL, 1);
    arc_retention_opts o = opts(30, 7);
    expect_plan("format 1 out of a config's scope", &c, &o, "", NULL);
    o = opts(30, -1);
    expect_plan("format 1 in the CLI's scope", &c, &o, "old1", NULL);
}

/* One unreadable index: nothing can be planned (its references are unknown). */
static void problem_refuses(void) {
    chain c;
    init(&c);
    add(&c, "F1", 7, "FULL", 10, NULL, NULL, 1);
    arc_chain_entry *bad = add(&c, "X", 7, "INCREMENTAL", 90, "F1", NULL, 1);
    snprintf(bad->problem, sizeof bad->problem, "chain index MAC does not match");
    bad->ix = NULL;
    add(&c, "F2", 7, "FULL", 95, NULL, NULL, 1);
    arc_retention_opts o = opts(30, 7);
    arc_retention_plan p;
    fb_err err;
    CHECK_EQ_INT(arc_retention_plan_make(&c.ch, "cfg/7", &o, &p, &err), FB_ERR_VERIFY);
    CHECK(strstr(err.msg, "backup X") && strstr(err.msg, "MAC does not match") && strstr(err.msg, "removed nothing"));
    CHECK(p.remove == NULL && p.n == 0);
    arc_retention_plan_clear(&p); /* safe on the emptied plan */
}

/* Backups of captured changes (index line `capture`): the one before an INCREMENTAL holds the changes before its
 * own, so it stays with it even though no table points at it; the capture base FULL stays too. */
static void captured_changes(void) {
    chain c;
    init(&c);
    add(&c, "F1", 7, "FULL", 10, NULL, NULL, 1);
    arc_chain_entry *i1 = add(&c, "I1", 7, "INCREMENTAL", 20, "F1", NULL, 1);
    arc_chain_entry *i2 = add(&c, "I2", 7, "INCREMENTAL", 85, "F1", NULL, 1);
    add(&c, "F2", 7, "FULL", 90, NULL, NULL, 1);
    c.ix[0].cap_stream = "db/s";
    c.ix[0].cap_full = "F1";
    i1->ix->base_job = "F1";
    i2->ix->base_job = "I1";
    i1->ix->cap_stream = i2->ix->cap_stream = "db/s";
    i1->ix->cap_full = i2->ix->cap_full = "F1";
    arc_retention_opts o = opts(30, 7);
    const char *why[MAXE] = {"needed by backup I", "needed by backup I2 (the captured changes before its own)"};
    expect_plan("the changes before a kept INCREMENTAL stay", &c, &o, "", why);
    /* Without the line the same chain lets I1 go (its table is only a reference to F1): the line is what keeps it. */
    i2->ix->cap_stream = NULL;
    expect_plan("a table-reading INCREMENTAL needs only F1", &c, &o, "I1", NULL);
}

int main(void) {
    captured_changes();
    chains();
    long_chain();
    chunk_deps();
    last_full();
    scope_and_protect();
    format1();
    problem_refuses();
    return tap_done();
}
