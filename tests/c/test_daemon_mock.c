/* test_daemon_mock: the worker's consumer loop against librdkafka's mock cluster, with injected broker faults.
 * Fast and deterministic; the real broker is what tests/integration proves the system on. Proves:
 *   - messages that break the contract, sit on the wrong topic, or are signed by a key the worker does not trust
 *     go to the dead-letter topic with their headers, signed by the worker and carrying the original's signature
 *     headers, once each, even when the broker refuses the first produce attempts (idempotent producer retries);
 *   - the loop keeps consuming after them and stores their offsets (a second worker in the group sees nothing);
 *   - the first signal makes the loop commit and return.
 * Needs no PostgreSQL: no message here reaches a job. */
#define _GNU_SOURCE /* memmem */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h> /* after rdkafka.h, as it demands */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fb_flag.h"
#include "codec/ev_event.h"
#include "common/fb_config.h"
#include "common/fb_log.h"
#include "common/fb_uuid.h"
#include "daemon/dmn_worker.h"
#include "kafka/kfk.h"
#include "kafka/kfk_sign.h"
#include "tap.h"

static fb_flag stop_flag = 0;
static fb_config cfg;
static fb_signer worker_key, requester_key, stranger_key;
static fb_keyring requesters, workers;

static void *run_worker(void *arg) {
    fb_err err;
    fb_code *rc = arg;
    *rc = dmn_worker_run(&cfg, "mock-worker", &worker_key, &requesters, &stop_flag, &err);
    if (*rc) printf("# worker: %s\n", err.msg);
    return NULL;
}

/* Reads up to want messages from topic (own group, from the beginning) for at most ms; returns the count and
 * copies the last message's header `name` into hdr. */
static int read_topic(const char *topic, int want, int ms, const char *name, char *hdr, size_t cap, int *n_headers,
                      int *signed_by_worker, int *untrusted_reason) {
    fb_err err;
    char group[64], id[37];
    fb_uuid_random(id);
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
            fb_err ve;
            *signed_by_worker += kfk_sign_verify_message(&workers, m, "a dead letter", NULL, &ve) == FB_OK;
            rd_kafka_headers_t *h = NULL;
            const void *v;
            size_t n;
            if (!rd_kafka_message_headers(m, &h)) {
                *n_headers = (int)rd_kafka_header_cnt(h);
                if (!rd_kafka_header_get_last(h, name, &v, &n)) snprintf(hdr, cap, "%.*s", (int)n, (const char *)v);
                if (!rd_kafka_header_get_last(h, "fusion.error", &v, &n) && memmem(v, n, "not trusted", 11))
                    (*untrusted_reason)++;
            }
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return got;
}

/* Makes a key pair under dir and loads its secret key into s. */
static void make_key(const char *dir, const char *name, fb_signer *s, char *pub, size_t cap) {
    char prefix[512], key[600];
    fb_err err;
    snprintf(prefix, sizeof prefix, "%s/%s", dir, name);
    snprintf(key, sizeof key, "%s.key", prefix);
    snprintf(pub, cap, "%s.pub", prefix);
    CHECK(fb_sign_generate(prefix, &err) == FB_OK && fb_signer_load(s, key, "--sign-key", &err) == FB_OK);
}

int main(void) {
    fb_err err;
    fb_log_set_level(FB_LOG_WARN);
    char kdir[] = "/tmp/fb-test-mock-XXXXXX", wpub[600], rpub[600], spub[600];
    CHECK(mkdtemp(kdir) != NULL);
    make_key(kdir, "worker", &worker_key, wpub, sizeof wpub);
    make_key(kdir, "django", &requester_key, rpub, sizeof rpub);
    make_key(kdir, "stranger", &stranger_key, spub, sizeof spub);
    CHECK(fb_keyring_load(&requesters, rpub, "--trusted-requester", &err) == FB_OK);
    CHECK(fb_keyring_load(&workers, wpub, "--trusted-signer", &err) == FB_OK);
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
    CHECK(kfk_produce_sync(p, &requester_key, "mock.archive.due", "k", 1, poison, sizeof poison, NULL, 0, 10000, &err) == FB_OK);
    ev_event *st = ev_event_new(EV_JOB_STATUS);
    fb_uuid_random(st->job_id);
    st->u.status.job_type = EV_JOB_BACKUP;
    st->u.status.status = EV_SUCCESS;
    st->u.status.worker = ev_strdup(st, "someone");
    unsigned char *enc = NULL;
    size_t enc_len = 0;
    CHECK(ev_encode(st, &enc, &enc_len, &err) == FB_OK);
    CHECK(kfk_produce_sync(p, &requester_key, "mock.backup.requested", "1", 1, enc, enc_len, NULL, 0, 10000, &err) ==
          FB_OK);
    /* A well-formed message signed by a key the worker does not trust: dead-lettered before it is even decoded. */
    CHECK(kfk_produce_sync(p, &stranger_key, "mock.backup.requested", "2", 1, enc, enc_len, NULL, 0, 10000, &err) ==
          FB_OK);

    /* The broker refuses the next three produce requests (the dead letters): the producer must retry, not lose
     * or duplicate them. ApiKey 0 is Produce. */
    rd_kafka_mock_push_request_errors(mc, 0, 3, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                      RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);

    fb_code wrc = FB_OK;
    pthread_t t;
    pthread_create(&t, NULL, run_worker, &wrc);
    char hdr[512] = "";
    int n_headers = 0, signed_ok = 0, untrusted = 0;
    /* Read for a while beyond the three expected: exactly three must be there, once each despite the retries. */
    int got = read_topic("mock.jobs.dlq", 4, 15000, "fusion.source.topic", hdr, sizeof hdr, &n_headers, &signed_ok,
                         &untrusted);
    CHECKF(got == 3, "expected exactly 3 dead letters after the broker's refusals, found %d", got);
    /* 7 of the dead letter, its own 2 signature headers, the original's 2 copied */
    CHECKF(n_headers == 11, "dead letters carry 11 headers, got %d", n_headers);
    CHECKF(signed_ok == 3, "%d of 3 dead letters verify as the worker's", signed_ok);
    CHECKF(untrusted == 1, "%d dead letter(s) say the request's key is not trusted (expected 1)", untrusted);
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
    fb_keyring_free(&requesters);
    fb_keyring_free(&workers);
    fb_config_free(&cfg);
    return tap_done();
}
