/* cap_wire: big-endian framing for the capture module, both directions.
 *
 * The replication protocol and pgoutput are big-endian with length-prefixed or NUL-terminated fields, and the
 * change segment payload (cap_segment.h) uses the same conventions, so one bounded reader and one writer serve
 * both. The reader never reads past its end: the first short or malformed field sets `bad` and every later read
 * returns zeros/NULL, so a decoder reads a whole message and checks once (as fb_sbuf does for out of memory).
 */
#ifndef CAP_WIRE_H
#define CAP_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "common/fb_sbuf.h"

typedef struct cap_rd {
    const unsigned char *p;
    size_t len, off;
    int bad;
} cap_rd;

void cap_rd_init(cap_rd *r, const void *p, size_t len);
uint8_t cap_rd_u8(cap_rd *r);
uint16_t cap_rd_u16(cap_rd *r);
uint32_t cap_rd_u32(cap_rd *r);
uint64_t cap_rd_u64(cap_rd *r);
/* len bytes in place (borrowed from the buffer), or NULL with bad set when fewer remain. */
const unsigned char *cap_rd_bytes(cap_rd *r, size_t len);
/* A NUL-terminated string in place (pgoutput's names), or NULL with bad set when no NUL remains. */
const char *cap_rd_cstr(cap_rd *r);
/* A u16-length-prefixed string (segment payload) copied into a new NUL-terminated buffer the caller frees, or
 * NULL (bad set, or out of memory: *oom set). Strings with an embedded NUL are refused (bad). */
char *cap_rd_str16(cap_rd *r, int *oom);
size_t cap_rd_left(const cap_rd *r);

void cap_wr_u8(fb_sbuf *b, uint8_t v);
void cap_wr_u16(fb_sbuf *b, uint16_t v);
void cap_wr_u32(fb_sbuf *b, uint32_t v);
void cap_wr_u64(fb_sbuf *b, uint64_t v);
/* u16 length + bytes; a string longer than 65535 bytes sets b->oom (identifiers are at most 63 bytes). */
void cap_wr_str16(fb_sbuf *b, const char *s);

/* Big-endian into and out of a fixed buffer (headers). */
void cap_be64_put(unsigned char *p, uint64_t v);
uint64_t cap_be64_get(const unsigned char *p);
void cap_be32_put(unsigned char *p, uint32_t v);
uint32_t cap_be32_get(const unsigned char *p);

#endif
