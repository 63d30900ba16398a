/* stor: where artifacts live, behind one small vtable (drivers: stor_posix.c for folders, stor_s3.c for
 * S3-compatible object storage).
 *
 * A storage target is rooted: every path handed to it is relative to its root, and no path may leave the root
 * (absolute paths, `..`, empty components and symbolic links are refused with FB_ERR_INVALID). Writing is
 * all-or-nothing: stor_create() opens a temporary object with a deterministic name, stor_wfile_commit() makes it
 * durable and atomically gives it its final name, stor_wfile_abort() removes it. A crash in between leaves only
 * the temporary, which the next stor_create() of the same path overwrites; nothing that looks complete.
 * Reading is random access (artifacts are read segment by segment).
 */
#ifndef STOR_H
#define STOR_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>

#include "common/fb_err.h"

typedef struct stor stor;
typedef struct stor_wfile stor_wfile;
typedef struct stor_rfile stor_rfile;

/* One entry of a folder listing (stor_list): a regular file directly in the folder. */
typedef struct stor_entry {
    const char *name;     /* the last component; valid during the callback only */
    uint64_t size;
    int64_t mtime_ms;
} stor_entry;
/* Called once per entry; a non-zero return stops the listing and is returned by stor_list. */
typedef fb_code (*stor_list_fn)(void *opaque, const stor_entry *e, fb_err *err);

/* The driver interface. Drivers fill one static instance; callers use the stor_* wrappers below. */
typedef struct stor_vt {
    const char *name;
    fb_code (*create)(stor *s, const char *rel_path, stor_wfile **out, fb_err *err);
    fb_code (*open)(stor *s, const char *rel_path, stor_rfile **out, fb_err *err);
    fb_code (*remove)(stor *s, const char *rel_path, fb_err *err);
    /* Regular files directly in folder rel_dir (no links followed); a missing folder lists nothing. */
    fb_code (*list)(stor *s, const char *rel_dir, stor_list_fn fn, void *opaque, fb_err *err);
    /* Atomically renames a file within one folder (rel_dir/from -> rel_dir/to), durable on return. */
    fb_code (*rename)(stor *s, const char *rel_dir, const char *from, const char *to, fb_err *err);
    void (*free)(stor *s);
    /* Optional (NULL: nothing to sweep). Removes leftovers of interrupted writes in rel_dir begun before
     * before_ms, calling fn with each one's name; writes begun later may still be running and are left alone.
     * The S3 driver aborts unfinished multipart uploads; the posix driver has none to sweep (a crashed writer's
     * ".NAME.tmp" is reused by the next run of the same job). */
    fb_code (*sweep)(stor *s, const char *rel_dir, int64_t before_ms, stor_list_fn fn, void *opaque, fb_err *err);
} stor_vt;

typedef struct stor_wfile_vt {
    fb_code (*write)(stor_wfile *f, const void *buf, size_t len, fb_err *err);
    fb_code (*commit)(stor_wfile *f, fb_err *err);
    void (*abort)(stor_wfile *f);
} stor_wfile_vt;

typedef struct stor_rfile_vt {
    /* Reads exactly len bytes at off; a short file is FB_ERR_FORMAT ("truncated"). */
    fb_code (*pread)(stor_rfile *f, void *buf, size_t len, uint64_t off, fb_err *err);
    void (*close)(stor_rfile *f);
} stor_rfile_vt;

struct stor {
    const stor_vt *vt;
};
struct stor_wfile {
    const stor_wfile_vt *vt;
    uint64_t written;   /* bytes written so far */
    crypto_generichash_state hash;  /* BLAKE2b-256 of the bytes written (stor_wfile_digest) */
};
struct stor_rfile {
    const stor_rfile_vt *vt;
    uint64_t size;      /* bytes of the object */
    const char *name;   /* for messages; owned by the file */
};

struct fb_config;

/* The one way callers open a storage location: an s3:// URL gives the S3 driver (stor_s3.h, configured by the
 * s3-* settings of cfg), anything else is a folder for the posix driver. The caller frees *out with stor_free(). */
fb_code stor_open_location(const char *root_or_url, const struct fb_config *cfg, stor **out, fb_err *err);
/* Opens one file by its own path or URL (s3://BUCKET/PATH/NAME) for reading, as stor_posix_open_path does for
 * paths. cfg may be NULL: S3 settings are then read from the config file and the environment (fb_config_init),
 * for readers that are handed a path and no configuration. */
fb_code stor_open_file(const char *path_or_url, const struct fb_config *cfg, stor_rfile **out, fb_err *err);
/* True when root_or_url names an object store location (s3://). */
int stor_is_url(const char *root_or_url);

/* The posix driver: root is an existing directory. Returns a new target the caller frees with stor_free(). */
fb_code stor_posix_new(const char *root, stor **out, fb_err *err);
/* Opens a file by its own path (CLI arguments: the operator names a file directly; no root applies). */
fb_code stor_posix_open_path(const char *path, stor_rfile **out, fb_err *err);

/* Checks a relative path against the rules every driver applies (1..1024 bytes, relative, no `..`, `.` or empty
 * component, no NUL). Returns FB_OK or FB_ERR_INVALID naming the problem. */
fb_code stor_path_check(const char *rel_path, fb_err *err);
/* For the two atomic writes outside a storage target (the daemon's delivery counters, which several job threads
 * bump under their own temporary names, and `rekey` replacing an artifact at a path the operator gave): renames
 * dir/tmp_name (complete and fsynced by the caller) over dir/final_name and fsyncs dir, as stor_wfile_commit does.
 * On failure the temporary is left for the caller to remove. */
fb_code stor_posix_publish(const char *dir, const char *tmp_name, const char *final_name, fb_err *err);

/* Wrappers. stor_create: the caller owns *out and must end it with commit or abort (each frees it). */
fb_code stor_create(stor *s, const char *rel_path, stor_wfile **out, fb_err *err);
fb_code stor_open(stor *s, const char *rel_path, stor_rfile **out, fb_err *err);
fb_code stor_remove(stor *s, const char *rel_path, fb_err *err);
fb_code stor_list(stor *s, const char *rel_dir, stor_list_fn fn, void *opaque, fb_err *err);
/* from and to are names (one component) in rel_dir. */
fb_code stor_rename(stor *s, const char *rel_dir, const char *from, const char *to, fb_err *err);
void stor_free(stor *s);
/* See stor_vt.sweep; the entries passed to fn carry the leftover's name and start time (size 0). */
fb_code stor_sweep(stor *s, const char *rel_dir, int64_t before_ms, stor_list_fn fn, void *opaque, fb_err *err);

fb_code stor_wfile_write(stor_wfile *f, const void *buf, size_t len, fb_err *err);
/* BLAKE2b-256 of everything written so far (the whole file once complete); f stays usable. */
void stor_wfile_digest(const stor_wfile *f, unsigned char out[32]);
fb_code stor_wfile_commit(stor_wfile *f, fb_err *err);  /* frees f, also on failure (then the temporary is gone) */
void stor_wfile_abort(stor_wfile *f);                    /* removes the temporary and frees f; NULL ok */

fb_code stor_rfile_pread(stor_rfile *f, void *buf, size_t len, uint64_t off, fb_err *err);
void stor_rfile_close(stor_rfile *f);                    /* NULL ok */
/* BLAKE2b-256 of the whole file, read back in 1 MiB pieces (to check a copy). */
fb_code stor_rfile_digest(stor_rfile *f, unsigned char out[32], fb_err *err);

#endif
