/* cap_segment: see cap_segment.h for the format and what a reader checks. */
#include "capture/cap_segment.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "capture/cap_wire.h"
#include "common/fb_sbuf.h"

#define CAP_SEG_DOMAIN "fusion-backup capture segment v1"
#define CAP_SEG_KEY_BYTES crypto_aead_xchacha20poly1305_ietf_KEYBYTES
#define CAP_SEG_NONCE_BYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define CAP_SEG_SEALED_BYTES (CAP_SEG_KEY_BYTES + crypto_box_SEALBYTES) /* 80 */

/* Header field offsets (cap_segment.h). */
enum { H_VERSION = 8, H_SEALED = 16, H_START = 96, H_END = 104, H_FIRST = 112, H_LAST = 120, H_NTXN = 128,
       H_PLAIN = 136, H_CTLEN = 144, H_NONCE = 152, H_STREAM = 176 };

void cap_segment_name(uint64_t start_lsn, uint64_t end_lsn, char name[CAP_SEG_NAME_MAX]) {
    snprintf(name, CAP_SEG_NAME_MAX, "cap-%016" PRIX64 "-%016" PRIX64 ".fbcap", start_lsn, end_lsn);
}

int cap_lsn_pair_parse_name(const char *name, const char *prefix, const char *suffix, uint64_t *a, uint64_t *b) {
    /* PREFIX (4 bytes) HEX16 '-' HEX16 SUFFIX (6 bytes): exactly what cap_segment_name and cap_tip_name write. */
    if (strlen(prefix) != 4 || strlen(suffix) != 6 || strlen(name) != 43 || strncmp(name, prefix, 4) != 0 ||
        name[20] != '-' || strcmp(name + 37, suffix) != 0)
        return -1;
    uint64_t v[2] = {0, 0};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 16; i++) {
            char c = name[4 + 17 * k + i];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0) return -1;
            v[k] = (v[k] << 4) | (uint64_t)d;
        }
    *a = v[0];
    *b = v[1];
    return 0;
}

int cap_segment_parse_name(const char *name, uint64_t *start_lsn, uint64_t *end_lsn) {
    return cap_lsn_pair_parse_name(name, "cap-", ".fbcap", start_lsn, end_lsn);
}

/* ---- payload ------------------------------------------------------------------------------------------------- */

/* Emits rel's definition unless this segment already holds this very version. */
static void pay_relation(fb_sbuf *b, const cap_rel *rel, const cap_rel ***done, size_t *ndone) {
    for (size_t i = 0; i < *ndone; i++)
        if ((*done)[i] == rel) return;
    const cap_rel **p = realloc(*done, (*ndone + 1) * sizeof *p);
    if (!p) {
        b->oom = 1;
        return;
    }
    *done = p;
    p[(*ndone)++] = rel;
    cap_wr_u8(b, 'R');
    cap_wr_u32(b, rel->relid);
    cap_wr_str16(b, rel->nspname);
    cap_wr_str16(b, rel->relname);
    cap_wr_u8(b, (uint8_t)rel->replident);
    cap_wr_u16(b, rel->ncols);
    for (uint16_t i = 0; i < rel->ncols; i++) {
        cap_wr_u8(b, rel->cols[i].flags);
        cap_wr_str16(b, rel->cols[i].name);
        cap_wr_u32(b, rel->cols[i].type_oid);
        cap_wr_u32(b, (uint32_t)rel->cols[i].typmod);
    }
}

