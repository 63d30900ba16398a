/* dump_proc: child processes for the PostgreSQL client programs (see dump_proc.h).
 *
 * posix_spawnp rather than fork/exec: the worker is multi-threaded, and between fork and exec only
 * async-signal-safe calls are allowed; posix_spawn (glibc: clone(CLONE_VFORK)) also reports a failed exec as its
 * return value, so "pg_dump not found" is an error message, not a child that exits 127. Pipes are created
 * close-on-exec; the spawn's dup2 makes only the child's ends 0/1/2 inheritable.
 */
#define _GNU_SOURCE
#include "dump/dump_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fb_sbuf.h"

extern char **environ;

#define DP_STDERR_KEEP 4096
#define DP_BUF (64 * 1024)

/* environ with env_add's entries replacing (or added to) those of the same name; the strings are borrowed. */
static char **dp_env(const char *const *env_add) {
    size_t n = 0, k = 0;
    while (environ[n]) n++;
    while (env_add && env_add[k]) k++;
    char **e = calloc(n + k + 1, sizeof *e);
    if (!e) return NULL;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int replaced = 0;
        for (size_t j = 0; j < k && !replaced; j++) {
            const char *eq = strchr(env_add[j], '=');
            size_t nl = eq ? (size_t)(eq - env_add[j]) + 1 : strlen(env_add[j]);
            replaced = strncmp(environ[i], env_add[j], nl) == 0;
        }
        if (!replaced) e[m++] = environ[i];
    }
    for (size_t j = 0; j < k; j++) e[m++] = (char *)env_add[j];
    e[m] = NULL;
    return e;
}

fb_code dump_proc_run(const char *const *argv, const char *const *env_add, const char *setting, dump_proc_sink sink,
                      void *opaque, fb_err *err) {
    return dump_proc_run_fd(argv, env_add, setting, -1, sink, opaque, err);
}

fb_code dump_proc_run_fd(const char *const *argv, const char *const *env_add, const char *setting, int pass_fd,
                         dump_proc_sink sink, void *opaque, fb_err *err) {
    int out[2] = {-1, -1}, errp[2] = {-1, -1}, devnull = -1;
    posix_spawn_file_actions_t fa;
    int fa_init = 0;
    pid_t pid = -1;
    fb_code rc = FB_OK;
    char **env = dp_env(env_add);
    char *buf = malloc(DP_BUF);
    char ebuf[DP_STDERR_KEEP + 1];
    size_t elen = 0;
    if (!env || !buf) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(errp, O_CLOEXEC) != 0 ||
        (devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
        rc = fb_err_set(err, FB_ERR_IO, "could not create pipes for %s: %s", argv[0], strerror(errno));
        goto out;
    }
    posix_spawn_file_actions_init(&fa);
    fa_init = 1;
    posix_spawn_file_actions_adddup2(&fa, devnull, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
    if (pass_fd >= 0) posix_spawn_file_actions_adddup2(&fa, pass_fd, 3);
    int se = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, env);
    if (se != 0) {
        pid = -1;
        rc = fb_err_set(err, FB_ERR_USAGE, "could not run \"%s\": %s (set the %s setting to the program's path)",
                        argv[0], strerror(se), setting);
        goto out;
    }
    close(out[1]);
    close(errp[1]);
    out[1] = errp[1] = -1;

    /* Drain both pipes until both are closed. */
    struct pollfd pf[2] = {{out[0], POLLIN, 0}, {errp[0], POLLIN, 0}};
    int open_fds = 2;
    while (open_fds) {
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR) continue;
            rc = fb_err_set(err, FB_ERR_IO, "waiting for %s: %s", argv[0], strerror(errno));
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (pf[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t n = read(pf[i].fd, buf, DP_BUF);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                pf[i].fd = -1;
                open_fds--;
                continue;
            }
            if (i == 1) {
                size_t keep = (size_t)n < DP_STDERR_KEEP - elen ? (size_t)n : DP_STDERR_KEEP - elen;
                memcpy(ebuf + elen, buf, keep);
                elen += keep;
            } else if (rc == FB_OK && sink) {
                rc = sink(opaque, buf, (size_t)n, err);
                if (rc) kill(pid, SIGTERM); /* keep draining so it can exit */
            }
        }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    pid = -1;
    if (rc) goto out;
    ebuf[elen] = '\0';
    while (elen && (ebuf[elen - 1] == '\n' || ebuf[elen - 1] == ' ')) ebuf[--elen] = '\0';
    for (char *p = ebuf; *p; p++)
        if (*p == '\n') *p = ' ';
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) goto out;
    if (WIFEXITED(status))
        rc = fb_err_set(err, FB_ERR_PG, "%s failed (exit status %d): %s", argv[0], WEXITSTATUS(status),
                        elen ? ebuf : "(no message)");
    else
        rc = fb_err_set(err, FB_ERR_PG, "%s was killed by signal %d: %s", argv[0],
                        WIFSIGNALED(status) ? WTERMSIG(status) : 0, elen ? ebuf : "(no message)");
out:
    if (pid > 0) {
        kill(pid, SIGTERM);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    if (fa_init) posix_spawn_file_actions_destroy(&fa);
    for (int i = 0; i < 2; i++) {
        if (out[i] >= 0) close(out[i]);
        if (errp[i] >= 0) close(errp[i]);
    }
    if (devnull >= 0) close(devnull);
    free(env);
    free(buf);
    return rc;
}

static fb_code dp_collect(void *opaque, const void *buf, size_t len, fb_err *err) {
    fb_sbuf *b = opaque;
    fb_sbuf_put(b, buf, len);
    return b->oom ? fb_err_set(err, FB_ERR_NOMEM, "out of memory collecting a program's output") : FB_OK;
}

fb_code dump_proc_capture(const char *const *argv, const char *const *env_add, const char *setting, int pass_fd,
                          char **out, size_t *len, fb_err *err) {
    fb_sbuf b = {0};
    fb_code rc = dump_proc_run_fd(argv, env_add, setting, pass_fd, dp_collect, &b, err);
    *out = NULL;
    if (rc) {
        fb_sbuf_free(&b);
        return rc;
    }
    fb_sbuf_put(&b, "", 0);
    size_t n = b.len;
    if (!(*out = fb_sbuf_take(&b))) {
        *out = strdup("");
        n = 0;
        if (!*out) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    if (len) *len = n;
    return FB_OK;
}
