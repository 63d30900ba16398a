/* test_manifest_fields: the manifest's field tables (arc_manifest.c) write exactly the bytes the hand-written
 * encoder wrote before them (BLAKE2b-256 of two manifests pinned from that encoder: one with every optional field
 * unset, one with every one set), read back every field (a repack is byte-identical), name the field of a malformed
 * manifest as before, and free everything they read (ASan's leak check). Also the one rule chain resolvers use to
 * turn a job id a manifest names into a file name (arc_artifact_name): a hostile id never leaves the folder. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact/arc_index.h"
#include "artifact/arc_manifest.h"
#include "tap.h"
static char *d(const char *s) { return s ? strdup(s) : NULL; }
static void fill_table(arc_table *t, int k) {
    t->schema = d("public"); t->name = d(k ? "child\"x" : "parent");
    t->n_cols = 2; t->cols = calloc(2, sizeof *t->cols);
    t->cols[0] = (arc_column){d("id"), d("bigint"), 1, 0, 'a'};
    t->cols[1] = (arc_column){d("g"), d("text"), 0, 's', 0};
    t->create_sql = d("CREATE TABLE x (id bigint)");
    t->n_index = 2; t->index_sql = calloc(2, sizeof(char*)); t->index_sql[0] = d("CREATE INDEX a"); t->index_sql[1] = d("CREATE INDEX b");
    if (k) { t->n_fk = 1; t->fk_sql = calloc(1, sizeof(char*)); t->fk_sql[0] = d("ALTER TABLE fk"); }
    t->n_seqs = 1; t->seqs = calloc(1, sizeof *t->seqs);
    t->seqs[0] = (arc_sequence){d("public"), d("s1"), d("id"), k ? NULL : d("CREATE SEQUENCE"), k ? NULL : d("ALTER SEQ"), 123456789012LL, 1, k};
    if (k) { t->n_deps = 1; t->deps = calloc(1, sizeof *t->deps); t->deps[0] = (arc_tref){d("public"), d("parent")}; }
    t->rows = k ? 70000 : -1; t->raw_bytes = 5000000000LL; t->stored_bytes = 200; t->offset = 4096; t->length = 300000; t->segment = 3 + k;
    for (int i = 0; i < 32; i++) t->blake2b[i] = (unsigned char)(i * 7 + k);
    if (k) {
        t->stored_in = d("11111111-2222-4333-8444-555555555555");
        t->assembled = 1; t->n_chunks = 2; t->chunks = calloc(2, sizeof *t->chunks);
        for (int j = 0; j < 2; j++) { memset(t->chunks[j].id, 0x40 + j, 16); t->chunks[j].src = j ? d("aaaa") : NULL; t->chunks[j].segment = j; t->chunks[j].offset = 1000 * j; t->chunks[j].length = 70000 + j; }
    }
}
static const char *const pinned[2] = {
    "c8641ff7cfaaabb50b3b67977b837aa88def841b5619eed420bc7bb3eeba2b04", /* 1433 bytes: optional fields unset */
    "da00f05650c991befa6169cb1e956eb150b9cbb16a0b8dfc056c07dc866eba97", /* 1666 bytes: every one set */
};
static const size_t pinned_len[2] = {1433, 1666};

/* capture_changes (a backup of captured changes): every field back as written, and one without its FULL refused. */
static void capture_changes(void) {
    arc_manifest m = {0};
    m.format = 5; m.job_id = d("j"); m.backup_type = d("INCREMENTAL"); m.base_job = d("b");
    m.changes = calloc(1, sizeof *m.changes);
    *m.changes = (arc_capture_changes){.segment = 1, .offset = 96, .length = 500, .raw_bytes = 480, .stream = d("db/s"),
                                       .slot = d("s"), .full_job = d("f"), .start_lsn = 0x16B374D848ULL,
                                       .end_lsn = 0x16B3750000ULL, .end_us = 1795756200000123LL, .segments = 3};
    memset(m.changes->blake2b, 0x21, 32);
    m.changes->full_snapshot_ms = 1795756100000LL;
    char *out; size_t len; fb_err err;
    arc_manifest *u = NULL;
    CHECK(arc_manifest_pack(&m, &out, &len, &err) == FB_OK && arc_manifest_unpack(out, len, &u, &err) == FB_OK);
    const arc_capture_changes *c = u ? u->changes : NULL;
    CHECK(c && c->segment == 1 && c->offset == 96 && c->length == 500 && c->raw_bytes == 480 && c->segments == 3);
    CHECK(c && strcmp(c->stream, "db/s") == 0 && strcmp(c->slot, "s") == 0 && strcmp(c->full_job, "f") == 0);
    CHECK(c && c->start_lsn == 0x16B374D848ULL && c->end_lsn == 0x16B3750000ULL && c->end_us == 1795756200000123LL);
    CHECK(c && c->blake2b[31] == 0x21 && c->full_snapshot_ms == 1795756100000LL);
    arc_manifest_free(u);
    free(out);
    free(m.changes->full_job);
    m.changes->full_job = NULL; /* written as nil: the reader refuses it */
    CHECK(arc_manifest_pack(&m, &out, &len, &err) == FB_OK);
    u = NULL;
    CHECK(arc_manifest_unpack(out, len, &u, &err) == FB_ERR_FORMAT && !u && strstr(err.msg, "capture_changes"));
    free(out);
    arc_manifest_clear(&m);
}