static void pay_txn(fb_sbuf *b, const cap_txn *t, const cap_rel ***done, size_t *ndone) {
    for (size_t i = 0; i < t->nchanges; i++) {
        const cap_change *c = &t->changes[i];
        if (c->kind == CAP_TRUNCATE)
            for (uint32_t k = 0; k < c->ntrunc; k++) pay_relation(b, c->trunc_rels[k], done, ndone);
        else
            pay_relation(b, c->rel, done, ndone);
    }
    cap_wr_u8(b, 'X');
    cap_wr_u32(b, t->xid);
    cap_wr_u64(b, t->commit_lsn);
    cap_wr_u64(b, t->end_lsn);
    cap_wr_u64(b, (uint64_t)t->commit_time_us);
    cap_wr_u32(b, (uint32_t)t->nchanges);
    for (size_t i = 0; i < t->nchanges; i++) {
        const cap_change *c = &t->changes[i];
        cap_wr_u8(b, (uint8_t)c->kind);
        if (c->kind == CAP_TRUNCATE) {
            cap_wr_u8(b, c->trunc_options);
            cap_wr_u32(b, c->ntrunc);
            for (uint32_t k = 0; k < c->ntrunc; k++) cap_wr_u32(b, c->trunc_rels[k]->relid);
            continue;
        }
        cap_wr_u32(b, c->rel->relid);
        if (c->kind != CAP_INSERT) cap_wr_u8(b, (uint8_t)c->old_kind);
        if (c->old_kind) cap_tuple_write(b, &c->old_tup);
        if (c->kind != CAP_DELETE) cap_tuple_write(b, &c->new_tup);
    }
}

static fb_code pay_read_relation(cap_rd *r, cap_relset *rels, fb_err *err) {
    int oom = 0;
    cap_rel *rel = calloc(1, sizeof *rel);
    if (!rel) return fb_err_set(err, FB_ERR_NOMEM, "out of memory for a relation");
    rel->relid = cap_rd_u32(r);
    rel->nspname = cap_rd_str16(r, &oom);
    rel->relname = cap_rd_str16(r, &oom);
    rel->replident = (char)cap_rd_u8(r);
    uint16_t ncols = cap_rd_u16(r);
    if (ncols > CAP_MAX_COLS) r->bad = 1;
    if (!r->bad && !oom && !(rel->cols = calloc(ncols ? ncols : 1, sizeof(cap_col)))) oom = 1;
    for (uint16_t i = 0; rel->cols && i < ncols && !r->bad && !oom; i++, rel->ncols++) {
        rel->cols[i].flags = cap_rd_u8(r);
        rel->cols[i].name = cap_rd_str16(r, &oom);
        rel->cols[i].type_oid = cap_rd_u32(r);
        rel->cols[i].typmod = (int32_t)cap_rd_u32(r);
    }
    if (r->bad || oom) {
        cap_rel_free(rel);
        return oom ? fb_err_set(err, FB_ERR_NOMEM, "out of memory for a relation")
                   : fb_err_set(err, FB_ERR_FORMAT, "a relation record is truncated or malformed");
    }
    cap_relset_add(rels, rel);
    return FB_OK;
}

static fb_code pay_rel(cap_rd *r, const cap_relset *rels, const cap_rel **out, fb_err *err) {
    uint32_t relid = cap_rd_u32(r);
    *out = r->bad ? NULL : cap_relset_current(rels, relid);
    if (!*out) return fb_err_set(err, FB_ERR_FORMAT, "a change refers to relation %u, not defined before it", relid);
    return FB_OK;
}

static fb_code pay_tuple(cap_rd *r, const cap_rel *rel, cap_tuple *tp, size_t *bytes, fb_err *err) {
    fb_code rc = cap_tuple_read(r, tp, bytes, err);
    if (rc == FB_OK && tp->ncols != rel->ncols)
        rc = fb_err_set(err, FB_ERR_FORMAT, "a change on %s.%s has %u columns, its relation %u", rel->nspname,
                        rel->relname, tp->ncols, rel->ncols);
    return rc;
}

