/* fb_assert: FB_ASSERT(cond) for invariants, the ones comments used to carry ("the writer is in a segment", "a
 * plan node has a parent edge").
 *
 * Active in every build, release included (unlike assert(), which NDEBUG removes): a broken invariant in a backup
 * tool means a wrong artifact or a lost row later, so stopping at once, with where and what, is the cheaper failure.
 * It is for what the program itself guarantees, never for input: bad input is an fb_err with a message a person
 * can act on. On failure it prints "fusion-backup: FILE:LINE: invariant failed: COND" to stderr and abort()s, so a
 * core dump or the sanitizers show the stack.
 */
#ifndef FB_ASSERT_H
#define FB_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define FB_ASSERT(cond)                                                                                     \
    do {                                                                                                    \
        if (!(cond)) {                                                                                      \
            fprintf(stderr, "fusion-backup: %s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                                        \
        }                                                                                                   \
    } while (0)

#endif
