/* kfk_sign: who sent a Kafka message. The one framing of a message's signature (schemas/SPEC.md, "Signed
 * messages"), used by every C producer (kfk_produce_sync signs each message it sends) and every consumer (the
 * worker, the recorder, replay, tail, status).
 *
 * A message's topic, key and value are hashed into a 32-byte BLAKE2b-256 digest
 *   u32le len(topic) || topic || u32le len(key) || key || u64le len(value) || value
 * (a null key: length 0xFFFFFFFF and no bytes) and signed with fb_sign's construction under context "message".
 * The key id and the signature travel in two headers, so the value keeps its bytes (the golden vectors stay
 * valid) and the topic is bound: a status event re-sent as a request, or a dead letter re-sent as a status, does
 * not verify. Other headers (fusion.error, ...) are not covered: they are information for people, never input
 * to a decision (replay routes by the decoded type and checks the original request's signature itself).
 *
 * A message is trusted only when it carries exactly one well-formed fb-key-id and exactly one well-formed fb-sig
 * header, its key id names a key of the verifier's keyring, and the signature verifies. Anything else is
 * FB_ERR_UNTRUSTED with a reason a person can act on (which header, which key id, which keys are trusted).
 */
#ifndef KFK_SIGN_H
#define KFK_SIGN_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "common/fb_err.h"
#include "common/fb_sign.h"

#define KFK_SIGN_CONTEXT "message"
#define KFK_HDR_KEY_ID "fb-key-id"
#define KFK_HDR_SIG "fb-sig"
/* A dead letter carries the signature headers of the message it copies under these names, so `replay` can
 * check that the original request was signed by a trusted requester before it re-signs it. */
#define KFK_HDR_SOURCE_KEY_ID "fusion.source.fb-key-id"
#define KFK_HDR_SOURCE_SIG "fusion.source.fb-sig"
#define KFK_SIG_HEX (2 * FB_SIGN_BYTES + 1) /* with the NUL */

/* The digest of (topic, key, value) as framed above. key NULL: a null key (key_len ignored). */
void kfk_sign_message_digest(const char *topic, const void *key, size_t key_len, const void *value, size_t value_len,
                             unsigned char digest[FB_SIGN_DIGEST_BYTES]);

/* The two header values for a message signed by s: key_id (16 hex) and sig (128 hex), NUL-terminated. */
void kfk_sign_headers(const fb_signer *s, const char *topic, const void *key, size_t key_len, const void *value,
                      size_t value_len, char key_id[FB_SIGN_KEY_ID_HEX], char sig[KFK_SIG_HEX]);

/* Verifies (topic, key, value) against kr with the signature headers found in hdrs under the names hdr_key_id
 * and hdr_sig (KFK_HDR_KEY_ID/KFK_HDR_SIG for a message's own; the SOURCE names for a dead letter's original).
 * hdrs may be NULL (no headers: untrusted). `what` names the message in errors ("request on topic X"). On
 * success *who (may be NULL) is the key that signed. Returns FB_OK or FB_ERR_UNTRUSTED with the reason. */
fb_code kfk_sign_verify(const fb_keyring *kr, const char *topic, const void *key, size_t key_len, const void *value,
                        size_t value_len, const rd_kafka_headers_t *hdrs, const char *hdr_key_id, const char *hdr_sig,
                        const char *what, const fb_trusted_key **who, fb_err *err);

/* kfk_sign_verify for a consumed message's own signature (its topic, key, value and headers). */
fb_code kfk_sign_verify_message(const fb_keyring *kr, const rd_kafka_message_t *m, const char *what,
                                const fb_trusted_key **who, fb_err *err);

/* Loads a party's keys at start: the signer from cfg->sign_key (if need_signer) and the keyring from `list`
 * (must not be empty). Errors say which setting to set and how to make the key. `role` names the program in
 * them ("the worker"). */
fb_code kfk_sign_load(const char *role, const char *sign_key, int need_signer, fb_signer *signer, const char *list,
                      const char *list_setting, const char *trusts_whom, fb_keyring *kr, fb_err *err);

#endif