static fb_code pay_read_change(cap_rd *r, const cap_relset *rels, cap_txn *t, fb_err *err) {
    char kind = (char)cap_rd_u8(r);
    if (kind != CAP_INSERT && kind != CAP_UPDATE && kind != CAP_DELETE && kind != CAP_TRUNCATE)
        return fb_err_set(err, FB_ERR_FORMAT, "a change of unknown kind 0x%02x", (unsigned char)kind);
    cap_change *c = cap_txn_add(t, (cap_kind)kind);
    if (!c) return fb_err_set(err, FB_ERR_NOMEM, "out of memory for a change");
    if (kind == CAP_TRUNCATE) {
        c->trunc_options = cap_rd_u8(r);
        uint32_t n = cap_rd_u32(r);
        if (r->bad || n == 0 || n > cap_rd_left(r) / 4) return fb_err_set(err, FB_ERR_FORMAT, "a truncate record is malformed");
        if (!(c->trunc_rels = calloc(n, sizeof *c->trunc_rels))) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        for (; c->ntrunc < n; c->ntrunc++)
            if (pay_rel(r, rels, &c->trunc_rels[c->ntrunc], err) != FB_OK) return err->code;
        return FB_OK;
    }
    fb_code rc = pay_rel(r, rels, &c->rel, err);
    if (rc != FB_OK) return rc;
    if (kind != CAP_INSERT) c->old_kind = (char)cap_rd_u8(r);
    int old_ok = kind == CAP_UPDATE ? (c->old_kind == 0 || c->old_kind == 'K' || c->old_kind == 'O')
                                    : kind == CAP_DELETE ? (c->old_kind == 'K' || c->old_kind == 'O') : 1;
    if (!old_ok || r->bad) return fb_err_set(err, FB_ERR_FORMAT, "a '%c' change has old-row marker 0x%02x", kind, (unsigned char)c->old_kind);
    if (c->old_kind && (rc = pay_tuple(r, c->rel, &c->old_tup, &t->bytes, err)) != FB_OK) return rc;
    if (kind != CAP_DELETE) rc = pay_tuple(r, c->rel, &c->new_tup, &t->bytes, err);
    return rc;
}

static fb_code pay_read_txn(cap_rd *r, const cap_relset *rels, cap_txn **out, fb_err *err) {
    cap_txn *t = cap_txn_new();
    if (!t) return fb_err_set(err, FB_ERR_NOMEM, "out of memory for a transaction");
    t->xid = cap_rd_u32(r);
    t->commit_lsn = cap_rd_u64(r);
    t->end_lsn = cap_rd_u64(r);
    t->commit_time_us = (int64_t)cap_rd_u64(r);
    uint32_t n = cap_rd_u32(r);
    fb_code rc = r->bad ? fb_err_set(err, FB_ERR_FORMAT, "a transaction record is truncated") : FB_OK;
    for (uint32_t i = 0; rc == FB_OK && i < n; i++) rc = pay_read_change(r, rels, t, err);
    if (rc != FB_OK) {
        cap_txn_free(t);
        return rc;
    }
    *out = t;
    return FB_OK;
}

/* The payload against the header: count, LSN order inside [start, end], the last end = end, commit times. */
static fb_code pay_check_txn(const cap_segment *s, const cap_txn *t, uint32_t i, fb_err *err) {
    uint64_t floor = i ? s->txns[i - 1]->end_lsn : s->start_lsn;
    if (t->commit_lsn < floor || t->end_lsn <= t->commit_lsn || t->end_lsn > s->end_lsn)
        return fb_err_set(err, FB_ERR_FORMAT, "transaction %u (xid %u) at " CAP_LSN_FMT " is out of order or outside the segment's range",
                          i + 1, t->xid, CAP_LSN_ARGS(t->commit_lsn));
    return FB_OK;
}

static fb_code pay_parse(cap_segment *s, const unsigned char *p, size_t len, fb_err *err) {
    cap_rd r;
    cap_rd_init(&r, p, len);
    if (!(s->txns = calloc(s->ntxn ? s->ntxn : 1, sizeof *s->txns))) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    uint32_t n = 0;
    fb_code rc = FB_OK;
    while (rc == FB_OK && cap_rd_left(&r) > 0) {
        char rec = (char)cap_rd_u8(&r);
        if (rec == 'R') rc = pay_read_relation(&r, &s->rels, err);
        else if (rec == 'X' && n < s->ntxn) {
            rc = pay_read_txn(&r, &s->rels, &s->txns[n], err);
            if (rc == FB_OK) rc = pay_check_txn(s, s->txns[n], n, err);
            n++;
        } else rc = fb_err_set(err, FB_ERR_FORMAT, "unexpected payload record 0x%02x (or more transactions than the header's %u)",
                               (unsigned char)rec, s->ntxn);
    }
    if (rc == FB_OK && (n != s->ntxn || n == 0 || s->txns[n - 1]->end_lsn != s->end_lsn ||
                        s->txns[0]->commit_time_us != s->first_commit_us || s->txns[n - 1]->commit_time_us != s->last_commit_us))
        rc = fb_err_set(err, FB_ERR_FORMAT, "the payload's %u transactions do not match the header (%u, ending at " CAP_LSN_FMT ")",
                        n, s->ntxn, CAP_LSN_ARGS(s->end_lsn));
    return rc;
}

