/* stor_posix: the local file system driver (see stor.h).
 *
 * Confinement does not rely on string checks alone: the root is opened once as a directory, and every component
 * of a relative path is opened with openat(O_NOFOLLOW | O_DIRECTORY) from there, so a symbolic link anywhere
 * below the root (even one created after the path was checked) is refused instead of followed. Missing folders
 * are created (0750) and their parents fsynced. Writes go to ".NAME.tmp" beside the final name (deterministic, so
 * a crashed run's leftover is truncated and reused), then fsync, renameat, fsync of the folder. The temporary is
 * locked (an open-file-description lock: it works between threads and processes, and dies with its holder), so a
 * job redelivered while its first run still writes gets FB_ERR_TRANSIENT instead of interleaving its bytes into
 * the same file; a crashed writer's lock is gone, so its leftover is reused.
 */
#define _GNU_SOURCE /* F_OFD_SETLK */
#include "storage/stor.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct posix_stor {
    stor base;
    int root_fd;
    char *root;
} posix_stor;

typedef struct posix_wfile {
    stor_wfile base;
    int dir_fd, fd;
    int locked;   /* we hold the temporary's lock: it is ours to truncate, rename or remove */
    char *tmp_name, *final_name, *rel;
} posix_wfile;

typedef struct posix_rfile {
    stor_rfile base;
    int fd;
    char *name_buf;
} posix_rfile;

/* Walks the folders of rel (all but its last component) from the root without following symbolic links,
 * creating missing ones when `create`. Returns the folder's fd in *dir_fd and a pointer to the last component. */
static fb_code posix_walk(posix_stor *s, const char *rel, int create, int *dir_fd, const char **base, fb_err *err) {
    fb_code rc = FB_OK;
    int fd = dup(s->root_fd);
    char comp[1025];
    const char *c = rel;
    if (fd < 0) return fb_err_set(err, FB_ERR_IO, "could not duplicate the storage root descriptor: %s", strerror(errno));
    for (;;) {
        const char *e = strchr(c, '/');
        if (!e) break;
        size_t len = (size_t)(e - c);
        memcpy(comp, c, len);
        comp[len] = '\0';
        int next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0 && errno == ENOENT && create) {
            if (mkdirat(fd, comp, 0750) != 0 && errno != EEXIST) {
                rc = fb_err_set(err, FB_ERR_IO, "could not create folder \"%.*s\" under storage root \"%s\": %s",
                                (int)(e - rel), rel, s->root, strerror(errno));
                goto out;
            }
            if (fsync(fd) != 0) {
                rc = fb_err_set(err, FB_ERR_IO, "could not fsync a folder under storage root \"%s\": %s", s->root,
                                strerror(errno));
                goto out;
            }
            next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (next < 0) {
            int e2 = errno;
            if (e2 == ELOOP || e2 == ENOTDIR)
                rc = fb_err_set(err, FB_ERR_INVALID,
                                "storage path \"%s\": \"%.*s\" is a symbolic link or not a folder; artifacts never leave "
                                "the storage root \"%s\" (replace the link with a real folder)",
                                rel, (int)(e - rel), rel, s->root);
            else if (e2 == ENOENT)
                rc = fb_err_set(err, FB_ERR_NOTFOUND, "\"%.*s\" does not exist under storage root \"%s\"",
                                (int)(e - rel), rel, s->root);
            else
                rc = fb_err_set(err, FB_ERR_IO, "could not open folder \"%.*s\" under storage root \"%s\": %s",
                                (int)(e - rel), rel, s->root, strerror(e2));
            goto out;
        }
        close(fd);
        fd = next;
        c = e + 1;
    }
    *dir_fd = fd;
    *base = c;
    fd = -1;
out:
    if (fd >= 0) close(fd);
    return rc;
}

