/* fb_time: see fb_time.h. */
#include "common/fb_time.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

fb_code fb_time_parse(const char *s, int64_t now_ms, int64_t *out, fb_err *err) {
    size_t n = strlen(s);
    char *end = NULL;
    if (n > 1 && strchr("smhd", s[n - 1]) && isdigit((unsigned char)s[0])) {
        long long v = strtoll(s, &end, 10);
        if (end == s + n - 1) {
            int64_t unit = s[n - 1] == 's' ? 1000 : s[n - 1] == 'm' ? 60000 : s[n - 1] == 'h' ? 3600000 : 86400000;
            *out = now_ms - (int64_t)v * unit;
            return FB_OK;
        }
    }
    if (n >= 10 && isdigit((unsigned char)s[0]) && s[4] == '-') {
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        int y, mo, d, h = 0, mi = 0, se = 0;
        int got = sscanf(s, "%4d-%2d-%2d%*1[T ]%2d:%2d:%2d", &y, &mo, &d, &h, &mi, &se);
        if (got == 3 || got >= 5) {
            tm.tm_year = y - 1900;
            tm.tm_mon = mo - 1;
            tm.tm_mday = d;
            tm.tm_hour = h;
            tm.tm_min = mi;
            tm.tm_sec = se;
            *out = (int64_t)timegm(&tm) * 1000;
            return FB_OK;
        }
    }
    long long v = strtoll(s, &end, 10);
    if (end && *end == '\0' && end != s && v >= 0) {
        *out = v;
        return FB_OK;
    }
    return fb_err_set(err, FB_ERR_USAGE,
                      "cannot read the time \"%s\": use 2026-11-27T05:00:00Z (UTC), 2026-11-27, a duration before now "
                      "(90m, 2h, 7d) or milliseconds since the epoch", s);
}

const char *fb_time_format(int64_t ms, char *out, size_t cap) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%d %H:%M:%SZ", &tm);
    return out;
}

const char *fb_size_format(int64_t bytes, char *out, size_t cap) {
    static const char *const units[] = {"B", "KB", "MB", "GB", "TB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1000 && u < 4) {
        v /= 1000;
        u++;
    }
    if (u == 0) snprintf(out, cap, "%lld B", (long long)bytes);
    else snprintf(out, cap, "%.1f %s", v, units[u]);
    return out;
}
