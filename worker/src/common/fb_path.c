/* fb_path: see fb_path.h. */
#include "common/fb_path.h"

#include <string.h>

const char *fb_relpath_problem(const char *s, size_t len) {
    if (len == 0 || len > FB_PATH_MAX) return "a path must be 1..1024 bytes";
    if (memchr(s, '\0', len)) return "a path must not contain a NUL byte";
    if (s[0] == '/') return "a path must be relative to the storage root, not absolute";
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '/') continue;
        size_t clen = i - start;
        const char *c = s + start;
        if (clen == 0) return "a path must not have empty components (\"//\" or a trailing \"/\")";
        if (clen == 2 && c[0] == '.' && c[1] == '.') return "a path must not contain \"..\"";
        if (clen == 1 && c[0] == '.') return "a path must not contain \".\" (it names the same file as without it)";
        start = i + 1;
    }
    return NULL;
}

const char *fb_path_base(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}
