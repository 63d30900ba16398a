/* ev_scan: a bounds-checked walk over raw msgpack bytes, run before msgpack-c unpacks them.
 *
 * Why: msgpack-c allocates an array's or map's element storage from the count in the header before it reads the
 * elements, so 5 hostile bytes claiming 2^32 elements ask for gigabytes. The scan rejects any container whose count
 * exceeds the bytes left (each element needs at least one), nesting deeper than EV_SCAN_MAX_DEPTH, the reserved
 * 0xc1 byte, truncation and trailing bytes, and any map of more than EV_SCAN_MAX_MAP_KEYS entries (the contract's
 * largest map has 20 keys; without a cap one 4 MiB message of tiny unknown keys costs every reader time and
 * memory for nothing). Ext values pass the scan; the field readers reject them as mistyped.
 * Private to codec/. */
#ifndef EV_SCAN_H
#define EV_SCAN_H

#include <stddef.h>

#define EV_SCAN_MAX_DEPTH 16
#define EV_SCAN_MAX_MAP_KEYS 1024

/* Returns 0 when buf holds exactly one well-formed msgpack object; else -1 and a reason in *why (static). */
int ev_scan(const unsigned char *buf, size_t len, const char **why);

#endif
