/* cmd: the `fusion-backup` CLI commands, one per file (cmd_<name>.c), each exposing one function.
 *
 * A command gets argv after its name (argv[0] is the command name), parses its own flags with
 * fb_config_parse_args() (shared settings) plus its extra flags, prints what it did, and returns a process exit
 * code (an fb_code). Errors go to stderr as `fusion-backup NAME: message`. The table of commands is in
 * bin/main_cli.c.
 */
#ifndef CMD_H
#define CMD_H

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
