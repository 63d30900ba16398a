/* fb_sbuf: see fb_sbuf.h. Capacity doubles, so appends are amortised O(1). */
#include "common/fb_sbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fb_sbuf_reserve(fb_sbuf *b, size_t more) {
    if (b->oom) return -1;
    if (b->len + more + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + more + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

void fb_sbuf_put(fb_sbuf *b, const void *s, size_t n) {
    if (fb_sbuf_reserve(b, n) != 0) return;
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void fb_sbuf_puts(fb_sbuf *b, const char *s) { fb_sbuf_put(b, s, strlen(s)); }

void fb_sbuf_printf(fb_sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    if (fb_sbuf_reserve(b, (size_t)n) != 0) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *fb_sbuf_take(fb_sbuf *b) {
    char *p = b->oom ? NULL : b->p;
    if (b->oom) free(b->p);
    memset(b, 0, sizeof *b);
    return p;
}

void fb_sbuf_free(fb_sbuf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}