int main(void) {
    if (sodium_init() < 0) return 1;
    capture_changes();
    for (int variant = 0; variant < 2; variant++) {
    arc_manifest m = {0};
    m.format = 5; m.tool = d("fusion-backup 0.3.0"); m.job_id = d("0b7f3c1e-8d2a-4f4e-9c1a-6a1f2b3c4d5e");
    m.record_id = 7; m.config_id = 3; m.config_name = d("nightly"); m.backup_type = d("INCREMENTAL"); m.requested_type = d("INCREMENTAL");
    m.base_job = variant ? d("ffffffff-2222-4333-8444-555555555555") : NULL; m.database = d("fusion"); m.server_version = d("15.8");
    m.snapshot_ms = 1795756200000LL; m.started_ms = 1795756200001LL; m.completed_ms = 1795756300000LL; m.zstd_level = 3; m.data_end = 123456789;
    if (variant) { m.has_index_hash = 1; for (int i = 0; i < 32; i++) m.index_blake2b[i] = (unsigned char)(255 - i); }
    m.n_tables = 2; m.tables = calloc(2, sizeof *m.tables); fill_table(&m.tables[0], 0); fill_table(&m.tables[1], 1);
    if (variant) { m.schema = calloc(1, sizeof *m.schema); m.schema->segment = 9; m.schema->offset = 77; m.schema->length = 88; m.schema->raw_bytes = 99;
        memset(m.schema->blake2b, 0x11, 32); m.schema->pg_dump_version = d("pg_dump (PostgreSQL) 15.8"); m.schema->all_tables = 1; }
    char *out; size_t len; fb_err err;
    CHECK(arc_manifest_pack(&m, &out, &len, &err) == FB_OK);
    arc_manifest *u;
    if (arc_manifest_unpack(out, len, &u, &err) != FB_OK) { CHECKF(0, "unpack: %s", err.msg); return tap_done(); }
    char *out2; size_t len2;
    arc_manifest_pack(u, &out2, &len2, &err);
    unsigned char h[32];
    char hex[65];
    crypto_generichash(h, 32, (const unsigned char *)out, len, NULL, 0);
    sodium_bin2hex(hex, sizeof hex, h, 32);
    CHECK_EQ_INT(len, pinned_len[variant]);
    CHECK_EQ_STR(hex, pinned[variant]);
    CHECKF(len == len2 && memcmp(out, out2, len) == 0, "variant %d: repack differs", variant);
    CHECK_EQ_INT(u->n_tables, 2);
    CHECK_EQ_INT(u->has_index_hash, variant);
    CHECK((u->schema != NULL) == variant);
    CHECK_EQ_INT(u->tables[1].n_chunks, 2);
    CHECK_EQ_STR(u->tables[1].chunks[1].src, "aaaa");
    CHECK(u->tables[1].chunks[0].src == NULL);
    CHECK_EQ_INT(u->tables[1].cols[1].generated, 's');
    CHECK_EQ_INT(u->tables[0].seqs[0].last_value, 123456789012LL);
    CHECK_EQ_STR(u->tables[1].deps[0].name, "parent");
    CHECK(u->tables[1].assembled && !u->tables[0].assembled);
    free(out); free(out2); arc_manifest_free(u); arc_manifest_clear(&m);
    }
    /* malformed: messages */
    static const unsigned char bad1[] = {0x81, 0xa6, 't','a','b','l','e','s', 0x91, 0x81, 0xa4, 'n','a','m','e', 0xa1, 'x'};
    arc_manifest *u; fb_err err;
    fb_code rc = arc_manifest_unpack(bad1, sizeof bad1, &u, &err);
    CHECK_EQ_INT(rc, FB_ERR_FORMAT);
    CHECK_EQ_STR(err.msg, "malformed manifest: bad \"table name\"");
    static const unsigned char bad2[] = {0x81, 0xa6, 'f','o','r','m','a','t', 0xa1, 'x'};
    rc = arc_manifest_unpack(bad2, sizeof bad2, &u, &err);
    CHECK_EQ_INT(rc, FB_ERR_FORMAT);
    CHECK_EQ_STR(err.msg, "malformed manifest: bad \"format\"");
    /* where a referenced job's artifact is: one path component, or refused */
    char name[64];
    CHECK(arc_artifact_name("cfg3/nightly", "0b7f3c1e-8d2a-4f4e-9c1a-6a1f2b3c4d5e", name, sizeof name, &err) == FB_OK);
    CHECK_EQ_STR(name, "cfg3/nightly/0b7f3c1e-8d2a-4f4e-9c1a-6a1f2b3c4d5e.fbak");
    CHECK(arc_artifact_name("", "j", name, sizeof name, &err) == FB_OK);
    CHECK_EQ_STR(name, "j.fbak");
    static const char *const hostile[] = {"..", ".", "", "../x", "a/b", "/etc/passwd", "x/../../y"};
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++)
        CHECKF(arc_artifact_name("d", hostile[i], name, sizeof name, &err) == FB_ERR_FORMAT, "job id \"%s\"", hostile[i]);
    CHECK(arc_artifact_name("a-long-folder-name-that-does-not-fit", "job-id-long-too-long-for-it", name, 40, &err) ==
          FB_ERR_INVALID);
    /* a key given twice: the last one counts and the first is not leaked */
    static const unsigned char twice[] = {0x82, 0xa4, 't','o','o','l', 0xa1, 'a', 0xa4, 't','o','o','l', 0xa1, 'b'};
    CHECK(arc_manifest_unpack(twice, sizeof twice, &u, &err) == FB_OK);
    CHECK_EQ_STR(u->tool, "b");
    arc_manifest_free(u);
    return tap_done();
}
