/* cap_wire: see cap_wire.h. */
#include "capture/cap_wire.h"

#include <stdlib.h>
#include <string.h>

void cap_rd_init(cap_rd *r, const void *p, size_t len) {
    r->p = p;
    r->len = len;
    r->off = 0;
    r->bad = 0;
}

size_t cap_rd_left(const cap_rd *r) { return r->bad ? 0 : r->len - r->off; }

const unsigned char *cap_rd_bytes(cap_rd *r, size_t len) {
    if (r->bad || len > r->len - r->off) {
        r->bad = 1;
        return NULL;
    }
    const unsigned char *p = r->p + r->off;
    r->off += len;
    return p;
}

static uint64_t cap_rd_be(cap_rd *r, size_t n) {
    const unsigned char *p = cap_rd_bytes(r, n);
    uint64_t v = 0;
    if (!p) return 0;
    for (size_t i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

uint8_t cap_rd_u8(cap_rd *r) { return (uint8_t)cap_rd_be(r, 1); }
uint16_t cap_rd_u16(cap_rd *r) { return (uint16_t)cap_rd_be(r, 2); }
uint32_t cap_rd_u32(cap_rd *r) { return (uint32_t)cap_rd_be(r, 4); }
uint64_t cap_rd_u64(cap_rd *r) { return cap_rd_be(r, 8); }

const char *cap_rd_cstr(cap_rd *r) {
    if (r->bad) return NULL;
    const unsigned char *nul = memchr(r->p + r->off, '\0', r->len - r->off);
    if (!nul) {
        r->bad = 1;
        return NULL;
    }
    const char *s = (const char *)(r->p + r->off);
    r->off = (size_t)(nul - r->p) + 1;
    return s;
}

char *cap_rd_str16(cap_rd *r, int *oom) {
    uint16_t n = cap_rd_u16(r);
    const unsigned char *p = cap_rd_bytes(r, n);
    if (!p) return NULL;
    if (memchr(p, '\0', n)) {
        r->bad = 1;
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (!s) {
        *oom = 1;
        return NULL;
    }
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static void cap_wr_be(fb_sbuf *b, uint64_t v, size_t n) {
    unsigned char tmp[8];
    for (size_t i = 0; i < n; i++) tmp[n - 1 - i] = (unsigned char)(v >> (8 * i));
    fb_sbuf_put(b, tmp, n);
}

void cap_wr_u8(fb_sbuf *b, uint8_t v) { cap_wr_be(b, v, 1); }
void cap_wr_u16(fb_sbuf *b, uint16_t v) { cap_wr_be(b, v, 2); }
void cap_wr_u32(fb_sbuf *b, uint32_t v) { cap_wr_be(b, v, 4); }
void cap_wr_u64(fb_sbuf *b, uint64_t v) { cap_wr_be(b, v, 8); }

void cap_wr_str16(fb_sbuf *b, const char *s) {
    size_t n = strlen(s);
    if (n > UINT16_MAX) {
        b->oom = 1;
        return;
    }
    cap_wr_u16(b, (uint16_t)n);
    fb_sbuf_put(b, s, n);
}

void cap_be64_put(unsigned char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (unsigned char)v;
}
uint64_t cap_be64_get(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}
void cap_be32_put(unsigned char *p, uint32_t v) {
    for (int i = 3; i >= 0; i--, v >>= 8) p[i] = (unsigned char)v;
}
uint32_t cap_be32_get(const unsigned char *p) { return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]; }
