/* fb_time: the times operators type and read, one parser for every command. Events carry milliseconds since the
 * epoch (UTC); people write "2026-11-27T10:30:00+05:30" or "...Z" (a time always with its zone: an offset is
 * honoured, a missing one refused), "2026-11-27" (midnight UTC), durations before now ("90m", "2h", "7d"), raw
 * milliseconds, or "infinity" (INT64_MAX: later than any time, e.g. "archived before infinity" is everything).
 * Every time option of every command is read by fb_time_parse (fb_config.c, CFG_TIME rows). */
#ifndef FB_TIME_H
#define FB_TIME_H

#include <stddef.h>
#include <stdint.h>

#include "common/fb_err.h"

/* The wall clock: ms since the epoch (UTC), what events carry in ts. Declared here, below every layer that stamps
 * or compares times (kafka, jobs, the daemon, commands). */
int64_t fb_now_ms(void);
/* The same clock in microseconds (what PostgreSQL's replication protocol stamps its messages with). */
int64_t fb_now_us(void);

/* Parses s into ms since the epoch (see above). FB_ERR_USAGE with an example on anything else. */
fb_code fb_time_parse(const char *s, int64_t now_ms, int64_t *out, fb_err *err);

/* "2026-11-27T05:00:00.250Z" (or "infinity" for INT64_MAX), which PostgreSQL reads as a timestamptz, into out
 * (at least 32 bytes). */
const char *fb_time_format_iso(int64_t ms, char *out, size_t cap);

/* "2026-11-27T05:00:00Z" (whole seconds, UTC) into out (at least 21 bytes): what key files, listings, retention
 * messages and database comments show. */
const char *fb_time_format_utc(int64_t ms, char *out, size_t cap);

/* "2026-11-27 05:00:00Z" into out (at least 24 bytes). */
const char *fb_time_format(int64_t ms, char *out, size_t cap);

/* "1.2 GB", "340 KB", "12 B" into out. */
const char *fb_size_format(int64_t bytes, char *out, size_t cap);

#endif