/* ---- writing ------------------------------------------------------------------------------------------------- */

static void seg_digest(const unsigned char *header, const unsigned char *ct, size_t ctlen, unsigned char out[32]) {
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, 32);
    crypto_generichash_update(&h, (const unsigned char *)CAP_SEG_DOMAIN, sizeof CAP_SEG_DOMAIN);
    crypto_generichash_update(&h, header, CAP_SEG_HEADER_BYTES);
    crypto_generichash_update(&h, ct, ctlen);
    crypto_generichash_final(&h, out, 32);
}

static fb_code seg_check_input(const cap_seg_out *o, uint64_t start_lsn, cap_txn *const *txns, size_t n, fb_err *err) {
    if (!o->stream || !*o->stream || strlen(o->stream) > CAP_SEG_STREAM_MAX)
        return fb_err_set(err, FB_ERR_USAGE, "a capture stream id must be 1..%d bytes", CAP_SEG_STREAM_MAX);
    if (!o->signer || !o->signer->loaded)
        return fb_err_set(err, FB_ERR_USAGE, "change segments are signed: set --sign-key");
    if (n == 0 || n > UINT32_MAX) return fb_err_set(err, FB_ERR_INTERNAL, "a segment needs at least one transaction");
    uint64_t floor = start_lsn;
    for (size_t i = 0; i < n; i++) {
        if (txns[i]->commit_lsn < floor || txns[i]->end_lsn <= txns[i]->commit_lsn)
            return fb_err_set(err, FB_ERR_INTERNAL, "transaction xid %u at " CAP_LSN_FMT " is before " CAP_LSN_FMT
                              " (the segment's start or the previous transaction's end)", txns[i]->xid,
                              CAP_LSN_ARGS(txns[i]->commit_lsn), CAP_LSN_ARGS(floor));
        floor = txns[i]->end_lsn;
    }
    return FB_OK;
}

static void seg_header(unsigned char *h, const cap_seg_out *o, uint64_t start_lsn, cap_txn *const *txns, size_t n,
                       uint64_t plain, uint64_t ctlen) {
    memset(h, 0, CAP_SEG_HEADER_BYTES);
    memcpy(h, CAP_SEG_MAGIC, 8);
    h[H_VERSION] = 0;
    h[H_VERSION + 1] = CAP_SEG_VERSION;
    cap_be64_put(h + H_START, start_lsn);
    cap_be64_put(h + H_END, txns[n - 1]->end_lsn);
    cap_be64_put(h + H_FIRST, (uint64_t)txns[0]->commit_time_us);
    cap_be64_put(h + H_LAST, (uint64_t)txns[n - 1]->commit_time_us);
    cap_be32_put(h + H_NTXN, (uint32_t)n);
    cap_be64_put(h + H_PLAIN, plain);
    cap_be64_put(h + H_CTLEN, ctlen);
    randombytes_buf(h + H_NONCE, CAP_SEG_NONCE_BYTES);
    memcpy(h + H_STREAM, o->stream, strlen(o->stream));
}

