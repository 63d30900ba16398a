/* test_capture_tip: the chain's tip (cap_tip.h) and the window it extends (cap_apply_window), with no server.
 *
 * Proves: a tip round-trips through its encoding and its file; the parser takes exactly CAP_TIP_BYTES (every
 * shorter and a longer length refused, not read past), and refuses a flipped byte anywhere (signed fields and
 * signature: untrusted; magic, version, zero bytes: format), another stream's tip, a tip under another name
 * (renamed), one signed by a stranger, and a tip whose fields are not a range. In a folder: a tip counts only when
 * it starts at the chain's end (a stale one does not, one past the end says segments are missing), the largest
 * end wins among several, a forged file is reported and never counts, more than CAP_TIP_MAX_FILES are refused;
 * and the window of a real chain (one segment) ends at the tip's end and time when it counts, at the segment's
 * otherwise.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "artifact/arc_key.h"
#include "capture/cap_apply.h"
#include "capture/cap_segment.h"
#include "capture/cap_tip.h"
#include "storage/stor.h"
#include "tap.h"

#define STREAM "fusion/fusion_backup"

static fb_signer signer;
static fb_keyring trusted;

static void test_round_trip_and_every_byte(void) {
    fb_err err = {0};
    cap_tip t = {.from_lsn = 0x16B374D848ull, .to_lsn = 0x16B374E000ull, .mark_lsn = 0x16B374DF00ull,
                 .time_us = 1764660000123456};
    unsigned char buf[CAP_TIP_BYTES + 1], bad[CAP_TIP_BYTES + 1];
    char name[CAP_TIP_NAME_MAX];
    cap_tip_name(t.from_lsn, t.to_lsn, name);
    CHECK_EQ_STR(name, "tip-00000016B374D848-00000016B374E000.fbtip");
    CHECK_EQ_INT(cap_tip_encode(&t, STREAM, &signer, buf, &err), FB_OK);
    cap_tip got;
    CHECK_EQ_INT(cap_tip_parse(buf, CAP_TIP_BYTES, name, STREAM, &trusted, &got, &err), FB_OK);
    CHECK(got.from_lsn == t.from_lsn && got.to_lsn == t.to_lsn && got.mark_lsn == t.mark_lsn);
    CHECK_EQ_INT(got.time_us, t.time_us);
    CHECK_EQ_STR(got.signer, signer.key_id);

    /* Every length but CAP_TIP_BYTES: refused as a format error, nothing read past len. */
    for (size_t len = 0; len <= CAP_TIP_BYTES + 1; len++) {
        if (len == CAP_TIP_BYTES) continue;
        unsigned char *p = malloc(len ? len : 1);
        memcpy(p, buf, len < CAP_TIP_BYTES ? len : CAP_TIP_BYTES);
        if (len > CAP_TIP_BYTES) p[CAP_TIP_BYTES] = 0;
        fb_code rc = cap_tip_parse(p, len, name, STREAM, &trusted, &got, &err);
        CHECKF(rc == FB_ERR_FORMAT, "length %zu: %d", len, rc);
        free(p);
    }
    /* Every byte flipped: refused (never FB_OK), and a refused parse leaves no tip behind. */
    for (size_t i = 0; i < CAP_TIP_BYTES; i++) {
        memcpy(bad, buf, CAP_TIP_BYTES);
        bad[i] ^= 0x01;
        got.to_lsn = 1;
        fb_code rc = cap_tip_parse(bad, CAP_TIP_BYTES, name, STREAM, &trusted, &got, &err);
        CHECKF(rc != FB_OK && got.to_lsn == 0, "byte %zu flipped: %d", i, rc);
        if (i >= 16 && i < 48) /* from, to (the name catches these too), mark, time: the signature */
            CHECKF(rc == FB_ERR_UNTRUSTED || rc == FB_ERR_FORMAT, "byte %zu: %d (%s)", i, rc, err.msg);
        if (i >= 128) CHECKF(rc == FB_ERR_UNTRUSTED && strstr(err.msg, "signature"), "byte %zu: %s", i, err.msg);
    }
    /* Another stream, another name, a stranger's key. */
    CHECK_EQ_INT(cap_tip_parse(buf, CAP_TIP_BYTES, name, "fusion/other", &trusted, &got, &err), FB_ERR_VERIFY);
    char other[CAP_TIP_NAME_MAX];
    cap_tip_name(t.from_lsn, t.to_lsn + 1, other);
    CHECK_EQ_INT(cap_tip_parse(buf, CAP_TIP_BYTES, other, STREAM, &trusted, &got, &err), FB_ERR_FORMAT);
    CHECK(strstr(err.msg, "renamed"));
    CHECK_EQ_INT(cap_tip_parse(buf, CAP_TIP_BYTES, "cap-00000016B374D848-00000016B374E000.fbcap", STREAM, &trusted,
                               &got, &err), FB_ERR_FORMAT);
    fb_signer stranger;
    fb_keyring theirs = {0};
    tap_signer(&stranger, &theirs);
    CHECK_EQ_INT(cap_tip_parse(buf, CAP_TIP_BYTES, name, STREAM, &theirs, &got, &err), FB_ERR_UNTRUSTED);
    CHECK(strstr(err.msg, signer.key_id));
    /* What is not a range is neither written nor read. */
    cap_tip empty = {.from_lsn = 10, .to_lsn = 10}, mark_past = {.from_lsn = 10, .to_lsn = 20, .mark_lsn = 21};
    CHECK_EQ_INT(cap_tip_encode(&empty, STREAM, &signer, bad, &err), FB_ERR_INTERNAL);
    CHECK_EQ_INT(cap_tip_encode(&mark_past, STREAM, &signer, bad, &err), FB_ERR_INTERNAL);
    fb_keyring_free(&theirs);
    fb_signer_wipe(&stranger);
}

