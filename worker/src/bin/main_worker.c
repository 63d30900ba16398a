/* fusion-backup-worker: the job daemon. It only parses settings and hands over to daemon/. */
#include <stdio.h>

#include "common/fb_config.h"
#include "common/fb_err.h"

int main(int argc, char **argv) {
    fb_config cfg;
    fb_err err;
    if (fb_config_init(&cfg, &err) || fb_config_parse_args(&cfg, &argc, argv, FB_CFG_WORKER, NULL, &err)) {
        fprintf(stderr, "fusion-backup-worker: %s\n", err.msg);
        fb_config_free(&cfg);
        return err.code;
    }
    fb_config_free(&cfg);
    return FB_OK;
}
