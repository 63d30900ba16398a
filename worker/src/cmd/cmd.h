/* cmd: the `fusion-backup` CLI commands, one per file (cmd_<name>.c), each exposing one function.
 *
 * A command gets argv after its name (argv[0] is the command name) and starts with cmd_args(): its options and
 * the shared settings are rows of the one table in common/fb_config.c (a new option is one row there), so every
 * command accepts `--x v` and `--x=v` alike and its --help is generated. It prints what it did and returns a
 * process exit code (an fb_code). Errors go to stderr as `fusion-backup NAME: message`. The table of commands is
 * in bin/main_cli.c.
 */
#ifndef CMD_H
#define CMD_H

#include <stdio.h>

#include "common/fb_config.h"

/* Fills cfg (fb_config_init) and parses argv for command `cmd` (fb_config_parse_args with FB_SCOPE(cmd)):
 * afterwards argv[0..*argc) are the command's name and its arguments, in order. With --help, prints the help
 * (cmd_help) to stdout and sets *help: the caller then returns FB_OK. The caller frees cfg (fb_config_free) in
 * every case. */
fb_code cmd_args(fb_config *cfg, int *argc, char **argv, fb_cmd cmd, const char *usage, int *help, fb_err *err);

/* The command's hand-written usage (what it does, its arguments, examples), then its options and settings as
 * the table declares them. */
void cmd_help(fb_cmd cmd, const char *usage, FILE *out);

/* With --json, what a failed command prints on stdout (the message still goes to stderr): one object
 * {"ok": false, "code": N, "code_name": "...", "error": "..."} and a newline, so a script reads one JSON document
 * whatever happened. */
void cmd_json_failure(fb_code rc, const char *msg);

int cmd_keygen(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_unarchive(int argc, char **argv);
int cmd_event(int argc, char **argv);
int cmd_topics(int argc, char **argv);
int cmd_replay(int argc, char **argv);
int cmd_tail(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_rekey(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_capture(int argc, char **argv);
/* Prints "PROGRAM VERSION (library versions)"; for both binaries' --version. */
int cmd_version(const char *program);

#endif
