/* test_artifact_lanes: a writer's lanes (arc_writer_new_lane / arc_writer_import, the parallel dump) on their own.
 *
 * Proves: segments written by two lanes at the same time as the writer's own (ids from one counter, never twice),
 * imported between the writer's segments, give an artifact that verifies (segments tile the file) and whose every
 * table reads back byte for byte; an import while the writer has a segment open, or of another writer's lane, is
 * refused; a lane's temporary file is not left behind in TMPDIR.
 */
#include <dirent.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "artifact/arc_key.h"
#include "artifact/arc_reader.h"
#include "artifact/arc_writer.h"
#include "tap.h"

#define NT 6 /* tables: 0, 3 by the writer; 1, 4 by lane a; 2, 5 by lane b */

static fb_signer signer;
static fb_keyring trusted;
static arc_trust trust = {&trusted, 0, NULL};
static tap_buf data[NT];

typedef struct lane_job {
    arc_writer *lane;
    int first;            /* tables first, first + 3 */
    arc_seg_info si[2];
    fb_code rc;
} lane_job;

static fb_code write_seg(arc_writer *w, int t, arc_seg_info *si, fb_err *err) {
    uint32_t id;
    fb_code rc = arc_writer_begin(w, &id, err);
    for (size_t off = 0; !rc && off < data[t].len; off += 70001) {
        size_t n = data[t].len - off < 70001 ? data[t].len - off : 70001;
        rc = arc_writer_write(w, data[t].p + off, n, err);
    }
    return rc ? rc : arc_writer_end(w, si, err);
}

static void *lane_main(void *arg) {
    lane_job *j = arg;
    fb_err e;
    j->rc = write_seg(j->lane, j->first, &j->si[0], &e);
    if (!j->rc) j->rc = write_seg(j->lane, j->first + 3, &j->si[1], &e);
    return NULL;
}

static int dir_entries(const char *d) {
    DIR *dp = opendir(d);
    int n = 0;
    if (!dp) return -1;
    for (struct dirent *e; (e = readdir(dp));) n += e->d_name[0] != '.';
    closedir(dp);
    return n;
}

