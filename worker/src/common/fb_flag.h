/* fb_flag: a stop flag shared between a signal handler and threads (SIGTERM -> the consumer loop, the job threads,
 * the capture threads; the consumer loop -> a job thread's abort).
 *
 * A C11 atomic_int, not `fb_flag`: fb_flag makes a store from a signal handler safe but
 * its reads from other threads are a data race (C11 5.1.2.4); a lock-free atomic is safe for both (a signal handler
 * may store to a lock-free atomic object, C11 7.14.1.1). Plain reads and stores (`if (*f)`, `*f = 1`) are
 * sequentially consistent loads and stores. Owned by whoever declares it; the pointer holders only read or set it.
 */
#ifndef FB_FLAG_H
#define FB_FLAG_H

#include <stdatomic.h>

typedef atomic_int fb_flag;

_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "fb_flag must be lock-free to be set from a signal handler");

#endif