fb_code cap_segment_write(stor *st, const char *dir, const cap_seg_out *o, uint64_t start_lsn, cap_txn *const *txns,
                          size_t n, char *name, uint64_t *end_lsn, fb_err *err) {
    fb_code rc = seg_check_input(o, start_lsn, txns, n, err);
    if (rc != FB_OK) return rc;
    fb_sbuf pay = {0};
    const cap_rel **done = NULL;
    size_t ndone = 0;
    for (size_t i = 0; i < n; i++) pay_txn(&pay, txns[i], &done, &ndone);
    free(done);
    if (pay.oom) return fb_err_set(err, FB_ERR_NOMEM, "out of memory building a change segment");
    if (pay.len > CAP_SEG_MAX_PAYLOAD) {
        fb_sbuf_free(&pay);
        return fb_err_set(err, FB_ERR_INVALID, "a change segment of %zu bytes exceeds the %" PRIu64 " a reader accepts",
                          pay.len, CAP_SEG_MAX_PAYLOAD);
    }
    /* Step: compress, then encrypt under a fresh data key sealed to the backup public key. */
    size_t zcap = ZSTD_compressBound(pay.len);
    unsigned char *buf = malloc(zcap + crypto_aead_xchacha20poly1305_ietf_ABYTES + CAP_SEG_HEADER_BYTES + CAP_SEG_TRAILER_BYTES);
    unsigned char *z = malloc(zcap ? zcap : 1);
    unsigned char key[CAP_SEG_KEY_BYTES];
    stor_wfile *f = NULL;
    if (!buf || !z) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory compressing a change segment");
        goto out;
    }
    size_t zlen = ZSTD_compress(z, zcap, pay.p ? pay.p : "", pay.len, o->zstd_level ? o->zstd_level : 3);
    if (ZSTD_isError(zlen)) {
        rc = fb_err_set(err, FB_ERR_INTERNAL, "zstd: %s", ZSTD_getErrorName(zlen));
        goto out;
    }
    unsigned char *h = buf, *ct = buf + CAP_SEG_HEADER_BYTES;
    uint64_t ctlen = zlen + crypto_aead_xchacha20poly1305_ietf_ABYTES;
    seg_header(h, o, start_lsn, txns, n, pay.len, ctlen);
    crypto_aead_xchacha20poly1305_ietf_keygen(key);
    if (crypto_box_seal(h + H_SEALED, key, sizeof key, o->pk) != 0) {
        rc = fb_err_set(err, FB_ERR_CRYPTO, "could not seal the segment key to the backup public key");
        goto out;
    }
    crypto_aead_xchacha20poly1305_ietf_encrypt(ct, NULL, z, zlen, h, CAP_SEG_HEADER_BYTES, NULL, h + H_NONCE, key);
    /* Step: sign header and ciphertext. */
    unsigned char dg[32], *tr = ct + ctlen;
    seg_digest(h, ct, ctlen, dg);
    memcpy(tr, o->signer->key_id, 16);
    fb_sign_digest(o->signer, CAP_SEG_SIGN_CONTEXT, dg, tr + 16);
    /* Step: write durably under the final name (stor: temp + fsync + rename). */
    char rel[1200];
    cap_segment_name(start_lsn, txns[n - 1]->end_lsn, name);
    snprintf(rel, sizeof rel, "%s%s%s", dir && *dir ? dir : "", dir && *dir ? "/" : "", name);
    rc = stor_create(st, rel, &f, err);
    if (rc == FB_OK) rc = stor_wfile_write(f, buf, CAP_SEG_HEADER_BYTES + ctlen + CAP_SEG_TRAILER_BYTES, err);
    if (rc == FB_OK) {
        rc = stor_wfile_commit(f, err);
        f = NULL;
    }
    if (rc == FB_OK) *end_lsn = txns[n - 1]->end_lsn;
    else fb_err_prefix(err, "change segment %s: ", name);
out:
    stor_wfile_abort(f);
    sodium_memzero(key, sizeof key);
    free(buf);
    free(z);
    fb_sbuf_free(&pay);
    return rc;
}

/* ---- reading ------------------------------------------------------------------------------------------------- */

