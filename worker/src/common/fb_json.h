/* fb_json: JSON string literals, the one escaping rule for everything the project prints as JSON (log lines with
 * --log-format json, commands' --json output, events, manifests).
 *
 * The rule: `"` and `\` get a backslash; newline, carriage return and tab their short escapes (\n \r \t); every
 * other byte below 0x20 is \u00XX; all else (UTF-8 included) is copied as it is. RFC 8259 allows any of these
 * forms; having one means a line grep'd out of a log reads like the same text in `tail --json`.
 */
#ifndef FB_JSON_H
#define FB_JSON_H

#include <stddef.h>
#include <stdio.h>

/* The escape of byte c into esc (at least 7 bytes, NUL-terminated): "" when c needs none. Returns its length. */
size_t fb_json_escape_char(unsigned char c, char esc[7]);
/* Writes s[0..n) as a JSON string literal, quotes included. */
void fb_json_put(FILE *out, const char *s, size_t n);
/* Writes NUL-terminated s as a JSON string literal, or null when s is NULL. */
void fb_json_string(FILE *out, const char *s);
/* Appends the inside of a JSON string for s (no quotes) to out[len..cap), stopping before a byte whose escape would
 * not fit with one byte to spare; returns the new length (out is not NUL-terminated). */
size_t fb_json_escape(char *out, size_t cap, size_t len, const char *s);

#endif
