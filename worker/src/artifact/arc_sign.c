/* arc_sign: the signature block of format-5 artifacts. See arc_sign.h and FORMAT.md "Signatures (format 5)".
 *
 * Every field of a digest is framed with its length (u64 little endian) before it, so no two different inputs
 * frame alike; each digest starts with its own label, so a manifest signature never verifies as an index one.
 */
#include "artifact/arc_sign.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "artifact/arc_format.h"
#include "artifact/arc_index.h"
#include "common/fb_log.h"

#define AS_LABEL_MANIFEST "fusion-backup artifact manifest v1"
#define AS_LABEL_INDEX "fusion-backup artifact index v1"

static void as_field(crypto_generichash_state *h, const void *p, size_t n) {
    unsigned char len[8];
    arc_put_u64(len, (uint64_t)n);
    crypto_generichash_update(h, len, sizeof len);
    if (n) crypto_generichash_update(h, p, n);
}

static void as_u64(crypto_generichash_state *h, uint64_t v) {
    unsigned char b[8];
    arc_put_u64(b, v);
    as_field(h, b, sizeof b);
}

void arc_sign_manifest_digest(const unsigned char *header16, const char *job_id, uint64_t moff, uint64_t mlen,
                              const unsigned char ct_hash[32], unsigned char out[FB_SIGN_DIGEST_BYTES]) {
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, FB_SIGN_DIGEST_BYTES);
    as_field(&h, AS_LABEL_MANIFEST, sizeof AS_LABEL_MANIFEST - 1);
    as_field(&h, header16, ARC_AD_BYTES_V2);
    as_field(&h, job_id, strlen(job_id));
    as_u64(&h, moff);
    as_u64(&h, mlen);
    as_field(&h, ct_hash, 32);
    crypto_generichash_final(&h, out, FB_SIGN_DIGEST_BYTES);
}

void arc_sign_index_digest(const unsigned char *header16, const char *job_id,
                           const unsigned char manifest_sig[FB_SIGN_BYTES], uint64_t ioff, const void *index,
                           size_t ilen, unsigned char out[FB_SIGN_DIGEST_BYTES]) {
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, FB_SIGN_DIGEST_BYTES);
    as_field(&h, AS_LABEL_INDEX, sizeof AS_LABEL_INDEX - 1);
    as_field(&h, header16, ARC_AD_BYTES_V2);
    as_field(&h, job_id, strlen(job_id));
    as_field(&h, manifest_sig, FB_SIGN_BYTES);
    as_u64(&h, ioff);
    as_field(&h, index, ilen);
    crypto_generichash_final(&h, out, FB_SIGN_DIGEST_BYTES);
}

fb_code arc_sign_block_encode(const arc_sig_block *b, unsigned char out[ARC_SIG_BLOCK_BYTES], fb_err *err) {
    size_t jl = strlen(b->job_id);
    if (jl == 0 || jl > ARC_SIG_JOB_MAX)
        return fb_err_set(err, FB_ERR_INVALID, "job id \"%s\" cannot be signed into an artifact (1 to %d bytes)",
                          b->job_id, ARC_SIG_JOB_MAX);
    memset(out, 0, ARC_SIG_BLOCK_BYTES);
    unsigned char *p = out;
    memcpy(p, ARC_SIG_MAGIC, 8), p += 8;
    memcpy(p, b->manifest_key, 16), p += 16;
    memcpy(p, b->manifest_sig, FB_SIGN_BYTES), p += FB_SIGN_BYTES;
    memcpy(p, b->index_key, 16), p += 16;
    memcpy(p, b->index_sig, FB_SIGN_BYTES), p += FB_SIGN_BYTES;
    arc_put_u16(p, (uint16_t)jl), p += 2;
    memcpy(p, b->job_id, jl);
    return FB_OK;
}

