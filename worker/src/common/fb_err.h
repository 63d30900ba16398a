/* fb_err: the one error type of the project.
 *
 * Functions that can fail return an fb_code (FB_OK = 0) and fill an fb_err that the caller owns (usually on
 * the stack). The message says what failed, on which object, why, and what to do: it is shown to operators as is,
 * in logs, in FAILED status events and in BackupRecord.error_message. Codes are declared once, in the table in
 * fb_err.c, and double as the process exit codes of the two binaries. Only main() exits.
 */
#ifndef FB_ERR_H
#define FB_ERR_H

#include <stdarg.h>
#include <stddef.h>

/* Stable numbers: they are exit codes and appear in scripts. Never renumber; add at the end. */
typedef enum fb_code {
    FB_OK = 0,
    FB_ERR_INTERNAL = 1,  /* a bug: an invariant did not hold */
    FB_ERR_USAGE = 2,     /* bad command line or configuration */
    FB_ERR_INVALID = 3,   /* an event or request that breaks the contract */
    FB_ERR_IO = 4,        /* file system */
    FB_ERR_PG = 5,        /* PostgreSQL refused or failed */
    FB_ERR_KAFKA = 6,     /* the broker refused or failed */
    FB_ERR_CRYPTO = 7,    /* authentication failed: tampered, truncated or wrong key */
    FB_ERR_FORMAT = 8,    /* not an artifact, or an unsupported version */
    FB_ERR_NOTFOUND = 9,  /* a table, artifact or record that does not exist */
    FB_ERR_TRANSIENT = 10,/* worth retrying later: lock timeout, database or broker down */
    FB_ERR_NOMEM = 11,
    FB_ERR_ABORTED = 12,  /* stopped by a signal or shutdown */
    FB_ERR_CONFLICT = 13, /* the target already has it (restore into a non-empty table, unarchive over a live row) */
    FB_ERR_VERIFY = 14,   /* a restore or verification found data that differs from the manifest */
    FB_ERR_DENIED = 15,   /* the database (the authority) does not allow this request: no matching policy or
                           * record, a system table, a cutoff too recent; never retried */
    FB_ERR_UNTRUSTED = 16,/* not signed by a trusted key: an unsigned or foreign message or artifact (fb_sign.h) */
} fb_code;

#define FB_ERR_MSG_MAX 2048

typedef struct fb_err {
    fb_code code;
    char msg[FB_ERR_MSG_MAX];
    char sqlstate[6]; /* the server's SQLSTATE when PostgreSQL refused (pgx_check sets it), else "": callers
                       * classify a failure by it, never by searching msg */
} fb_err;

/* Sets code and a printf-style message; returns code so callers can `return fb_err_set(...)`.
 * err may be NULL (the message is dropped). */
fb_code fb_err_set(fb_err *err, fb_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
fb_code fb_err_vset(fb_err *err, fb_code code, const char *fmt, va_list ap);

/* Prepends context ("backup of table \"x\": ") to an existing message, keeping its code. Returns err->code. */
fb_code fb_err_prefix(fb_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void fb_err_clear(fb_err *err);

/* Stable short name of a code ("invalid", "pg", ...): for logs and metrics labels. */
const char *fb_code_name(fb_code code);

/* True for codes where a retry later may succeed without anyone changing anything. */
int fb_code_is_transient(fb_code code);

#endif
