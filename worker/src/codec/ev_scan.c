/* ev_scan: see ev_scan.h. A recursive descent bounded by EV_SCAN_MAX_DEPTH. */
#include "codec/ev_scan.h"

#include <stdint.h>

typedef struct scan_state {
    const unsigned char *p;
    size_t len, pos;
    const char *why;
} scan_state;

static int scan_need(scan_state *s, uint64_t n) {
    if (n > s->len - s->pos) {
        s->why = "truncated message: a value runs past the end";
        return -1;
    }
    return 0;
}

static uint64_t scan_be(scan_state *s, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v = (v << 8) | s->p[s->pos + (size_t)i];
    s->pos += (size_t)bytes;
    return v;
}

static int scan_obj(scan_state *s, int depth);
static int scan_children(scan_state *s, uint64_t n, int depth);

static int scan_map(scan_state *s, uint64_t n_keys, int depth) {
    if (n_keys > EV_SCAN_MAX_MAP_KEYS) {
        s->why = "a map has more than 1024 keys, over the limit (the contract's largest map has 20)";
        return -1;
    }
    return scan_children(s, 2 * n_keys, depth);
}

static int scan_children(scan_state *s, uint64_t n, int depth) {
    if (depth >= EV_SCAN_MAX_DEPTH) {
        s->why = "too deeply nested";
        return -1;
    }
    if (n > s->len - s->pos) {
        s->why = "truncated message: a container claims more elements than there are bytes";
        return -1;
    }
    for (uint64_t i = 0; i < n; i++)
        if (scan_obj(s, depth + 1)) return -1;
    return 0;
}

static int scan_obj(scan_state *s, int depth) {
    if (scan_need(s, 1)) return -1;
    unsigned char t = s->p[s->pos++];
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) return 0;
    if (t >= 0x80 && t <= 0x8f) return scan_children(s, 2u * (t & 0x0f), depth);
    if (t >= 0x90 && t <= 0x9f) return scan_children(s, t & 0x0f, depth);
    if (t >= 0xa0 && t <= 0xbf) {
        if (scan_need(s, t & 0x1f)) return -1;
        s->pos += t & 0x1f;
        return 0;
    }
    uint64_t n;
    switch (t) {
    case 0xcc: case 0xd0: return scan_need(s, 1) ? -1 : (s->pos += 1, 0);
    case 0xcd: case 0xd1: return scan_need(s, 2) ? -1 : (s->pos += 2, 0);
    case 0xce: case 0xd2: case 0xca: return scan_need(s, 4) ? -1 : (s->pos += 4, 0);
    case 0xcf: case 0xd3: case 0xcb: return scan_need(s, 8) ? -1 : (s->pos += 8, 0);
    case 0xc4: case 0xd9:
        if (scan_need(s, 1)) return -1;
        n = scan_be(s, 1);
        break;
    case 0xc5: case 0xda:
        if (scan_need(s, 2)) return -1;
        n = scan_be(s, 2);
        break;
    case 0xc6: case 0xdb:
        if (scan_need(s, 4)) return -1;
        n = scan_be(s, 4);
        break;
    case 0xdc:
        if (scan_need(s, 2)) return -1;
        return scan_children(s, scan_be(s, 2), depth);
    case 0xdd:
        if (scan_need(s, 4)) return -1;
        return scan_children(s, scan_be(s, 4), depth);
    case 0xde:
        if (scan_need(s, 2)) return -1;
        return scan_map(s, scan_be(s, 2), depth);
    case 0xdf:
        if (scan_need(s, 4)) return -1;
        return scan_map(s, scan_be(s, 4), depth);
    case 0xc1:
        s->why = "invalid msgpack: reserved byte 0xc1";
        return -1;
    case 0xd4: return scan_need(s, 2) ? -1 : (s->pos += 2, 0);  /* fixext: type byte + data */
    case 0xd5: return scan_need(s, 3) ? -1 : (s->pos += 3, 0);
    case 0xd6: return scan_need(s, 5) ? -1 : (s->pos += 5, 0);
    case 0xd7: return scan_need(s, 9) ? -1 : (s->pos += 9, 0);
    case 0xd8: return scan_need(s, 17) ? -1 : (s->pos += 17, 0);
    case 0xc7: case 0xc8: case 0xc9: { /* ext 8/16/32: length, type byte, data */
        int lb = t == 0xc7 ? 1 : t == 0xc8 ? 2 : 4;
        if (scan_need(s, (uint64_t)lb)) return -1;
        n = scan_be(s, lb) + 1;
        break;
    }
    default:
        s->why = "invalid msgpack: unknown type byte";
        return -1;
    }
    if (scan_need(s, n)) return -1;
    s->pos += (size_t)n;
    return 0;
}

int ev_scan(const unsigned char *buf, size_t len, const char **why) {
    scan_state s = {buf, len, 0, NULL};
    if (len == 0) {
        if (why) *why = "truncated: the message is empty";
        return -1;
    }
    if (scan_obj(&s, 0)) {
        if (why) *why = s.why;
        return -1;
    }
    if (s.pos != len) {
        if (why) *why = "trailing bytes after the message";
        return -1;
    }
    return 0;
}
