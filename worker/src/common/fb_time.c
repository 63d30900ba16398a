/* fb_time: see fb_time.h. */
#include "common/fb_time.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t fb_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t fb_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Reads exactly `digits` digits at *p into *v; advances *p. */
static int ft_digits(const char **p, int digits, int *v) {
    int x = 0;
    for (int i = 0; i < digits; i++) {
        if (!isdigit((unsigned char)(*p)[i])) return 0;
        x = x * 10 + ((*p)[i] - '0');
    }
    *p += digits;
    *v = x;
    return 1;
}

/* The one message for a time nobody can read: what was given and every form that is accepted. */
static fb_code fb_time_refuse(const char *s, fb_err *err) {
    return fb_err_set(err, FB_ERR_USAGE,
                      "cannot read the time \"%s\": use 2026-11-27T10:30:00+05:30 (with its zone: Z or an offset), "
                      "2026-11-27 (midnight UTC), a duration before now (90m, 2h, 7d), milliseconds since the "
                      "epoch or infinity", s);
}

/* ISO 8601 as people type it: a date, or a date and time with its zone. The zone is honoured ("Z", "+05:30",
 * "-0800", "+05"), never dropped: Fusion runs on India time, and a silently ignored "+05:30" moves a replay window
 * by five and a half hours. A time without a zone is refused (UTC or local? nobody can tell); a date alone means
 * that day's midnight UTC. */
static fb_code fb_time_parse_iso(const char *s, int64_t *out, fb_err *err) {
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, se = 0, ms = 0, off_min = 0;
    int ok = ft_digits(&p, 4, &y) && *p++ == '-' && ft_digits(&p, 2, &mo) && *p++ == '-' && ft_digits(&p, 2, &d);
    if (ok && *p) {
        ok = (*p == 'T' || *p == 't' || *p == ' ') && (p++, ft_digits(&p, 2, &h)) && *p++ == ':' &&
             ft_digits(&p, 2, &mi);
        if (ok && *p == ':') {
            p++;
            ok = ft_digits(&p, 2, &se);
            if (ok && (*p == '.' || *p == ',')) { /* fractions: milliseconds kept, finer digits dropped */
                p++;
                int digits = 0;
                while (isdigit((unsigned char)*p)) {
                    if (digits < 3) ms = ms * 10 + (*p - '0');
                    digits++;
                    p++;
                }
                ok = digits > 0;
                for (; digits > 0 && digits < 3; digits++) ms *= 10;
            }
        }
        if (ok && (*p == 'Z' || *p == 'z') && p[1] == '\0') {
            p++;
        } else if (ok && (*p == '+' || *p == '-')) {
            int sign = *p++ == '-' ? -1 : 1, oh = 0, om = 0;
            ok = ft_digits(&p, 2, &oh);
            if (ok && *p == ':') p++;
            if (ok && *p) ok = ft_digits(&p, 2, &om);
            ok = ok && !*p && oh <= 14 && om < 60;
            off_min = sign * (oh * 60 + om);
        } else if (ok && !*p) {
            return fb_err_set(err, FB_ERR_USAGE,
                              "the time \"%s\" has no zone: add Z for UTC or the offset, e.g. %sZ or %s+05:30 (IST)",
                              s, s, s);
        } else {
            ok = 0;
        }
    }
    ok = ok && !*p && mo >= 1 && mo <= 12 && d >= 1 && d <= 31 && h <= 23 && mi <= 59 && se <= 60;
    if (!ok) return fb_time_refuse(s, err);
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    time_t t = timegm(&tm);
    struct tm back;
    gmtime_r(&t, &back);
    if (back.tm_mday != d) /* 2026-02-31: timegm would roll it into March */
        return fb_err_set(err, FB_ERR_USAGE, "the time \"%s\" names a day that does not exist", s);
    *out = ((int64_t)t - (int64_t)off_min * 60) * 1000 + ms;
    return FB_OK;
}

fb_code fb_time_parse(const char *s, int64_t now_ms, int64_t *out, fb_err *err) {
    size_t n = strlen(s);
    char *end = NULL;
    if (strcmp(s, "infinity") == 0) {
        *out = INT64_MAX;
        return FB_OK;
    }
    if (n > 1 && strchr("smhd", s[n - 1]) && isdigit((unsigned char)s[0])) {
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s + n - 1) {
            int64_t unit = s[n - 1] == 's' ? 1000 : s[n - 1] == 'm' ? 60000 : s[n - 1] == 'h' ? 3600000 : 86400000;
            /* more than 10000 years back is a typing mistake, and would overflow */
            if (errno || v > 10000LL * 366 * 86400000 / unit) return fb_time_refuse(s, err);
            *out = now_ms - (int64_t)v * unit;
            return FB_OK;
        }
    }
    if (n >= 10 && isdigit((unsigned char)s[0]) && s[4] == '-') return fb_time_parse_iso(s, out, err);
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!errno && end && *end == '\0' && end != s && v >= 0 && isdigit((unsigned char)s[0])) {
        *out = v;
        return FB_OK;
    }
    return fb_time_refuse(s, err);
}

const char *fb_time_format_iso(int64_t ms, char *out, size_t cap) {
    if (ms == INT64_MAX) {
        snprintf(out, cap, "infinity");
        return out;
    }
    int64_t sec = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t k = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, cap - k, ".%03dZ", (int)(ms - sec * 1000));
    return out;
}

/* Whole seconds of ms, UTC, in strftime's fmt. */
static const char *fb_time_strf(int64_t ms, const char *fmt, char *out, size_t cap) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, fmt, &tm);
    return out;
}

const char *fb_time_format_utc(int64_t ms, char *out, size_t cap) {
    return fb_time_strf(ms, "%Y-%m-%dT%H:%M:%SZ", out, cap);
}

const char *fb_time_format(int64_t ms, char *out, size_t cap) { return fb_time_strf(ms, "%Y-%m-%d %H:%M:%SZ", out, cap); }

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
