/* cap_tip: see cap_tip.h for what a tip states, why it is true and its format. */
#include "capture/cap_tip.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "capture/cap_segment.h"
#include "capture/cap_wire.h"

#define CAP_TIP_DOMAIN "fusion-backup capture tip v1"
#define CAP_TIP_SIGNED 112 /* bytes 0..112 are signed; then key id and signature */

enum { T_VERSION = 8, T_ZERO = 10, T_FROM = 16, T_TO = 24, T_MARK = 32, T_TIME = 40, T_STREAM = 48, T_KEY = 112,
       T_SIG = 128 };

void cap_tip_name(uint64_t from_lsn, uint64_t to_lsn, char name[CAP_TIP_NAME_MAX]) {
    snprintf(name, CAP_TIP_NAME_MAX, "tip-%016" PRIX64 "-%016" PRIX64 ".fbtip", from_lsn, to_lsn);
}

int cap_tip_parse_name(const char *name, uint64_t *from_lsn, uint64_t *to_lsn) {
    return cap_lsn_pair_parse_name(name, "tip-", ".fbtip", from_lsn, to_lsn);
}

static void tip_digest(const unsigned char *buf, unsigned char out[FB_SIGN_DIGEST_BYTES]) {
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, FB_SIGN_DIGEST_BYTES);
    crypto_generichash_update(&h, (const unsigned char *)CAP_TIP_DOMAIN, sizeof CAP_TIP_DOMAIN);
    crypto_generichash_update(&h, buf, CAP_TIP_SIGNED);
    crypto_generichash_final(&h, out, FB_SIGN_DIGEST_BYTES);
}

fb_code cap_tip_encode(const cap_tip *t, const char *stream, const fb_signer *signer, unsigned char buf[CAP_TIP_BYTES],
                       fb_err *err) {
    if (!stream || !*stream || strlen(stream) > CAP_SEG_STREAM_MAX || !signer || !signer->loaded)
        return fb_err_set(err, FB_ERR_INTERNAL, "a tip needs a stream id of 1..%d bytes and a loaded signing key",
                          CAP_SEG_STREAM_MAX);
    if (t->from_lsn >= t->to_lsn || t->mark_lsn > t->to_lsn || t->time_us < 0)
        return fb_err_set(err, FB_ERR_INTERNAL, "a tip from " CAP_LSN_FMT " to " CAP_LSN_FMT " (mark " CAP_LSN_FMT
                          ") is not a range", CAP_LSN_ARGS(t->from_lsn), CAP_LSN_ARGS(t->to_lsn), CAP_LSN_ARGS(t->mark_lsn));
    memset(buf, 0, CAP_TIP_BYTES);
    memcpy(buf, CAP_TIP_MAGIC, 8);
    buf[T_VERSION + 1] = CAP_TIP_VERSION;
    cap_be64_put(buf + T_FROM, t->from_lsn);
    cap_be64_put(buf + T_TO, t->to_lsn);
    cap_be64_put(buf + T_MARK, t->mark_lsn);
    cap_be64_put(buf + T_TIME, (uint64_t)t->time_us);
    memcpy(buf + T_STREAM, stream, strlen(stream));
    unsigned char dg[FB_SIGN_DIGEST_BYTES];
    tip_digest(buf, dg);
    memcpy(buf + T_KEY, signer->key_id, 16);
    fb_sign_digest(signer, CAP_TIP_SIGN_CONTEXT, dg, buf + T_SIG);
    return FB_OK;
}

