/* kfk_sign: see kfk_sign.h. */
#include "kafka/kfk_sign.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define KFK_NULL_KEY_LEN 0xFFFFFFFFu

static void kfk_sign_u32(crypto_generichash_state *st, uint32_t v) {
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    crypto_generichash_update(st, b, sizeof b);
}

static void kfk_sign_u64(crypto_generichash_state *st, uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    crypto_generichash_update(st, b, sizeof b);
}

void kfk_sign_message_digest(const char *topic, const void *key, size_t key_len, const void *value, size_t value_len,
                             unsigned char digest[FB_SIGN_DIGEST_BYTES]) {
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, FB_SIGN_DIGEST_BYTES);
    size_t tl = strlen(topic);
    kfk_sign_u32(&st, (uint32_t)tl);
    crypto_generichash_update(&st, (const unsigned char *)topic, tl);
    if (!key) {
        kfk_sign_u32(&st, KFK_NULL_KEY_LEN);
    } else {
        kfk_sign_u32(&st, (uint32_t)key_len); /* keys are at most a few hundred bytes (librdkafka caps them far below 4 GiB) */
        crypto_generichash_update(&st, key, key_len);
    }
    kfk_sign_u64(&st, (uint64_t)value_len);
    if (value_len) crypto_generichash_update(&st, value, value_len);
    crypto_generichash_final(&st, digest, FB_SIGN_DIGEST_BYTES);
}

void kfk_sign_headers(const fb_signer *s, const char *topic, const void *key, size_t key_len, const void *value,
                      size_t value_len, char key_id[FB_SIGN_KEY_ID_HEX], char sig[KFK_SIG_HEX]) {
    unsigned char d[FB_SIGN_DIGEST_BYTES], raw[FB_SIGN_BYTES];
    kfk_sign_message_digest(topic, key, key_len, value, value_len, d);
    fb_sign_digest(s, KFK_SIGN_CONTEXT, d, raw);
    memcpy(key_id, s->key_id, FB_SIGN_KEY_ID_HEX);
    sodium_bin2hex(sig, KFK_SIG_HEX, raw, sizeof raw);
}

/* Exactly `want` lowercase hex digits. */
static int kfk_sign_is_hex(const char *v, size_t n, size_t want) {
    if (n != want) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f'))) return 0;
    return 1;
}

/* The one value of header `name` (exactly want_hex lowercase hex digits) into out, or FB_ERR_UNTRUSTED saying
 * whether it is missing, given twice or malformed. */
static fb_code kfk_sign_header(const rd_kafka_headers_t *hdrs, const char *name, size_t want_hex, char *out,
                               const char *what, fb_err *err) {
    const void *v = NULL, *first = NULL;
    size_t n = 0, first_n = 0, count = 0;
    for (size_t idx = 0; hdrs && rd_kafka_header_get(hdrs, idx, name, &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR; idx++) {
        if (count++ == 0) first = v, first_n = n;
    }
    if (count == 0)
        return fb_err_set(err, FB_ERR_UNTRUSTED, "%s is not signed: header %s is missing (every message must be "
                          "signed by its sender's key; see schemas/SPEC.md, \"Signed messages\")", what, name);
    if (count > 1)
        return fb_err_set(err, FB_ERR_UNTRUSTED, "%s has header %s %zu times (a duplicate header is never trusted: "
                          "which one would count?)", what, name, count);
    if (!first || !kfk_sign_is_hex(first, first_n, want_hex))
        return fb_err_set(err, FB_ERR_UNTRUSTED, "%s has a malformed header %s (%zu bytes; expected %zu lowercase hex "
                          "digits)", what, name, first_n, want_hex);
    memcpy(out, first, want_hex);
    out[want_hex] = '\0';
    return FB_OK;
}

fb_code kfk_sign_verify(const fb_keyring *kr, const char *topic, const void *key, size_t key_len, const void *value,
                        size_t value_len, const rd_kafka_headers_t *hdrs, const char *hdr_key_id, const char *hdr_sig,
                        const char *what, const fb_trusted_key **who, fb_err *err) {
    char key_id[FB_SIGN_KEY_ID_HEX], sig_hex[KFK_SIG_HEX];
    unsigned char sig[FB_SIGN_BYTES], d[FB_SIGN_DIGEST_BYTES];
    if (who) *who = NULL;
    fb_code rc;
    if ((rc = kfk_sign_header(hdrs, hdr_key_id, 2 * FB_SIGN_KEY_ID_BYTES, key_id, what, err)) ||
        (rc = kfk_sign_header(hdrs, hdr_sig, 2 * FB_SIGN_BYTES, sig_hex, what, err)))
        return rc;
    sodium_hex2bin(sig, sizeof sig, sig_hex, 2 * FB_SIGN_BYTES, NULL, NULL, NULL);
    kfk_sign_message_digest(topic, key, key_len, value, value_len, d);
    return fb_keyring_verify(kr, key_id, KFK_SIGN_CONTEXT, d, sig, what, who, err);
}

fb_code kfk_sign_verify_message(const fb_keyring *kr, const rd_kafka_message_t *m, const char *what,
                                const fb_trusted_key **who, fb_err *err) {
    rd_kafka_headers_t *h = NULL;
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR) h = NULL;
    return kfk_sign_verify(kr, rd_kafka_topic_name(m->rkt), m->key, m->key_len, m->payload, m->len, h, KFK_HDR_KEY_ID,
                           KFK_HDR_SIG, what, who, err);
}

fb_code kfk_sign_load(const char *role, const char *sign_key, int need_signer, fb_signer *signer, const char *list,
                      const char *list_setting, const char *trusts_whom, fb_keyring *kr, fb_err *err) {
    fb_code rc;
    if (need_signer && (rc = fb_signer_load(signer, sign_key, "--sign-key (FB_SIGN_KEY)", err))) {
        fb_err_prefix(err, "%s signs every message it sends: ", role);
        return rc;
    }
    if (kr) {
        if ((rc = fb_keyring_load(kr, list, list_setting, err))) return rc;
        if (kr->n == 0)
            return fb_err_set(err, FB_ERR_USAGE, "%s accepts only messages signed by a key it trusts, and none is "
                              "configured: set %s to the public key file(s) of %s (made with `fusion-backup keygen "
                              "--sign --out PREFIX`: give PREFIX.pub here, keep PREFIX.key with its owner)", role,
                              list_setting, trusts_whom);
    }
    return FB_OK;
}
