/* test_schema_archive: the schema archive segment of format 4 (FORMAT.md, "Schema archive") and the helper-process
 * runner behind pg_dump / pg_restore, without a database.
 *
 * Proves: the schema archive round-trips byte for byte beside a table, and its manifest entry round-trips; verify
 * checks it and counts it in the tiling (a schema segment the manifest does not record is refused); a flipped byte
 * in it fails authentication naming the schema archive; an artifact without one says so (FB_ERR_NOTFOUND); a
 * helper's failure carries its exit status and stderr, a missing program names the setting to fix, and a
 * descriptor handed over as fd 3 is readable by the child as /dev/fd/3.
 */
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "artifact/arc_format.h"
#include "artifact/arc_key.h"
#include "artifact/arc_reader.h"
#include "artifact/arc_writer.h"
#include "dump/dump_proc.h"
#include "tap.h"

typedef tap_buf buf;

/* The worker's signing key and the readers' trust in it (format 5 artifacts are signed). */
static fb_signer signer;
static fb_keyring trusted;
static arc_trust trust = {&trusted, 0, NULL};

/* Writes root/x.fbak: optionally a schema segment (recorded in the manifest or not), then one table. */
static void write_artifact(const char *root, const unsigned char *pk, const buf *schema, int with_schema,
                           int record_schema, const buf *table) {
    fb_err err;
    stor *st = NULL;
    stor_wfile *wf = NULL;
    arc_writer *w = NULL;
    arc_manifest m = {0};
    arc_seg_info si;
    uint32_t id;
    CHECK_EQ_INT(stor_posix_new(root, &st, &err), FB_OK);
    CHECK_EQ_INT(stor_create(st, "x.fbak", &wf, &err), FB_OK);
    CHECK_EQ_INT(arc_writer_new(wf, pk, 3, &w, &err), FB_OK);
    m.format = ARC_FORMAT_VERSION;
    m.job_id = strdup("7d7c3f4e-1111-4a41-9d0c-8f1f0c5b3a11");
    CHECK_EQ_INT(arc_writer_set_signer(w, &signer, m.job_id, &err), FB_OK);
    if (with_schema) {
        CHECK_EQ_INT(arc_writer_begin(w, &id, &err), FB_OK);
        CHECK_EQ_INT(id, 1);
        CHECK_EQ_INT(arc_writer_write(w, schema->p, schema->len, &err), FB_OK);
        CHECK_EQ_INT(arc_writer_end(w, &si, &err), FB_OK);
        if (record_schema) {
            m.schema = calloc(1, sizeof *m.schema);
            m.schema->segment = si.segment;
            m.schema->offset = si.offset;
            m.schema->length = si.length;
            m.schema->raw_bytes = si.raw_bytes;
            memcpy(m.schema->blake2b, si.blake2b, ARC_HASH_BYTES);
            m.schema->pg_dump_version = strdup("pg_dump (PostgreSQL) 15.18");
            m.schema->all_tables = 1;
        }
    }
    m.tables = calloc(1, sizeof *m.tables);
    m.n_tables = 1;
    arc_table *t = &m.tables[0];
    t->schema = strdup("public");
    t->name = strdup("t");
    CHECK_EQ_INT(arc_writer_begin(w, &id, &err), FB_OK);
    CHECK_EQ_INT(arc_writer_write(w, table->p, table->len, &err), FB_OK);
    CHECK_EQ_INT(arc_writer_end(w, &si, &err), FB_OK);
    t->segment = si.segment;
    t->offset = si.offset;
    t->length = si.length;
    t->raw_bytes = si.raw_bytes;
    t->stored_bytes = (int64_t)si.length;
    memcpy(t->blake2b, si.blake2b, ARC_HASH_BYTES);
    m.data_end = arc_writer_offset(w);
    char *mb = NULL;
    size_t ml = 0;
    CHECK_EQ_INT(arc_manifest_pack(&m, &mb, &ml, &err), FB_OK);
    CHECK_EQ_INT(arc_writer_finish(w, mb, ml, &err), FB_OK);
    arc_writer_free(w);
    CHECK_EQ_INT(stor_wfile_commit(wf, &err), FB_OK);
    stor_free(st);
    free(mb);
    arc_manifest_clear(&m);
}

