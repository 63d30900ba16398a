/* test_artifact_format: the artifact format on its own (no database): what FORMAT.md promises.
 *
 * Proves: segments round-trip byte for byte (an empty one, a multi-message incompressible one, text) and can be
 * read alone in any order; the manifest round-trips; the writer's memory does not grow with the data; and that
 * swapped segments, a flipped header byte, a newer format version, a damaged trailer, appended bytes, a truncated
 * file and a wrong key are each refused with the right code and a message saying what is wrong.
 */
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "artifact/arc_clist.h"
#include "artifact/arc_format.h"
#include "artifact/arc_key.h"
#include "artifact/arc_reader.h"
#include "artifact/arc_writer.h"
#include "job/job_chunkmap.h"
#include "tap.h"

static char dir[256];

typedef tap_buf buf;

/* Format 5 artifacts are signed: the writer's key and the readers' trust in it (arc_sign.h; its own tests are in
 * test_artifact_sign.c). The file is test.fbak, its manifest another job: the name is not checked here. */
static fb_signer signer;
static fb_keyring trusted;
static arc_trust trust = {&trusted, 0, NULL};

/* Opens path and reads every table; returns the first error code. */
static fb_code open_and_verify(const char *path, const unsigned char *sk, const unsigned char *pk, fb_err *err) {
    stor_rfile *f = NULL;
    arc_reader *r = NULL;
    fb_code rc = stor_posix_open_path(path, &f, err);
    if (rc == FB_OK) rc = arc_reader_open(f, sk, pk, &trust, &r, err);
    if (rc == FB_OK) rc = arc_reader_verify_all(r, err);
    arc_reader_free(r);
    stor_rfile_close(f);
    return rc;
}

/* A record whose every field derives from i, so a wrong or reordered one is caught. */
/* Record i of a made-up list: runs of 50 in one src and segment, and in runs of 10 each chunk right after the one
 * before, so every combination of the compact record's flags occurs. */
static void rec_of(uint64_t i, arc_clist_rec *r) {
    memset(r, 0, sizeof *r);
    crypto_generichash(r->id, sizeof r->id, (const unsigned char *)&i, sizeof i, NULL, 0);
    r->src = (uint32_t)((i / 100) % 5);
    r->segment = (uint32_t)((i / 50) % 7) + 1;
    r->offset = (i / 10) * 10 * 40960;
    for (uint64_t j = (i / 10) * 10; j < i; j++) r->offset += 1000 + j % 3000;
    r->length = 1000 + i % 3000;
}

/* Compact records (index version 4): the round trip at the fields' limits, and every malformed or non-canonical
 * encoding refused (the decoder accepts exactly what the encoder writes). */
