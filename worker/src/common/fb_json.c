/* fb_json: see fb_json.h. */
#include "common/fb_json.h"

#include <string.h>

size_t fb_json_escape_char(unsigned char c, char esc[7]) {
    static const char hex[] = "0123456789abcdef";
    esc[0] = '\0';
    if (c == '"' || c == '\\') {
        esc[0] = '\\', esc[1] = (char)c, esc[2] = '\0';
        return 2;
    }
    if (c >= 0x20) return 0;
    if (c == '\n' || c == '\r' || c == '\t') {
        esc[0] = '\\', esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't', esc[2] = '\0';
        return 2;
    }
    memcpy(esc, "\\u00", 4);
    esc[4] = hex[c >> 4], esc[5] = hex[c & 15], esc[6] = '\0';
    return 6;
}

void fb_json_put(FILE *out, const char *s, size_t n) {
    char esc[7];
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        if (fb_json_escape_char((unsigned char)s[i], esc)) fputs(esc, out);
        else fputc(s[i], out);
    }
    fputc('"', out);
}

void fb_json_string(FILE *out, const char *s) {
    if (s) fb_json_put(out, s, strlen(s));
    else fputs("null", out);
}

size_t fb_json_escape(char *out, size_t cap, size_t len, const char *s) {
    char esc[7];
    for (; *s; s++) {
        size_t k = fb_json_escape_char((unsigned char)*s, esc);
        if (len + (k ? k : 1) + 1 > cap) break;
        if (k) memcpy(out + len, esc, k), len += k;
        else out[len++] = *s;
    }
    return len;
}
