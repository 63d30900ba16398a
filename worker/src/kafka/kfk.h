/* kfk: librdkafka set-up shared by the worker, the recorder and the CLI.
 *
 * Every client gets bootstrap.servers and the TLS/SASL settings from the config (--kafka-security-protocol,
 * --kafka-ca, --kafka-username with --kafka-password-file: the password is read from the file when the client is
 * configured, never taken from a flag, never printed), then the operator's -X settings (which win), and routes
 * librdkafka's log callback into fb_log. Producers are idempotent with acks=all, and kfk_produce_sync() waits for
 * the delivery report: a status event counts as published only once the broker has it. Consumers never store
 * offsets by themselves (enable.auto.offset.store=false): the daemon stores offset+1 once a job's outcome is
 * durable and published, and librdkafka's auto-commit then commits what was stored.
 */
#ifndef KFK_H
#define KFK_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "common/fb_config.h"
#include "common/fb_err.h"
#include "common/fb_sign.h"

/* A new conf with bootstrap.servers, client.id, the log route and the -X settings applied. The caller owns it
 * until it passes it to rd_kafka_new() (which takes ownership on success). */
rd_kafka_conf_t *kfk_conf_new(const fb_config *cfg, const char *client_id, fb_err *err);

/* Applies bootstrap.servers, client.id, the log route and the -X settings to an existing conf. */
fb_code kfk_conf_apply(rd_kafka_conf_t *conf, const fb_config *cfg, const char *client_id, fb_err *err);

/* Sets one property on conf; returns FB_USAGE with librdkafka's reason on failure. The value of a secret
 * property (fb_config_is_secret: *password*, *secret*) is shown as *** and librdkafka's reason withheld. */
fb_code kfk_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, fb_err *err);

/* rd_kafka_new() that takes ownership of conf in every case (destroyed on failure) and says why it failed. */
rd_kafka_t *kfk_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, fb_err *err);

/* An idempotent producer. NULL with err set on failure. Destroy with kfk_producer_free (flushes first). */
rd_kafka_t *kfk_producer_new(const fb_config *cfg, fb_err *err);
void kfk_producer_free(rd_kafka_t *rk);

typedef struct kfk_header {
    const char *name;
    const char *value;
} kfk_header;

/* Produces one message signed by signer (kfk_sign.h: the fb-key-id and fb-sig headers follow the caller's) and
 * waits (up to timeout_ms) for its delivery report. A NULL or unloaded signer is refused: nothing is ever sent
 * unsigned. key NULL: a null key. Thread-safe. */
fb_code kfk_produce_sync(rd_kafka_t *rk, const fb_signer *signer, const char *topic, const void *key, size_t key_len,
                         const void *value, size_t value_len, const kfk_header *headers, size_t n_headers,
                         int timeout_ms, fb_err *err);

/* A consumer in group_id with manual offset store and the given rebalance callback (may be NULL). The caller
 * owns it: rd_kafka_consumer_close() then rd_kafka_destroy(). */
rd_kafka_t *kfk_consumer_new(const fb_config *cfg, const char *group_id,
                             void (*rebalance_cb)(rd_kafka_t *, rd_kafka_resp_err_t, rd_kafka_topic_partition_list_t *,
                                                  void *),
                             void *opaque, fb_err *err);

/* Subscribes to the given topic names. */
fb_code kfk_subscribe(rd_kafka_t *rk, const char *const *topics, size_t n, fb_err *err);

/* Creates topics (ignoring "already exists") with the Admin API through any client handle; replication is the
 * replication factor of each (1 for a one-node development broker, 3 in production). */
fb_code kfk_create_topics(rd_kafka_t *rk, const char *const *names, const int *partitions, size_t n, int replication,
                          int timeout_ms,
                          fb_err *err);

/* Waits until the broker answers a metadata request, up to timeout_ms. */
/* Consumer lag of one partition: messages after the committed offset (none committed: after the low watermark,
 * where the group would start), from the broker's high watermark. -1 when the watermarks cannot be read. */
int64_t kfk_partition_lag(rd_kafka_t *rk, const char *topic, int32_t partition, int64_t committed, int timeout_ms);

fb_code kfk_wait_ready(rd_kafka_t *rk, int timeout_ms, fb_err *err);

#endif