/* Name parsing: exact shape, upper-case hex only. */
static void test_names(void) {
    uint64_t a, b;
    CHECK_EQ_INT(cap_tip_parse_name("tip-0000000000000001-00000000000000FF.fbtip", &a, &b), 0);
    CHECK(a == 1 && b == 255);
    const char *bad[] = {"tip-0000000000000001-00000000000000ff.fbtip", "tip-0000000000000001-00000000000000FF.fbcap",
                         "tip-000000000000001-00000000000000FF.fbtip", "tip-0000000000000001_00000000000000FF.fbtip",
                         "tip-0000000000000001-00000000000000FF.fbtipx", "", "tip-"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) CHECKF(cap_tip_parse_name(bad[i], &a, &b) == -1, "%s", bad[i]);
}

static void put_tip(stor *st, uint64_t from, uint64_t to, int64_t us) {
    fb_err err = {0};
    char name[CAP_TIP_NAME_MAX];
    cap_tip t = {.from_lsn = from, .to_lsn = to, .mark_lsn = to, .time_us = us};
    CHECKF(cap_tip_write(st, "chain", STREAM, &signer, &t, name, &err) == FB_OK, "%s", err.msg);
}

static void test_find(const char *root) {
    fb_err err = {0};
    stor *st = NULL;
    char dir[600], path[700];
    CHECK_EQ_INT(stor_posix_new(root, &st, &err), FB_OK);
    cap_tip_found f;
    CHECK_EQ_INT(cap_tip_find(st, "chain", STREAM, &trusted, 100, &f, &err), FB_OK); /* no folder */
    CHECK(f.state == CAP_TIP_NONE && !f.problem[0]);
    snprintf(dir, sizeof dir, "%s/chain", root);
    mkdir(dir, 0700);
    put_tip(st, 100, 200, 5);
    put_tip(st, 100, 300, 7);  /* a crash between the write of the newer and the removal of the older */
    put_tip(st, 50, 90, 3);    /* stale: the chain has moved on since */
    CHECK_EQ_INT(cap_tip_find(st, "chain", STREAM, &trusted, 100, &f, &err), FB_OK);
    CHECK(f.state == CAP_TIP_VALID && f.tip.to_lsn == 300 && f.tip.time_us == 7 && !f.problem[0] && !f.ahead);
    CHECK_EQ_INT(f.n_names, 3);
    /* Chain end 300 (a segment written since): none of them counts. */
    CHECK_EQ_INT(cap_tip_find(st, "chain", STREAM, &trusted, 300, &f, &err), FB_OK);
    CHECK(f.state == CAP_TIP_NONE && !f.problem[0]);
    /* Chain end 60: tips from 100 say segments up to 100 existed. */
    CHECK_EQ_INT(cap_tip_find(st, "chain", STREAM, &trusted, 60, &f, &err), FB_OK);
    CHECK(f.state == CAP_TIP_NONE && f.ahead && strstr(f.problem, "missing"));
    /* A forged tip (valid-looking name, bytes of another tip's, one byte changed) is reported and never counts. */
    snprintf(path, sizeof path, "%s/tip-0000000000000064-0000000000000258.fbtip", dir);
    size_t len = 0;
    char good[700];
    snprintf(good, sizeof good, "%s/tip-0000000000000064-000000000000012C.fbtip", dir);
    unsigned char *bytes = tap_slurp(good, &len);
    bytes[24 + 7] = 0x58; /* to: 0x12C -> 0x158 ... */
    bytes[24 + 6] = 0x02; /* ... -> 0x258, the file's name */
    tap_spit(path, bytes, len);
    CHECK_EQ_INT(cap_tip_find(st, "chain", STREAM, &trusted, 100, &f, &err), FB_OK);
    CHECK(f.state == CAP_TIP_VALID && f.tip.to_lsn == 300 && strstr(f.problem, "refused"));
    CHECK_EQ_INT(f.n_names, 3); /* the forged one is not among those a writer may remove */
    unlink(path);
    free(bytes);
    /* Too many tip files: none is used. */
    for (uint64_t i = 0; i < CAP_TIP_MAX_FILES; i++) put_tip(st, 100, 400 + i, 9);
    CHECK_EQ_INT(cap_tip_find(st, "chain", STREAM, &trusted, 100, &f, &err), FB_OK);
    CHECK(f.state == CAP_TIP_NONE && strstr(f.problem, "tip files"));
    stor_free(st);
}

