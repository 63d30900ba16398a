/* dump_proc: runs a PostgreSQL client program (pg_dump, pg_restore) as a child process and streams its stdout.
 *
 * The child is started with posix_spawnp (PATH is searched when the program has no slash), with the worker's
 * environment plus the given entries, stdin from /dev/null, stdout to the caller's sink and stderr kept (the first
 * 4 KiB) for the error message: a failing helper is reported with its exit status and its own words. stdout and
 * stderr are drained together (poll), so a chatty stderr cannot block the child. When the sink fails the child is
 * terminated (SIGTERM) and waited for. Secrets never go on the command line: `ps` shows it to every user.
 */
#ifndef DUMP_PROC_H
#define DUMP_PROC_H

#include <stddef.h>

#include "common/fb_err.h"

/* Receives pieces of the child's stdout. A non-zero return stops the child and is passed up. */
typedef fb_code (*dump_proc_sink)(void *opaque, const void *buf, size_t len, fb_err *err);

/* argv: NULL-terminated, argv[0] the program (borrowed). env_add: NULL-terminated "NAME=value" entries added to
 * (or replacing those of) the environment, may be NULL. setting: the name of the setting that chooses the program
 * (for the hint of a "not found"). FB_ERR_USAGE when the program cannot be started, FB_ERR_PG when it exits
 * non-zero (message: its stderr). */
fb_code dump_proc_run(const char *const *argv, const char *const *env_add, const char *setting, dump_proc_sink sink,
                      void *opaque, fb_err *err);
/* The same, also handing the open descriptor pass_fd (borrowed; -1: none) to the child as its fd 3 (so a file that
 * has no name, e.g. an unlinked temporary, can be given as "/dev/fd/3"). */
fb_code dump_proc_run_fd(const char *const *argv, const char *const *env_add, const char *setting, int pass_fd,
                         dump_proc_sink sink, void *opaque, fb_err *err);

/* The same, collecting stdout into *out (malloc'd, NUL-terminated, *len without the NUL; caller frees). */
fb_code dump_proc_capture(const char *const *argv, const char *const *env_add, const char *setting, int pass_fd,
                          char **out, size_t *len, fb_err *err);

#endif
