/* cmd_prune: `fusion-backup prune --storage-root R --storage-path P --retention-days N [--dry-run]`.
 *
 * The retention the worker applies after each backup (arc_retention.h), by hand, on one storage folder: backups older
 * than N days go, except those a kept backup references and the last restorable FULL. It reads the chain indexes,
 * so it needs the same index key as the workers (--index-key, or --public-key when they derive it). Every backup
 * past the retention gets one line: `remove`/`would remove JOB: why` or `keep JOB: why`. --config-id limits it to
 * one configuration's backups (the default, -1, takes every backup in the folder, format-1 ones included).
 * --now-ms moves the clock (to see what a later run would do, and for tests).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "artifact/arc_index.h"
#include "cmd/cmd.h"
#include "cmd/cmd_keys.h"
#include "common/fb_config.h"
#include "common/fb_json.h"
#include "common/fb_time.h"
#include "artifact/arc_retention.h"

typedef struct cmd_prune_out {
    int dry_run, json, n; /* n: decisions printed (JSON: the array's elements so far) */
} cmd_prune_out;

static void cmd_prune_report(void *opaque, const char *job_id, int removed, const char *reason) {
    cmd_prune_out *o = opaque;
    const char *what = removed ? (o->dry_run ? "would remove" : "removed") : "keep";
    if (o->json) {
        printf("%s{\"job_id\":", o->n ? "," : "");
        fb_json_string(stdout, job_id);
        printf(",\"decision\":");
        fb_json_string(stdout, what);
        printf(",\"reason\":");
        fb_json_string(stdout, reason);
        printf("}");
    } else {
        printf("%s %s: %s\n", what, job_id, reason);
    }
    o->n++;
}

static const char cmd_prune_usage[] =
    "usage: fusion-backup prune --storage-root R --storage-path P --retention-days N [--dry-run] [--json]\n"
    "                           [--config-id ID] [--index-key FILE | --public-key FILE] [--now-ms MS]\n"
    "  removes the backups in R/P older than N days (0: none), never one a kept backup needs nor the\n"
    "  last restorable FULL; prints each decision and why. --dry-run only prints.\n";

int cmd_prune(int argc, char **argv) {
    fb_config cfg;
    fb_err err;
    const char *path = NULL;
    int64_t days = -1, removed = 0;
    unsigned char key[ARC_INDEX_KEY_BYTES];
    arc_retention_opts o = {0, fb_now_ms(), -1, 0, NULL, NULL};
    cmd_prune_out po = {0};
    stor *st = NULL;
    fb_keyring kr = {0};
    int help = 0;
    fb_code rc = cmd_args(&cfg, &argc, argv, FB_CMD_PRUNE, cmd_prune_usage, &help, &err);
    if (help) {
        fb_config_free(&cfg);
        return FB_OK;
    }
    if (!rc && argc > 1) rc = fb_err_set(&err, FB_ERR_USAGE, "unexpected argument \"%s\" (see prune --help)", argv[1]);
    if (!rc && cfg.storage_path.n > 1)
        rc = fb_err_set(&err, FB_ERR_USAGE, "prune takes one --storage-path (got %zu): run it once per folder",
                        cfg.storage_path.n);
    if (cfg.storage_path.n == 1) path = cfg.storage_path.v[0];
    days = cfg.retention_days;
    o.dry_run = cfg.dry_run != 0;
    o.config_id = cfg.config_id;
    if (cfg.now_ms) o.now_ms = cfg.now_ms;
    if (!rc && (!path || days < 0))
        rc = fb_err_set(&err, FB_ERR_USAGE, "prune needs --storage-path P and --retention-days N (see prune --help)");
    if (!rc) rc = cmd_index_key(&cfg, "prune", key, &err);
    /* only a FULL a trusted worker signed counts as the last restorable one (arc_retention.h) */
    if (!rc) rc = fb_keyring_load(&kr, cfg.trusted_signers, "--trusted-signer", &err);
    o.signers = &kr;
    if (!rc) rc = stor_open_location(cfg.storage_root, &cfg, &st, &err);
    if (!rc) {
        o.retention_days = days;
        po.dry_run = o.dry_run;
        po.json = cfg.json != 0;
        /* JSON: one object; the decisions stream into its array as they are made, so a failure midway still
         * shows what was removed before it */
        if (po.json) printf("{\"dry_run\":%s,\"decisions\":[", o.dry_run ? "true" : "false");
        rc = arc_retention_run(st, path, key, &o, cmd_prune_report, &po, &removed, &err);
        if (po.json) {
            printf("],\"removed\":%lld,\"ok\":%s", (long long)removed, rc ? "false" : "true");
            if (rc) {
                printf(",\"code\":%d,\"error\":", (int)rc);
                fb_json_string(stdout, err.msg);
            }
            printf("}\n");
        }
    } else if (cfg.json) {
        cmd_json_failure(rc, err.msg);
    }
    if (rc) fprintf(stderr, "fusion-backup prune: %s\n", err.msg);
    else if (!cfg.json)
        printf("%s %lld backup(s) older than %lld days from \"%s/%s\"\n", o.dry_run ? "would take away" : "took away",
               (long long)removed, (long long)days, cfg.storage_root, path);
    stor_free(st);
    sodium_memzero(key, sizeof key);
    fb_keyring_free(&kr);
    fb_config_free(&cfg);
    return rc;
}