static fb_code posix_w_write(stor_wfile *wf, const void *buf, size_t len, fb_err *err) {
    posix_wfile *f = (posix_wfile *)wf;
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(f->fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0)
            return fb_err_set(err, FB_ERR_IO, "could not write \"%s\": %s (check free space)", f->rel, strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return FB_OK;
}

static void posix_w_free(posix_wfile *f) {
    if (f->fd >= 0) close(f->fd);
    if (f->dir_fd >= 0) close(f->dir_fd);
    free(f->tmp_name);
    free(f->final_name);
    free(f->rel);
    free(f);
}

static void posix_w_abort(stor_wfile *wf) {
    posix_wfile *f = (posix_wfile *)wf;
    if (f->dir_fd >= 0 && f->locked) unlinkat(f->dir_fd, f->tmp_name, 0);
    posix_w_free(f);
}

/* The commit step of every atomic file write: a complete, fsynced temporary renamed over its final name, then the
 * folder fsynced so the rename survives a crash. what names the file in messages. */
static fb_code posix_publish_at(int dir_fd, const char *tmp_name, const char *final_name, const char *what, fb_err *err) {
    if (renameat(dir_fd, tmp_name, dir_fd, final_name) != 0)
        return fb_err_set(err, FB_ERR_IO, "could not rename the temporary file to \"%s\": %s", what, strerror(errno));
    if (fsync(dir_fd) != 0)
        return fb_err_set(err, FB_ERR_IO, "could not fsync the folder of \"%s\": %s", what, strerror(errno));
    return FB_OK;
}

fb_code stor_posix_publish(const char *dir, const char *tmp_name, const char *final_name, fb_err *err) {
    char what[4200];
    snprintf(what, sizeof what, "%s/%s", dir, final_name);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return fb_err_set(err, FB_ERR_IO, "could not open folder \"%s\": %s", dir, strerror(errno));
    fb_code rc = posix_publish_at(dfd, tmp_name, final_name, what, err);
    close(dfd);
    return rc;
}

static fb_code posix_w_commit(stor_wfile *wf, fb_err *err) {
    posix_wfile *f = (posix_wfile *)wf;
    fb_code rc = FB_OK;
    if (fsync(f->fd) != 0) {
        rc = fb_err_set(err, FB_ERR_IO, "could not fsync \"%s\": %s", f->rel, strerror(errno));
        goto out;
    }
    if (close(f->fd) != 0) {
        f->fd = -1;
        rc = fb_err_set(err, FB_ERR_IO, "could not close \"%s\": %s", f->rel, strerror(errno));
        goto out;
    }
    f->fd = -1;
    rc = posix_publish_at(f->dir_fd, f->tmp_name, f->final_name, f->rel, err);
out:
    if (rc != FB_OK) {
        posix_w_abort(wf);
        return rc;
    }
    posix_w_free(f);
    return rc;
}

static const stor_wfile_vt posix_wfile_vt = {posix_w_write, posix_w_commit, posix_w_abort};

static fb_code posix_create(stor *st, const char *rel, stor_wfile **out, fb_err *err) {
    posix_stor *s = (posix_stor *)st;
    posix_wfile *f = calloc(1, sizeof *f);
    const char *base = NULL;
    fb_code rc = FB_OK;
    if (!f) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    f->base.vt = &posix_wfile_vt;
    f->fd = f->dir_fd = -1;
    rc = posix_walk(s, rel, 1, &f->dir_fd, &base, err);
    if (rc) goto out;
    f->final_name = strdup(base);
    f->rel = strdup(rel);
    f->tmp_name = malloc(strlen(base) + 6);
    if (!f->final_name || !f->rel || !f->tmp_name) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }
    sprintf(f->tmp_name, ".%s.tmp", base);
    /* No O_TRUNC: only the holder of the lock may empty the file. */
    f->fd = openat(f->dir_fd, f->tmp_name, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (f->fd < 0) {
        int e = errno;
        rc = fb_err_set(err, e == ELOOP ? FB_ERR_INVALID : FB_ERR_IO,
                        "could not open output file \"%s/%s\" under storage root \"%s\": %s", rel, f->tmp_name, s->root,
                        strerror(e));
        goto out;
    }
    struct flock lk = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0, .l_pid = 0};
    if (fcntl(f->fd, F_OFD_SETLK, &lk) != 0) {
        int e = errno;
        rc = fb_err_set(err, e == EAGAIN || e == EACCES ? FB_ERR_TRANSIENT : FB_ERR_IO,
                        "\"%s\" is being written by another run of the same job right now (%s); retry when it ends", rel,
                        strerror(e));
        goto out;
    }
    f->locked = 1;
    if (ftruncate(f->fd, 0) != 0) {
        rc = fb_err_set(err, FB_ERR_IO, "could not empty the temporary file of \"%s\": %s", rel, strerror(errno));
        goto out;
    }
    *out = &f->base;
    f = NULL;
out:
    if (f && f->locked) unlinkat(f->dir_fd, f->tmp_name, 0);
    if (f) posix_w_free(f);
    return rc;
}

