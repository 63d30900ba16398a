/* test_capture_incr: the pack of a backup of captured changes (capture/cap_incr.h), without a server. Change
 * segments written by cap_segment_write are packed by cap_incr_pack (which walks the chain: a gap or another
 * stream's segment fails it), carried as the one data segment of a signed artifact, and unpacked by
 * cap_incr_unpack, which must refuse any pack that does not cover its manifest's range exactly: a pack that starts
 * elsewhere, skips a segment, runs past the range or stops short of it, holds another count of segments, has a bad
 * magic or an entry that is not a segment's name. Each case is a validly signed artifact (the test holds the
 * signing key), so the pack checks themselves are what refuses it. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "artifact/arc_index.h"
#include "artifact/arc_reader.h"
#include "artifact/arc_writer.h"
#include "capture/cap_incr.h"
#include "tap.h"

#define JOB "77777777-7777-4777-8777-777777777777"
#define STREAM "db/s"

static unsigned char pk[ARC_PK_BYTES], sk[ARC_SK_BYTES];
static fb_signer signer;
static fb_keyring trusted;
static stor *st;

typedef struct membuf {
    unsigned char *p;
    size_t n, cap;
} membuf;

static fb_code mb_put(void *o, const void *b, size_t n, fb_err *err) {
    (void)err;
    membuf *m = o;
    if (m->n + n > m->cap) {
        m->cap = (m->n + n) * 2;
        m->p = realloc(m->p, m->cap);
    }
    memcpy(m->p + m->n, b, n);
    m->n += n;
    return FB_OK;
}

/* One segment [start, end) in dir holding one transaction committing just before end. */
static void write_segment(const char *dir, uint64_t start, uint64_t end, char *name) {
    cap_txn *t = cap_txn_new();
    t->xid = (uint32_t)start;
    t->commit_lsn = end - 8;
    t->end_lsn = end;
    t->commit_time_us = 1795756200000000LL + (int64_t)end;
    cap_seg_out o = {.stream = STREAM, .pk = pk, .signer = &signer, .zstd_level = 3};
    uint64_t e = 0;
    fb_err err;
    CHECKF(cap_segment_write(st, dir, &o, start, &t, 1, name, &e, &err) == FB_OK && e == end, "write: %s", err.msg);
    cap_txn_free(t);
}

