/* fb_path: the one rule for a path relative to the storage root, which both the event contract (storage_path,
 * file_path: codec/ev_decode.c) and the storage layer (stor_path_check: storage/stor.c) apply.
 *
 * 1..1024 bytes, no NUL, not absolute, and every '/'-separated component non-empty and neither "." nor "..".
 * "." is refused as well as "..": it never escapes the root, but "a/./b" and "a/b" are one file on a disk and two
 * keys on S3, and a path must name one object wherever it is stored (retention and the ledger compare them). */
#ifndef FB_PATH_H
#define FB_PATH_H

#include <stddef.h>

#define FB_PATH_MAX 1024

/* NULL when s[0..len) follows the rule; else why not, as a sentence fragment ("a path must not ...") to put after
 * the field's or the path's name. UTF-8 is the caller's to check (the contract wants it, file names need not). */
const char *fb_relpath_problem(const char *s, size_t len);

/* The last component of path ("b.fbak" of "a/b.fbak"; path itself when it has no '/'). */
const char *fb_path_base(const char *path);

#endif
