/* cmd_prune: `fusion-backup prune --storage-root R --storage-path P --retention-days N [--dry-run]`.
 *
 * The retention the worker applies after each backup (job_prune.h), by hand, on one storage folder: backups older
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
#include "job/job_prune.h"

typedef struct cmd_prune_out {
    int dry_run;
} cmd_prune_out;

static void cmd_prune_report(void *opaque, const char *job_id, int removed, const char *reason) {
    const cmd_prune_out *o = opaque;
    printf("%s %s: %s\n", removed ? (o->dry_run ? "would remove" : "removed") : "keep", job_id, reason);
}

static int cmd_prune_int(const char *v, int64_t lo, int64_t hi, int64_t *out) {
    char *end = NULL;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) return 0;
    *out = x;
    return 1;
}

int cmd_prune(int argc, char **argv) {
    static const char *const extra[] = {"storage-path", "retention-days", "dry-run", "config-id", "now-ms", "help", NULL};
    fb_config cfg;
    fb_err err;
    const char *path = NULL;
    int64_t days = -1, removed = 0;
    unsigned char key[ARC_INDEX_KEY_BYTES];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    job_prune_opts o = {0, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, -1, 0, NULL, NULL};
    cmd_prune_out po = {0};
    stor *st = NULL;
    fb_keyring kr = {0};
    fb_code rc = fb_config_init(&cfg, &err);
    if (!rc) rc = fb_config_parse_args(&cfg, &argc, argv, FB_CFG_CLI, extra, &err);
    for (int i = 1; !rc && i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--dry-run") == 0) o.dry_run = 1;
        else if (strcmp(a, "--storage-path") == 0 && v) path = argv[++i];
        else if (strcmp(a, "--retention-days") == 0 && v && cmd_prune_int(v, 0, 36500, &days)) i++;
        else if (strcmp(a, "--config-id") == 0 && v && cmd_prune_int(v, -1, INT64_MAX, &o.config_id)) i++;
        else if (strcmp(a, "--now-ms") == 0 && v && cmd_prune_int(v, 0, INT64_MAX, &o.now_ms)) i++;
        else if (strcmp(a, "--help") == 0) {
            printf("usage: fusion-backup prune --storage-root R --storage-path P --retention-days N [--dry-run]\n"
                   "                           [--config-id ID] [--index-key FILE | --public-key FILE] [--now-ms MS]\n"
                   "  removes the backups in R/P older than N days (0: none), never one a kept backup needs nor the\n"
                   "  last restorable FULL; prints each decision and why. --dry-run only prints.\n");
            fb_config_free(&cfg);
            return FB_OK;
        } else rc = fb_err_set(&err, FB_ERR_USAGE, "unexpected or bad argument \"%s\" (see prune --help)", a);
    }
    if (!rc && (!path || days < 0))
        rc = fb_err_set(&err, FB_ERR_USAGE, "prune needs --storage-path P and --retention-days N (see prune --help)");
    if (!rc) rc = cmd_index_key(&cfg, "prune", key, &err);
    /* only a FULL a trusted worker signed counts as the last restorable one (job_prune.h) */
    if (!rc) rc = fb_keyring_load(&kr, cfg.trusted_signers, "--trusted-signer", &err);
    o.signers = &kr;
    if (!rc) rc = stor_open_location(cfg.storage_root, &cfg, &st, &err);
    if (!rc) {
        o.retention_days = days;
        po.dry_run = o.dry_run;
        rc = job_prune_run(st, path, key, &o, cmd_prune_report, &po, &removed, &err);
    }
    if (rc) fprintf(stderr, "fusion-backup prune: %s\n", err.msg);
    else
        printf("%s %lld backup(s) older than %lld days from \"%s/%s\"\n", o.dry_run ? "would take away" : "took away",
               (long long)removed, (long long)days, cfg.storage_root, path);
    stor_free(st);
    sodium_memzero(key, sizeof key);
    fb_keyring_free(&kr);
    fb_config_free(&cfg);
    return rc;
}
