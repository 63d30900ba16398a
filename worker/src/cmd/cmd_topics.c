/* cmd_topics: `fusion-backup topics create`: the four topics of the system under the configured prefix, with
 * enough partitions for the workers to scale out (a consumer group uses at most one worker per partition).
 * Idempotent: existing topics are left as they are. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "common/fb_config.h"
#include "common/fb_json.h"
#include "kafka/kfk.h"

static const char cmd_topics_usage[] =
    "usage: fusion-backup topics create [--partitions N] [--completed-partitions N] [--dlq-partitions N]\n"
    "                                   [--replication-factor N]\n"
    "Creates <prefix>backup.requested and <prefix>archive.due (N partitions each, default "
    FB_TOPIC_STR(FB_TOPIC_REQUEST_PARTITIONS) ": the most\n"
    "workers that can share the work), <prefix>jobs.completed (default " FB_TOPIC_STR(FB_TOPIC_COMPLETED_PARTITIONS)
    ") and <prefix>jobs.dlq (" FB_TOPIC_STR(FB_TOPIC_DLQ_PARTITIONS) "), each with\n"
    "the replication factor N (default 1, for a one-node broker; use 3 on a production cluster).\n";

int cmd_topics(int argc, char **argv) {
    fb_config cfg;
    fb_err err = {0};
    rd_kafka_t *rk = NULL;
    int help = 0;
    fb_code rc = cmd_args(&cfg, &argc, argv, FB_CMD_TOPICS, cmd_topics_usage, &help, &err);
    if (help) goto out;
    int parts[FB_N_TOPICS] = {[FB_TOPIC_BACKUP] = (int)cfg.partitions, [FB_TOPIC_ARCHIVE] = (int)cfg.partitions,
                              [FB_TOPIC_COMPLETED] = (int)cfg.completed_partitions, [FB_TOPIC_DLQ] = (int)cfg.dlq_partitions};
    int replication = (int)cfg.replication_factor;
    int create = argc == 2 && strcmp(argv[1], "create") == 0;
    if (!rc && argc > 1 && !create)
        rc = fb_err_set(&err, FB_ERR_USAGE, "unexpected argument \"%s\" (see topics --help)", argv[argc - 1]);
    if (!rc && !create) rc = fb_err_set(&err, FB_ERR_USAGE, "usage: fusion-backup topics create [options]");
    if (rc) goto out;
    rk = kfk_producer_new(&cfg, &err);
    if (!rk) {
        rc = err.code;
        goto out;
    }
    char names[FB_N_TOPICS][300];
    const char *ptrs[FB_N_TOPICS];
    for (int i = 0; i < FB_N_TOPICS; i++) ptrs[i] = fb_config_topic(&cfg, (fb_topic)i, names[i], sizeof names[i]);
    if (!(rc = kfk_wait_ready(rk, 30000, &err)) &&
        !(rc = kfk_create_topics(rk, ptrs, parts, FB_N_TOPICS, replication, 30000, &err))) {
        if (cfg.json) printf("{\"ok\":true,\"topics\":[");
        for (int i = 0; i < FB_N_TOPICS; i++) {
            if (cfg.json) {
                printf("%s{\"topic\":", i ? "," : "");
                fb_json_string(stdout, ptrs[i]);
                printf(",\"partitions\":%d,\"replication_factor\":%d}", parts[i], replication);
            } else {
                printf("topic %s: ready (%d partitions, replication factor %d, if created now)\n", ptrs[i], parts[i],
                       replication);
            }
        }
        if (cfg.json) printf("]}\n");
    }
out:
    if (rc) fprintf(stderr, "fusion-backup topics: %s\n", err.msg);
    if (rc && cfg.json) cmd_json_failure(rc, err.msg);
    if (rk) rd_kafka_destroy(rk);
    fb_config_free(&cfg);
    return rc;
}
