/* kfk_scan: see kfk_scan.h. */
#include "kafka/kfk_scan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fb_flag.h"
#include "common/fb_time.h"
#include "common/fb_uuid.h"
#include "kafka/kfk.h"

/* An observer consumer: a throw-away group id (never joined, never committed). */
static rd_kafka_t *scan_consumer(const fb_config *cfg, const char *group, fb_err *err) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char gid[128];
    if (!group) {
        char id[37];
        fb_uuid_random(id);
        snprintf(gid, sizeof gid, "fusion-backup-observer-%s", id);
        group = gid;
    }
    if (kfk_conf_set(conf, "group.id", group, err) || kfk_conf_set(conf, "enable.auto.commit", "false", err) ||
        kfk_conf_set(conf, "enable.partition.eof", "true", err) ||
        kfk_conf_apply(conf, cfg, "fusion-backup-cli", err)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return kfk_new(RD_KAFKA_CONSUMER, conf, err);
}

/* The partition list of topic, each at `offset`. NULL with err set when the topic does not exist. */
static rd_kafka_topic_partition_list_t *scan_partitions(rd_kafka_t *rk, const char *topic, int64_t offset, fb_err *err) {
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, t, &md, 10000);
    rd_kafka_topic_destroy(t);
    if (e) {
        fb_err_set(err, FB_ERR_KAFKA, "could not read metadata of topic \"%s\": %s (is the broker up? --brokers)", topic,
                   rd_kafka_err2str(e));
        return NULL;
    }
    rd_kafka_topic_partition_list_t *l = NULL;
    if (md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt == 0) {
        fb_err_set(err, FB_ERR_NOTFOUND, "topic \"%s\" does not exist (create it: fusion-backup topics create)", topic);
    } else {
        l = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
        for (int i = 0; i < md->topics[0].partition_cnt; i++)
            rd_kafka_topic_partition_list_add(l, topic, md->topics[0].partitions[i].id)->offset = offset;
    }
    rd_kafka_metadata_destroy(md);
    return l;
}

fb_code kfk_scan_topic(const fb_config *cfg, const char *topic, kfk_scan_fn fn, void *opaque, fb_err *err) {
    rd_kafka_t *rk = scan_consumer(cfg, NULL, err);
    if (!rk) return err->code;
    fb_code rc = FB_OK;
    rd_kafka_topic_partition_list_t *l = scan_partitions(rk, topic, RD_KAFKA_OFFSET_BEGINNING, err);
    int64_t *hi = NULL;
    int remaining = 0;
    if (!l) {
        rc = err->code;
        goto out;
    }
    /* Stop at the end as of now: per partition, the high watermark. */
    hi = calloc((size_t)l->cnt, sizeof *hi);
    for (int i = 0; i < l->cnt; i++) {
        int64_t lo = 0;
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk, topic, l->elems[i].partition, &lo, &hi[i], 10000);
        if (e) {
            rc = fb_err_set(err, FB_ERR_KAFKA, "could not read the end of %s[%d]: %s", topic, l->elems[i].partition,
                            rd_kafka_err2str(e));
            goto out;
        }
        if (hi[i] > lo) remaining++;
        else hi[i] = -1; /* empty: nothing to wait for */
    }
    rd_kafka_assign(rk, l);
    int idle = 0;
    while (remaining > 0 && idle < 300) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m) {
            idle++;
            continue;
        }
        idle = 0;
        int p = -1;
        for (int i = 0; i < l->cnt; i++)
            if (l->elems[i].partition == m->partition) p = i;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (p >= 0 && hi[p] >= 0) {
                hi[p] = -1;
                remaining--;
            }
        } else if (!m->err && p >= 0 && hi[p] >= 0) {
            int stop = m->offset < hi[p] ? fn(opaque, m) : 0;
            if (m->offset + 1 >= hi[p]) {
                hi[p] = -1;
                remaining--;
            }
            if (stop) remaining = 0;
        }
        rd_kafka_message_destroy(m);
    }
    if (remaining > 0) rc = fb_err_set(err, FB_ERR_KAFKA, "reading topic \"%s\" stalled for 30 s", topic);
out:
    free(hi);
    if (l) rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return rc;
}

fb_code kfk_follow_topic(const fb_config *cfg, const char *topic, int from_beginning, int64_t timeout_ms,
                         fb_flag *stop, kfk_scan_fn fn, void *opaque, fb_err *err) {
    rd_kafka_t *rk = scan_consumer(cfg, NULL, err);
    if (!rk) return err->code;
    fb_code rc = FB_OK;
    rd_kafka_topic_partition_list_t *l =
        scan_partitions(rk, topic, from_beginning ? RD_KAFKA_OFFSET_BEGINNING : RD_KAFKA_OFFSET_END, err);
    if (!l) {
        rc = err->code;
    } else {
        rd_kafka_assign(rk, l);
        int64_t until = timeout_ms > 0 ? fb_now_ms() + timeout_ms : 0;
        while (!(stop && *stop) && (!until || fb_now_ms() < until)) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
            if (!m) continue;
            int done = !m->err ? fn(opaque, m) : 0;
            rd_kafka_message_destroy(m);
            if (done) break;
        }
        rd_kafka_topic_partition_list_destroy(l);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return rc;
}

fb_code kfk_group_lag(const fb_config *cfg, const char *group_id, const char *topic, int64_t *lag, int *partitions,
                      fb_err *err) {
    *lag = 0;
    *partitions = 0;
    rd_kafka_t *rk = scan_consumer(cfg, group_id, err);
    if (!rk) return err->code;
    fb_code rc = FB_OK;
    rd_kafka_topic_partition_list_t *l = scan_partitions(rk, topic, RD_KAFKA_OFFSET_INVALID, err);
    if (!l) {
        rc = err->code;
    } else {
        rd_kafka_resp_err_t e = rd_kafka_committed(rk, l, 10000);
        if (e) rc = fb_err_set(err, FB_ERR_KAFKA, "could not read committed offsets of group \"%s\": %s", group_id,
                               rd_kafka_err2str(e));
        for (int i = 0; !rc && i < l->cnt; i++) {
            int64_t n = kfk_partition_lag(rk, topic, l->elems[i].partition, l->elems[i].offset, 10000);
            *lag += n > 0 ? n : 0;
        }
        *partitions = l->cnt;
        rd_kafka_topic_partition_list_destroy(l);
    }
    rd_kafka_destroy(rk); /* never joined: nothing to close */
    return rc;
}