static fb_code open_reader(const char *path, const unsigned char *sk, const unsigned char *pk, stor_rfile **f,
                           arc_reader **r, fb_err *err) {
    fb_code rc = stor_posix_open_path(path, f, err);
    if (rc == FB_OK) rc = arc_reader_open(*f, sk, pk, &trust, r, err);
    return rc;
}

static void test_segment(const char *root) {
    fb_err err;
    unsigned char pk[ARC_PK_BYTES], sk[ARC_SK_BYTES];
    char path[400];
    crypto_box_keypair(pk, sk);
    snprintf(path, sizeof path, "%s/x.fbak", root);
    buf schema = {0}, table = {0};
    schema.len = 300000;
    schema.p = malloc(schema.len);
    randombytes_buf(schema.p, schema.len);
    memcpy(schema.p, "PGDMP", 5);
    table.p = malloc(1 << 20);
    for (int i = 0; i < 20000; i++) table.len += (size_t)sprintf((char *)table.p + table.len, "%d\tx\n", i);

    /* round trip */
    write_artifact(root, pk, &schema, 1, 1, &table);
    stor_rfile *f = NULL;
    arc_reader *r = NULL;
    CHECK_EQ_INT(open_reader(path, sk, pk, &f, &r, &err), FB_OK);
    const arc_manifest *m = arc_reader_manifest(r);
    CHECK(m->schema != NULL);
    if (m->schema) {
        CHECK_EQ_INT(m->schema->segment, 1);
        CHECK_EQ_INT(m->schema->offset, ARC_HEADER_BYTES);
        CHECK_EQ_INT(m->schema->raw_bytes, schema.len);
        CHECK_EQ_STR(m->schema->pg_dump_version, "pg_dump (PostgreSQL) 15.18");
        CHECK_EQ_INT(m->schema->all_tables, 1);
    }
    CHECK_EQ_INT(m->tables[0].segment, 2);
    buf got = {0};
    CHECK_EQ_INT(arc_reader_read_schema(r, tap_collect, &got, &err), FB_OK);
    CHECK(got.len == schema.len && memcmp(got.p, schema.p, schema.len) == 0);
    free(got.p);
    CHECK_EQ_INT(arc_reader_verify_all(r, &err), FB_OK);
    size_t sa_off = m->schema ? (size_t)m->schema->offset : 0, sa_len = m->schema ? (size_t)m->schema->length : 0;
    arc_reader_free(r);
    stor_rfile_close(f);

    /* a flipped byte inside the schema segment */
    int fd = open(path, O_RDWR);
    unsigned char c;
    CHECK(pread(fd, &c, 1, (off_t)(sa_off + sa_len / 2)) == 1);
    c ^= 0x20;
    CHECK(pwrite(fd, &c, 1, (off_t)(sa_off + sa_len / 2)) == 1);
    close(fd);
    CHECK_EQ_INT(open_reader(path, sk, pk, &f, &r, &err), FB_OK);
    CHECK_EQ_INT(arc_reader_read_schema(r, NULL, NULL, &err), FB_ERR_CRYPTO);
    CHECKF(strstr(err.msg, "schema archive") != NULL, "message: %s", err.msg);
    CHECK_EQ_INT(arc_reader_verify_all(r, &err), FB_ERR_CRYPTO);
    CHECK_EQ_INT(arc_reader_read_table(r, &arc_reader_manifest(r)->tables[0], NULL, NULL, &err), FB_OK);
    arc_reader_free(r);
    stor_rfile_close(f);

    /* a schema segment the manifest does not record: the segments no longer tile the file */
    write_artifact(root, pk, &schema, 1, 0, &table);
    CHECK_EQ_INT(open_reader(path, sk, pk, &f, &r, &err), FB_OK);
    CHECK_EQ_INT(arc_reader_verify_all(r, &err), FB_ERR_FORMAT);
    CHECKF(strstr(err.msg, "tile") != NULL, "message: %s", err.msg);
    arc_reader_free(r);
    stor_rfile_close(f);

    /* none at all (as in formats <= 3) */
    write_artifact(root, pk, &schema, 0, 0, &table);
    CHECK_EQ_INT(open_reader(path, sk, pk, &f, &r, &err), FB_OK);
    CHECK(arc_reader_manifest(r)->schema == NULL);
    CHECK_EQ_INT(arc_reader_read_schema(r, NULL, NULL, &err), FB_ERR_NOTFOUND);
    CHECK_EQ_INT(arc_reader_verify_all(r, &err), FB_OK);
    arc_reader_free(r);
    stor_rfile_close(f);
    unlink(path);
    free(schema.p);
    free(table.p);
}

