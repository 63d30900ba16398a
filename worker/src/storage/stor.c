/* stor: the driver-independent half of the storage interface (see stor.h): path rules and thin wrappers. */
#include "storage/stor.h"

#include <stdlib.h>
#include <string.h>

#include "common/fb_config.h"
#include "common/fb_path.h"
#include "storage/stor_s3.h"

fb_code stor_path_check(const char *p, fb_err *err) {
    size_t n = p ? strlen(p) : 0;
    const char *why = fb_relpath_problem(p ? p : "", n);
    if (why) return fb_err_set(err, FB_ERR_INVALID, "storage path \"%.200s\" (%zu bytes) refused: %s", p ? p : "", n, why);
    return FB_OK;
}

fb_code stor_create(stor *s, const char *rel_path, stor_wfile **out, fb_err *err) {
    *out = NULL;
    fb_code rc = stor_path_check(rel_path, err);
    if (rc == FB_OK) rc = s->vt->create(s, rel_path, out, err);
    if (rc == FB_OK) crypto_generichash_init(&(*out)->hash, NULL, 0, 32);
    return rc;
}

/* A single file name: one component, no '/', not "." or "..". */
static fb_code stor_name_check(const char *name, fb_err *err) {
    fb_code rc = stor_path_check(name, err);
    if (rc == FB_OK && strchr(name, '/'))
        rc = fb_err_set(err, FB_ERR_INVALID, "\"%s\" must be a file name, not a path", name);
    return rc;
}

fb_code stor_list(stor *s, const char *rel_dir, stor_list_fn fn, void *opaque, fb_err *err) {
    fb_code rc = stor_path_check(rel_dir, err);
    return rc ? rc : s->vt->list(s, rel_dir, fn, opaque, err);
}

fb_code stor_rename(stor *s, const char *rel_dir, const char *from, const char *to, fb_err *err) {
    fb_code rc = stor_path_check(rel_dir, err);
    if (rc == FB_OK) rc = stor_name_check(from, err);
    if (rc == FB_OK) rc = stor_name_check(to, err);
    return rc ? rc : s->vt->rename(s, rel_dir, from, to, err);
}

fb_code stor_open(stor *s, const char *rel_path, stor_rfile **out, fb_err *err) {
    *out = NULL;
    fb_code rc = stor_path_check(rel_path, err);
    return rc ? rc : s->vt->open(s, rel_path, out, err);
}

fb_code stor_remove(stor *s, const char *rel_path, fb_err *err) {
    fb_code rc = stor_path_check(rel_path, err);
    return rc ? rc : s->vt->remove(s, rel_path, err);
}

fb_code stor_sweep(stor *s, const char *rel_dir, int64_t before_ms, stor_list_fn fn, void *opaque, fb_err *err) {
    fb_code rc = stor_path_check(rel_dir, err);
    if (rc || !s->vt->sweep) return rc;
    return s->vt->sweep(s, rel_dir, before_ms, fn, opaque, err);
}

void stor_free(stor *s) {
    if (s) s->vt->free(s);
}

fb_code stor_wfile_write(stor_wfile *f, const void *buf, size_t len, fb_err *err) {
    fb_code rc = f->vt->write(f, buf, len, err);
    if (rc == FB_OK) {
        f->written += len;
        crypto_generichash_update(&f->hash, buf, len);
    }
    return rc;
}

void stor_wfile_digest(const stor_wfile *f, unsigned char out[32]) {
    crypto_generichash_state st = f->hash;
    crypto_generichash_final(&st, out, 32);
}

fb_code stor_rfile_digest(stor_rfile *f, unsigned char out[32], fb_err *err) {
    crypto_generichash_state st;
    fb_code rc = FB_OK;
    size_t cap = 1u << 20;
    unsigned char *buf = malloc(cap);
    if (!buf) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    crypto_generichash_init(&st, NULL, 0, 32);
    for (uint64_t off = 0; off < f->size && rc == FB_OK; off += cap) {
        size_t n = f->size - off < cap ? (size_t)(f->size - off) : cap;
        rc = stor_rfile_pread(f, buf, n, off, err);
        if (rc == FB_OK) crypto_generichash_update(&st, buf, n);
    }
    if (rc == FB_OK) crypto_generichash_final(&st, out, 32);
    free(buf);
    return rc;
}

fb_code stor_wfile_commit(stor_wfile *f, fb_err *err) { return f->vt->commit(f, err); }

void stor_wfile_abort(stor_wfile *f) {
    if (f) f->vt->abort(f);
}

fb_code stor_rfile_pread(stor_rfile *f, void *buf, size_t len, uint64_t off, fb_err *err) {
    if (off > f->size || len > f->size - off)
        return fb_err_set(err, FB_ERR_FORMAT,
                          "\"%s\" is truncated: needed %zu bytes at offset %llu but the file has %llu bytes", f->name,
                          len, (unsigned long long)off, (unsigned long long)f->size);
    return f->vt->pread(f, buf, len, off, err);
}

void stor_rfile_close(stor_rfile *f) {
    if (f) f->vt->close(f);
}

int stor_is_url(const char *root_or_url) {
    return root_or_url && strncmp(root_or_url, STOR_S3_SCHEME, STOR_S3_SCHEME_LEN) == 0;
}

fb_code stor_open_location(const char *root_or_url, const fb_config *cfg, stor **out, fb_err *err) {
    if (stor_is_url(root_or_url)) return stor_s3_new(root_or_url, cfg, out, err);
    return stor_posix_new(root_or_url, out, err);
}

fb_code stor_open_file(const char *path_or_url, const fb_config *cfg, stor_rfile **out, fb_err *err) {
    if (!stor_is_url(path_or_url)) return stor_posix_open_path(path_or_url, out, err);
    if (cfg) return stor_s3_open_url(path_or_url, cfg, out, err);
    fb_config own;
    memset(&own, 0, sizeof own);
    fb_code rc = fb_config_init(&own, err);
    if (rc == FB_OK) rc = stor_s3_open_url(path_or_url, &own, out, err);
    fb_config_free(&own);
    return rc;
}