/* Framing and fields, before the signature is looked at. */
static fb_code tip_check_fields(const unsigned char *buf, const char *name, const char *stream, cap_tip *t, fb_err *err) {
    static const unsigned char zero[6] = {0};
    unsigned ver = ((unsigned)buf[T_VERSION] << 8) | buf[T_VERSION + 1];
    if (memcmp(buf, CAP_TIP_MAGIC, 8) != 0 || ver != CAP_TIP_VERSION || memcmp(buf + T_ZERO, zero, sizeof zero) != 0)
        return fb_err_set(err, FB_ERR_FORMAT, "%s is not a capture tip of format %d (magic, version)", name, CAP_TIP_VERSION);
    char st[CAP_SEG_STREAM_MAX + 2] = {0};
    memcpy(st, buf + T_STREAM, 64);
    if (st[CAP_SEG_STREAM_MAX] || strcmp(st, stream) != 0)
        return fb_err_set(err, FB_ERR_VERIFY, "%s belongs to capture stream \"%.63s\", not \"%s\"", name, st, stream);
    t->from_lsn = cap_be64_get(buf + T_FROM);
    t->to_lsn = cap_be64_get(buf + T_TO);
    t->mark_lsn = cap_be64_get(buf + T_MARK);
    t->time_us = (int64_t)cap_be64_get(buf + T_TIME);
    uint64_t nf, nt;
    if (cap_tip_parse_name(name, &nf, &nt) != 0 || nf != t->from_lsn || nt != t->to_lsn)
        return fb_err_set(err, FB_ERR_FORMAT, "%s: its header says " CAP_LSN_FMT ".." CAP_LSN_FMT " (renamed?)", name,
                          CAP_LSN_ARGS(t->from_lsn), CAP_LSN_ARGS(t->to_lsn));
    if (t->from_lsn >= t->to_lsn || t->mark_lsn > t->to_lsn || t->time_us < 0)
        return fb_err_set(err, FB_ERR_FORMAT, "%s: from " CAP_LSN_FMT ", to " CAP_LSN_FMT ", mark " CAP_LSN_FMT
                          " is not a range", name, CAP_LSN_ARGS(t->from_lsn), CAP_LSN_ARGS(t->to_lsn),
                          CAP_LSN_ARGS(t->mark_lsn));
    return FB_OK;
}

