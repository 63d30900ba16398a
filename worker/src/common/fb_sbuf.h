/* fb_sbuf: a growable NUL-terminated string, for SQL text, the chain index and anything else built piece by piece.
 *
 * Out of memory is sticky: the first failed growth sets `oom` and every later append is a no-op, so a builder
 * appends freely and checks once at the end. A zeroed fb_sbuf is empty and valid; p stays NULL until the first
 * append. The caller owns p: fb_sbuf_free() it (or take it and free() it).
 */
#ifndef FB_SBUF_H
#define FB_SBUF_H

#include <stddef.h>

typedef struct fb_sbuf {
    char *p;
    size_t len, cap;
    int oom;
} fb_sbuf;

void fb_sbuf_put(fb_sbuf *b, const void *s, size_t n);
void fb_sbuf_puts(fb_sbuf *b, const char *s);
void fb_sbuf_printf(fb_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The string, handed to the caller (free() it), or NULL after an out-of-memory (then the buffer is freed). The
 * fb_sbuf is empty afterwards either way. */
char *fb_sbuf_take(fb_sbuf *b);
void fb_sbuf_free(fb_sbuf *b);

#endif
