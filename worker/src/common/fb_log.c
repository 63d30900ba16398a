/* fb_log: see fb_log.h. Level and format are process-wide and set once at start-up by main. */
#include "common/fb_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/fb_json.h"
#include "common/fb_time.h"

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

void fb_log_write(fb_log_level level, const char *fmt, ...) {
    if (level < fb_log_min) return;
    char msg[4096], line[8800], stamp[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    fb_time_format_iso(fb_now_ms(), stamp, sizeof stamp);

    size_t len;
    if (fb_log_json_mode) {
        len = (size_t)snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"pid\":%d,\"msg\":\"", stamp,
                               fb_log_names[level], (int)getpid());
        len = fb_json_escape(line, sizeof line - 3, len, msg);
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
