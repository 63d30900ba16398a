/* test_kfk_conf: the Kafka security settings of the table reach librdkafka, the password only from its file, and
 * no secret is ever echoed: not in a "setting refused" message of a -X setting, not when the password file is
 * missing or empty. No broker needed (librdkafka configuration only). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fb_config.h"
#include "kafka/kfk.h"
#include "tap.h"

static void set(char **slot, const char *v) {
    free(*slot);
    *slot = strdup(v);
}

static const char *conf_get(rd_kafka_conf_t *conf, const char *name, char *buf, size_t cap) {
    size_t n = cap;
    return rd_kafka_conf_get(conf, name, buf, &n) == RD_KAFKA_CONF_OK ? buf : "(unset)";
}

static void test_secret_names(void) {
    CHECK(fb_config_is_secret("sasl.password"));
    CHECK(fb_config_is_secret("ssl.key.password"));
    CHECK(fb_config_is_secret("SASL.PASSWORD"));
    CHECK(fb_config_is_secret("sasl.oauthbearer.client.secret"));
    CHECK(fb_config_is_secret("secret-key"));
    CHECK(!fb_config_is_secret("sasl.username"));
    CHECK(!fb_config_is_secret("bootstrap.servers"));
    CHECK_EQ_STR(fb_config_shown("my.password", "hunter2"), "***");
    CHECK_EQ_STR(fb_config_shown("linger.ms", "5"), "5");
}

/* A refused -X setting whose name says secret: the message names the setting and hides the value. */
static void test_refused_secret_is_masked(void) {
    fb_config cfg;
    fb_err err = {0};
    CHECK(fb_config_init(&cfg, &err) == FB_OK);
    char a0[] = "x", a1[] = "-X", a2[] = "no.such.password=hunter2-do-not-print";
    char *argv[] = {a0, a1, a2, NULL};
    int argc = 3;
    CHECK(fb_config_parse_args(&cfg, &argc, argv, FB_CFG_CLI, NULL, &err) == FB_OK);
    rd_kafka_conf_t *conf = kfk_conf_new(&cfg, "test", &err);
    CHECK(conf == NULL);
    CHECK_EQ_INT(err.code, FB_ERR_USAGE);
    CHECKF(strstr(err.msg, "hunter2") == NULL, "the secret is echoed: %s", err.msg);
    CHECKF(strstr(err.msg, "no.such.password=***") != NULL, "the setting is not named: %s", err.msg);
    if (conf) rd_kafka_conf_destroy(conf);
    fb_config_free(&cfg);

    /* The same path for a setting that is no secret keeps its value, so masking is not just "always ***". */
    fb_err err2 = {0};
    rd_kafka_conf_t *c2 = rd_kafka_conf_new();
    CHECK(kfk_conf_set(c2, "no.such.colour", "teal", &err2) == FB_ERR_USAGE);
    CHECKF(strstr(err2.msg, "no.such.colour=teal") != NULL, "%s", err2.msg);
    rd_kafka_conf_destroy(c2);
}

static void test_settings_reach_librdkafka(void) {
    char path[] = "/tmp/fb-test-kfk-pw-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, "s3cr3t-pw\n", 10) == 10);
    close(fd);

    fb_config cfg;
    fb_err err = {0};
    CHECK(fb_config_init(&cfg, &err) == FB_OK);
    set(&cfg.kafka_security_protocol, "SASL_SSL");
    set(&cfg.kafka_username, "worker");
    set(&cfg.kafka_password_file, path);
    set(&cfg.kafka_ca, "/etc/ssl/certs/ca-certificates.crt");
    rd_kafka_conf_t *conf = kfk_conf_new(&cfg, "test", &err);
    CHECKF(conf != NULL, "%s", err.msg);
    if (conf) {
        char buf[512];
        CHECK_EQ_STR(conf_get(conf, "security.protocol", buf, sizeof buf), "sasl_ssl");
        CHECK_EQ_STR(conf_get(conf, "sasl.mechanisms", buf, sizeof buf), "SCRAM-SHA-512");
        CHECK_EQ_STR(conf_get(conf, "sasl.username", buf, sizeof buf), "worker");
        CHECK_EQ_STR(conf_get(conf, "sasl.password", buf, sizeof buf), "s3cr3t-pw"); /* the line end is dropped */
        CHECK_EQ_STR(conf_get(conf, "ssl.ca.location", buf, sizeof buf), "/etc/ssl/certs/ca-certificates.crt");
        rd_kafka_conf_destroy(conf);
    }

    /* An empty password file: refused, with the file named. */
    FILE *f = fopen(path, "w");
    fclose(f);
    conf = kfk_conf_new(&cfg, "test", &err);
    CHECK(conf == NULL);
    CHECKF(strstr(err.msg, "is empty") && strstr(err.msg, path), "%s", err.msg);
    if (conf) rd_kafka_conf_destroy(conf);

    /* A missing one: refused, with the file named. */
    unlink(path);
    conf = kfk_conf_new(&cfg, "test", &err);
    CHECK(conf == NULL);
    CHECKF(strstr(err.msg, "could not open the Kafka password file") && strstr(err.msg, path), "%s", err.msg);
    if (conf) rd_kafka_conf_destroy(conf);

    /* A user without a password file: the password has no other source. */
    set(&cfg.kafka_password_file, "");
    conf = kfk_conf_new(&cfg, "test", &err);
    CHECK(conf == NULL);
    CHECKF(strstr(err.msg, "needs --kafka-password-file") != NULL, "%s", err.msg);
    if (conf) rd_kafka_conf_destroy(conf);
    fb_config_free(&cfg);
}

/* The settings come from the environment too (env-only containers). */
static void test_settings_from_the_environment(void) {
    setenv("FB_KAFKA_SECURITY_PROTOCOL", "SASL_SSL", 1);
    setenv("FB_KAFKA_USERNAME", "recorder", 1);
    setenv("FB_KAFKA_CA", "/nonexistent/ca.pem", 1);
    fb_config cfg;
    fb_err err = {0};
    CHECK(fb_config_init(&cfg, &err) == FB_OK);
    CHECK_EQ_STR(cfg.kafka_security_protocol, "SASL_SSL");
    CHECK_EQ_STR(cfg.kafka_username, "recorder");
    CHECK_EQ_STR(cfg.kafka_ca, "/nonexistent/ca.pem");
    CHECK_EQ_STR(cfg.kafka_sasl_mechanism, "SCRAM-SHA-512");
    fb_config_free(&cfg);
    unsetenv("FB_KAFKA_SECURITY_PROTOCOL");
    unsetenv("FB_KAFKA_USERNAME");
    unsetenv("FB_KAFKA_CA");
}

int main(void) {
    /* Run with a clean slate whatever env.sh exported. */
    unsetenv("FB_KAFKA_SECURITY_PROTOCOL");
    unsetenv("FB_KAFKA_SASL_MECHANISM");
    unsetenv("FB_KAFKA_USERNAME");
    unsetenv("FB_KAFKA_PASSWORD_FILE");
    unsetenv("FB_KAFKA_CA");
    unsetenv("FB_CONFIG");
    test_secret_names();
    test_refused_secret_is_masked();
    test_settings_reach_librdkafka();
    test_settings_from_the_environment();
    return tap_done();
}