static void test_clist_compact_records(void) {
    arc_clist_rec prev = {.src = 3, .segment = 9, .offset = 1000, .length = 24}, r, got;
    unsigned char b[ARC_CLIST_COMPACT_MAX + 8];
    size_t n;
    memset(prev.id, 0xab, sizeof prev.id);
    /* A FULL's record: same src and segment, right after the previous one: 19 bytes (flags, id, a 2-byte length). */
    r = prev;
    r.offset = 1024;
    r.length = 4000;
    n = arc_clist_encode_compact(&r, &prev, b);
    CHECK_EQ_INT(n, 19);
    CHECK_EQ_INT(b[0], 3);
    CHECK(arc_clist_decode_compact(b, n, &prev, &got) == n && memcmp(&got, &r, sizeof r) == 0);
    CHECK_EQ_INT(arc_clist_decode_compact(b, n - 1, &prev, &got), 0); /* cut short */
    CHECK_EQ_INT(arc_clist_decode_compact(b, n, NULL, &got), 0);      /* flags on a range's first record */
    b[0] = 7;
    CHECK_EQ_INT(arc_clist_decode_compact(b, n, &prev, &got), 0);     /* an unknown flag bit */
    /* The largest record: every field written out at its maximum. */
    r.src = UINT32_MAX;
    r.segment = UINT32_MAX;
    r.offset = UINT64_MAX;
    r.length = UINT64_MAX;
    n = arc_clist_encode_compact(&r, NULL, b);
    CHECK_EQ_INT(n, ARC_CLIST_COMPACT_MAX);
    CHECK(arc_clist_decode_compact(b, n, NULL, &got) == n && memcmp(&got, &r, sizeof r) == 0);
    /* The smallest: a first record of src 0, segment 0, offset 0, length 1. */
    memset(&r, 0, sizeof r);
    r.length = 1;
    n = arc_clist_encode_compact(&r, NULL, b);
    CHECK_EQ_INT(n, ARC_CLIST_COMPACT_MIN + 3);
    CHECK(arc_clist_decode_compact(b, n, NULL, &got) == n && got.length == 1);
    b[n - 1] = 0; /* length 0 */
    CHECK_EQ_INT(arc_clist_decode_compact(b, n, NULL, &got), 0);
    /* Hand-made: flags 0, id, src 0, segment 0x80 0x00 (overlong 0), offset 0, length 1. */
    memset(b, 0, sizeof b);
    b[17] = 0;
    b[18] = 0x80;
    b[19] = 0x00;
    b[20] = 0;
    b[21] = 1;
    CHECK_EQ_INT(arc_clist_decode_compact(b, 22, NULL, &got), 0);
    b[18] = 0;
    b[19] = 0;
    b[20] = 1;
    CHECK_EQ_INT(arc_clist_decode_compact(b, 21, NULL, &got), 21); /* the canonical form of the same record */
    /* src above 32 bits: 0x80 0x80 0x80 0x80 0x10 is 2^32. */
    memcpy(b + 17, "\x80\x80\x80\x80\x10\x00\x00\x01", 8);
    CHECK_EQ_INT(arc_clist_decode_compact(b, 25, NULL, &got), 0);
    /* A 64-bit varint's tenth byte may only be 0 or 1 (2^64 and above overflow). */
    memcpy(b + 17, "\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02\x01", 13);
    CHECK_EQ_INT(arc_clist_decode_compact(b, 30, NULL, &got), 0);
    b[28] = 0x01;
    CHECK_EQ_INT(arc_clist_decode_compact(b, 30, NULL, &got), 30);
    CHECK(got.offset == UINT64_MAX);
    /* Non-canonical: src and segment written out although they equal the previous record's, or the offset although
     * it follows it. */
    r = prev;
    r.offset = 5;
    n = arc_clist_encode_compact(&r, &prev, b);
    CHECK_EQ_INT(b[0], 1);
    unsigned char nc[ARC_CLIST_COMPACT_MAX];
    nc[0] = 0;
    memcpy(nc + 1, b + 1, 16);
    nc[17] = 3;
    nc[18] = 9;
    memcpy(nc + 19, b + 17, n - 17);
    CHECK_EQ_INT(arc_clist_decode_compact(nc, n + 2, &prev, &got), 0);
    r.offset = prev.offset + prev.length;
    r.segment = 10;
    n = arc_clist_encode_compact(&r, &prev, b);
    CHECK_EQ_INT(b[0], 2);
    nc[0] = 0;
    memcpy(nc + 1, b + 1, n - 2);                       /* id, src, segment */
    nc[n - 1] = (unsigned char)(0x80 | (r.offset & 0x7f));
    nc[n] = (unsigned char)(r.offset >> 7);             /* the offset 1024 written out */
    nc[n + 1] = b[n - 1];                               /* length 24 */
    CHECK_EQ_INT(arc_clist_decode_compact(nc, n + 2, &prev, &got), 0);
    /* The offset flag where the previous record's end overflows. */
    arc_clist_rec far = prev;
    far.offset = UINT64_MAX - 5;
    far.length = 10;
    b[0] = 2;
    memset(b + 1, 0, 16);
    b[17] = 4;
    b[18] = 9;
    b[19] = 1;
    CHECK_EQ_INT(arc_clist_decode_compact(b, 20, &far, &got), 0);
}

