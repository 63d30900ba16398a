/* test_kafka_vectors: every golden vector (valid and hostile) travels through the REAL local Kafka broker and
 * comes back byte-identical with its key, on a fresh topic, with signature headers that verify (kfk_sign.h: the
 * broker keeps key, value and headers as they were signed); and kfk_produce_sync reports a clear error for a
 * topic that does not exist. Needs FB_TEST_BROKERS (tests/run.sh) and, on the secured broker, the FB_KAFKA_* and
 * FB_TEST_KAFKA_SECRETS of deploy/local/services.sh's env.sh. */
#include <stdlib.h>
#include <string.h>

#include "codec/ev_event.h"
#include "common/fb_config.h"
#include "common/fb_uuid.h"
#include "kafka/kfk.h"
#include "kafka/kfk_sign.h"
#include "tap.h"
#include "vectors.h"

int main(void) {
    const char *brokers = tap_need_env("FB_TEST_BROKERS");
    fb_config cfg;
    fb_err err = {0};
    CHECK(fb_config_init(&cfg, &err) == FB_OK);
    free(cfg.brokers);
    cfg.brokers = strdup(brokers);
    /* The secured local broker (services.sh): this test makes a topic of its own and writes it, which only the
     * admin principal may; security protocol and CA come from env.sh's FB_KAFKA_* like any client's. */
    const char *secrets = getenv("FB_TEST_KAFKA_SECRETS");
    if (secrets && *secrets) {
        char pw[1024];
        snprintf(pw, sizeof pw, "%s/admin.password", secrets);
        free(cfg.kafka_username);
        cfg.kafka_username = strdup("admin");
        free(cfg.kafka_password_file);
        cfg.kafka_password_file = strdup(pw);
    }

    /* A signing key of its own, and a keyring that trusts it. */
    char kdir[] = "/tmp/fb-test-kvec-XXXXXX", prefix[600], pubf[640], keyf[640];
    CHECK(mkdtemp(kdir) != NULL);
    snprintf(prefix, sizeof prefix, "%s/k", kdir);
    snprintf(pubf, sizeof pubf, "%s.pub", prefix);
    snprintf(keyf, sizeof keyf, "%s.key", prefix);
    fb_signer signer;
    fb_keyring kr = {0};
    CHECK(fb_sign_generate(prefix, &err) == FB_OK && fb_signer_load(&signer, keyf, "--sign-key", &err) == FB_OK &&
          fb_keyring_load(&kr, pubf, "--trusted-signer", &err) == FB_OK);

    vec_file *valid = NULL, *invalid = NULL;
    int nv = vec_load("valid", &valid), ni = vec_load("invalid", &invalid);
    CHECK(nv > 0 && ni > 0);
    int n = nv + ni;

    rd_kafka_t *p = kfk_producer_new(&cfg, &err);
    CHECKF(p != NULL, "producer: %s", err.msg);
    if (!p) return tap_done();
    CHECKF(kfk_wait_ready(p, 30000, &err) == FB_OK, "broker: %s", err.msg);

    char topic[64], id[37];
    fb_uuid_random(id);
    snprintf(topic, sizeof topic, "test.vectors.%.8s", id);
    const char *names[1] = {topic};
    int parts[1] = {3};
    CHECKF(kfk_create_topics(p, names, parts, 1, 1, 30000, &err) == FB_OK, "create topic: %s", err.msg);

    for (int i = 0; i < n; i++) {
        vec_file *v = i < nv ? &valid[i] : &invalid[i - nv];
        fb_code rc = kfk_produce_sync(p, &signer, topic, v->name, strlen(v->name), v->data, v->len, NULL, 0, 30000, &err);
        CHECKF(rc == FB_OK, "produce %s: %s", v->name, err.msg);
    }

    rd_kafka_t *c = kfk_consumer_new(&cfg, topic, NULL, NULL, &err); /* a group of its own */
    CHECKF(c != NULL, "consumer: %s", err.msg);
    const char *subs[1] = {topic};
    CHECK(kfk_subscribe(c, subs, 1, &err) == FB_OK);
    int got = 0, matched = 0, verified = 0;
    for (int spins = 0; got < n && spins < 600; spins++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (!m) continue;
        if (!m->err) {
            got++;
            fb_err ve;
            fb_code vr = kfk_sign_verify_message(&kr, m, "a vector", NULL, &ve);
            CHECKF(vr == FB_OK, "signature of a vector after the broker: %s", ve.msg);
            verified += vr == FB_OK;
            for (int i = 0; i < n; i++) {
                vec_file *v = i < nv ? &valid[i] : &invalid[i - nv];
                if (m->key_len == strlen(v->name) && memcmp(m->key, v->name, m->key_len) == 0) {
                    CHECKF(m->len == v->len && memcmp(m->payload, v->data, v->len) == 0,
                           "%s came back different (%zu bytes, sent %zu)", v->name, m->len, v->len);
                    matched++;
                    break;
                }
            }
        }
        rd_kafka_message_destroy(m);
    }
    CHECKF(got == n && matched == n && verified == n, "consumed %d, matched %d, verified %d of %d vectors", got,
           matched, verified, n);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);

    /* A topic that does not exist: a clear error within the timeout, not a hang. */
    const char *v0 = "x";
    fb_err e2 = {0};
    rd_kafka_t *p2 = NULL;
    {
        fb_config c2 = cfg;
        c2.n_x = 0;
        char *k = "message.timeout.ms", *val = "3000";
        c2.x_keys[0] = k;
        c2.x_values[0] = val;
        c2.n_x = 1;
        p2 = kfk_producer_new(&c2, &e2);
    }
    CHECK(p2 != NULL);
    if (p2) {
        fb_code rc = kfk_produce_sync(p2, &signer, "test.no.such.topic.here", NULL, 0, v0, 1, NULL, 0, 10000, &e2);
        CHECKF(rc == FB_ERR_KAFKA && strstr(e2.msg, "test.no.such.topic.here"), "got %d: %s", rc, e2.msg);
        rd_kafka_destroy(p2);
    }
    /* Nothing is ever sent unsigned. */
    fb_signer none = {0};
    fb_code urc = kfk_produce_sync(p, &none, topic, "k", 1, v0, 1, NULL, 0, 10000, &e2);
    CHECKF(urc == FB_ERR_USAGE && strstr(e2.msg, "--sign-key"), "unsigned produce: %d %s", urc, e2.msg);
    kfk_producer_free(p);
    fb_signer_wipe(&signer);
    fb_keyring_free(&kr);
    vec_free(valid, nv);
    vec_free(invalid, ni);
    fb_config_free(&cfg);
    return tap_done();
}