int main(void) {
    fb_err err;
    unsigned char pk[ARC_PK_BYTES], sk[ARC_SK_BYTES];
    char dir[256], root[300], tmpd[300], path[400];
    if (sodium_init() < 0) return 1;
    tap_signer(&signer, &trusted);
    crypto_box_keypair(pk, sk);
    snprintf(dir, sizeof dir, "/tmp/fbtl_%d", (int)getpid());
    snprintf(root, sizeof root, "%s/root", dir);
    snprintf(tmpd, sizeof tmpd, "%s/tmp", dir);
    mkdir(dir, 0700);
    mkdir(root, 0700);
    mkdir(tmpd, 0700);
    setenv("TMPDIR", tmpd, 1);
    for (int t = 0; t < NT; t++) { /* COPY-like text of different sizes; table 2 empty */
        size_t rows = t == 2 ? 0 : (size_t)(20000 * (t + 1));
        data[t].p = malloc(rows * 40 + 1);
        for (size_t i = 0; i < rows; i++)
            data[t].len += (size_t)sprintf((char *)data[t].p + data[t].len, "%zu\tt%d row %zu\t\\N\n", i, t, i * 31);
    }

    stor *st = NULL;
    stor_wfile *wf = NULL;
    arc_writer *w = NULL, *other = NULL;
    lane_job ja = {0}, jb = {0};
    CHECK_EQ_INT(stor_posix_new(root, &st, &err), FB_OK);
    CHECK_EQ_INT(stor_create(st, "lanes.fbak", &wf, &err), FB_OK);
    CHECK_EQ_INT(arc_writer_new(wf, pk, 3, &w, &err), FB_OK);
    CHECK_EQ_INT(arc_writer_set_zstd_workers(w, 1, &err), FB_OK);
    CHECK_EQ_INT(arc_writer_set_signer(w, &signer, "0b5cd0b8-6f2a-4a41-9d0c-8f1f0c5b3a12", &err), FB_OK);
    CHECK_EQ_INT(arc_writer_new_lane(w, &ja.lane, &err), FB_OK);
    CHECK_EQ_INT(arc_writer_new_lane(w, &jb.lane, &err), FB_OK);
    CHECK_EQ_INT(dir_entries(tmpd), 0); /* unlinked at once */
    ja.first = 1;
    jb.first = 2;

    arc_manifest m = {0};
    m.format = 1;
    m.job_id = strdup("0b5cd0b8-6f2a-4a41-9d0c-8f1f0c5b3a12");
    m.tables = calloc(NT, sizeof *m.tables);
    m.n_tables = NT;
    arc_seg_info own[2];
    pthread_t ta, tb;
    pthread_create(&ta, NULL, lane_main, &ja);
    pthread_create(&tb, NULL, lane_main, &jb);
    fb_code rc = write_seg(w, 0, &own[0], &err);
    if (!rc) rc = write_seg(w, 3, &own[1], &err);
    CHECKF(rc == FB_OK, "writer: %s", err.msg);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK_EQ_INT(ja.rc, FB_OK);
    CHECK_EQ_INT(jb.rc, FB_OK);

    /* refused: an import while a segment is open, and another writer's lane */
    {
        uint32_t id;
        uint64_t at;
        CHECK_EQ_INT(arc_writer_begin(w, &id, &err), FB_OK);
        CHECK_EQ_INT(arc_writer_import(w, ja.lane, &ja.si[0], &at, &err), FB_ERR_INTERNAL);
        arc_seg_info junk;
        CHECK_EQ_INT(arc_writer_end(w, &junk, &err), FB_OK); /* an empty segment: tiles like any other */
        stor_wfile *wf2 = NULL;
        arc_writer *w2 = NULL;
        CHECK_EQ_INT(stor_create(st, "other.fbak", &wf2, &err), FB_OK);
        CHECK_EQ_INT(arc_writer_new(wf2, pk, 3, &w2, &err), FB_OK);
        CHECK_EQ_INT(arc_writer_new_lane(w2, &other, &err), FB_OK);
        CHECK_EQ_INT(arc_writer_import(w, other, &ja.si[0], &at, &err), FB_ERR_INTERNAL);
        arc_writer_free(other);
        arc_writer_free(w2);
        stor_wfile_abort(wf2);
        /* that empty segment is in the file: the manifest lists it (as a 7th table) so the segments tile it */
        m.tables = realloc(m.tables, (NT + 1) * sizeof *m.tables);
        memset(&m.tables[NT], 0, sizeof m.tables[NT]);
        m.tables[NT].schema = strdup("public");
        m.tables[NT].name = strdup("opened_during_refusal");
        m.tables[NT].segment = junk.segment;
        m.tables[NT].offset = junk.offset;
        m.tables[NT].length = junk.length;
        memcpy(m.tables[NT].blake2b, junk.blake2b, ARC_HASH_BYTES);
        m.n_tables = NT + 1;
    }

    /* Segment ids: one counter for the writer and its lanes, each used once. */
    uint32_t ids[NT] = {own[0].segment, ja.si[0].segment, jb.si[0].segment, own[1].segment, ja.si[1].segment,
                        jb.si[1].segment};
    for (int a = 0; a < NT; a++)
        for (int b = a + 1; b < NT; b++) CHECKF(ids[a] != ids[b], "segment id %u used twice", ids[a]);
    const arc_seg_info *si[NT] = {&own[0], &ja.si[0], &jb.si[0], &own[1], &ja.si[1], &jb.si[1]};
    const arc_writer *from[NT] = {NULL, ja.lane, jb.lane, NULL, ja.lane, jb.lane};
    for (int t = 0; t < NT; t++) {
        arc_table *x = &m.tables[t];
        char name[32];
        snprintf(name, sizeof name, "t%d", t);
        x->schema = strdup("public");
        x->name = strdup(name);
        x->segment = si[t]->segment;
        x->offset = si[t]->offset;
        if (from[t]) CHECK_EQ_INT(arc_writer_import(w, from[t], si[t], &x->offset, &err), FB_OK);
        x->length = si[t]->length;
        x->raw_bytes = si[t]->raw_bytes;
        x->stored_bytes = (int64_t)si[t]->length;
        memcpy(x->blake2b, si[t]->blake2b, ARC_HASH_BYTES);
        CHECK_EQ_INT(si[t]->raw_bytes, data[t].len);
    }
    m.data_end = arc_writer_offset(w);
    char *mb = NULL;
    size_t ml = 0;
    CHECK_EQ_INT(arc_manifest_pack(&m, &mb, &ml, &err), FB_OK);
    CHECK_EQ_INT(arc_writer_finish(w, mb, ml, &err), FB_OK);
    arc_writer_free(ja.lane);
    arc_writer_free(jb.lane);
    arc_writer_free(w);
    CHECK_EQ_INT(stor_wfile_commit(wf, &err), FB_OK);
    stor_free(st);
    free(mb);
    CHECK_EQ_INT(dir_entries(tmpd), 0);

    snprintf(path, sizeof path, "%s/lanes.fbak", root);
    stor_rfile *f = NULL;
    arc_reader *r = NULL;
    CHECK_EQ_INT(stor_posix_open_path(path, &f, &err), FB_OK);
    rc = arc_reader_open(f, sk, pk, &trust, &r, &err);
    CHECKF(rc == FB_OK, "open: %s", err.msg);
    if (rc == FB_OK) {
        rc = arc_reader_verify_all(r, &err);
        CHECKF(rc == FB_OK, "verify: %s", err.msg);
        const arc_manifest *got = arc_reader_manifest(r);
        for (int t = 0; t < NT; t++) {
            tap_buf out = {0};
            rc = arc_reader_read_table(r, &got->tables[t], tap_collect, &out, &err);
            CHECKF(rc == FB_OK, "table %d: %s", t, err.msg);
            CHECKF(out.len == data[t].len && (out.len == 0 || memcmp(out.p, data[t].p, out.len) == 0),
                   "table %d: %zu bytes back, %zu written", t, out.len, data[t].len);
            free(out.p);
        }
    }
    arc_reader_free(r);
    stor_rfile_close(f);
    arc_manifest_clear(&m);
    for (int t = 0; t < NT; t++) free(data[t].p);
    if (tap_failed == 0) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0) printf("# could not remove %s\n", dir);
    }
    return tap_done();
}
