/* fb_sign: who is speaking. Ed25519 signing keys, key ids, keyrings of trusted public keys, and the one signature
 * construction every signed thing of the project uses (Kafka messages: schemas/SPEC.md; artifacts: FORMAT.md).
 *
 * Why a second key pair: the backup key (arc_key.h, X25519) decides who can READ a backup; it says nothing about
 * who WROTE one (crypto_box_seal is anonymous) or who published a message. Signing keys say who is speaking: the
 * Django app and the operators sign requests, workers sign status events, dead letters and artifacts. Each party
 * holds its own secret signing key; the others hold a keyring of the public keys they trust (several at once, so
 * a key can be rotated: trust old and new, switch the signer, then drop the old one).
 *
 * Files are text like the backup key files, but typed so one kind of key is never taken for the other:
 *   # comment lines
 *   ed25519-public HEX64     (PREFIX.pub, mode 0644)
 *   ed25519-seed HEX64       (PREFIX.key, mode 0600: the 32-byte seed; the secret key is derived from it)
 * A key id is the first 8 bytes of BLAKE2b-256(public key), as 16 lowercase hex digits: it names the key in
 * headers and artifacts so the verifier picks it from its keyring (a hint, never trusted by itself: the signature
 * is always checked against the keyring's key for that id).
 *
 * Signature construction (fb_sign_digest / fb_sign_verify_digest): the caller hashes what it signs into a 32-byte
 * BLAKE2b-256 digest with its own framing (length-prefixed fields, so no two inputs frame alike), and the key signs
 *   "fusion-backup signature v1" 0x00 CONTEXT 0x00 DIGEST[32]
 * with crypto_sign_detached (pure Ed25519). CONTEXT ("message", "artifact", ...) separates domains: a signature
 * made for one kind of object never verifies as another.
 *
 * Ownership: fb_signer and fb_keyring are caller-owned values; fb_signer_wipe() erases the secret key,
 * fb_keyring_free() releases a keyring.
 */
#ifndef FB_SIGN_H
#define FB_SIGN_H

#include <sodium.h>
#include <stddef.h>

#include "common/fb_err.h"

#define FB_SIGN_PK_BYTES crypto_sign_PUBLICKEYBYTES /* 32 */
#define FB_SIGN_SK_BYTES crypto_sign_SECRETKEYBYTES /* 64 */
#define FB_SIGN_SEED_BYTES crypto_sign_SEEDBYTES    /* 32 */
#define FB_SIGN_BYTES crypto_sign_BYTES             /* 64 */
#define FB_SIGN_DIGEST_BYTES 32
#define FB_SIGN_KEY_ID_BYTES 8
#define FB_SIGN_KEY_ID_HEX (2 * FB_SIGN_KEY_ID_BYTES + 1) /* with the NUL */
#define FB_SIGN_DOMAIN "fusion-backup signature v1"
#define FB_KEYRING_MAX 32

/* A party's own key: it signs. */
typedef struct fb_signer {
    unsigned char sk[FB_SIGN_SK_BYTES];
    unsigned char pk[FB_SIGN_PK_BYTES];
    char key_id[FB_SIGN_KEY_ID_HEX];
    int loaded;
} fb_signer;

typedef struct fb_trusted_key {
    unsigned char pk[FB_SIGN_PK_BYTES];
    char key_id[FB_SIGN_KEY_ID_HEX];
    char *path; /* the file it came from, for messages */
} fb_trusted_key;

/* The public keys a party trusts for one purpose (e.g. requesters, workers). */
typedef struct fb_keyring {
    fb_trusted_key keys[FB_KEYRING_MAX];
    size_t n;
} fb_keyring;

/* Writes PREFIX.pub and PREFIX.key (0600) with a fresh Ed25519 key pair; refuses (FB_ERR_CONFLICT) if either
 * exists. */
fb_code fb_sign_generate(const char *prefix, fb_err *err);

/* The key id of a public key. */
void fb_sign_key_id(const unsigned char pk[FB_SIGN_PK_BYTES], char out[FB_SIGN_KEY_ID_HEX]);

/* Loads a secret signing key file (mode must not be readable by group/others). `setting` names the option in
 * messages ("--sign-key"). An empty path is FB_ERR_USAGE saying how to make one. */
fb_code fb_signer_load(fb_signer *s, const char *path, const char *setting, fb_err *err);
void fb_signer_wipe(fb_signer *s);

/* Loads one public signing key file. */
fb_code fb_sign_load_public(const char *path, unsigned char pk[FB_SIGN_PK_BYTES], fb_err *err);

/* Loads every file of a comma-separated list (a list setting, fb_config.h) into kr, which it empties first.
 * An empty list gives an empty keyring (FB_OK): callers decide whether that is allowed. Duplicate keys are
 * loaded once. `setting` names the option in messages. */
fb_code fb_keyring_load(fb_keyring *kr, const char *list, const char *setting, fb_err *err);
/* The trusted key with this id, or NULL. */
const fb_trusted_key *fb_keyring_find(const fb_keyring *kr, const char *key_id);
void fb_keyring_free(fb_keyring *kr);

/* Signs (context, digest) as described above. */
void fb_sign_digest(const fb_signer *s, const char *context, const unsigned char digest[FB_SIGN_DIGEST_BYTES],
                    unsigned char sig[FB_SIGN_BYTES]);
/* 1 when sig is pk's signature of (context, digest), else 0. */
int fb_sign_verify_digest(const unsigned char pk[FB_SIGN_PK_BYTES], const char *context,
                          const unsigned char digest[FB_SIGN_DIGEST_BYTES], const unsigned char sig[FB_SIGN_BYTES]);

/* Verifies against a keyring: finds key_id (FB_ERR_UNTRUSTED "signed by unknown key ID; trusted: ..." when
 * absent), then checks the signature (FB_ERR_UNTRUSTED "bad signature" when it fails). `what` names the object in
 * messages ("status event of job X"). On success *who (may be NULL) is the key that signed. */
fb_code fb_keyring_verify(const fb_keyring *kr, const char *key_id, const char *context,
                          const unsigned char digest[FB_SIGN_DIGEST_BYTES], const unsigned char sig[FB_SIGN_BYTES],
                          const char *what, const fb_trusted_key **who, fb_err *err);

#endif