static fb_code posix_r_pread(stor_rfile *rf, void *buf, size_t len, uint64_t off, fb_err *err) {
    posix_rfile *f = (posix_rfile *)rf;
    char *p = buf;
    while (len > 0) {
        ssize_t n = pread(f->fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fb_err_set(err, FB_ERR_IO, "could not read \"%s\": %s", f->base.name, strerror(errno));
        if (n == 0) return fb_err_set(err, FB_ERR_FORMAT, "\"%s\" is truncated", f->base.name);
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return FB_OK;
}

static void posix_r_close(stor_rfile *rf) {
    posix_rfile *f = (posix_rfile *)rf;
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    free(f->name_buf);
    free(f);
}

static const stor_rfile_vt posix_rfile_vt = {posix_r_pread, posix_r_close};

/* Wraps an open fd (taken over) as a read file. */
static fb_code posix_rfile_wrap(int fd, const char *name, stor_rfile **out, fb_err *err) {
    struct stat st;
    posix_rfile *f = calloc(1, sizeof *f);
    if (!f) {
        close(fd);
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    f->base.vt = &posix_rfile_vt;
    f->fd = fd;
    f->name_buf = strdup(name);
    f->base.name = f->name_buf ? f->name_buf : "artifact";
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        posix_r_close(&f->base);
        return fb_err_set(err, FB_ERR_INVALID, "\"%s\" is not a regular file", name);
    }
    f->base.size = (uint64_t)st.st_size;
    *out = &f->base;
    return FB_OK;
}

static fb_code posix_open(stor *st, const char *rel, stor_rfile **out, fb_err *err) {
    posix_stor *s = (posix_stor *)st;
    int dir_fd = -1;
    const char *base = NULL;
    fb_code rc = posix_walk(s, rel, 0, &dir_fd, &base, err);
    if (rc) return rc;
    int fd = openat(dir_fd, base, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    int e = errno;
    close(dir_fd);
    if (fd < 0) {
        if (e == ENOENT)
            return fb_err_set(err, FB_ERR_NOTFOUND, "artifact \"%s\" does not exist under storage root \"%s\"", rel,
                              s->root);
        return fb_err_set(err, e == ELOOP ? FB_ERR_INVALID : FB_ERR_IO,
                          "could not open artifact \"%s\" under storage root \"%s\": %s", rel, s->root, strerror(e));
    }
    return posix_rfile_wrap(fd, rel, out, err);
}

static fb_code posix_remove(stor *st, const char *rel, fb_err *err) {
    posix_stor *s = (posix_stor *)st;
    int dir_fd = -1;
    const char *base = NULL;
    fb_code rc = posix_walk(s, rel, 0, &dir_fd, &base, err);
    if (rc) return rc == FB_ERR_NOTFOUND ? FB_OK : rc;
    if (unlinkat(dir_fd, base, 0) != 0 && errno != ENOENT)
        rc = fb_err_set(err, FB_ERR_IO, "could not remove \"%s\" under storage root \"%s\": %s", rel, s->root,
                        strerror(errno));
    else
        fsync(dir_fd);
    close(dir_fd);
    return rc;
}

/* Opens folder rel_dir itself (walking "rel_dir/x" yields the folder). */
static fb_code posix_open_dir(posix_stor *s, const char *rel_dir, int *dir_fd, fb_err *err) {
    size_t n = strlen(rel_dir);
    char *p = malloc(n + 3);
    const char *base = NULL;
    if (!p) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    memcpy(p, rel_dir, n);
    memcpy(p + n, "/x", 3);
    fb_code rc = posix_walk(s, p, 0, dir_fd, &base, err);
    free(p);
    return rc;
}

static fb_code posix_list(stor *st, const char *rel_dir, stor_list_fn fn, void *opaque, fb_err *err) {
    posix_stor *s = (posix_stor *)st;
    int dir_fd = -1;
    fb_code rc = posix_open_dir(s, rel_dir, &dir_fd, err);
    if (rc == FB_ERR_NOTFOUND) return FB_OK;
    if (rc) return rc;
    DIR *d = fdopendir(dir_fd);
    if (!d) {
        close(dir_fd);
        return fb_err_set(err, FB_ERR_IO, "could not list \"%s\" under storage root \"%s\": %s", rel_dir, s->root,
                          strerror(errno));
    }
    struct dirent *de;
    while (rc == FB_OK && (de = readdir(d))) {
        struct stat sb;
        if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode)) continue;
        stor_entry e = {de->d_name, (uint64_t)sb.st_size,
                        (int64_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000};
        rc = fn(opaque, &e, err);
    }
    closedir(d);
    return rc;
}

static fb_code posix_rename(stor *st, const char *rel_dir, const char *from, const char *to, fb_err *err) {
    posix_stor *s = (posix_stor *)st;
    int dir_fd = -1;
    fb_code rc = posix_open_dir(s, rel_dir, &dir_fd, err);
    if (rc) return rc;
    if (renameat(dir_fd, from, dir_fd, to) != 0)
        rc = fb_err_set(err, errno == ENOENT ? FB_ERR_NOTFOUND : FB_ERR_IO,
                        "could not rename \"%s/%s\" to \"%s\" under storage root \"%s\": %s", rel_dir, from, to,
                        s->root, strerror(errno));
    else if (fsync(dir_fd) != 0)
        rc = fb_err_set(err, FB_ERR_IO, "could not fsync folder \"%s\": %s", rel_dir, strerror(errno));
    close(dir_fd);
    return rc;
}

static void posix_free(stor *st) {
    posix_stor *s = (posix_stor *)st;
    if (s->root_fd >= 0) close(s->root_fd);
    free(s->root);
    free(s);
}

static const stor_vt posix_vt = {"posix",     posix_create, posix_open, posix_remove, posix_list,
                                  posix_rename, posix_free,   NULL};

fb_code stor_posix_new(const char *root, stor **out, fb_err *err) {
    *out = NULL;
    if (!root || !*root)
        return fb_err_set(err, FB_ERR_USAGE, "no storage root configured: set --storage-root DIR or FB_STORAGE_ROOT");
    posix_stor *s = calloc(1, sizeof *s);
    if (!s) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    s->base.vt = &posix_vt;
    s->root = strdup(root);
    s->root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->root_fd < 0 || !s->root) {
        int e = errno;
        posix_free(&s->base);
        return fb_err_set(err, FB_ERR_IO, "could not open storage root \"%s\": %s (create it or fix --storage-root)",
                          root, strerror(e));
    }
    *out = &s->base;
    return FB_OK;
}

fb_code stor_posix_open_path(const char *path, stor_rfile **out, fb_err *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return fb_err_set(err, e == ENOENT ? FB_ERR_NOTFOUND : FB_ERR_IO, "could not open artifact \"%s\": %s", path,
                          strerror(e));
    }
    return posix_rfile_wrap(fd, path, out, err);
}
