/* fb_utf8: see fb_utf8.h. */
#include "common/fb_utf8.h"

/* Bytes in the sequence that lead byte c starts; 0 for a continuation or invalid byte. */
static size_t fb_utf8_seq_len(unsigned char c) {
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return 4;
    return 0;
}

size_t fb_utf8_cut_len(const char *s, size_t len, size_t max) {
    size_t n = len < max ? len : max;
    const unsigned char *u = (const unsigned char *)s;
    /* Only the last character can be incomplete: find its lead byte among the last 4 bytes (only what lies
     * before the cut is looked at, so this works on a buffer that was already truncated). */
    for (size_t back = 1; back <= 4 && back <= n; back++) {
        unsigned char c = u[n - back];
        if ((c & 0xC0) == 0x80) continue; /* a continuation byte: keep looking for the lead */
        size_t want = fb_utf8_seq_len(c);
        return want > back ? n - back : n;
    }
    return n;
}

void fb_utf8_cut(char *s, size_t len, size_t max) {
    s[fb_utf8_cut_len(s, len, max)] = '\0';
}
