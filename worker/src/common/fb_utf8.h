/* fb_utf8: cutting text without breaking a character.
 *
 * Every message this project shows or sends (errors, status events, logs) may be cut to fit a buffer or a
 * contract limit. A cut inside a multi-byte UTF-8 sequence makes the text invalid, and the event encoder rightly
 * refuses invalid UTF-8: a FAILED status whose error was cut mid-character could never be published, so its job
 * would run again forever. Cut with these functions instead of at a raw byte count.
 */
#ifndef FB_UTF8_H
#define FB_UTF8_H

#include <stddef.h>

/* The largest n <= min(len, max) such that s[0..n) does not end inside a UTF-8 sequence. Only bytes before the
 * cut are read (so it also repairs a buffer that snprintf already truncated); invalid input elsewhere stays. */
size_t fb_utf8_cut_len(const char *s, size_t len, size_t max);

/* NUL-terminates s (a buffer of at least len+1 bytes holding len bytes) at fb_utf8_cut_len(s, len, max). */
void fb_utf8_cut(char *s, size_t len, size_t max);

#endif
