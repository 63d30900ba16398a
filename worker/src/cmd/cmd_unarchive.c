/* cmd_unarchive: `fusion-backup unarchive --module M --model N (--id ID ... | --archived-before TIME) --pg CONNINFO
 * [--dry-run]`: puts archived rows back into their tables (job_unarchive_run in job/job_archive_restore.c).
 *
 * Prints one JSON line: {"restored": N, "not_found": N, "conflicts": ["id", ...], "dry_run": bool}. Exit 0 when
 * everything selected was restored, 13 (conflict) when some rows stayed archived because their primary key is in
 * use again (the others are restored), other codes on errors (nothing restored). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "common/fb_config.h"
#include "common/fb_log.h"
#include "job/job_archive.h"

static void cmd_unarchive_usage(FILE *out) {
    fprintf(out,
            "usage: fusion-backup unarchive --module M --model N (--id ID [--id ID ...] | --archived-before TIME)\n"
            "                               --pg CONNINFO [--dry-run]\n"
            "  --module M             Django app label of the ArchivedRecords (ArchivedRecord.module)\n"
            "  --model N              model name (ArchivedRecord.model_name)\n"
            "  --id ID                original primary key (as text); repeat for several rows\n"
            "  --archived-before TIME every record of M.N archived before TIME (\"2026-01-01\", \"2026-01-01 "
            "10:00+05:30\")\n"
            "  --dry-run              do everything, report, then roll back\n"
            "Rows whose primary key exists again in their table are reported and stay archived (exit 13).\n");
}

/* Prints s as a JSON string. */
static void cmd_unarchive_json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

int cmd_unarchive(int argc, char **argv) {
    static const char *const extra[] = {"module", "model", "id", "archived-before", "dry-run", "help", NULL};
    fb_config cfg;
    fb_err err;
    job_unarchive_opts o = {0};
    job_unarchive_result res = {0};
    const char **ids = NULL;
    int rc;
    memset(&cfg, 0, sizeof cfg);
    if ((rc = fb_config_init(&cfg, &err)) || (rc = fb_config_parse_args(&cfg, &argc, argv, FB_CFG_CLI, extra, &err))) {
        fprintf(stderr, "fusion-backup unarchive: %s\n", err.msg);
        goto out;
    }
    int level = fb_log_level_parse(cfg.log_level);
    if (level >= 0) fb_log_set_level((fb_log_level)level);
    if (!(ids = calloc((size_t)argc + 1, sizeof *ids))) {
        rc = FB_ERR_NOMEM;
        fprintf(stderr, "fusion-backup unarchive: out of memory\n");
        goto out;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
#define FLAG(name) (len == strlen(name) && strncmp(a, name, len) == 0)
        if (FLAG("--help")) {
            cmd_unarchive_usage(stdout);
            rc = FB_OK;
            goto out;
        }
        if (FLAG("--dry-run")) {
            o.dry_run = 1;
            continue;
        }
        if (!(FLAG("--module") || FLAG("--model") || FLAG("--id") || FLAG("--archived-before"))) {
            fprintf(stderr, "fusion-backup unarchive: unexpected argument \"%s\"\n", a);
            cmd_unarchive_usage(stderr);
            rc = FB_ERR_USAGE;
            goto out;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v || !*v) {
            fprintf(stderr, "fusion-backup unarchive: %.*s needs a value\n", (int)len, a);
            rc = FB_ERR_USAGE;
            goto out;
        }
        if (FLAG("--module")) o.module = v;
        else if (FLAG("--model")) o.model_name = v;
        else if (FLAG("--id")) ids[o.n_ids++] = v;
        else o.archived_before = v;
#undef FLAG
    }
    if (!o.module || !o.model_name || (!o.n_ids == !o.archived_before)) {
        fprintf(stderr, "fusion-backup unarchive: give --module, --model and exactly one of --id ... or "
                        "--archived-before\n");
        cmd_unarchive_usage(stderr);
        rc = FB_ERR_USAGE;
        goto out;
    }
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
        cmd_unarchive_json_str(stdout, res.conflicts[i]);
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
    free(ids);
    fb_config_free(&cfg);
    return rc;
}
