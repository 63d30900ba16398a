/* cmd_keys: the chain index key as the commands that read chain indexes (list, prune) get it from the settings:
 * --index-key FILE as the workers have it, or, when the workers have none, derived from --public-key FILE.
 * Private to cmd/. */
#ifndef CMD_KEYS_H
#define CMD_KEYS_H

#include "artifact/arc_index.h"
#include "common/fb_config.h"
#include "common/fb_err.h"

/* command names the caller in the usage error ("list reads the chain indexes: give --index-key ..."). key is the
 * caller's to erase (sodium_memzero). */
fb_code cmd_index_key(const fb_config *cfg, const char *command, unsigned char key[ARC_INDEX_KEY_BYTES], fb_err *err);

#endif
