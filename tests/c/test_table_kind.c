/* test_table_kind: arc_table_kind_of and arc_index_table_kind, the one place that says whether a table of an
 * artifact is stored whole, referenced (held by another artifact of the chain) or assembled from chunks. Every
 * reader and the backup job branch on it, so each combination of the on-disk fields (stored_in, assembled) is
 * checked, and again after the manifest and the chain index went through their encoders and decoders: the kind
 * is not a field of either format, so it must come back from the same fields. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "artifact/arc_index.h"
#include "artifact/arc_manifest.h"
#include "tap.h"

#define JOB "33333333-3333-4333-8333-333333333333"
#define BASE "11111111-1111-4111-8111-111111111111"

/* The combinations: {stored_in, assembled, the kind} (stored_in "" and this job's own id mean "stored here"). */
static const struct {
    const char *stored_in;
    int assembled;
    arc_table_kind kind;
} cases[] = {
    {NULL, 0, ARC_TABLE_WHOLE},       {"", 0, ARC_TABLE_WHOLE},           {JOB, 0, ARC_TABLE_WHOLE},
    {NULL, 1, ARC_TABLE_ASSEMBLED},   {JOB, 1, ARC_TABLE_ASSEMBLED},      {BASE, 0, ARC_TABLE_REFERENCED},
    {BASE, 1, ARC_TABLE_REFERENCED}, /* a reference wins: its holder's entry says how the data is laid out */
};
#define N_CASES (sizeof cases / sizeof cases[0])

static void manifest_kinds(void) {
    arc_table t[N_CASES];
    char names[N_CASES][8];
    memset(t, 0, sizeof t);
    for (size_t i = 0; i < N_CASES; i++) {
        snprintf(names[i], sizeof names[i], "t%zu", i);
        t[i].schema = "public";
        t[i].name = names[i];
        t[i].stored_in = (char *)cases[i].stored_in;
        t[i].assembled = cases[i].assembled;
    }
    arc_manifest m = {0};
    m.format = 5;
    m.tool = "fusion-backup 1";
    m.job_id = JOB;
    m.backup_type = "INCREMENTAL";
    m.tables = t;
    m.n_tables = N_CASES;
    for (size_t i = 0; i < N_CASES; i++)
        CHECKF(arc_table_kind_of(&m, &t[i]) == cases[i].kind, "manifest case %zu (stored_in %s, assembled %d): "
               "kind %d, expected %d", i, cases[i].stored_in ? cases[i].stored_in : "NULL", cases[i].assembled,
               (int)arc_table_kind_of(&m, &t[i]), (int)cases[i].kind);
    /* A manifest without a job id: any stored_in is a reference (an older writer's table stored elsewhere). */
    arc_manifest anon = m;
    anon.job_id = NULL;
    CHECK_EQ_INT(arc_table_kind_of(&anon, &t[2]), ARC_TABLE_REFERENCED);
    CHECK_EQ_INT(arc_table_kind_of(&anon, &t[0]), ARC_TABLE_WHOLE);

    char *buf = NULL;
    size_t len = 0;
    arc_manifest *back = NULL;
    fb_err err;
    CHECK_EQ_INT(arc_manifest_pack(&m, &buf, &len, &err), FB_OK);
    CHECK_EQ_INT(arc_manifest_unpack(buf, len, &back, &err), FB_OK);
    CHECK(back && back->n_tables == N_CASES);
    for (size_t i = 0; back && i < back->n_tables && i < N_CASES; i++)
        CHECKF(arc_table_kind_of(back, &back->tables[i]) == cases[i].kind, "manifest case %zu after pack/unpack: "
               "kind %d, expected %d", i, (int)arc_table_kind_of(back, &back->tables[i]), (int)cases[i].kind);
    arc_manifest_free(back);
    free(buf);
}

static void index_kinds(void) {
    unsigned char key[ARC_INDEX_KEY_BYTES];
    randombytes_buf(key, sizeof key);
    arc_index_table t[3];
    memset(t, 0, sizeof t);
    const char *stored[3] = {JOB, JOB, BASE};
    const int assembled[3] = {0, 1, 0};
    const arc_table_kind want[3] = {ARC_TABLE_WHOLE, ARC_TABLE_ASSEMBLED, ARC_TABLE_REFERENCED};
    static char *sources[] = {BASE};
    for (size_t i = 0; i < 3; i++) {
        t[i].schema = "public";
        t[i].name = i == 0 ? "a" : i == 1 ? "b" : "c";
        t[i].stored_in = (char *)stored[i];
        t[i].assembled = assembled[i];
    }
    /* The index writes a table without chunk records as "none" (kind whole), so the assembled one has two. */
    t[1].rec_count = 2;
    t[2].rec_first = 2;
    arc_index ix = {0};
    ix.job_id = JOB;
    ix.config_id = 7;
    ix.type = "INCREMENTAL";
    ix.base_job = BASE;
    ix.tables = t;
    ix.n_tables = 3;
    ix.version = 3;
    ix.sources = sources;
    ix.n_sources = 1;
    ix.n_records = 2;
    for (size_t i = 0; i < 3; i++) CHECK_EQ_INT(arc_index_table_kind(&ix, &t[i]), want[i]);
    char *text = NULL;
    size_t len = 0;
    arc_index *back = NULL;
    fb_err err;
    CHECK_EQ_INT(arc_index_format(&ix, key, &text, &len, &err), FB_OK);
    CHECK_EQ_INT(arc_index_parse(text, len, key, &back, &err), FB_OK);
    CHECK(back && back->n_tables == 3);
    for (size_t i = 0; back && i < back->n_tables && i < 3; i++)
        CHECKF(arc_index_table_kind(back, &back->tables[i]) == want[i], "index table %zu after format/parse: kind "
               "%d, expected %d", i, (int)arc_index_table_kind(back, &back->tables[i]), (int)want[i]);
    arc_index_free(back);
    free(text);
}

int main(void) {
    if (sodium_init() < 0) return 1;
    manifest_kinds();
    index_kinds();
    return tap_done();
}
