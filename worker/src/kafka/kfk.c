/* kfk: see kfk.h. */
#include "kafka/kfk.h"

#include <errno.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fb_assert.h"
#include "common/fb_log.h"
#include "kafka/kfk_sign.h"

static void kfk_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk;
    /* syslog levels: 0-3 error, 4 warning, 5-6 info, 7 debug */
    if (level <= 3) FB_ERROR("kafka %s: %s", fac, buf);
    else if (level == 4) FB_WARN("kafka %s: %s", fac, buf);
    else if (level <= 6) FB_INFO("kafka %s: %s", fac, buf);
    else FB_DEBUG("kafka %s: %s", fac, buf);
}

fb_code kfk_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, fb_err *err) {
    char why[512];
    if (rd_kafka_conf_set(conf, name, value, why, sizeof why) != RD_KAFKA_CONF_OK) {
        /* librdkafka's reason may quote the value: leave it out for secrets. */
        int secret = fb_config_is_secret(name);
        return fb_err_set(err, FB_ERR_USAGE, "librdkafka setting %s=%s refused: %s", name,
                          fb_config_shown(name, value), secret ? "(reason withheld: the value is secret)" : why);
    }
    return FB_OK;
}

/* Reads the SASL password: the first line of path, without its line end. The password is never printed; the
 * path is (it is no secret, and the operator needs it to fix the file). */
static fb_code kfk_read_password(const char *path, char *out, size_t cap, fb_err *err) {
    FILE *f = fopen(path, "r");
    if (!f)
        return fb_err_set(err, FB_ERR_USAGE, "could not open the Kafka password file \"%s\": %s (--kafka-password-file)",
                          path, strerror(errno));
    size_t n = fread(out, 1, cap - 1, f);
    int bad = ferror(f);
    fclose(f);
    out[n] = '\0';
    out[strcspn(out, "\r\n")] = '\0';
    if (bad || !*out) {
        sodium_memzero(out, cap);
        return fb_err_set(err, FB_ERR_USAGE, "the Kafka password file \"%s\" is %s (--kafka-password-file)", path,
                          bad ? "unreadable" : "empty");
    }
    return FB_OK;
}

/* The TLS and SASL settings of the table (fb_config: --kafka-*), before -X so that -X still wins. */
static fb_code kfk_conf_security(rd_kafka_conf_t *conf, const fb_config *cfg, fb_err *err) {
    fb_code rc = FB_OK;
    if (*cfg->kafka_security_protocol &&
        (rc = kfk_conf_set(conf, "security.protocol", cfg->kafka_security_protocol, err)))
        return rc;
    if (*cfg->kafka_ca && (rc = kfk_conf_set(conf, "ssl.ca.location", cfg->kafka_ca, err))) return rc;
    if (!*cfg->kafka_username) {
        if (*cfg->kafka_password_file)
            return fb_err_set(err, FB_ERR_USAGE, "--kafka-password-file is set but --kafka-username is not");
        return FB_OK;
    }
    if (!*cfg->kafka_password_file)
        return fb_err_set(err, FB_ERR_USAGE, "--kafka-username %s needs --kafka-password-file (the password is read "
                          "only from a file)", cfg->kafka_username);
    char password[1024];
    if ((rc = kfk_read_password(cfg->kafka_password_file, password, sizeof password, err))) return rc;
    if (!(rc = kfk_conf_set(conf, "sasl.mechanism", cfg->kafka_sasl_mechanism, err)) &&
        !(rc = kfk_conf_set(conf, "sasl.username", cfg->kafka_username, err)))
        rc = kfk_conf_set(conf, "sasl.password", password, err);
    sodium_memzero(password, sizeof password);
    return rc;
}

fb_code kfk_conf_apply(rd_kafka_conf_t *conf, const fb_config *cfg, const char *client_id, fb_err *err) {
    fb_code rc;
    /* socket.nagle.disable: every request of ours is small and waited for (a status event, an offset commit, a
     * fetch), and with Nagle's algorithm on, librdkafka 2.0.2's TLS writes meet the broker's delayed ACK: each
     * synchronous produce took 44-48 ms on loopback instead of 0.3 ms, two per job (bench/jobs/README.md). */
    if ((rc = kfk_conf_set(conf, "bootstrap.servers", cfg->brokers, err)) ||
        (rc = kfk_conf_set(conf, "client.id", client_id, err)) ||
        (rc = kfk_conf_set(conf, "socket.nagle.disable", "true", err)) || (rc = kfk_conf_security(conf, cfg, err)))
        return rc;
    rd_kafka_conf_set_log_cb(conf, kfk_log_cb);
    for (size_t i = 0; i < cfg->n_x; i++)
        if ((rc = kfk_conf_set(conf, cfg->x_keys[i], cfg->x_values[i], err))) return rc;
    return FB_OK;
}