/* Format 5's chunk records: spooled in table ranges, read back range by range with their BLAKE2b; a damaged record
 * fails its range. And the on-disk chunk map past several doublings: every id found with its own record, the
 * first place recorded wins, unknown ids are absent. */
static void test_clist_and_chunkmap(void) {
    fb_err err;
    arc_clist_spool sp;
    enum { n1 = 5000, n2 = 20000 };
    uint64_t first[2], count[2], bytes[2];
    unsigned char hash[2][ARC_CLIST_HASH_BYTES];
    CHECK_EQ_INT(arc_clist_spool_open(&sp, &err), FB_OK);
    arc_clist_spool_table(&sp);
    for (uint64_t i = 0; i < n1; i++) {
        arc_clist_rec r;
        rec_of(i, &r);
        arc_clist_spool_add(&sp, &r, &err);
    }
    arc_clist_spool_table_end(&sp, &first[0], &count[0], &bytes[0], hash[0]);
    for (uint64_t i = n1; i < n1 + n2; i++) {
        arc_clist_rec r;
        rec_of(i, &r);
        arc_clist_spool_add(&sp, &r, &err);
    }
    arc_clist_spool_table_end(&sp, &first[1], &count[1], &bytes[1], hash[1]);
    CHECK_EQ_INT(arc_clist_spool_flush(&sp, &err), FB_OK);
    CHECK_EQ_INT(first[0], 0);
    CHECK_EQ_INT(count[0], n1);
    CHECK_EQ_INT(first[1], bytes[0]);
    CHECK_EQ_INT(count[1], n2);
    CHECK_EQ_INT(sp.bytes, bytes[0] + bytes[1]);
    /* Compact: well under the fixed records' 40 bytes (rec_of's lists change place every 50 records). */
    CHECKF(sp.bytes < (uint64_t)(n1 + n2) * 24, "%llu bytes for %d records", (unsigned long long)sp.bytes, n1 + n2);
    /* The spooled bytes behind a 100-byte prefix, as they sit in an artifact after the index head. */
    size_t len = (size_t)sp.bytes;
    size_t at778 = 0; /* where table 2's 778th record starts in its range */
    for (uint64_t i = 0; i < 777; i++) {
        arc_clist_rec cur, pr;
        unsigned char tmp[ARC_CLIST_COMPACT_MAX];
        rec_of(n1 + i, &cur);
        if (i) rec_of(n1 + i - 1, &pr);
        at778 += arc_clist_encode_compact(&cur, i ? &pr : NULL, tmp);
    }
    unsigned char *all = malloc(100 + len);
    memset(all, 'h', 100);
    CHECK(pread(sp.fd, all + 100, len, 0) == (ssize_t)len);
    arc_clist_spool_close(&sp);
    char path[400];
    snprintf(path, sizeof path, "%s/records", dir);
    for (int damaged = 0; damaged < 2; damaged++) {
        if (damaged) all[100 + bytes[0] + at778 + 1 + 5] ^= 1; /* an id byte of table 2's 778th record */
        tap_spit(path, all, 100 + len);
        stor_rfile *f = NULL;
        CHECK_EQ_INT(stor_posix_open_path(path, &f, &err), FB_OK);
        for (int t = 0; t < 2; t++) {
            arc_clist_iter it;
            arc_clist_rec got, want;
            int more = 1, same = 1;
            uint64_t n = 0;
            arc_clist_range rg = {1, first[t], count[t], bytes[t], hash[t]};
            fb_code rc = arc_clist_iter_open(&it, f, 100, len, &rg, &err);
            while (rc == FB_OK && more) {
                rc = arc_clist_iter_next(&it, &got, &more, &err);
                if (rc || !more) break;
                rec_of((t ? n1 : 0) + n++, &want);
                if (memcmp(&got, &want, sizeof got) != 0) same = 0;
            }
            arc_clist_iter_close(&it);
            if (damaged && t == 1) {
                CHECKF(rc == FB_ERR_CRYPTO && strstr(err.msg, "does not match"), "damaged range: rc %d: %s", rc,
                       err.msg);
            } else {
                CHECKF(rc == FB_OK && same && n == count[t], "range %d: rc %d, %llu records, same %d", t, rc,
                       (unsigned long long)n, same);
            }
        }
        /* A range beyond the records, or whose bytes cannot hold its count, is refused before anything is read; one
         * that claims a record fewer than its bytes hold fails at its end. */
        arc_clist_iter it;
        arc_clist_range beyond = {1, first[1], count[1], bytes[1] + 1, hash[1]};
        arc_clist_range crowded = {1, first[0], bytes[0] / ARC_CLIST_COMPACT_MIN + 1, bytes[0], hash[0]};
        arc_clist_range sparse = {1, first[0], bytes[0] / ARC_CLIST_COMPACT_MAX - 1, bytes[0], hash[0]};
        arc_clist_range short1 = {1, first[0], count[0] - 1, bytes[0], hash[0]};
        CHECK_EQ_INT(arc_clist_iter_open(&it, f, 100, len, &beyond, &err), FB_ERR_FORMAT);
        arc_clist_iter_close(&it);
        CHECK_EQ_INT(arc_clist_iter_open(&it, f, 100, len, &crowded, &err), FB_ERR_FORMAT);
        arc_clist_iter_close(&it);
        CHECK_EQ_INT(arc_clist_iter_open(&it, f, 100, len, &sparse, &err), FB_ERR_FORMAT);
        arc_clist_iter_close(&it);
        CHECK_EQ_INT(arc_clist_iter_open(&it, f, 100, len, &short1, &err), FB_OK);
        {
            arc_clist_rec got;
            int more = 1;
            fb_code rc = FB_OK;
            while (rc == FB_OK && more) rc = arc_clist_iter_next(&it, &got, &more, &err);
            CHECKF(rc == FB_ERR_FORMAT && strstr(err.msg, "after the last"), "a record fewer: rc %d: %s", rc, err.msg);
        }
        arc_clist_iter_close(&it);
        stor_rfile_close(f);
    }
    free(all);

    /* Index version 3's fixed records (format 5 artifacts) read the same way, as a range of record numbers. */
    {
        enum { nf = 300 };
        unsigned char *fx = malloc(nf * ARC_CLIST_REC_BYTES), fh[ARC_CLIST_HASH_BYTES];
        for (uint64_t i = 0; i < nf; i++) {
            arc_clist_rec r;
            rec_of(i, &r);
            arc_clist_encode(&r, fx + i * ARC_CLIST_REC_BYTES);
        }
        crypto_generichash(fh, sizeof fh, fx + 100 * ARC_CLIST_REC_BYTES, 200 * ARC_CLIST_REC_BYTES, NULL, 0);
        tap_spit(path, fx, nf * ARC_CLIST_REC_BYTES);
        stor_rfile *f = NULL;
        arc_clist_iter it;
        arc_clist_rec got, want;
        int more = 1, same = 1;
        uint64_t n = 0;
        CHECK_EQ_INT(stor_posix_open_path(path, &f, &err), FB_OK);
        arc_clist_range rg = {0, 100, 200, 0, fh};
        fb_code rc = arc_clist_iter_open(&it, f, 0, nf * ARC_CLIST_REC_BYTES, &rg, &err);
        while (rc == FB_OK && more) {
            rc = arc_clist_iter_next(&it, &got, &more, &err);
            if (rc || !more) break;
            rec_of(100 + n++, &want);
            if (memcmp(&got, &want, sizeof got) != 0) same = 0;
        }
        arc_clist_iter_close(&it);
        CHECKF(rc == FB_OK && same && n == 200, "fixed records: rc %d, %llu records, same %d: %s", rc,
               (unsigned long long)n, same, rc ? err.msg : "");
        arc_clist_range past = {0, 101, 200, 0, fh};
        CHECK_EQ_INT(arc_clist_iter_open(&it, f, 0, nf * ARC_CLIST_REC_BYTES, &past, &err), FB_ERR_FORMAT);
        arc_clist_iter_close(&it);
        stor_rfile_close(f);
        free(fx);
    }

    job_chunkmap *m = NULL;
    CHECK_EQ_INT(job_chunkmap_new(10, &m, &err), FB_OK); /* far too small: it doubles several times */
    int put_ok = 1, found_all = 1, first_wins = 1, absent = 1;
    for (uint64_t i = 0; i < n2 && put_ok; i++) {
        arc_clist_rec r;
        rec_of(i, &r);
        put_ok = job_chunkmap_put(m, &r, &err) == FB_OK;
        r.offset += 1; /* the same id again, elsewhere: ignored */
        put_ok = put_ok && job_chunkmap_put(m, &r, &err) == FB_OK;
    }
    CHECKF(put_ok, "put: %s", err.msg);
    CHECK_EQ_INT(job_chunkmap_count(m), n2);
    for (uint64_t i = 0; i < n2; i++) {
        arc_clist_rec want, got;
        int found = 0;
        rec_of(i, &want);
        if (job_chunkmap_get(m, want.id, &got, &found, &err) != FB_OK || !found) found_all = 0;
        else if (got.offset != want.offset || memcmp(&got, &want, sizeof got) != 0) first_wins = 0;
        rec_of(i + n2, &want);
        if (job_chunkmap_get(m, want.id, &got, &found, &err) != FB_OK || found) absent = 0;
    }
    CHECK(found_all);
    CHECK(first_wins);
    CHECK(absent);
    job_chunkmap_free(m);
}

