/* cmd_topics: `fusion-backup topics create`: the four topics of the system under the configured prefix, with
 * enough partitions for the workers to scale out (a consumer group uses at most one worker per partition).
 * Idempotent: existing topics are left as they are. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "common/fb_config.h"
#include "kafka/kfk.h"

int cmd_topics(int argc, char **argv) {
    static const char *const extra[] = {"partitions", "completed-partitions", "dlq-partitions", "replication-factor",
                                        "help", NULL};
    fb_config cfg;
    fb_err err = {0};
    int parts[4] = {12, 12, 6, 3}, replication = 1;
    rd_kafka_t *rk = NULL;
    fb_code rc = fb_config_init(&cfg, &err);
    if (!rc) rc = fb_config_parse_args(&cfg, &argc, argv, FB_CFG_CLI, extra, &err);
    int create = 0;
    for (int i = 1; !rc && i < argc; i++) {
        const char *a = argv[i];
        int *slot = strcmp(a, "--partitions") == 0 ? &parts[0]
                    : strcmp(a, "--completed-partitions") == 0 ? &parts[2]
                    : strcmp(a, "--dlq-partitions") == 0 ? &parts[3]
                    : strcmp(a, "--replication-factor") == 0 ? &replication : NULL;
        if (strcmp(a, "--help") == 0) {
            printf("usage: fusion-backup topics create [--partitions N] [--completed-partitions N] [--dlq-partitions N]\n"
                   "                                   [--replication-factor N]\n"
                   "Creates <prefix>backup.requested and <prefix>archive.due (N partitions each, default 12: the most\n"
                   "workers that can share the work), <prefix>jobs.completed (default 6) and <prefix>jobs.dlq (3), each with\n"
                   "the replication factor N (default 1, for a one-node broker; use 3 on a production cluster).\n");
            goto out;
        } else if (strcmp(a, "create") == 0) {
            create = 1;
        } else if (slot && i + 1 < argc) {
            *slot = atoi(argv[++i]);
            int hi = slot == &replication ? 32 : 10000;
            if (*slot < 1 || *slot > hi) rc = fb_err_set(&err, FB_ERR_USAGE, "%s must be 1..%d", a, hi);
        } else {
            rc = fb_err_set(&err, FB_ERR_USAGE, "unexpected argument \"%s\" (see topics --help)", a);
        }
    }
    parts[1] = parts[0];
    if (!rc && !create) rc = fb_err_set(&err, FB_ERR_USAGE, "usage: fusion-backup topics create [options]");
    if (rc) goto out;
    rk = kfk_producer_new(&cfg, &err);
    if (!rk) {
        rc = err.code;
        goto out;
    }
    char names[4][300];
    const char *suffix[4] = {"backup.requested", "archive.due", "jobs.completed", "jobs.dlq"};
    const char *ptrs[4];
    for (int i = 0; i < 4; i++) ptrs[i] = fb_config_topic(&cfg, suffix[i], names[i], sizeof names[i]);
    if (!(rc = kfk_wait_ready(rk, 30000, &err)) && !(rc = kfk_create_topics(rk, ptrs, parts, 4, replication, 30000, &err)))
        for (int i = 0; i < 4; i++) printf("topic %s: ready (%d partitions, replication factor %d, if created now)\n", ptrs[i], parts[i],
                   replication);
out:
    if (rc) fprintf(stderr, "fusion-backup topics: %s\n", err.msg);
    if (rk) rd_kafka_destroy(rk);
    fb_config_free(&cfg);
    return rc;
}
