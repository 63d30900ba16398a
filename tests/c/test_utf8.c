/* test_utf8: cutting and repairing text for status events (issue 10: a FAILED whose error was cut inside a
 * character was refused by the encoder, so its job ran again forever).
 * Proves: fb_utf8_cut_len never ends inside a sequence of 2, 3 or 4 bytes, whatever the cut, and keeps complete
 * ones; it only looks before the cut; fb_err_set/fb_err_prefix cut long messages at a boundary; ev_text_repair
 * turns stray bytes into '?' and cuts at a boundary; ev_worker_name_problem refuses what status events cannot
 * carry; a FAILED built from a broken error text encodes. */
#include <stdlib.h>
#include <string.h>

#include "codec/ev_event.h"
#include "common/fb_err.h"
#include "common/fb_utf8.h"
#include "common/fb_uuid.h"
#include "tap.h"

static void test_cut_len(void) {
    const char *s = "a\xc3\xa9" "b\xe2\x82\xac" "c\xf0\x9f\x98\x80"; /* a é b € c 😀: 1+2+1+3+1+4 = 12 bytes */
    size_t len = strlen(s);
    /* The boundaries of s: after every complete character. */
    const size_t ok[] = {0, 1, 3, 4, 7, 8, 12};
    for (size_t max = 0; max <= len + 2; max++) {
        size_t want = 0;
        for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
            if (ok[i] <= max) want = ok[i];
        CHECKF(fb_utf8_cut_len(s, len, max) == want, "cut at %zu gave %zu, want %zu", max,
               fb_utf8_cut_len(s, len, max), want);
        CHECKF(ev_utf8_valid(s, fb_utf8_cut_len(s, len, max)), "cut at %zu is not valid UTF-8", max);
    }
    /* Only bytes before the cut are read: a buffer snprintf already cut mid-character is repaired. */
    char buf[8];
    snprintf(buf, sizeof buf, "%s", "abcde\xe2\x82\xac"); /* keeps "abcde\xe2\x82" */
    fb_utf8_cut(buf, strlen(buf), sizeof buf - 1);
    CHECK_EQ_STR(buf, "abcde");
    /* ASCII and a cut past the end change nothing. */
    CHECK_EQ_INT(fb_utf8_cut_len("hello", 5, 100), 5);
    CHECK_EQ_INT(fb_utf8_cut_len("hello", 5, 3), 3);
}

static void test_err_cuts_at_a_boundary(void) {
    fb_err err;
    char *big = malloc(3 * FB_ERR_MSG_MAX + 1);
    for (int i = 0; i < FB_ERR_MSG_MAX; i++) memcpy(big + 3 * i, "\xe2\x82\xac", 3); /* € x 2048 */
    big[3 * FB_ERR_MSG_MAX] = '\0';
    for (int shift = 0; shift < 3; shift++) {
        fb_err_set(&err, FB_ERR_NOTFOUND, "%.*s%s", shift, "xx", big);
        CHECKF(ev_utf8_valid(err.msg, strlen(err.msg)), "fb_err_set, shift %d: cut inside a character", shift);
        CHECK(strlen(err.msg) >= FB_ERR_MSG_MAX - 4);
        fb_err_set(&err, FB_ERR_NOTFOUND, "%s", big + 3 * 100);
        fb_err_prefix(&err, "%.*sjob x: ", shift, "yy");
        CHECKF(ev_utf8_valid(err.msg, strlen(err.msg)), "fb_err_prefix, shift %d: cut inside a character", shift);
    }
    free(big);
}

static void test_text_repair(void) {
    char a[] = "ok \xe2\x82 cut \xff then \xc3\xa9 and \xed\xa0\x80 end";
    ev_text_repair(a, 1000);
    CHECK_EQ_STR(a, "ok ?? cut ? then \xc3\xa9 and ??? end");
    char b[] = "\xe2\x82\xac\xe2\x82\xac";
    CHECK_EQ_INT(ev_text_repair(b, 4), 3); /* the second € does not fit whole */
    CHECK_EQ_STR(b, "\xe2\x82\xac");
    char c[] = "plain";
    CHECK_EQ_INT(ev_text_repair(c, 1000), 5);
    CHECK_EQ_STR(c, "plain");
}

static void test_worker_name(void) {
    CHECK(ev_worker_name_problem("worker-1:4242") == NULL);
    CHECK(ev_worker_name_problem("sauvegarde-\xc3\xa9t\xc3\xa9") == NULL);
    CHECK(ev_worker_name_problem("") != NULL);
    CHECK(ev_worker_name_problem("bad\nname") != NULL);
    CHECK(ev_worker_name_problem("tab\there") != NULL);
    CHECK(ev_worker_name_problem("bad \xff utf8") != NULL);
    char longname[300];
    memset(longname, 'w', 256);
    longname[256] = '\0';
    CHECK(ev_worker_name_problem(longname) != NULL);
    longname[255] = '\0';
    CHECK(ev_worker_name_problem(longname) == NULL);
}

/* The end of the story: a FAILED whose error was cut mid-character elsewhere encodes once repaired. */
static void test_failed_status_encodes_after_repair(void) {
    ev_event *st = ev_event_new(EV_JOB_STATUS);
    fb_uuid_random(st->job_id);
    st->attempt = 1;
    st->u.status.job_type = EV_JOB_BACKUP;
    st->u.status.status = EV_FAILED;
    st->u.status.worker = ev_strdup(st, "w");
    char text[64];
    snprintf(text, 9, "%s", "table \xe2\x82\xac\xe2\x82\xac"); /* keeps "table \xe2\x82" */
    st->u.status.error = text;
    unsigned char *buf = NULL;
    size_t len = 0;
    fb_err err;
    CHECK(ev_encode(st, &buf, &len, &err) == FB_ERR_INVALID); /* the bug: refused */
    ev_text_repair(text, 16384);
    CHECKF(ev_encode(st, &buf, &len, &err) == FB_OK, "repaired text still refused: %s", err.msg);
    free(buf);
    ev_event_free(st);
}

int main(void) {
    test_cut_len();
    test_err_cuts_at_a_boundary();
    test_text_repair();
    test_worker_name();
    test_failed_status_encodes_after_repair();
    return tap_done();
}
