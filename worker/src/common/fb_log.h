/* fb_log: one levelled logging macro set for the whole project.
 *
 * One line per event, to stderr, as text ("2026-11-27T05:00:00.123Z INFO  job=... message") or as JSON lines
 * (--log-format json). librdkafka's own log callback is routed here (kafka/kfk_client.c). Thread-safe: each line
 * is written with one write(2).
 */
#ifndef FB_LOG_H
#define FB_LOG_H

typedef enum fb_log_level { FB_LOG_DEBUG = 0, FB_LOG_INFO = 1, FB_LOG_WARN = 2, FB_LOG_ERROR = 3 } fb_log_level;

void fb_log_set_level(fb_log_level level);
void fb_log_set_json(int json);
/* Parses "debug|info|warn|error"; returns -1 for anything else. */
int fb_log_level_parse(const char *s);
int fb_log_enabled(fb_log_level level);

void fb_log_write(fb_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define FB_DEBUG(...) do { if (fb_log_enabled(FB_LOG_DEBUG)) fb_log_write(FB_LOG_DEBUG, __VA_ARGS__); } while (0)
#define FB_INFO(...) fb_log_write(FB_LOG_INFO, __VA_ARGS__)
#define FB_WARN(...) fb_log_write(FB_LOG_WARN, __VA_ARGS__)
#define FB_ERROR(...) fb_log_write(FB_LOG_ERROR, __VA_ARGS__)

#endif
