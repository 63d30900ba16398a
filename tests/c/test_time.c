/* test_time: fb_time_parse, the one parser of the times operators type: zones honoured (never dropped), a time
 * without a zone refused, impossible dates refused, durations and raw milliseconds. */
#include <string.h>

#include "common/fb_time.h"
#include "tap.h"

#define NOW 1764547200000LL /* 2025-12-01T00:00:00Z */

static long long parse_ok(const char *s) {
    int64_t v = -1;
    fb_err err;
    fb_code rc = fb_time_parse(s, NOW, &v, &err);
    CHECKF(rc == FB_OK, "\"%s\": %s", s, rc ? err.msg : "");
    return (long long)v;
}

static void refused(const char *s, const char *fragment) {
    int64_t v = 0;
    fb_err err;
    fb_code rc = fb_time_parse(s, NOW, &v, &err);
    CHECKF(rc == FB_ERR_USAGE && strstr(err.msg, fragment), "\"%s\" gave %d: %s (wanted \"%s\")", s, (int)rc,
           rc ? err.msg : "", fragment);
}

int main(void) {
    const long long t = 1795756200000LL; /* 2026-11-27T05:10:00Z */
    CHECK_EQ_INT(parse_ok("2026-11-27T05:10:00Z"), t);
    CHECK_EQ_INT(parse_ok("2026-11-27 05:10:00z"), t);
    CHECK_EQ_INT(parse_ok("2026-11-27T05:10Z"), t);
    /* Fusion's operators are in India: the offset moves the instant by 5 h 30 min, it is never dropped. */
    CHECK_EQ_INT(parse_ok("2026-11-27T10:40:00+05:30"), t);
    CHECK_EQ_INT(parse_ok("2026-11-27 10:40:00+0530"), t);
    CHECK_EQ_INT(parse_ok("2026-11-27T00:10:00-05"), t);
    CHECK_EQ_INT(parse_ok("2026-11-27T05:10:00.250Z"), t + 250);
    CHECK_EQ_INT(parse_ok("2026-11-27T05:10:00.5Z"), t + 500);
    CHECK_EQ_INT(parse_ok("2026-11-27"), 1795737600000LL);
    CHECK_EQ_INT(parse_ok("90m"), NOW - 90 * 60000LL);
    CHECK_EQ_INT(parse_ok("2h"), NOW - 2 * 3600000LL);
    CHECK_EQ_INT(parse_ok("7d"), NOW - 7 * 86400000LL);
    CHECK_EQ_INT(parse_ok("1795756200000"), t);
    refused("2026-11-27T10:40:00", "has no zone");
    refused("2026-11-27 10:40", "has no zone");
    refused("2026-11-27T10:40:00+05:30junk", "cannot read");
    refused("2026-11-27T10:40:00 IST", "cannot read");
    refused("2026-13-01", "cannot read");
    refused("2026-02-31", "does not exist");
    refused("2026-11-27T25:00:00Z", "cannot read");
    refused("2026-11-27T10:40:00+15:00", "cannot read");
    refused("yesterday", "cannot read");
    refused("-5", "cannot read");
    return tap_done();
}
