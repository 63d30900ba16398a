/* cmd_unarchive: `fusion-backup unarchive --module M --model N (--id ID ... | --archived-before TIME) --pg CONNINFO
 * [--dry-run]`: puts archived rows back into their tables (job_unarchive_run in job/job_unarchive.c).
 *
 * Prints one JSON line: {"restored": N, "not_found": N, "conflicts": ["id", ...], "dry_run": bool}. Exit 0 when
 * everything selected was restored, 13 (conflict) when some rows stayed archived because their primary key is in
 * use again (the others are restored), other codes on errors (nothing restored). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "common/fb_config.h"
#include "common/fb_json.h"
#include "common/fb_log.h"
#include "common/fb_time.h"
#include "job/job_archive.h"

static const char cmd_unarchive_usage[] =
    "usage: fusion-backup unarchive --module M --model N (--id ID [--id ID ...] | --archived-before TIME)\n"
    "                               --pg CONNINFO [--dry-run]\n"
    "Puts archived rows back into their tables. Rows whose primary key exists again in their table are\n"
    "reported and stay archived (exit 13).\n";

int cmd_unarchive(int argc, char **argv) {
    fb_config cfg;
    fb_err err;
    job_unarchive_opts o = {0};
    job_unarchive_result res = {0};
    char before[40];
    int help = 0;
    int rc = cmd_args(&cfg, &argc, argv, FB_CMD_UNARCHIVE, cmd_unarchive_usage, &help, &err);
    if (help) goto out;
    if (!rc && argc > 1) rc = fb_err_set(&err, FB_ERR_USAGE, "unexpected argument \"%s\"", argv[1]);
    if (rc) {
        fprintf(stderr, "fusion-backup unarchive: %s\n", err.msg);
        goto out;
    }
    int level = fb_log_level_parse(cfg.log_level);
    if (level >= 0) fb_log_set_level((fb_log_level)level);
    int has_before = cfg.archived_before != FB_TIME_NONE;
    if (!*cfg.module || !*cfg.model || (!cfg.ids.n == !has_before)) {
        fprintf(stderr, "fusion-backup unarchive: give --module, --model and exactly one of --id ... or "
                        "--archived-before\n");
        cmd_help(FB_CMD_UNARCHIVE, cmd_unarchive_usage, stderr);
        rc = FB_ERR_USAGE;
        goto out;
    }
    o.module = cfg.module;
    o.model_name = cfg.model;
    o.dry_run = cfg.dry_run != 0;
    o.n_ids = cfg.ids.n;
    /* the one time parser read it (zone honoured); the database gets the instant, in UTC */
    if (has_before) o.archived_before = fb_time_format_iso(cfg.archived_before, before, sizeof before);
    const char *const *ids = (const char *const *)cfg.ids.v;
    o.ids = ids;
    o.conninfo = cfg.pg;
    o.lock_timeout_ms = cfg.lock_timeout_ms;
    o.statement_timeout_ms = cfg.statement_timeout_ms;
    if ((rc = job_unarchive_run(&o, &res, &err))) {
        fprintf(stderr, "fusion-backup unarchive: %s\n", err.msg);
        goto out;
    }
    printf("{\"restored\": %lld, \"not_found\": %lld, \"dry_run\": %s, \"conflicts\": [", (long long)res.restored,
           (long long)res.not_found, o.dry_run ? "true" : "false");
    for (size_t i = 0; i < res.n_conflicts; i++) {
        if (i) fputs(", ", stdout);
        fb_json_string(stdout, res.conflicts[i]);
    }
    printf("]}\n");
    if (res.n_conflicts) {
        fprintf(stderr, "fusion-backup unarchive: %zu row(s) of %s.%s stay archived because a row with the same "
                        "primary key exists in the table again; compare them and delete one, then re-run\n",
                res.n_conflicts, o.module, o.model_name);
        rc = FB_ERR_CONFLICT;
    }
out:
    job_unarchive_result_free(&res);
    fb_config_free(&cfg);
    return rc;
}
