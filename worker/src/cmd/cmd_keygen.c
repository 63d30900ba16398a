/* cmd_keygen: `fusion-backup keygen --out PREFIX`: writes a backup key pair, PREFIX.pub (for workers) and
 * PREFIX.key (mode 0600, for restore and verify). Never overwrites an existing key. */
#include <stdio.h>
#include <string.h>

#include "artifact/arc_key.h"
#include "cmd/cmd.h"
#include "common/fb_config.h"

int cmd_keygen(int argc, char **argv) {
    static const char *const extra[] = {"out", "help", NULL};
    fb_config cfg;
    fb_err err;
    const char *prefix = NULL;
    fb_code rc = fb_config_init(&cfg, &err);
    if (!rc) rc = fb_config_parse_args(&cfg, &argc, argv, FB_CFG_CLI, extra, &err);
    for (int i = 1; !rc && i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) prefix = argv[++i];
        else if (strncmp(argv[i], "--out=", 6) == 0) prefix = argv[i] + 6;
        else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: fusion-backup keygen --out PREFIX\n"
                   "  writes PREFIX.pub (give it to workers: --public-key) and PREFIX.key (mode 0600; restore and\n"
                   "  verify need it: --secret-key). Refuses to overwrite existing files.\n");
            fb_config_free(&cfg);
            return FB_OK;
        } else rc = fb_err_set(&err, FB_ERR_USAGE, "unexpected argument \"%s\" (usage: keygen --out PREFIX)", argv[i]);
    }
    if (!rc && !prefix) rc = fb_err_set(&err, FB_ERR_USAGE, "keygen needs --out PREFIX (writes PREFIX.pub and PREFIX.key)");
    if (!rc) rc = arc_key_generate(prefix, &err);
    if (rc) fprintf(stderr, "fusion-backup keygen: %s\n", err.msg);
    else printf("wrote %s.pub (public: for workers) and %s.key (secret, mode 0600: keep it off worker machines)\n",
                prefix, prefix);
    fb_config_free(&cfg);
    return rc;
}
