/* fb_keyfile: the text files every key of the project lives in (backup keys, arc_key.h; signing keys, fb_sign.h).
 *
 *   # fusion-backup KIND key (ALGORITHM), created TIME      (comment lines: ignored by readers)
 *   [TAG ]HEX64                                              (32 bytes; TAG names the kind, so kinds never mix)
 *
 * Written with O_EXCL (a key is never overwritten) and fsync'd; a secret key file is created 0600 and refused when
 * group or others can read it. Buffers holding key material are erased here; the caller erases what it keeps.
 */
#ifndef FB_KEYFILE_H
#define FB_KEYFILE_H

#include <sys/types.h>

#include "common/fb_err.h"

/* Creates path (mode) holding the comment `# fusion-backup DESCRIPTION, created TIME` and the line
 * `[TAG ]HEX(key[32])`; tag NULL: the bare hex. FB_ERR_CONFLICT when it exists. */
fb_code fb_keyfile_write(const char *path, mode_t mode, const char *description, const char *tag,
                         const unsigned char key[32], fb_err *err);

/* Reads the first non-comment line of path into line (NUL-terminated, without the newline; at most cap - 1
 * bytes). secret: the file must not be readable by group or others (checked after the caller's type check, so use
 * fb_keyfile_check_private). `kind` names the key in messages ("public signing"). The caller erases line. */
fb_code fb_keyfile_read_line(const char *path, const char *kind, char *line, size_t cap, fb_err *err);
/* FB_ERR_USAGE "readable by others ... chmod 600" when path's mode lets group or others read it. */
fb_code fb_keyfile_check_private(const char *path, const char *kind, fb_err *err);
/* Parses exactly 64 hex digits (then the end of the line) into key; FB_ERR_FORMAT naming path otherwise. */
fb_code fb_keyfile_hex32(const char *path, const char *kind, const char *hex, unsigned char key[32], fb_err *err);

/* The refusal to overwrite: when PREFIX.pub or PREFIX.key exists. Fills pub and sec (cap bytes each). */
fb_code fb_keyfile_pair_paths(const char *prefix, char *pub, char *sec, size_t cap, fb_err *err);

#endif