fb_code cap_tip_parse(const unsigned char *buf, size_t len, const char *name, const char *stream,
                      const fb_keyring *signers, cap_tip *out, fb_err *err) {
    memset(out, 0, sizeof *out);
    if (len != CAP_TIP_BYTES)
        return fb_err_set(err, FB_ERR_FORMAT, "%s: %zu bytes, a capture tip has %d (truncated?)", name, len, CAP_TIP_BYTES);
    cap_tip t = {0};
    fb_code rc = tip_check_fields(buf, name, stream, &t, err);
    if (rc != FB_OK) return rc;
    for (int i = 0; i < 16; i++) {
        unsigned char c = buf[T_KEY + i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return fb_err_set(err, FB_ERR_FORMAT, "%s: its signing key id is not hex", name);
    }
    memcpy(t.signer, buf + T_KEY, 16);
    t.signer[16] = '\0';
    unsigned char dg[FB_SIGN_DIGEST_BYTES];
    char what[96];
    tip_digest(buf, dg);
    snprintf(what, sizeof what, "capture tip %s", name);
    rc = fb_keyring_verify(signers, t.signer, CAP_TIP_SIGN_CONTEXT, dg, buf + T_SIG, what, NULL, err);
    if (rc == FB_OK) *out = t;
    return rc;
}

fb_code cap_tip_write(stor *st, const char *dir, const char *stream, const fb_signer *signer, const cap_tip *t,
                      char name[CAP_TIP_NAME_MAX], fb_err *err) {
    unsigned char buf[CAP_TIP_BYTES];
    char rel[1200];
    stor_wfile *f = NULL;
    fb_code rc = cap_tip_encode(t, stream, signer, buf, err);
    if (rc != FB_OK) return rc;
    cap_tip_name(t->from_lsn, t->to_lsn, name);
    snprintf(rel, sizeof rel, "%s%s%s", dir && *dir ? dir : "", dir && *dir ? "/" : "", name);
    rc = stor_create(st, rel, &f, err);
    if (rc == FB_OK) rc = stor_wfile_write(f, buf, sizeof buf, err);
    if (rc == FB_OK) {
        rc = stor_wfile_commit(f, err);
        f = NULL;
    }
    stor_wfile_abort(f);
    if (rc != FB_OK) fb_err_prefix(err, "capture tip %s: ", name);
    return rc;
}

/* ---- finding the tip that counts ----------------------------------------------------------------------------- */

typedef struct tip_list {
    char v[CAP_TIP_MAX_FILES + 1][CAP_TIP_NAME_MAX];
    size_t n;
} tip_list;

static fb_code tip_collect(void *opaque, const stor_entry *e, fb_err *err) {
    (void)err;
    tip_list *l = opaque;
    uint64_t a, b;
    if (cap_tip_parse_name(e->name, &a, &b) != 0) return FB_OK;
    if (l->n <= CAP_TIP_MAX_FILES) snprintf(l->v[l->n], CAP_TIP_NAME_MAX, "%s", e->name);
    l->n++;
    return FB_OK;
}

/* One tip file, read (a wrong size is the parser's to say) and parsed: the return says whether it could be read,
 * why->code whether it is authentic (FB_OK) or why not. */
static fb_code tip_read_one(stor *st, const char *dir, const char *name, const char *stream, const fb_keyring *signers,
                            cap_tip *t, fb_err *why, fb_err *err) {
    char rel[1200];
    stor_rfile *f = NULL;
    unsigned char buf[CAP_TIP_BYTES + 1];
    snprintf(rel, sizeof rel, "%s%s%s", dir && *dir ? dir : "", dir && *dir ? "/" : "", name);
    fb_code rc = stor_open(st, rel, &f, err);
    if (rc != FB_OK) return rc;
    size_t len = f->size > sizeof buf ? sizeof buf : (size_t)f->size;
    rc = stor_rfile_pread(f, buf, len, 0, err);
    stor_rfile_close(f);
    if (rc != FB_OK) return rc;
    memset(why, 0, sizeof *why);
    (void)cap_tip_parse(buf, len, name, stream, signers, t, why);
    return FB_OK;
}

fb_code cap_tip_find(stor *st, const char *dir, const char *stream, const fb_keyring *signers, uint64_t chain_end,
                     cap_tip_found *f, fb_err *err) {
    memset(f, 0, sizeof *f);
    tip_list l = {0};
    fb_code rc = stor_list(st, dir, tip_collect, &l, err);
    if (rc == FB_ERR_NOTFOUND) return FB_OK; /* no folder: no tip */
    if (rc != FB_OK) return rc;
    if (l.n > CAP_TIP_MAX_FILES) {
        snprintf(f->problem, sizeof f->problem, "%zu tip files in %s (a capture leaves at most two): none is used; "
                 "remove the extra ones", l.n, dir);
        return FB_OK;
    }
    for (size_t i = 0; i < l.n; i++) {
        cap_tip t;
        fb_err why;
        if ((rc = tip_read_one(st, dir, l.v[i], stream, signers, &t, &why, err)) != FB_OK) return rc;
        if (why.code != FB_OK) { /* forged or damaged: never counts, always said */
            if (!f->problem[0]) snprintf(f->problem, sizeof f->problem, "tip refused: %s", why.msg);
            continue;
        }
        snprintf(f->names[f->n_names++], CAP_TIP_NAME_MAX, "%s", l.v[i]);
        if (t.from_lsn > chain_end && !f->ahead) /* the graver problem: said over a refused file's */
            f->ahead = 1, snprintf(f->problem, sizeof f->problem, "tip %s says the chain reached " CAP_LSN_FMT ", its segments end at "
                     CAP_LSN_FMT ": the last segments are missing", l.v[i], CAP_LSN_ARGS(t.from_lsn),
                     CAP_LSN_ARGS(chain_end));
        if (t.from_lsn == chain_end && (f->state != CAP_TIP_VALID || t.to_lsn > f->tip.to_lsn)) {
            f->state = CAP_TIP_VALID;
            f->tip = t;
        }
    }
    return FB_OK;
}
