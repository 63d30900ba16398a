/* tap: the smallest test helper that says what broke. Each CHECK prints "ok"/"not ok" with the expression and
 * location; tap_done() prints "N passed, N failed" and returns the exit code. Tests needing the local services
 * call tap_need_env("FB_TEST_PG") and fail (not skip) when it is missing: tests/run.sh always sets it. */
#ifndef TAP_H
#define TAP_H

#include <stdio.h>

extern int tap_passed, tap_failed;

#define CHECK(cond) tap_check(!!(cond), #cond, __FILE__, __LINE__, NULL)
#define CHECKF(cond, ...) do { char tap_msg_[1024]; snprintf(tap_msg_, sizeof tap_msg_, __VA_ARGS__); \
        tap_check(!!(cond), #cond, __FILE__, __LINE__, tap_msg_); } while (0)
#define CHECK_EQ_INT(a, b) do { long long tap_a_ = (long long)(a), tap_b_ = (long long)(b); \
        CHECKF(tap_a_ == tap_b_, "%s = %lld, expected %s = %lld", #a, tap_a_, #b, tap_b_); } while (0)
#define CHECK_EQ_STR(a, b) do { const char *tap_a_ = (a), *tap_b_ = (b); \
        CHECKF(tap_a_ && tap_b_ && strcmp(tap_a_, tap_b_) == 0, "%s = \"%s\", expected \"%s\"", #a, \
               tap_a_ ? tap_a_ : "(null)", tap_b_ ? tap_b_ : "(null)"); } while (0)

int tap_check(int ok, const char *expr, const char *file, int line, const char *detail);
/* Returns the value of environment variable name, or prints why the test cannot run and exits 1. */
const char *tap_need_env(const char *name);
int tap_done(void);

/* A connection to database dbname on the server of conninfo base (quiet: client_min_messages = warning); prints
 * why and exits 1 when it cannot connect. The caller PQfinish()es it. */
struct pg_conn;
struct pg_conn *tap_pg_connect(const char *base, const char *dbname);

/* A growable byte buffer and a sink that appends to it (the artifact reader's segment callback shape): for tests
 * that read a segment whole. The caller free()s p. */
#include <stddef.h>

#include "common/fb_err.h"

typedef struct tap_buf {
    unsigned char *p;
    size_t len, cap;
} tap_buf;
fb_code tap_collect(void *opaque, const void *data, size_t len, fb_err *err);

/* A whole file into a malloc'd buffer (*len = 0 when it cannot be read whole), and a buffer into a file: for tests
 * that damage artifacts byte by byte. The caller free()s what tap_slurp returns. */
unsigned char *tap_slurp(const char *path, size_t *len);
void tap_spit(const char *path, const unsigned char *p, size_t len);

/* A fresh in-memory Ed25519 signing key and, when kr is not NULL, a keyring that trusts it (tests that write or
 * read signed artifacts). fb_keyring_free(kr) when done. */
#include "common/fb_sign.h"
void tap_signer(fb_signer *s, fb_keyring *kr);

#endif
