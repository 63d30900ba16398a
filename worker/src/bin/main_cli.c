/* fusion-backup: the operator's CLI. It only dispatches to one command per file in cmd/. */
#include <stdio.h>
#include <string.h>

#include "cmd/cmd.h"
#include "common/fb_config.h"
#include "common/fb_err.h"

typedef struct cli_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} cli_command;

static const cli_command cli_commands[] = {
    {"event", cmd_event, "decode or re-encode a contract event (debugging, interop tests)"},
    {"unarchive", cmd_unarchive, "put archived rows back into their tables (by id or archived-before)"},
    {"keygen", cmd_keygen, "write a backup key pair: PREFIX.pub for workers, PREFIX.key (0600) for restores"},
    {"restore", cmd_restore, "restore an artifact's tables into a database, all or nothing"},
    {"verify", cmd_verify, "check an artifact (authenticity, hashes); --restore-into also test-restores it"},
    {"inspect", cmd_inspect, "print an artifact's manifest: tables, rows, sizes, times (--json)"},
    {"prune", cmd_prune, "remove backups past retention, never one still needed (--dry-run: only say what/why)"},
    {"rekey", cmd_rekey, "re-seal artifacts' data keys to a new public key, without re-encrypting"},
    {"topics", cmd_topics, "create the four topics under the configured prefix (topics create)"},
    {"replay", cmd_replay, "republish failed jobs or dead letters with attempt + 1 (loop-guarded)"},
    {"tail", cmd_tail, "follow completion events as readable lines or JSON"},
    {"status", cmd_status, "last success per configuration, failures, running jobs, consumer lag"},
    {"check", cmd_check, "preflight: database, broker and topics, storage, keys; each ok or what to fix"},
    {"backup", cmd_backup, "back up a configuration now, in this process, recorded in its BackupRecord"},
    {"capture", cmd_capture, "stream a database's committed transactions into change segments until SIGTERM (--list: verify)"},
    {"list", cmd_list, "every backup in a location: type, chain, snapshot, size, restorable (no key, no broker)"},
    {NULL, NULL, NULL},
};

static void cli_usage(FILE *out) {
    fprintf(out, "usage: fusion-backup COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; cli_commands[i].name; i++)
        fprintf(out, "  %-10s %s\n", cli_commands[i].name, cli_commands[i].summary);
    fprintf(out, "\n`fusion-backup help COMMAND` (or `COMMAND --help`) shows a command's options; --version the "
                 "versions.\n");
}

static const cli_command *cli_find(const char *name) {
    for (size_t i = 0; cli_commands[i].name; i++)
        if (strcmp(name, cli_commands[i].name) == 0) return &cli_commands[i];
    return NULL;
}


int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        cli_usage(argc < 2 ? stderr : stdout);
        if (argc >= 2) fb_config_print_settings(FB_CFG_CLI, stdout);
        return argc < 2 ? FB_ERR_USAGE : FB_OK;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) return cmd_version("fusion-backup");
    if (strcmp(argv[1], "help") == 0) {
        if (argc < 3) {
            cli_usage(stdout);
            fb_config_print_settings(FB_CFG_CLI, stdout);
            return FB_OK;
        }
        const cli_command *c = cli_find(argv[2]);
        if (!c) {
            fprintf(stderr, "fusion-backup help: unknown command \"%s\"\n", argv[2]);
            cli_usage(stderr);
            return FB_ERR_USAGE;
        }
        char *sub[3] = {argv[2], "--help", NULL};
        return c->run(2, sub);
    }
    const cli_command *c = cli_find(argv[1]);
    if (c) return c->run(argc - 1, argv + 1);
    fprintf(stderr, "fusion-backup: unknown command \"%s\"\n", argv[1]);
    cli_usage(stderr);
    return FB_ERR_USAGE;
}
