/* test_daemon_mock: the worker's consumer loop against librdkafka's mock cluster, with injected broker faults.
 * Fast and deterministic; the real broker is what tests/integration proves the system on. Proves:
 *   - messages that break the contract, or sit on the wrong topic, go to the dead-letter topic with their
 *     headers, once each, even when the broker refuses the first produce attempts (idempotent producer retries);
 *   - the loop keeps consuming after them and stores their offsets (a second worker in the group sees nothing);
 *   - the first signal makes the loop commit and return.
 * Needs no PostgreSQL: no message here reaches a job. */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h> /* after rdkafka.h, as it demands */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec/ev_event.h"
#include "common/fb_config.h"
#include "common/fb_log.h"
#include "daemon/dmn_worker.h"
#include "kafka/kfk.h"
#include "tap.h"

static volatile sig_atomic_t stop_flag = 0;
static fb_config cfg;

static void *run_worker(void *arg) {
    fb_err err;
    fb_code *rc = arg;
    *rc = dmn_worker_run(&cfg, "mock-worker", &stop_flag, &err);
    if (*rc) printf("# worker: %s\n", err.msg);
    return NULL;
}

/* Reads up to want messages from topic (own group, from the beginning) for at most ms; returns the count and
 * copies the last message's header `name` into hdr. */
static int read_topic(const char *topic, int want, int ms, const char *name, char *hdr, size_t cap, int *n_headers) {
    fb_err err;
    char group[64], id[37];
    ev_uuid_random(id);
    snprintf(group, sizeof group, "mock-reader-%s", id); /* a fresh group reads from the beginning */
    rd_kafka_t *c = kfk_consumer_new(&cfg, group, NULL, NULL, &err);
    if (!c) return -1;
    const char *t[1] = {topic};
    kfk_subscribe(c, t, 1, &err);
    int got = 0;
    for (int waited = 0; waited < ms && got < want; waited += 100) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (!m) continue;
        if (!m->err) {
            got++;
            rd_kafka_headers_t *h = NULL;
            const void *v;
            size_t n;
            if (!rd_kafka_message_headers(m, &h)) {
                *n_headers = (int)rd_kafka_header_cnt(h);
                if (!rd_kafka_header_get_last(h, name, &v, &n)) snprintf(hdr, cap, "%.*s", (int)n, (const char *)v);
            }
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return got;
}

int main(void) {
    fb_err err;
    fb_log_set_level(FB_LOG_WARN);
    CHECK(fb_config_init(&cfg, &err) == FB_OK);
    /* A mock cluster owned by a throw-away producer handle. */
    char why[256];
    rd_kafka_conf_t *mconf = rd_kafka_conf_new();
    rd_kafka_conf_set(mconf, "log_level", "0", why, sizeof why);
    rd_kafka_t *owner = rd_kafka_new(RD_KAFKA_PRODUCER, mconf, why, sizeof why);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(owner, 1);
    CHECK(mc != NULL);
    if (!mc) return tap_done();
    free(cfg.brokers);
    cfg.brokers = strdup(rd_kafka_mock_cluster_bootstraps(mc));
    /* The mock cluster speaks PLAINTEXT: drop the secured local broker's settings (env.sh's FB_KAFKA_*). */
    cfg.kafka_security_protocol[0] = cfg.kafka_username[0] = cfg.kafka_password_file[0] = cfg.kafka_ca[0] = '\0';
    free(cfg.topic_prefix);
    cfg.topic_prefix = strdup("mock.");
    rd_kafka_mock_topic_create(mc, "mock.backup.requested", 2, 1);
    rd_kafka_mock_topic_create(mc, "mock.archive.due", 2, 1);
    rd_kafka_mock_topic_create(mc, "mock.jobs.completed", 1, 1);
    rd_kafka_mock_topic_create(mc, "mock.jobs.dlq", 1, 1);

    rd_kafka_t *p = kfk_producer_new(&cfg, &err);
    CHECK(p != NULL);
    /* Poison: not a map; and a valid status event on a job topic. */
    static const unsigned char poison[] = {0x93, 0x01, 0x02, 0x03};
    CHECK(kfk_produce_sync(p, "mock.archive.due", "k", 1, poison, sizeof poison, NULL, 0, 10000, &err) == FB_OK);
    ev_event *st = ev_event_new(EV_JOB_STATUS);
    ev_uuid_random(st->job_id);
    st->u.status.job_type = EV_JOB_BACKUP;
    st->u.status.status = EV_SUCCESS;
    st->u.status.worker = ev_strdup(st, "someone");
    unsigned char *enc = NULL;
    size_t enc_len = 0;
    CHECK(ev_encode(st, &enc, &enc_len, &err) == FB_OK);
    CHECK(kfk_produce_sync(p, "mock.backup.requested", "1", 1, enc, enc_len, NULL, 0, 10000, &err) == FB_OK);

    /* The broker refuses the next three produce requests (the dead letters): the producer must retry, not lose
     * or duplicate them. ApiKey 0 is Produce. */
    rd_kafka_mock_push_request_errors(mc, 0, 3, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                      RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);

    fb_code wrc = FB_OK;
    pthread_t t;
    pthread_create(&t, NULL, run_worker, &wrc);
    char hdr[512] = "";
    int n_headers = 0;
    /* Read for a while beyond the two expected: exactly two must be there, once each despite the retries. */
    int got = read_topic("mock.jobs.dlq", 3, 15000, "fusion.source.topic", hdr, sizeof hdr, &n_headers);
    CHECKF(got == 2, "expected exactly 2 dead letters after the broker's refusals, found %d", got);
    CHECKF(n_headers == 7, "dead letters carry 7 headers, got %d", n_headers);
    CHECK(strncmp(hdr, "mock.", 5) == 0);

    stop_flag = 1;
    pthread_join(t, NULL);
    CHECK_EQ_INT(wrc, FB_OK);

    /* The offsets were stored and committed: a new member of the same group gets nothing to do. */
    rd_kafka_t *c = kfk_consumer_new(&cfg, cfg.group_id, NULL, NULL, &err);
    const char *topics[2] = {"mock.backup.requested", "mock.archive.due"};
    kfk_subscribe(c, topics, 2, &err);
    int redelivered = 0;
    for (int i = 0; i < 50; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (m && !m->err) redelivered++;
        if (m) rd_kafka_message_destroy(m);
    }
    CHECKF(redelivered == 0, "%d message(s) delivered again after the worker committed", redelivered);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);

    free(enc);
    ev_event_free(st);
    kfk_producer_free(p);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(owner);
    fb_config_free(&cfg);
    return tap_done();
}