static int as_key_id_ok(const char *id) {
    for (int i = 0; i < 16; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f'))) return 0;
    return 1;
}

fb_code arc_sign_block_decode(const unsigned char in[ARC_SIG_BLOCK_BYTES], arc_sig_block *b, fb_err *err) {
    const unsigned char *p = in;
    memset(b, 0, sizeof *b);
    if (memcmp(p, ARC_SIG_MAGIC, 8) != 0)
        return fb_err_set(err, FB_ERR_UNTRUSTED, "its signature block is missing or damaged (no \"FBAKSIG1\" where the "
                          "trailer puts it)");
    p += 8;
    memcpy(b->manifest_key, p, 16), p += 16;
    memcpy(b->manifest_sig, p, FB_SIGN_BYTES), p += FB_SIGN_BYTES;
    memcpy(b->index_key, p, 16), p += 16;
    memcpy(b->index_sig, p, FB_SIGN_BYTES), p += FB_SIGN_BYTES;
    uint16_t jl = arc_get_u16(p);
    p += 2;
    if (!as_key_id_ok(b->manifest_key) || !as_key_id_ok(b->index_key) || jl == 0 || jl > ARC_SIG_JOB_MAX ||
        memchr(p, 0, jl))
        return fb_err_set(err, FB_ERR_UNTRUSTED, "its signature block is malformed (key ids or job id)");
    for (size_t i = jl; i < ARC_SIG_JOB_MAX; i++)
        if (p[i]) return fb_err_set(err, FB_ERR_UNTRUSTED, "its signature block is malformed (job id padding)");
    memcpy(b->job_id, p, jl);
    return FB_OK;
}

void arc_sign_manifest(const fb_signer *s, const unsigned char *header16, const char *job_id, uint64_t moff,
                       uint64_t mlen, const unsigned char ct_hash[32], arc_sig_block *b) {
    unsigned char d[FB_SIGN_DIGEST_BYTES];
    snprintf(b->job_id, sizeof b->job_id, "%s", job_id);
    arc_sign_manifest_digest(header16, b->job_id, moff, mlen, ct_hash, d);
    fb_sign_digest(s, ARC_SIGN_CONTEXT, d, b->manifest_sig);
    memcpy(b->manifest_key, s->key_id, FB_SIGN_KEY_ID_HEX);
}

void arc_sign_index(const fb_signer *s, const unsigned char *header16, uint64_t ioff, const void *index, size_t ilen,
                    arc_sig_block *b) {
    unsigned char d[FB_SIGN_DIGEST_BYTES];
    arc_sign_index_digest(header16, b->job_id, b->manifest_sig, ioff, index, ilen, d);
    fb_sign_digest(s, ARC_SIGN_CONTEXT, d, b->index_sig);
    memcpy(b->index_key, s->key_id, FB_SIGN_KEY_ID_HEX);
}

fb_code arc_sign_check(const arc_sig_block *b, const arc_trust *trust, const char *name,
                       const unsigned char *header16, uint64_t moff, uint64_t mlen, const unsigned char ct_hash[32],
                       uint64_t ioff, const void *index, size_t ilen, fb_err *err) {
    unsigned char d[FB_SIGN_DIGEST_BYTES];
    char what[600];
    fb_code rc;
    snprintf(what, sizeof what, "artifact \"%s\" (backup %s)", name, b->job_id);
    if (!trust->signers || trust->signers->n == 0)
        return fb_err_set(err, FB_ERR_UNTRUSTED, "%s is signed by key %s, but no trusted signers are configured: give "
                          "the workers' public signing keys with --trusted-signer FILE (repeatable) or "
                          "FB_TRUSTED_SIGNERS", what, b->manifest_key);
    arc_sign_manifest_digest(header16, b->job_id, moff, mlen, ct_hash, d);
    if ((rc = fb_keyring_verify(trust->signers, b->manifest_key, ARC_SIGN_CONTEXT, d, b->manifest_sig, what, NULL,
                                err))) {
        fb_err_prefix(err, "refusing it (nothing was read from it): manifest: ");
        return rc;
    }
    char iwhat[640];
    snprintf(iwhat, sizeof iwhat, "the chain index of %s", what);
    arc_sign_index_digest(header16, b->job_id, b->manifest_sig, ioff, index, ilen, d);
    if ((rc = fb_keyring_verify(trust->signers, b->index_key, ARC_SIGN_CONTEXT, d, b->index_sig, iwhat, NULL, err))) {
        fb_err_prefix(err, "refusing it: ");
        return rc;
    }
    if (trust->job_id && strcmp(trust->job_id, b->job_id) != 0)
        return fb_err_set(err, FB_ERR_VERIFY, "refusing \"%s\": it is backup %s (signed by key %s), not backup %s as "
                          "its name or record says: another job's artifact copied or renamed over this one",
                          name, b->job_id, b->manifest_key, trust->job_id);
    return FB_OK;
}

fb_code arc_sign_layout(stor_rfile *f, arc_sig_layout *l, fb_err *err) {
    unsigned char tr[ARC_TRAILER_BYTES_V2];
    uint64_t tail = ARC_SIG_BLOCK_BYTES + ARC_TRAILER_BYTES_V2;
    if (f->size < ARC_HEADER_BYTES + tail)
        return fb_err_set(err, FB_ERR_FORMAT, "\"%s\" is truncated (shorter than a header, a signature block and a "
                          "trailer)", f->name);
    fb_code rc = stor_rfile_pread(f, tr, sizeof tr, f->size - ARC_TRAILER_BYTES_V2, err);
    if (rc) return rc;
    l->moff = arc_get_u64(tr + 8);
    l->mlen = arc_get_u64(tr + 16);
    l->ioff = arc_get_u64(tr + 24);
    l->ilen = arc_get_u64(tr + 32);
    l->soff = f->size - tail;
    if (memcmp(tr, ARC_TRAILER_MAGIC, 8) != 0 || l->moff < ARC_HEADER_BYTES || l->mlen > f->size ||
        l->ilen > f->size || l->moff + l->mlen != l->ioff || l->ioff + l->ilen != l->soff)
        return fb_err_set(err, FB_ERR_FORMAT, "\"%s\" has no valid trailer: the file is truncated or was altered (an "
                          "interrupted copy?)", f->name);
    /* The index has no cap (its chunk records grow with the data, FORMAT.md "Chunk lists"); its head has one. */
    if (l->mlen > ARC_MANIFEST_MAX)
        return fb_err_set(err, FB_ERR_FORMAT, "\"%s\": manifest too large", f->name);
    return FB_OK;
}

fb_code arc_sign_unsigned(const arc_trust *trust, const char *name, int version, fb_err *err) {
    if (!trust->allow_unsigned)
        return fb_err_set(err, FB_ERR_UNTRUSTED, "refusing \"%s\": it is artifact format %d, written before artifacts "
                          "were signed (format 5), so nothing shows who wrote it (anyone with the public key can make "
                          "one); nothing was read from it. If you know where it comes from, pass --allow-unsigned",
                          name, version);
    FB_WARN("\"%s\" is an UNSIGNED artifact (format %d): reading it only because of --allow-unsigned; nothing proves "
            "a worker wrote it", name, version);
    return FB_OK;
}

fb_code arc_sign_peek(stor_rfile *f, const arc_trust *trust, arc_sig_status *st, fb_err *err) {
    arc_sig_status dummy;
    arc_sig_layout l;
    arc_sig_block b;
    unsigned char h[ARC_AD_BYTES_V2], sb[ARC_SIG_BLOCK_BYTES], ct_hash[32];
    unsigned char *buf = NULL;
    fb_code rc;
    if (!st) st = &dummy;
    memset(st, 0, sizeof *st);
    st->state = ARC_SIG_UNTRUSTED;
    if (f->size < ARC_HEADER_BYTES || (rc = stor_rfile_pread(f, h, sizeof h, 0, err))) {
        if (f->size < ARC_HEADER_BYTES) rc = fb_err_set(err, FB_ERR_FORMAT, "\"%s\" is too short", f->name);
        return rc;
    }
    if (memcmp(h, ARC_MAGIC, ARC_MAGIC_LEN) != 0)
        return fb_err_set(err, FB_ERR_FORMAT, "\"%s\" is not a fusion-backup artifact (bad magic)", f->name);
    int version = arc_get_u16(h + 8);
    if (version < ARC_SIG_FIRST_VERSION) {
        /* a listing, not a read: no warning here, st says it */
        st->state = ARC_SIG_UNSIGNED;
        return trust->allow_unsigned ? FB_OK : arc_sign_unsigned(trust, f->name, version, err);
    }
    if (version > ARC_FORMAT_VERSION)
        return fb_err_set(err, FB_ERR_FORMAT, "\"%s\" has artifact format version %d; this build reads up to %d",
                          f->name, version, ARC_FORMAT_VERSION);
    if ((rc = arc_sign_layout(f, &l, err))) return rc;
    if ((rc = stor_rfile_pread(f, sb, sizeof sb, l.soff, err))) return rc;
    if ((rc = arc_sign_block_decode(sb, &b, err))) {
        fb_err_prefix(err, "\"%s\": ", f->name);
        return rc;
    }
    memcpy(st->manifest_key, b.manifest_key, sizeof st->manifest_key);
    memcpy(st->index_key, b.index_key, sizeof st->index_key);
    memcpy(st->job_id, b.job_id, sizeof st->job_id);
    /* The signature covers the index's head (its records are bound by the head's per-table hashes): its length is
     * in its first lines (index version 3; versions 1 and 2 are all head). */
    uint64_t hl = l.ilen;
    if (l.ilen) {
        char first[ARC_INDEX_PEEK_BYTES];
        uint64_t head = 0;
        size_t fl = l.ilen < sizeof first ? (size_t)l.ilen : sizeof first;
        if ((rc = stor_rfile_pread(f, first, fl, l.ioff, err))) return rc;
        if ((rc = arc_index_head_len(first, fl, &head, err))) {
            fb_err_prefix(err, "\"%s\": ", f->name);
            return rc;
        }
        if (head) hl = head;
        if (hl > l.ilen || hl > ARC_INDEX_HEAD_MAX)
            return fb_err_set(err, FB_ERR_FORMAT, "\"%s\": the chain index's head is too long", f->name);
    }
    /* One buffer for the manifest ciphertext (hashed in pieces) and then the index head (kept whole). */
    size_t cap = (size_t)(hl > (1u << 20) ? hl : (1u << 20));
    if (!(buf = malloc(cap ? cap : 1))) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    crypto_generichash_state hs;
    crypto_generichash_init(&hs, NULL, 0, sizeof ct_hash);
    for (uint64_t off = 0; off < l.mlen; off += cap) {
        size_t n = l.mlen - off < cap ? (size_t)(l.mlen - off) : cap;
        if ((rc = stor_rfile_pread(f, buf, n, l.moff + off, err))) goto out;
        crypto_generichash_update(&hs, buf, n);
    }
    crypto_generichash_final(&hs, ct_hash, sizeof ct_hash);
    if (hl && (rc = stor_rfile_pread(f, buf, (size_t)hl, l.ioff, err))) goto out;
    rc = arc_sign_check(&b, trust, f->name, h, l.moff, l.mlen, ct_hash, l.ioff, buf, (size_t)hl, err);
    if (!rc) st->state = ARC_SIG_TRUSTED;
out:
    free(buf);
    return rc;
}

int arc_sign_job_from_name(const char *path, char *out, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base), s = strlen(".fbak");
    if (n <= s || strcmp(base + n - s, ".fbak") != 0 || n - s >= cap || base[0] == '.') return -1;
    memcpy(out, base, n - s);
    out[n - s] = '\0';
    return 0;
}
