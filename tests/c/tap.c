/* tap: see tap.h. */
#include "tap.h"

#include <sodium.h>

#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

int tap_passed, tap_failed;

int tap_check(int ok, const char *expr, const char *file, int line, const char *detail) {
    if (ok) {
        tap_passed++;
    } else {
        tap_failed++;
        printf("not ok %d - %s (%s:%d)%s%s\n", tap_passed + tap_failed, expr, file, line, detail ? ": " : "",
               detail ? detail : "");
        fflush(stdout);
    }
    return ok;
}

const char *tap_need_env(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) {
        printf("not ok - environment variable %s is not set: run the tests through tests/run.sh, which starts the "
               "local services\n0 passed, 1 failed\n", name);
        exit(1);
    }
    return v;
}

int tap_done(void) {
    printf("%d passed, %d failed\n", tap_passed, tap_failed);
    return tap_failed ? 1 : 0;
}

PGconn *tap_pg_connect(const char *base, const char *dbname) {
    char ci[1024];
    snprintf(ci, sizeof ci, "%s dbname=%s", base, dbname);
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK) {
        printf("not ok - cannot connect to %s: %s\n", ci, PQerrorMessage(c));
        exit(1);
    }
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    return c;
}

fb_code tap_collect(void *opaque, const void *data, size_t len, fb_err *err) {
    tap_buf *b = opaque;
    (void)err;
    if (b->len + len > b->cap) {
        size_t cap = (b->len + len) * 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    return FB_OK;
}

void tap_signer(fb_signer *s, fb_keyring *kr) {
    memset(s, 0, sizeof *s);
    crypto_sign_keypair(s->pk, s->sk);
    fb_sign_key_id(s->pk, s->key_id);
    s->loaded = 1;
    if (!kr) return;
    fb_trusted_key *k = &kr->keys[kr->n++];
    memcpy(k->pk, s->pk, sizeof k->pk);
    memcpy(k->key_id, s->key_id, sizeof k->key_id);
    k->path = strdup("(test key)");
}

unsigned char *tap_slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    *len = 0;
    if (!f) return calloc(1, 1);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc(n > 0 ? (size_t)n + 1 : 1);
    if (p && n > 0 && fread(p, 1, (size_t)n, f) == (size_t)n) *len = (size_t)n;
    fclose(f);
    return p;
}

void tap_spit(const char *path, const unsigned char *p, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(p, 1, len, f);
    fclose(f);
}