#define NSEG 4
#define RANDOM_BYTES (3u << 20)

int main(void) {
    fb_err err;
    unsigned char pk[ARC_PK_BYTES], sk[ARC_SK_BYTES], pk2[ARC_PK_BYTES], sk2[ARC_SK_BYTES];
    char path[400], bad[400], root[300];
    if (sodium_init() < 0) return 1;
    tap_signer(&signer, &trusted);
    crypto_box_keypair(pk, sk);
    crypto_box_keypair(pk2, sk2);
    snprintf(dir, sizeof dir, "/tmp/fbta_%d", (int)getpid());
    snprintf(root, sizeof root, "%s/root", dir);
    mkdir(dir, 0700);
    mkdir(root, 0700);
    test_clist_compact_records();
    test_clist_and_chunkmap();

    /* Segment contents: empty; 3 MiB random (incompressible: several messages); COPY-like text; 3 MiB random
     * again, of the same length as segment 2 so the two can be swapped in place. */
    buf seg[NSEG] = {{0}};
    seg[1].len = seg[3].len = RANDOM_BYTES;
    seg[1].p = malloc(RANDOM_BYTES);
    seg[3].p = malloc(RANDOM_BYTES);
    randombytes_buf(seg[1].p, RANDOM_BYTES);
    randombytes_buf(seg[3].p, RANDOM_BYTES);
    seg[2].p = malloc(10u << 20);
    for (int i = 0; i < 100000; i++)
        seg[2].len += (size_t)sprintf((char *)seg[2].p + seg[2].len, "%d\tname %d\t\\N\t{\"k\": %d}\n", i, i * 7, i % 13);

    stor *st = NULL;
    stor_wfile *wf = NULL;
    arc_writer *w = NULL;
    CHECK_EQ_INT(stor_posix_new(root, &st, &err), FB_OK);
    CHECK_EQ_INT(stor_create(st, "a/b/test.fbak", &wf, &err), FB_OK);
    CHECK_EQ_INT(arc_writer_new(wf, pk, 3, &w, &err), FB_OK);
    arc_manifest m = {0};
    m.format = 1;
    m.job_id = strdup("0b5cd0b8-6f2a-4a41-9d0c-8f1f0c5b3a11");
    CHECK_EQ_INT(arc_writer_set_signer(w, &signer, m.job_id, &err), FB_OK);
    m.tables = calloc(NSEG, sizeof *m.tables);
    m.n_tables = NSEG;
    for (int i = 0; i < NSEG; i++) {
        arc_table *t = &m.tables[i];
        arc_seg_info si;
        uint32_t id;
        char name[32];
        snprintf(name, sizeof name, "t%d", i);
        t->schema = strdup("public");
        t->name = strdup(name);
        CHECK_EQ_INT(arc_writer_begin(w, &id, &err), FB_OK);
        CHECK_EQ_INT(id, i + 1);
        /* in odd-sized pieces, to cross block boundaries */
        for (size_t off = 0; off < seg[i].len; off += 77777) {
            size_t n = seg[i].len - off < 77777 ? seg[i].len - off : 77777;
            CHECK_EQ_INT(arc_writer_write(w, seg[i].p + off, n, &err), FB_OK);
        }
        CHECK_EQ_INT(arc_writer_end(w, &si, &err), FB_OK);
        t->segment = si.segment;
        t->offset = si.offset;
        t->length = si.length;
        t->raw_bytes = si.raw_bytes;
        t->stored_bytes = (int64_t)si.length;
        memcpy(t->blake2b, si.blake2b, ARC_HASH_BYTES);
        CHECK_EQ_INT(si.raw_bytes, seg[i].len);
    }
    CHECK(m.tables[1].length == m.tables[3].length);
    CHECK(m.tables[2].length < seg[2].len / 3); /* text compresses */
    m.data_end = arc_writer_offset(w);
    char *mb = NULL;
    size_t ml = 0;
    CHECK_EQ_INT(arc_manifest_pack(&m, &mb, &ml, &err), FB_OK);
    CHECK_EQ_INT(arc_writer_finish(w, mb, ml, &err), FB_OK);
    arc_writer_free(w);
    CHECK_EQ_INT(stor_wfile_commit(wf, &err), FB_OK);
    stor_free(st);
    free(mb);
    snprintf(path, sizeof path, "%s/a/b/test.fbak", root);
    {
        char tmp[400];
        snprintf(tmp, sizeof tmp, "%s/a/b/.test.fbak.tmp", root);
        CHECK(access(tmp, F_OK) != 0); /* renamed, not copied */
    }

    /* --- read back: each table alone, in reverse order --- */
    stor_rfile *f = NULL;
    arc_reader *r = NULL;
    CHECK_EQ_INT(stor_posix_open_path(path, &f, &err), FB_OK);
    fb_code rc = arc_reader_open(f, sk, pk, &trust, &r, &err);
    CHECKF(rc == FB_OK, "open: %s", err.msg);
    if (rc == FB_OK) {
        const arc_manifest *got = arc_reader_manifest(r);
        CHECK_EQ_INT(got->n_tables, NSEG);
        CHECK_EQ_STR(got->job_id, m.job_id);
        for (int i = NSEG - 1; i >= 0; i--) {
            buf out = {0};
            CHECK_EQ_STR(got->tables[i].name, m.tables[i].name);
            rc = arc_reader_read_table(r, &got->tables[i], tap_collect, &out, &err);
            CHECKF(rc == FB_OK, "table %d: %s", i, err.msg);
            CHECKF(out.len == seg[i].len && (out.len == 0 || memcmp(out.p, seg[i].p, out.len) == 0),
                   "table %d: %zu bytes back, %zu written", i, out.len, seg[i].len);
            free(out.p);
        }
        CHECK_EQ_INT(arc_reader_verify_all(r, &err), FB_OK);
        arc_reader *d = NULL;
        CHECK_EQ_INT(arc_reader_dup(r, &d, &err), FB_OK);
        CHECK_EQ_INT(arc_reader_read_table(d, &got->tables[2], NULL, NULL, &err), FB_OK);
        arc_reader_free(d);
    }
    arc_reader_free(r);
    stor_rfile_close(f);

    size_t len = 0;
    unsigned char *good = tap_slurp(path, &len);
    unsigned char *copy = malloc(len + 100);
    snprintf(bad, sizeof bad, "%s/bad.fbak", dir);

    /* wrong key */
    rc = open_and_verify(path, sk2, pk2, &err);
    CHECKF(rc == FB_ERR_CRYPTO && strstr(err.msg, "wrong key"), "wrong key: %d %s", rc, err.msg);

    /* swapped segments (same length): each segment has its own key */
    memcpy(copy, good, len);
    memcpy(copy + m.tables[1].offset, good + m.tables[3].offset, m.tables[1].length);
    memcpy(copy + m.tables[3].offset, good + m.tables[1].offset, m.tables[1].length);
    tap_spit(bad, copy, len);
    rc = open_and_verify(bad, sk, pk, &err);
    CHECKF(rc == FB_ERR_CRYPTO, "swapped segments: %d %s", rc, err.msg);

    /* a flipped byte in the header's reserved flags, and a newer version */
    memcpy(copy, good, len);
    copy[13] ^= 1;
    tap_spit(bad, copy, len);
    rc = open_and_verify(bad, sk, pk, &err);
    CHECKF(rc == FB_ERR_FORMAT, "flags: %d %s", rc, err.msg);
    memcpy(copy, good, len);
    copy[8] = ARC_FORMAT_VERSION + 1;
    tap_spit(bad, copy, len);
    rc = open_and_verify(bad, sk, pk, &err);
    {
        char newer[32];
        snprintf(newer, sizeof newer, "version %d", ARC_FORMAT_VERSION + 1);
        CHECKF(rc == FB_ERR_FORMAT && strstr(err.msg, newer), "version: %d %s", rc, err.msg);
    }
    /* a flipped byte of the sealed key */
    memcpy(copy, good, len);
    copy[40] ^= 1;
    tap_spit(bad, copy, len);
    rc = open_and_verify(bad, sk, pk, &err);
    CHECKF(rc == FB_ERR_CRYPTO, "sealed key: %d %s", rc, err.msg);

    /* the trailer pointing elsewhere; appended bytes; truncation */
    memcpy(copy, good, len);
    arc_put_u64(copy + len - 16, m.tables[2].offset);
    arc_put_u64(copy + len - 8, len - ARC_TRAILER_BYTES - m.tables[2].offset);
    tap_spit(bad, copy, len);
    rc = open_and_verify(bad, sk, pk, &err);
    CHECKF(rc == FB_ERR_CRYPTO || rc == FB_ERR_FORMAT || rc == FB_ERR_UNTRUSTED, "trailer: %d %s", rc, err.msg);
    memcpy(copy, good, len);
    memcpy(copy + len, "garbage", 7);
    tap_spit(bad, copy, len + 7);
    rc = open_and_verify(bad, sk, pk, &err);
    CHECKF(rc == FB_ERR_FORMAT && strstr(err.msg, "trailer"), "appended: %d %s", rc, err.msg);
    tap_spit(bad, good, len - 1);
    rc = open_and_verify(bad, sk, pk, &err);
    CHECKF(rc == FB_ERR_FORMAT && strstr(err.msg, "truncated"), "truncated: %d %s", rc, err.msg);
    tap_spit(bad, good, 10);
    rc = open_and_verify(bad, sk, pk, &err);
    CHECKF(rc == FB_ERR_FORMAT && strstr(err.msg, "not a fusion-backup artifact"), "tiny: %d %s", rc, err.msg);

    /* a flipped byte inside the text segment: only that table fails, the others still read */
    memcpy(copy, good, len);
    copy[m.tables[2].offset + m.tables[2].length / 2] ^= 0x40;
    tap_spit(bad, copy, len);
    CHECK_EQ_INT(stor_posix_open_path(bad, &f, &err), FB_OK);
    CHECK_EQ_INT(arc_reader_open(f, sk, pk, &trust, &r, &err), FB_OK);
    if (r) {
        const arc_manifest *got = arc_reader_manifest(r);
        rc = arc_reader_read_table(r, &got->tables[2], NULL, NULL, &err);
        CHECKF(rc == FB_ERR_CRYPTO && strstr(err.msg, "t2"), "flipped text: %d %s", rc, err.msg);
        CHECK_EQ_INT(arc_reader_read_table(r, &got->tables[1], NULL, NULL, &err), FB_OK);
        arc_reader_free(r);
    }
    stor_rfile_close(f);

    /* storage confinement */
    CHECK_EQ_INT(stor_posix_new(root, &st, &err), FB_OK);
    CHECK_EQ_INT(stor_create(st, "../x.fbak", &wf, &err), FB_ERR_INVALID);
    CHECK_EQ_INT(stor_create(st, "/tmp/x.fbak", &wf, &err), FB_ERR_INVALID);
    CHECK_EQ_INT(stor_create(st, "a//x.fbak", &wf, &err), FB_ERR_INVALID);
    CHECK_EQ_INT(stor_create(st, "a/./x.fbak", &wf, &err), FB_ERR_INVALID);
    {
        char link[400];
        snprintf(link, sizeof link, "%s/a/b/link.fbak", root);
        CHECK(symlink("/etc/passwd", link) == 0);
        stor_rfile *lf = NULL;
        CHECK_EQ_INT(stor_open(st, "a/b/link.fbak", &lf, &err), FB_ERR_INVALID); /* O_NOFOLLOW on the file too */
        stor_rfile_close(lf);
        snprintf(link, sizeof link, "%s/a/b/.out.fbak.tmp", root);
        CHECK(symlink("/tmp/fbta_should_not_exist", link) == 0);
        CHECK_EQ_INT(stor_create(st, "a/b/out.fbak", &wf, &err), FB_ERR_INVALID); /* a planted temp link */
        CHECK(access("/tmp/fbta_should_not_exist", F_OK) != 0);
    }
    /* two writers of the same artifact at once: the second is refused and must not disturb the first */
    {
        stor_wfile *w1 = NULL, *w2 = NULL;
        CHECK_EQ_INT(stor_create(st, "a/b/twice.fbak", &w1, &err), FB_OK);
        CHECK_EQ_INT(stor_wfile_write(w1, "first", 5, &err), FB_OK);
        fb_code rc2 = stor_create(st, "a/b/twice.fbak", &w2, &err);
        CHECKF(rc2 == FB_ERR_TRANSIENT && strstr(err.msg, "another run"), "second writer: %d %s", rc2, err.msg);
        CHECK_EQ_INT(stor_wfile_commit(w1, &err), FB_OK);
        char p2[400];
        size_t l2 = 0;
        snprintf(p2, sizeof p2, "%s/a/b/twice.fbak", root);
        unsigned char *d2 = tap_slurp(p2, &l2);
        CHECK(l2 == 5 && memcmp(d2, "first", 5) == 0);
        free(d2);
        /* afterwards (the lock died with the first writer's file) a new run may write again */
        CHECK_EQ_INT(stor_create(st, "a/b/twice.fbak", &w2, &err), FB_OK);
        stor_wfile_abort(w2);
    }
    stor_free(st);

    arc_manifest_clear(&m);
    for (int i = 0; i < NSEG; i++) free(seg[i].p);
    free(good);
    free(copy);
    sodium_memzero(sk, sizeof sk);
    if (tap_failed == 0) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0) printf("# could not remove %s\n", dir);
    }
    return tap_done();
}