static fb_code seg_check_header(cap_segment *s, const unsigned char *h, uint64_t size, const cap_seg_in *in, fb_err *err) {
    if (memcmp(h, CAP_SEG_MAGIC, 8) != 0) return fb_err_set(err, FB_ERR_FORMAT, "%s is not a change segment (bad magic)", s->name);
    unsigned ver = ((unsigned)h[H_VERSION] << 8) | h[H_VERSION + 1];
    if (ver != CAP_SEG_VERSION)
        return fb_err_set(err, FB_ERR_FORMAT, "%s: change segment format %u, this build reads %u", s->name, ver, CAP_SEG_VERSION);
    uint64_t ctlen = cap_be64_get(h + H_CTLEN);
    if (ctlen < crypto_aead_xchacha20poly1305_ietf_ABYTES || ctlen != size - CAP_SEG_HEADER_BYTES - CAP_SEG_TRAILER_BYTES)
        return fb_err_set(err, FB_ERR_FORMAT, "%s: %" PRIu64 " bytes, its header says %" PRIu64 " bytes of ciphertext (truncated?)",
                          s->name, size, ctlen);
    char stream[CAP_SEG_STREAM_MAX + 2] = {0};
    memcpy(stream, h + H_STREAM, 64);
    if (stream[CAP_SEG_STREAM_MAX] || strcmp(stream, in->stream) != 0)
        return fb_err_set(err, FB_ERR_VERIFY, "%s belongs to capture stream \"%.63s\", not \"%s\"", s->name, stream, in->stream);
    s->start_lsn = cap_be64_get(h + H_START);
    s->end_lsn = cap_be64_get(h + H_END);
    s->first_commit_us = (int64_t)cap_be64_get(h + H_FIRST);
    s->last_commit_us = (int64_t)cap_be64_get(h + H_LAST);
    s->ntxn = cap_be32_get(h + H_NTXN);
    uint64_t ns, ne;
    if (cap_segment_parse_name(s->name, &ns, &ne) != 0 || ns != s->start_lsn || ne != s->end_lsn)
        return fb_err_set(err, FB_ERR_FORMAT, "%s: its header says " CAP_LSN_FMT ".." CAP_LSN_FMT " (renamed?)", s->name,
                          CAP_LSN_ARGS(s->start_lsn), CAP_LSN_ARGS(s->end_lsn));
    if (s->end_lsn <= s->start_lsn || s->ntxn == 0 || cap_be64_get(h + H_PLAIN) > CAP_SEG_MAX_PAYLOAD)
        return fb_err_set(err, FB_ERR_FORMAT, "%s: empty range, no transactions or an oversized payload", s->name);
    return FB_OK;
}

static fb_code seg_decrypt(cap_segment *s, const unsigned char *h, const unsigned char *ct, uint64_t ctlen,
                           const cap_seg_in *in, fb_err *err) {
    unsigned char key[CAP_SEG_KEY_BYTES];
    if (crypto_box_seal_open(key, h + H_SEALED, CAP_SEG_SEALED_BYTES, in->pk, in->sk) != 0)
        return fb_err_set(err, FB_ERR_CRYPTO, "%s: the data key does not open with this secret key (another backup key?)", s->name);
    size_t zlen = ctlen - crypto_aead_xchacha20poly1305_ietf_ABYTES;
    uint64_t plain = cap_be64_get(h + H_PLAIN);
    unsigned char *z = malloc(zlen ? zlen : 1), *p = malloc(plain ? plain : 1);
    fb_code rc = FB_OK;
    if (!z || !p) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory reading %s", s->name);
    else if (crypto_aead_xchacha20poly1305_ietf_decrypt(z, NULL, NULL, ct, ctlen, h, CAP_SEG_HEADER_BYTES, h + H_NONCE, key) != 0)
        rc = fb_err_set(err, FB_ERR_CRYPTO, "%s: authentication failed (the file was changed or damaged)", s->name);
    else {
        size_t got = ZSTD_decompress(p, plain, z, zlen);
        if (ZSTD_isError(got) || got != plain)
            rc = fb_err_set(err, FB_ERR_FORMAT, "%s: the payload does not decompress to its %" PRIu64 " bytes", s->name, plain);
        else if ((rc = pay_parse(s, p, plain, err)) != FB_OK)
            fb_err_prefix(err, "%s: ", s->name);
    }
    sodium_memzero(key, sizeof key);
    free(z);
    free(p);
    return rc;
}