/* A pack entry by hand: name (48 bytes) | u64 big-endian length | bytes. */
static void frame(membuf *m, const char *name, const unsigned char *bytes, size_t len) {
    unsigned char head[CAP_SEG_NAME_MAX + 8] = {0};
    memcpy(head, name, strlen(name));
    for (int i = 0; i < 8; i++) head[CAP_SEG_NAME_MAX + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    mb_put(m, head, sizeof head, NULL);
    mb_put(m, bytes, len, NULL);
}

static unsigned char *file_bytes(const char *dir, const char *name, size_t *len) {
    char rel[256];
    stor_rfile *f = NULL;
    fb_err err;
    snprintf(rel, sizeof rel, "%s/%s", dir, name);
    if (stor_open(st, rel, &f, &err) != FB_OK) return NULL;
    unsigned char *b = malloc(f->size);
    *len = f->size;
    stor_rfile_pread(f, b, f->size, 0, &err);
    stor_rfile_close(f);
    return b;
}

/* Writes a signed artifact JOB.fbak whose data segment is pack and whose capture_changes says [start, end) and
 * nseg, then unpacks it into a fresh folder; returns the unpack's code, its message in msg. */
static fb_code unpack_case(const membuf *pack, uint64_t start, uint64_t end, int64_t nseg, char *msg, size_t cap) {
    static int k;
    char rel[64], out[64];
    snprintf(rel, sizeof rel, "a%d/" JOB ".fbak", k);
    snprintf(out, sizeof out, "out%d", k++);
    fb_err err = {0};
    stor_wfile *wf = NULL;
    arc_writer *w = NULL;
    uint32_t seg = 0;
    arc_seg_info si;
    arc_index ix = {.job_id = JOB, .type = "INCREMENTAL", .base_job = "f",
                    .version = arc_index_version_of(ARC_FORMAT_VERSION)};
    char *ibuf = NULL, *mbuf = NULL;
    size_t ilen = 0, mlen = 0;
    unsigned char ikey[ARC_INDEX_KEY_BYTES] = {1};
    arc_manifest m = {.format = ARC_FORMAT_VERSION};
    fb_code rc = stor_create(st, rel, &wf, &err);
    if (!rc) rc = arc_writer_new_version(wf, pk, 3, ARC_FORMAT_VERSION, &w, &err);
    if (!rc) rc = arc_writer_set_signer(w, &signer, JOB, &err);
    if (!rc) rc = arc_writer_begin(w, &seg, &err);
    if (!rc) rc = arc_writer_write(w, pack->p, pack->n, &err);
    if (!rc) rc = arc_writer_end(w, &si, &err);
    m.job_id = strdup(JOB), m.backup_type = strdup("INCREMENTAL"), m.base_job = strdup("f");
    m.data_end = arc_writer_offset(w);
    m.changes = calloc(1, sizeof *m.changes);
    *m.changes = (arc_capture_changes){.segment = si.segment, .offset = si.offset, .length = si.length,
                                       .raw_bytes = si.raw_bytes, .stream = strdup(STREAM), .slot = strdup("s"),
                                       .full_job = strdup("f"), .start_lsn = start, .end_lsn = end, .segments = nseg};
    memcpy(m.changes->blake2b, si.blake2b, sizeof si.blake2b);
    if (!rc) rc = arc_index_format(&ix, ikey, &ibuf, &ilen, &err);
    if (!rc) {
        crypto_generichash(m.index_blake2b, 32, (const unsigned char *)ibuf, ilen, NULL, 0);
        m.has_index_hash = 1;
        rc = arc_manifest_pack(&m, &mbuf, &mlen, &err);
    }
    if (!rc) rc = arc_writer_set_index(w, ibuf, ilen, &err);
    if (!rc) rc = arc_writer_finish(w, mbuf, mlen, &err);
    arc_writer_free(w);
    if (!rc) rc = stor_wfile_commit(wf, &err);
    else stor_wfile_abort(wf);
    CHECKF(rc == FB_OK, "building the artifact: %s", err.msg);
    stor_rfile *f = NULL;
    arc_reader *r = NULL;
    arc_trust trust = {.signers = &trusted, .job_id = JOB};
    if (!rc) rc = stor_open(st, rel, &f, &err);
    if (!rc) rc = arc_reader_open(f, sk, pk, &trust, &r, &err);
    CHECKF(rc == FB_OK, "opening the artifact: %s", err.msg);
    if (!rc) rc = cap_incr_unpack(r, st, out, &err);
    snprintf(msg, cap, "%s", rc ? err.msg : "");
    arc_reader_free(r);
    stor_rfile_close(f);
    free(ibuf);
    free(mbuf);
    arc_manifest_clear(&m);
    return rc;
}

static void expect_refused(const char *what, const membuf *pack, uint64_t start, uint64_t end, int64_t nseg,
                           fb_code code, const char *want) {
    char msg[1024];
    fb_code rc = unpack_case(pack, start, end, nseg, msg, sizeof msg);
    CHECKF(rc == code && strstr(msg, want), "%s: got %d \"%s\", wanted %d \"%s\"", what, (int)rc, msg, (int)code, want);
}

int main(void) {
    if (sodium_init() < 0) return 1;
    crypto_box_keypair(pk, sk);
    tap_signer(&signer, &trusted);
    char root[64] = "/tmp/capture-incr-XXXXXX";
    fb_err err;
    CHECK(mkdtemp(root) != NULL && stor_posix_new(root, &st, &err) == FB_OK);
    char a[CAP_SEG_NAME_MAX], b[CAP_SEG_NAME_MAX], c[CAP_SEG_NAME_MAX];
    write_segment("chain", 0x1000, 0x2000, a);
    write_segment("chain", 0x2000, 0x3000, b);
    write_segment("other", 0x3000, 0x4000, c); /* its bytes appear in this chain's place below */

    /* The pack: both segments, verified on the way; another stream or a gap fails it. */
    cap_seg_in in = {.stream = STREAM, .signers = &trusted};
    membuf good = {0};
    cap_incr_stats s;
    CHECK(cap_incr_pack(st, "chain", &in, 0x1000, mb_put, &good, &s, &err) == FB_OK);
    CHECK(s.segments == 2 && s.transactions == 2 && s.end_lsn == 0x3000 && s.last_commit_us == 1795756200000000LL + 0x3000);
    membuf tmp = {0};
    cap_seg_in foreign = {.stream = "db/other", .signers = &trusted};
    CHECK(cap_incr_pack(st, "chain", &foreign, 0x1000, mb_put, &tmp, &s, &err) == FB_ERR_VERIFY &&
          strstr(err.msg, "belongs to capture stream"));
    tmp.n = 0;
    CHECK(cap_incr_pack(st, "chain", &in, 0x800, mb_put, &tmp, &s, &err) == FB_ERR_VERIFY && strstr(err.msg, "a gap"));

    /* The pack unpacked: exactly its segments, the chain there whole. */
    char msg[1024];
    CHECKF(unpack_case(&good, 0x1000, 0x3000, 2, msg, sizeof msg) == FB_OK, "good pack: %s", msg);
    uint64_t end = 0;
    CHECK(cap_segment_chain(st, "out0", &in, 0x1000, NULL, NULL, &end, &err) == FB_OK && end == 0x3000);

    /* The manifest's range or count other than the pack's. */
    expect_refused("range starts later", &good, 0x1800, 0x3000, 2, FB_ERR_VERIFY, "does not continue the chain");
    expect_refused("range ends inside the last segment", &good, 0x1000, 0x2800, 2, FB_ERR_VERIFY,
                   "does not continue the chain");
    expect_refused("range ends after the pack", &good, 0x1000, 0x4000, 2, FB_ERR_VERIFY, "the pack ends at");
    expect_refused("another count", &good, 0x1000, 0x3000, 3, FB_ERR_VERIFY, "the pack ends at");

    /* Packs made by hand: a gap, a renamed foreign segment (unpacked, then refused by the chain walk), a bad magic,
     * an entry that is not a segment's name. */
    size_t la, lc;
    unsigned char *ba = file_bytes("chain", a, &la), *bc = file_bytes("other", c, &lc);
    membuf gap = {0};
    mb_put(&gap, CAP_INCR_PACK_MAGIC, 8, NULL);
    frame(&gap, a, ba, la);
    frame(&gap, c, bc, lc); /* 0x3000.. after 0x2000: segment b is missing */
    expect_refused("a gap", &gap, 0x1000, 0x4000, 2, FB_ERR_VERIFY, "does not continue the chain");
    membuf renamed = {0};
    mb_put(&renamed, CAP_INCR_PACK_MAGIC, 8, NULL);
    frame(&renamed, a, ba, la);
    frame(&renamed, b, bc, lc); /* another stream's bytes under b's name */
    CHECKF(unpack_case(&renamed, 0x1000, 0x3000, 2, msg, sizeof msg) == FB_OK, "renamed: %s", msg);
    CHECK(cap_segment_chain(st, "out6", &in, 0x1000, NULL, NULL, &end, &err) != FB_OK);
    membuf magic = {0};
    mb_put(&magic, "FBCAPPK2", 8, NULL);
    frame(&magic, a, ba, la);
    expect_refused("bad magic", &magic, 0x1000, 0x2000, 1, FB_ERR_FORMAT, "bad magic");
    membuf notname = {0};
    mb_put(&notname, CAP_INCR_PACK_MAGIC, 8, NULL);
    frame(&notname, "../../etc/x", ba, la);
    expect_refused("not a segment's name", &notname, 0x1000, 0x2000, 1, FB_ERR_FORMAT, "not a change segment's name");

    free(ba), free(bc), free(good.p), free(tmp.p), free(gap.p), free(renamed.p), free(magic.p), free(notname.p);
    stor_free(st);
    fb_keyring_free(&trusted);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) return 1;
    return tap_done();
}