static void test_proc(const char *dir) {
    fb_err err;
    char *out = NULL;
    size_t len = 0;
    const char *fail[] = {"/bin/sh", "-c", "echo partial; echo 'pg_dump: error: connection refused' >&2; exit 3", NULL};
    CHECK_EQ_INT(dump_proc_capture(fail, NULL, "pg-dump (FB_PG_DUMP)", -1, &out, &len, &err), FB_ERR_PG);
    CHECKF(strstr(err.msg, "exit status 3") && strstr(err.msg, "connection refused"), "message: %s", err.msg);
    CHECK(out == NULL);

    const char *missing[] = {"/nonexistent/pg_dump", "--version", NULL};
    CHECK_EQ_INT(dump_proc_capture(missing, NULL, "pg-dump (FB_PG_DUMP)", -1, &out, &len, &err), FB_ERR_USAGE);
    CHECKF(strstr(err.msg, "/nonexistent/pg_dump") && strstr(err.msg, "FB_PG_DUMP"), "message: %s", err.msg);

    /* an unlinked file handed over as fd 3, and an environment entry */
    char path[400];
    snprintf(path, sizeof path, "%s/fd3-XXXXXX", dir);
    int fd = mkstemp(path);
    unlink(path);
    CHECK(write(fd, "through fd 3\n", 13) == 13);
    const char *cat[] = {"/bin/sh", "-c", "cat /dev/fd/3; echo \"$FB_TEST_X\"", NULL};
    const char *env[] = {"FB_TEST_X=set for the child", NULL};
    CHECK_EQ_INT(dump_proc_capture(cat, env, "x", fd, &out, &len, &err), FB_OK);
    CHECK_EQ_STR(out, "through fd 3\nset for the child\n");
    CHECK_EQ_INT(len, 31);
    free(out);
    close(fd);

    /* a lot of stderr and stdout at once cannot block the child */
    const char *chatty[] = {"/bin/sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo line $i; echo noise $i >&2; "
                            "i=$((i+1)); done", NULL};
    CHECK_EQ_INT(dump_proc_capture(chatty, NULL, "x", -1, &out, &len, &err), FB_OK);
    CHECK(out && strstr(out, "line 1999\n") != NULL);
    free(out);
}

int main(void) {
    char dir[256], root[300];
    if (sodium_init() < 0) return 1;
    tap_signer(&signer, &trusted);
    snprintf(dir, sizeof dir, "/tmp/fbsa_%d", (int)getpid());
    snprintf(root, sizeof root, "%s/root", dir);
    mkdir(dir, 0700);
    mkdir(root, 0700);
    test_segment(root);
    test_proc(dir);
    rmdir(root);
    rmdir(dir);
    return tap_done();
}