/* The window of a real one-segment chain, with and without a tip that counts. */
static void test_window(const char *root) {
    fb_err err = {0};
    stor *st = NULL;
    unsigned char pk[ARC_PK_BYTES], sk[ARC_SK_BYTES];
    crypto_box_keypair(pk, sk);
    CHECK_EQ_INT(stor_posix_new(root, &st, &err), FB_OK);
    cap_txn *t = cap_txn_new();
    t->xid = 7;
    t->commit_lsn = 1000;
    t->end_lsn = 1100;
    t->commit_time_us = 1764660000000000;
    cap_seg_out o = {.stream = STREAM, .pk = pk, .signer = &signer};
    char name[CAP_SEG_NAME_MAX];
    uint64_t end = 0;
    CHECKF(cap_segment_write(st, "win", &o, 900, &t, 1, name, &end, &err) == FB_OK, "%s", err.msg);
    cap_txn_free(t);
    cap_seg_in in = {.stream = STREAM, .signers = &trusted};
    cap_window w;
    CHECK_EQ_INT(cap_apply_window(st, "win", &in, 900, 1764659000000000, &w, &err), FB_OK);
    CHECK(!w.tip && w.end_lsn == 1100 && w.chain_end_lsn == 1100 && w.end_us == 1764660000000000);
    cap_tip tip = {.from_lsn = 1100, .to_lsn = 5000, .mark_lsn = 4900, .time_us = 1764660010000000};
    char tname[CAP_TIP_NAME_MAX];
    CHECK_EQ_INT(cap_tip_write(st, "win", STREAM, &signer, &tip, tname, &err), FB_OK);
    CHECK_EQ_INT(cap_apply_window(st, "win", &in, 900, 1764659000000000, &w, &err), FB_OK);
    CHECK(w.tip && w.end_lsn == 5000 && w.chain_end_lsn == 1100 && w.end_us == 1764660010000000);
    CHECK_EQ_INT(w.chain_end_us, 1764660000000000);
    cap_target after = {.by_time = 1, .time_us = 1764660010000001, .text = "T"};
    CHECK_EQ_INT(cap_apply_check_target(&w, &after, &err), FB_ERR_NOTFOUND);
    CHECK(strstr(err.msg, "signed tip"));
    cap_target inside = {.by_time = 1, .time_us = 1764660005000000, .text = "T"};
    CHECK_EQ_INT(cap_apply_check_target(&w, &inside, &err), FB_OK);
    /* The same tip re-signed by a key nobody trusts (it replaces the file): the window is the chain's again, and
     * a target past it says why the tip was not used. */
    fb_signer stranger;
    fb_keyring theirs = {0};
    tap_signer(&stranger, &theirs);
    CHECK_EQ_INT(cap_tip_write(st, "win", STREAM, &stranger, &tip, tname, &err), FB_OK);
    CHECK_EQ_INT(cap_apply_window(st, "win", &in, 900, 1764659000000000, &w, &err), FB_OK);
    CHECK(!w.tip && w.end_lsn == 1100 && strstr(w.tip_problem, "refused"));
    CHECK_EQ_INT(cap_apply_check_target(&w, &inside, &err), FB_ERR_NOTFOUND);
    CHECK(strstr(err.msg, "tip was not used"));
    fb_keyring_free(&theirs);
    fb_signer_wipe(&stranger);
    stor_free(st);
}

int main(void) {
    char root[64];
    snprintf(root, sizeof root, "/tmp/capture-tip-XXXXXX");
    CHECK(mkdtemp(root) != NULL);
    tap_signer(&signer, &trusted);
    test_round_trip_and_every_byte();
    test_names();
    test_find(root);
    test_window(root);
    fb_signer_wipe(&signer);
    fb_keyring_free(&trusted);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) printf("# could not remove %s\n", root);
    return tap_done();
}
