/* arc_key: the backup key pair (X25519, libsodium crypto_box) and its files.
 *
 * Workers hold only the public key: they seal each backup's fresh data key to it and can never read a backup.
 * Restore and verify need the secret key. Files are text: `#` comment lines, then one line of 64 hex digits.
 * PREFIX.key is created 0600 and never overwritten; a secret key file readable by group or others is refused.
 * Secret keys are kept in caller buffers and erased with sodium_memzero() by the caller when done.
 */
#ifndef ARC_KEY_H
#define ARC_KEY_H

#include <sodium.h>

#include "common/fb_err.h"

#define ARC_PK_BYTES crypto_box_PUBLICKEYBYTES
#define ARC_SK_BYTES crypto_box_SECRETKEYBYTES

/* Writes PREFIX.pub and PREFIX.key (0600). Refuses (FB_ERR_CONFLICT) if either exists. */
fb_code arc_key_generate(const char *prefix, fb_err *err);
fb_code arc_key_load_public(const char *path, unsigned char pk[ARC_PK_BYTES], fb_err *err);
/* Loads a secret key and derives its public key. */
fb_code arc_key_load_secret(const char *path, unsigned char sk[ARC_SK_BYTES], unsigned char pk[ARC_PK_BYTES],
                            fb_err *err);

#endif
