/* fb_log: see fb_log.h. Level and format are process-wide and set once at start-up by main. */
#include "common/fb_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static fb_log_level fb_log_min = FB_LOG_INFO;
static int fb_log_json_mode = 0;

static const char *const fb_log_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void fb_log_set_level(fb_log_level level) { fb_log_min = level; }
void fb_log_set_json(int json) { fb_log_json_mode = json; }
int fb_log_enabled(fb_log_level level) { return level >= fb_log_min; }

int fb_log_level_parse(const char *s) {
    static const char *const lower[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, lower[i]) == 0) return i;
    return -1;
}

/* Appends s to out as the inside of a JSON string. */
static size_t fb_log_json_escape(char *out, size_t cap, size_t len, const char *s) {
    for (; *s && len + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { out[len++] = '\\'; out[len++] = (char)c; }
        else if (c == '\n') { out[len++] = '\\'; out[len++] = 'n'; }
        else if (c == '\t') { out[len++] = '\\'; out[len++] = 't'; }
        else if (c < 0x20) len += (size_t)snprintf(out + len, cap - len, "\\u%04x", c);
        else out[len++] = (char)c;
    }
    return len;
}

void fb_log_write(fb_log_level level, const char *fmt, ...) {
    if (level < fb_log_min) return;
    char msg[4096], line[8800], stamp[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof stamp - n, ".%03dZ", (int)(tv.tv_usec / 1000));

    size_t len;
    if (fb_log_json_mode) {
        len = (size_t)snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"pid\":%d,\"msg\":\"", stamp,
                               fb_log_names[level], (int)getpid());
        len = fb_log_json_escape(line, sizeof line - 3, len, msg);
        line[len++] = '"';
        line[len++] = '}';
    } else {
        len = (size_t)snprintf(line, sizeof line, "%s %-5s [%d] %s", stamp, fb_log_names[level], (int)getpid(), msg);
        if (len > sizeof line - 2) len = sizeof line - 2;
    }
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
