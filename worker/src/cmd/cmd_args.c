/* cmd_args: see cmd.h. The one start of every command: its options and the shared settings come from the table
 * in common/fb_config.c (scope FB_SCOPE(cmd)), so no command parses a flag by hand and every --help lists exactly
 * what the parser accepts. */
#include <stdio.h>

#include "cmd/cmd.h"

#include "common/fb_json.h"

/* The rows a command accepts: its own, and for `event run` (a job run in this process exactly as a worker runs
 * it) the worker's settings too. */
static unsigned cmd_scope(fb_cmd cmd) {
    return FB_SCOPE(cmd) | (cmd == FB_CMD_EVENT ? FB_CFG_WORKER : 0u);
}

void cmd_help(fb_cmd cmd, const char *usage, FILE *out) {
    fputs(usage, out);
    fb_config_print_options(cmd_scope(cmd), out);
}

fb_code cmd_args(fb_config *cfg, int *argc, char **argv, fb_cmd cmd, const char *usage, int *help, fb_err *err) {
    *help = 0;
    fb_code rc = fb_config_init(cfg, err);
    if (!rc) rc = fb_config_parse_args(cfg, argc, argv, cmd_scope(cmd), NULL, err);
    if (!rc && cfg->help) {
        cmd_help(cmd, usage, stdout);
        *help = 1;
    }
    return rc;
}

void cmd_json_failure(fb_code rc, const char *msg) {
    printf("{\"ok\":false,\"code\":%d,\"code_name\":", (int)rc);
    fb_json_string(stdout, fb_code_name(rc));
    printf(",\"error\":");
    fb_json_string(stdout, msg ? msg : "");
    printf("}\n");
}