fb_code cap_segment_read(stor *st, const char *dir, const char *name, const cap_seg_in *in, cap_segment **out,
                         fb_err *err) {
    *out = NULL;
    cap_segment *s = calloc(1, sizeof *s);
    stor_rfile *f = NULL;
    unsigned char *buf = NULL;
    char rel[1200];
    fb_code rc;
    if (!s) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    snprintf(s->name, sizeof s->name, "%.*s", CAP_SEG_NAME_MAX - 1, name);
    snprintf(rel, sizeof rel, "%s%s%s", dir && *dir ? dir : "", dir && *dir ? "/" : "", name);
    rc = stor_open(st, rel, &f, err);
    if (rc != FB_OK) goto out;
    if (f->size < CAP_SEG_HEADER_BYTES + CAP_SEG_TRAILER_BYTES + crypto_aead_xchacha20poly1305_ietf_ABYTES ||
        f->size > CAP_SEG_MAX_PAYLOAD * 2) {
        rc = fb_err_set(err, FB_ERR_FORMAT, "%s: %" PRIu64 " bytes is not the size of a change segment", name, f->size);
        goto out;
    }
    if (!(buf = malloc(f->size))) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory reading %s", name);
        goto out;
    }
    rc = stor_rfile_pread(f, buf, f->size, 0, err);
    if (rc == FB_OK) rc = seg_check_header(s, buf, f->size, in, err);
    if (rc != FB_OK) goto out;
    /* Step: the signature, before anything is decrypted. */
    uint64_t ctlen = f->size - CAP_SEG_HEADER_BYTES - CAP_SEG_TRAILER_BYTES;
    const unsigned char *ct = buf + CAP_SEG_HEADER_BYTES, *tr = ct + ctlen;
    unsigned char dg[32];
    char what[96];
    seg_digest(buf, ct, ctlen, dg);
    memcpy(s->signer, tr, 16);
    s->signer[16] = '\0';
    snprintf(what, sizeof what, "change segment %s", name);
    rc = fb_keyring_verify(in->signers, s->signer, CAP_SEG_SIGN_CONTEXT, dg, tr + 16, what, NULL, err);
    if (rc == FB_OK && in->sk) rc = seg_decrypt(s, buf, ct, ctlen, in, err);
out:
    stor_rfile_close(f);
    free(buf);
    if (rc == FB_OK) *out = s;
    else cap_segment_free(s);
    return rc;
}

void cap_segment_free(cap_segment *s) {
    if (!s) return;
    for (uint32_t i = 0; s->txns && i < s->ntxn; i++) cap_txn_free(s->txns[i]);
    free(s->txns);
    cap_relset_clear(&s->rels);
    free(s);
}

/* ---- the chain ----------------------------------------------------------------------------------------------- */

typedef struct seg_names {
    char (*v)[CAP_SEG_NAME_MAX];
    size_t n, cap;
} seg_names;

static fb_code chain_collect(void *opaque, const stor_entry *e, fb_err *err) {
    (void)err;
    seg_names *l = opaque;
    uint64_t a, b;
    if (cap_segment_parse_name(e->name, &a, &b) != 0) return FB_OK;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        void *p = realloc(l->v, cap * sizeof *l->v);
        if (!p) return fb_err_set(err, FB_ERR_NOMEM, "out of memory listing change segments");
        l->v = p;
        l->cap = cap;
    }
    snprintf(l->v[l->n++], CAP_SEG_NAME_MAX, "%s", e->name);
    return FB_OK;
}

static int chain_cmp(const void *a, const void *b) { return strcmp(a, b); }

fb_code cap_segment_chain(stor *st, const char *dir, const cap_seg_in *in, uint64_t base_lsn, cap_chain_fn fn,
                          void *opaque, uint64_t *end_lsn, fb_err *err) {
    seg_names l = {0};
    fb_code rc = stor_list(st, dir, chain_collect, &l, err);
    if (rc == FB_OK && l.n > 1) qsort(l.v, l.n, sizeof *l.v, chain_cmp); /* fixed-width hex: name order is LSN order */
    uint64_t at = base_lsn;
    for (size_t i = 0; rc == FB_OK && i < l.n; i++) {
        uint64_t a, b;
        cap_segment_parse_name(l.v[i], &a, &b);
        if (b <= base_lsn) continue; /* before this chain's base (an older base's segments) */
        if (a != at) {
            rc = fb_err_set(err, FB_ERR_VERIFY, "capture chain in %s is broken at " CAP_LSN_FMT ": the next segment, %s, starts at "
                            CAP_LSN_FMT " (%s)", dir, CAP_LSN_ARGS(at), l.v[i], CAP_LSN_ARGS(a),
                            a > at ? "transactions are missing: a gap" : "it overlaps the one before");
            break;
        }
        cap_segment *s = NULL;
        rc = cap_segment_read(st, dir, l.v[i], in, &s, err);
        if (rc == FB_OK && fn) rc = fn(opaque, s, err);
        cap_segment_free(s);
        if (rc == FB_OK) at = b;
    }
    free(l.v);
    if (rc == FB_OK) *end_lsn = at;
    return rc;
}
