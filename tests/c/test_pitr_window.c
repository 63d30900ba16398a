/* test_pitr_window: the pieces of restore --until that need no server — the capture base in the manifest (packed,
 * unpacked, a malformed one refused), the recoverable window's bounds for LSN and time targets (inclusive at both
 * ends, refused one step outside, the message saying the window), and the names a chain is found under (no way
 * out of the storage folder through a forged stream name). */
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "artifact/arc_manifest.h"
#include "capture/cap_apply.h"
#include "capture/cap_base.h"
#include "common/fb_config.h"
#include "tap.h"

static void test_manifest_round_trip(void) {
    fb_err err = {0};
    arc_manifest m = {0};
    arc_capture_base cb = {.slot = "fusion_backup", .stream = "fusion/fusion_backup", .lsn = 0x16B374D848ull,
                           .time_us = 1764600000123456};
    m.format = 5;
    m.tool = "t";
    m.job_id = "j";
    m.capture = &cb;
    char *buf = NULL;
    size_t len = 0;
    CHECK_EQ_INT(arc_manifest_pack(&m, &buf, &len, &err), FB_OK);
    arc_manifest *got = NULL;
    CHECK_EQ_INT(arc_manifest_unpack(buf, len, &got, &err), FB_OK);
    CHECK(got && got->capture);
    if (got && got->capture) {
        CHECK_EQ_STR(got->capture->slot, "fusion_backup");
        CHECK_EQ_STR(got->capture->stream, "fusion/fusion_backup");
        CHECK(got->capture->lsn == 0x16B374D848ull);
        CHECK_EQ_INT(got->capture->time_us, 1764600000123456);
    }
    arc_manifest_free(got);
    free(buf);
    /* A manifest without the field has no base (every older backup). */
    m.capture = NULL;
    CHECK_EQ_INT(arc_manifest_pack(&m, &buf, &len, &err), FB_OK);
    CHECK_EQ_INT(arc_manifest_unpack(buf, len, &got, &err), FB_OK);
    CHECK(got && !got->capture);
    arc_manifest_free(got);
    free(buf);

    /* A capture_base without its LSN is malformed, not a base at LSN 0. */
    msgpack_sbuffer sb;
    msgpack_packer p;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&p, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&p, 1);
    msgpack_pack_str_with_body(&p, "capture_base", 12);
    msgpack_pack_map(&p, 2);
    msgpack_pack_str_with_body(&p, "slot", 4);
    msgpack_pack_str_with_body(&p, "s", 1);
    msgpack_pack_str_with_body(&p, "stream", 6);
    msgpack_pack_str_with_body(&p, "d/s", 3);
    got = NULL;
    CHECK_EQ_INT(arc_manifest_unpack(sb.data, sb.size, &got, &err), FB_ERR_FORMAT);
    CHECK(got == NULL);
    msgpack_sbuffer_destroy(&sb);
}

static void test_window_bounds(void) {
    fb_err err = {0};
    cap_window w = {.base_lsn = 100, .end_lsn = 200, .base_us = 1000000, .end_us = 2000000};
    struct { int by_time; uint64_t lsn; int64_t us; fb_code want; const char *side; } cases[] = {
        {0, 99, 0, FB_ERR_NOTFOUND, "before"}, {0, 100, 0, FB_OK, NULL}, {0, 200, 0, FB_OK, NULL},
        {0, 201, 0, FB_ERR_NOTFOUND, "after"}, {1, 0, 999999, FB_ERR_NOTFOUND, "before"}, {1, 0, 1000000, FB_OK, NULL},
        {1, 0, 2000000, FB_OK, NULL}, {1, 0, 2000001, FB_ERR_NOTFOUND, "after"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cap_target t = {.by_time = cases[i].by_time, .lsn = cases[i].lsn, .time_us = cases[i].us, .text = "T"};
        fb_code rc = cap_apply_check_target(&w, &t, &err);
        CHECKF(rc == cases[i].want, "case %zu: %d, expected %d (%s)", i, rc, cases[i].want, rc ? err.msg : "ok");
        if (cases[i].side && rc) {
            CHECKF(strstr(err.msg, cases[i].side) && strstr(err.msg, "recoverable window") &&
                   strstr(err.msg, "0/64") && strstr(err.msg, "0/C8"), "case %zu message: %s", i, err.msg);
        }
    }
}

static void test_names(void) {
    fb_err err = {0};
    char stream[CAP_SEG_STREAM_MAX + 1], dir[CAP_BASE_DIR_MAX];
    CHECK_EQ_INT(cap_base_names("dbname=fusion host=x", "slot1", "daily", stream, dir, &err), FB_OK);
    CHECK_EQ_STR(stream, "fusion/slot1");
    CHECK_EQ_STR(dir, "daily/capture/fusion/slot1");
    CHECK_EQ_INT(cap_base_names("dbname=a/b", "s", "p", stream, dir, &err), FB_ERR_USAGE);
    CHECK_EQ_INT(cap_base_names("dbname=..", "s", "p", stream, dir, &err), FB_ERR_USAGE);
    /* A stream name from a manifest never leads out of the artifact's folder. */
    fb_config cfg;
    memset(&cfg, 0, sizeof cfg);
    stor *st = NULL;
    const char *bad[] = {"../x", "a/../../b", "/etc", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECKF(cap_base_chain_open(&cfg, "/tmp/p/j.fbak", bad[i], &st, dir, &err) == FB_ERR_FORMAT && !st,
               "stream \"%s\" refused", bad[i]);
        stor_free(st);
        st = NULL;
    }
}

int main(void) {
    test_manifest_round_trip();
    test_window_bounds();
    test_names();
    return tap_done();
}
