/* test_json: the one JSON string escaper (common/fb_json.h) that logs, --json output, events and manifests share.
 * Exact escapes for every byte class (the rule the header states: \" \\ \n \r \t, \u00XX below 0x20, the rest as
 * it is), the FILE and buffer forms agreeing byte for byte, the buffer form never writing past cap (ASan watches),
 * the one clock and its two UTC forms that log lines and listings print, and an event's JSON table form. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/ev_json.h"
#include "common/fb_json.h"
#include "common/fb_time.h"
#include "tap.h"

/* fb_json_put into a string (open_memstream). */
static char *put(const char *s, size_t n) {
    char *p = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&p, &len);
    fb_json_put(f, s, n);
    fclose(f);
    return p;
}

static void exact_escapes(void) {
    static const struct { const char *in, *out; } cases[] = {
        {"plain", "\"plain\""},
        {"a\"b", "\"a\\\"b\""},
        {"back\\slash", "\"back\\\\slash\""},
        {"line\nbreak", "\"line\\nbreak\""},
        {"cr\rlf\n", "\"cr\\rlf\\n\""},
        {"tab\there", "\"tab\\there\""},
        {"\x01\x1f", "\"\\u0001\\u001f\""},
        {"\x7f", "\"\x7f\""},
        {"üñí", "\"üñí\""},
        {"", "\"\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = put(cases[i].in, strlen(cases[i].in));
        CHECK_EQ_STR(got, cases[i].out);
        /* the buffer form is the inside of the same literal */
        char buf[64];
        size_t n = fb_json_escape(buf, sizeof buf, 0, cases[i].in);
        buf[n] = '\0';
        size_t ol = strlen(cases[i].out);
        CHECKF(n == ol - 2 && memcmp(buf, cases[i].out + 1, n) == 0, "buffer form of case %zu: \"%s\"", i, buf);
        free(got);
    }
    char *nul = put("a\0b", 3);
    CHECK_EQ_STR(nul, "\"a\\u0000b\"");
    free(nul);
}

static void null_is_null(void) {
    char *p = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&p, &len);
    fb_json_string(f, NULL);
    fclose(f);
    CHECK_EQ_STR(p, "null");
    free(p);
}

/* A buffer one byte short of an escape stops before it: no half escape, no overflow. */
static void bounded(void) {
    char *small = malloc(5);
    size_t n = fb_json_escape(small, 5, 0, "ab\ncd");
    CHECK_EQ_INT(n, 4); /* "ab\n" is 4 bytes and one spare */
    CHECK(memcmp(small, "ab\\n", 4) == 0);
    n = fb_json_escape(small, 5, 0, "abc\n");
    CHECK_EQ_INT(n, 3); /* the escape would leave no spare byte: stopped before it */
    n = fb_json_escape(small, 5, 2, "\x01");
    CHECK_EQ_INT(n, 2); /* \u0001 does not fit after 2 bytes */
    free(small);
}

/* The log's time stamp is fb_time_format_iso of the one clock: milliseconds and Z. */
static void stamps(void) {
    char s[40];
    CHECK_EQ_STR(fb_time_format_iso(1795756200250LL, s, sizeof s), "2026-11-27T05:10:00.250Z");
    CHECK_EQ_STR(fb_time_format_utc(1795756200250LL, s, sizeof s), "2026-11-27T05:10:00Z");
    int64_t ms = fb_now_ms(), us = fb_now_us();
    CHECKF(us / 1000 - ms >= 0 && us / 1000 - ms < 1000, "ms %lld and us %lld of one clock", (long long)ms, (long long)us);
}

/* An event's JSON walks the encoder's field table: a table in another schema shows as [schema, name] as it goes on
 * the wire, even when the event was built in code (the hand-written writer printed the bare name). */
static void event_table_form(void) {
    ev_event *ev = ev_event_new(EV_ARCHIVE_DUE);
    ev->u.archive.table.schema = "hr";
    ev->u.archive.table.name = "t";
    char *p = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&p, &len);
    ev_json_write(f, ev);
    fclose(f);
    CHECKF(strstr(p, "\"table\":[\"hr\",\"t\"]") != NULL, "%s", p);
    static const char head[] = "{\"v\":1,\"type\":\"archive.due\",";
    CHECKF(strncmp(p, head, sizeof head - 1) == 0, "%s", p);
    free(p);
    ev_event_free(ev);
}

int main(void) {
    event_table_form();
    exact_escapes();
    null_is_null();
    bounded();
    stamps();
    return tap_done();
}