rd_kafka_conf_t *kfk_conf_new(const fb_config *cfg, const char *client_id, fb_err *err) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (kfk_conf_apply(conf, cfg, client_id, err)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

rd_kafka_t *kfk_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, fb_err *err) {
    char why[512];
    rd_kafka_t *rk = rd_kafka_new(type, conf, why, sizeof why);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fb_err_set(err, FB_ERR_KAFKA, "could not create a Kafka %s: %s (check the -X settings)",
                   type == RD_KAFKA_PRODUCER ? "producer" : "consumer", why);
    }
    return rk;
}

/* Delivery report: the message's opaque points at the caller's result slot (0 pending, 1 delivered, else the
 * error). The report runs on whichever thread polls the producer, not necessarily the one waiting on the slot:
 * hence an atomic, released here and acquired by the waiter (kfk_produce_sync). */
static void kfk_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    atomic_int *slot = m->_private;
    if (slot)
        atomic_store_explicit(slot, m->err == RD_KAFKA_RESP_ERR_NO_ERROR ? 1 : -(int)m->err - 1000000,
                              memory_order_release);
}

rd_kafka_t *kfk_producer_new(const fb_config *cfg, fb_err *err) {
    /* Defaults first, so that the operator's -X settings (applied by kfk_conf_new) still override them.
     * linger.ms 0: every produce of ours is synchronous (kfk_produce_sync waits for its delivery report), so there
     * is never a second message to batch with, and lingering only delayed each status event by 5 ms. */
    static const char *const defaults[][2] = {
        {"enable.idempotence", "true"}, {"linger.ms", "0"}, {"message.timeout.ms", "60000"}};
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        if (kfk_conf_set(conf, defaults[i][0], defaults[i][1], err)) {
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    if (kfk_conf_apply(conf, cfg, "fusion-backup-producer", err)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, kfk_dr_cb);
    return kfk_new(RD_KAFKA_PRODUCER, conf, err);
}

void kfk_producer_free(rd_kafka_t *rk) {
    if (!rk) return;
    rd_kafka_flush(rk, 10000);
    rd_kafka_destroy(rk);
}

fb_code kfk_produce_sync(rd_kafka_t *rk, const fb_signer *signer, const char *topic, const void *key, size_t key_len,
                         const void *value, size_t value_len, const kfk_header *headers, size_t n_headers,
                         int timeout_ms, fb_err *err) {
    atomic_int done = 0;
    /* Every message is signed: there is no unsigned path to forget (kfk_sign.h). */
    if (!signer || !signer->loaded)
        return fb_err_set(err, FB_ERR_USAGE, "not sending to topic \"%s\": no signing key is loaded (set --sign-key; "
                          "make one with `fusion-backup keygen --sign --out PREFIX`)", topic);
    char key_id[FB_SIGN_KEY_ID_HEX], sig[KFK_SIG_HEX];
    kfk_sign_headers(signer, topic, key, key_len, value, value_len, key_id, sig);
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(n_headers + 2);
    for (size_t i = 0; i < n_headers; i++) {
        if (strcmp(headers[i].name, KFK_HDR_KEY_ID) == 0 || strcmp(headers[i].name, KFK_HDR_SIG) == 0) {
            rd_kafka_headers_destroy(hdrs);
            return fb_err_set(err, FB_ERR_INTERNAL, "header %s is the signature's own", headers[i].name);
        }
        rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value, -1);
    }
    rd_kafka_header_add(hdrs, KFK_HDR_KEY_ID, -1, key_id, -1);
    rd_kafka_header_add(hdrs, KFK_HDR_SIG, -1, sig, -1);
    rd_kafka_resp_err_t e =
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY((void *)key, key_len),
                          RD_KAFKA_V_VALUE((void *)value, value_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_OPAQUE((void *)&done), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
    if (e) {
        rd_kafka_headers_destroy(hdrs); /* ownership passes only on success */
        return fb_err_set(err, FB_ERR_KAFKA, "could not queue a message for topic \"%s\": %s", topic,
                          rd_kafka_err2str(e));
    }
    /* Several threads may poll the same producer: each waits for its own slot to be filled. */
    int waited = 0, got;
    while (!(got = atomic_load_explicit(&done, memory_order_acquire)) && waited < timeout_ms) {
        rd_kafka_poll(rk, 50);
        waited += 50;
    }
    /* The message may still be delivered later; the slot must outlive it, so wait it out instead of returning
     * a dangling pointer to librdkafka. message.timeout.ms bounds this. */
    while (!got) {
        rd_kafka_poll(rk, 100);
        got = atomic_load_explicit(&done, memory_order_acquire);
    }
    FB_ASSERT(got == 1 || got < 0); /* what kfk_dr_cb stores: delivered, or -err - 1000000 (err >= -200) */
    if (got == 1) return FB_OK;
    return fb_err_set(err, FB_ERR_KAFKA, "Kafka did not accept the message for topic \"%s\": %s (is the broker up and "
                      "the topic created? see `fusion-backup topics create`)", topic,
                      rd_kafka_err2str((rd_kafka_resp_err_t)(-(got + 1000000))));
}

rd_kafka_t *kfk_consumer_new(const fb_config *cfg, const char *group_id,
                             void (*rebalance_cb)(rd_kafka_t *, rd_kafka_resp_err_t, rd_kafka_topic_partition_list_t *,
                                                  void *),
                             void *opaque, fb_err *err) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char poll_ms[32];
    snprintf(poll_ms, sizeof poll_ms, "%lld", (long long)cfg->max_poll_interval_ms);
    if (kfk_conf_set(conf, "group.id", group_id, err) ||
        kfk_conf_set(conf, "enable.auto.offset.store", "false", err) ||
        kfk_conf_set(conf, "enable.auto.commit", "true", err) ||
        kfk_conf_set(conf, "auto.commit.interval.ms", "1000", err) ||
        kfk_conf_set(conf, "auto.offset.reset", "earliest", err) ||
        kfk_conf_set(conf, "max.poll.interval.ms", poll_ms, err) ||
        /* Eager assignment: librdkafka 2.0.2's cooperative-sticky has known hangs (see FIELD-NOTES). */
        kfk_conf_set(conf, "partition.assignment.strategy", "roundrobin", err) ||
        /* A partition resumed after its job waits for the in-flight fetch of the others to return: keep that
         * long poll short, or every job costs up to the default 500 ms of idle time. */
        kfk_conf_set(conf, "fetch.wait.max.ms", "50", err) ||
        kfk_conf_apply(conf, cfg, "fusion-backup-consumer", err))
        goto fail;
    if (rebalance_cb) rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_opaque(conf, opaque);
    rd_kafka_t *rk = kfk_new(RD_KAFKA_CONSUMER, conf, err);
    if (rk) rd_kafka_poll_set_consumer(rk);
    return rk;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

fb_code kfk_subscribe(rd_kafka_t *rk, const char *const *topics, size_t n, fb_err *err) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++) rd_kafka_topic_partition_list_add(l, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) return fb_err_set(err, FB_ERR_KAFKA, "could not subscribe: %s", rd_kafka_err2str(e));
    return FB_OK;
}

