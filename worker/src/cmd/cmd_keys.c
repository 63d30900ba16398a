/* cmd_keys: see cmd_keys.h. */
#include "cmd/cmd_keys.h"

#include "artifact/arc_key.h"

fb_code cmd_index_key(const fb_config *cfg, const char *command, unsigned char key[ARC_INDEX_KEY_BYTES], fb_err *err) {
    unsigned char pk[ARC_PK_BYTES] = {0};
    if (!cfg->index_key || !*cfg->index_key) {
        if (!cfg->public_key || !*cfg->public_key)
            return fb_err_set(err, FB_ERR_USAGE, "%s reads the chain indexes: give --index-key FILE as the workers "
                              "have it, or --public-key FILE when they have no index key", command);
        fb_code rc = arc_key_load_public(cfg->public_key, pk, err);
        if (rc) return rc;
    }
    return arc_index_key(cfg->index_key, pk, key, err);
}
