/* fb_err: error codes declared once, messages a person can act on. See fb_err.h. */
#include "common/fb_err.h"

#include "common/fb_utf8.h"

#include <stdio.h>
#include <string.h>

static const struct {
    fb_code code;
    const char *name;
    int transient;
} fb_code_table[] = {
    {FB_OK, "ok", 0},
    {FB_ERR_INTERNAL, "internal", 0},
    {FB_ERR_USAGE, "usage", 0},
    {FB_ERR_INVALID, "invalid", 0},
    {FB_ERR_IO, "io", 0},
    {FB_ERR_PG, "pg", 0},
    {FB_ERR_KAFKA, "kafka", 1},
    {FB_ERR_CRYPTO, "crypto", 0},
    {FB_ERR_FORMAT, "format", 0},
    {FB_ERR_NOTFOUND, "notfound", 0},
    {FB_ERR_TRANSIENT, "transient", 1},
    {FB_ERR_NOMEM, "nomem", 1},
    {FB_ERR_ABORTED, "aborted", 0},
    {FB_ERR_CONFLICT, "conflict", 0},
    {FB_ERR_VERIFY, "verify", 0},
    {FB_ERR_DENIED, "denied", 0},
    {FB_ERR_UNTRUSTED, "untrusted", 0},
};

const char *fb_code_name(fb_code code) {
    for (size_t i = 0; i < sizeof fb_code_table / sizeof fb_code_table[0]; i++)
        if (fb_code_table[i].code == code) return fb_code_table[i].name;
    return "unknown";
}

int fb_code_is_transient(fb_code code) {
    for (size_t i = 0; i < sizeof fb_code_table / sizeof fb_code_table[0]; i++)
        if (fb_code_table[i].code == code) return fb_code_table[i].transient;
    return 0;
}

fb_code fb_err_vset(fb_err *err, fb_code code, const char *fmt, va_list ap) {
    if (err) {
        err->code = code;
        err->sqlstate[0] = '\0';
        int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        /* Cut at a character boundary: the message travels in status events, which must be valid UTF-8. */
        if (n >= (int)sizeof err->msg) fb_utf8_cut(err->msg, sizeof err->msg - 1, sizeof err->msg - 1);
    }
    return code;
}

fb_code fb_err_set(fb_err *err, fb_code code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fb_err_vset(err, code, fmt, ap);
    va_end(ap);
    return code;
}

fb_code fb_err_prefix(fb_err *err, const char *fmt, ...) {
    if (!err) return FB_ERR_INTERNAL;
    char prefix[512], old[FB_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int pn = vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    if (pn >= (int)sizeof prefix) fb_utf8_cut(prefix, sizeof prefix - 1, sizeof prefix - 1);
    memcpy(old, err->msg, sizeof old);
    int n = snprintf(err->msg, sizeof err->msg, "%s%s", prefix, old);
    if (n >= (int)sizeof err->msg) fb_utf8_cut(err->msg, sizeof err->msg - 1, sizeof err->msg - 1);
    return err->code;
}

void fb_err_clear(fb_err *err) {
    if (!err) return;
    err->code = FB_OK;
    err->msg[0] = '\0';
    err->sqlstate[0] = '\0';
}