fb_code kfk_wait_ready(rd_kafka_t *rk, int timeout_ms, fb_err *err) {
    int waited = 0;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    while (waited <= timeout_ms) {
        const struct rd_kafka_metadata *md = NULL;
        e = rd_kafka_metadata(rk, 0, NULL, &md, 2000);
        if (!e) {
            int brokers = md->broker_cnt;
            rd_kafka_metadata_destroy(md);
            if (brokers > 0) return FB_OK;
        }
        usleep(200 * 1000);
        waited += 2200;
    }
    return fb_err_set(err, FB_ERR_KAFKA, "the Kafka broker did not answer within %d ms: %s (check --brokers)", timeout_ms,
                      rd_kafka_err2str(e));
}

fb_code kfk_create_topics(rd_kafka_t *rk, const char *const *names, const int *partitions, size_t n, int replication,
                          int timeout_ms,
                          fb_err *err) {
    fb_code rc = FB_OK;
    rd_kafka_NewTopic_t **nt = calloc(n, sizeof *nt);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    char why[512];
    rd_kafka_AdminOptions_set_operation_timeout(opt, timeout_ms, why, sizeof why);
    for (size_t i = 0; i < n; i++) {
        nt[i] = rd_kafka_NewTopic_new(names[i], partitions[i], replication, why, sizeof why);
        if (!nt[i]) {
            rc = fb_err_set(err, FB_ERR_USAGE, "topic \"%s\": %s", names[i], why);
            goto out;
        }
    }
    rd_kafka_CreateTopics(rk, nt, n, opt, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms + 5000);
    if (!ev) {
        rc = fb_err_set(err, FB_ERR_KAFKA, "creating topics timed out after %d ms", timeout_ms);
        goto out;
    }
    if (rd_kafka_event_error(ev)) {
        rc = fb_err_set(err, FB_ERR_KAFKA, "creating topics failed: %s", rd_kafka_event_error_string(ev));
    } else {
        size_t cnt = 0;
        const rd_kafka_topic_result_t **res = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
        for (size_t i = 0; i < cnt && !rc; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
            if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
                rc = fb_err_set(err, FB_ERR_KAFKA, "could not create topic \"%s\": %s", rd_kafka_topic_result_name(res[i]),
                                rd_kafka_topic_result_error_string(res[i]));
        }
    }
    rd_kafka_event_destroy(ev);
out:
    for (size_t i = 0; i < n; i++)
        if (nt[i]) rd_kafka_NewTopic_destroy(nt[i]);
    free(nt);
    rd_kafka_AdminOptions_destroy(opt);
    rd_kafka_queue_destroy(q);
    return rc;
}

int64_t kfk_partition_lag(rd_kafka_t *rk, const char *topic, int32_t partition, int64_t committed, int timeout_ms) {
    int64_t lo = 0, hi = 0;
    if (rd_kafka_query_watermark_offsets(rk, topic, partition, &lo, &hi, timeout_ms)) return -1;
    int64_t at = committed >= 0 ? committed : lo;
    return hi > at ? hi - at : 0;
}
