/* bench_sign: what signing costs one message in C (kfk_sign.h), without a broker: sign (digest + Ed25519) and
 * verify (header parsing, digest, key look-up, Ed25519) of a message the size of a small job's request or status.
 * Run: build/bench_sign [VALUE_BYTES] [ITERATIONS]. Figures: bench/jobs/README.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kafka/kfk_sign.h"

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
    size_t len = argc > 1 ? (size_t)atol(argv[1]) : 300;
    long n = argc > 2 ? atol(argv[2]) : 20000;
    char dir[] = "/tmp/fb-bench-sign-XXXXXX", prefix[600], key[640], pub[640];
    fb_err err;
    if (sodium_init() < 0 || !mkdtemp(dir)) return 1;
    snprintf(prefix, sizeof prefix, "%s/k", dir);
    snprintf(key, sizeof key, "%s.key", prefix);
    snprintf(pub, sizeof pub, "%s.pub", prefix);
    fb_signer s;
    fb_keyring kr = {0};
    if (fb_sign_generate(prefix, &err) || fb_signer_load(&s, key, "--sign-key", &err) ||
        fb_keyring_load(&kr, pub, "--trusted-signer", &err)) {
        fprintf(stderr, "bench_sign: %s\n", err.msg);
        return 1;
    }
    unsigned char *value = malloc(len);
    randombytes_buf(value, len);
    const char *topic = "fusion.jobs.completed", *mkey = "0b7f3c1e-8d2a-4f4e-9c1a-6a1f2b3c4d5e";
    char kid[FB_SIGN_KEY_ID_HEX], sig[KFK_SIG_HEX];
    double t0 = now_us();
    for (long i = 0; i < n; i++) kfk_sign_headers(&s, topic, mkey, strlen(mkey), value, len, kid, sig);
    double sign_us = (now_us() - t0) / (double)n;
    rd_kafka_headers_t *h = rd_kafka_headers_new(2);
    rd_kafka_header_add(h, KFK_HDR_KEY_ID, -1, kid, -1);
    rd_kafka_header_add(h, KFK_HDR_SIG, -1, sig, -1);
    long ok = 0;
    t0 = now_us();
    for (long i = 0; i < n; i++)
        ok += kfk_sign_verify(&kr, topic, mkey, strlen(mkey), value, len, h, KFK_HDR_KEY_ID, KFK_HDR_SIG, "m", NULL,
                              &err) == FB_OK;
    double verify_us = (now_us() - t0) / (double)n;
    printf("C (libsodium %s): %zu-byte value, %ld iterations: sign %.1f us, verify %.1f us per message%s\n",
           sodium_version_string(), len, n, sign_us, verify_us, ok == n ? "" : " (SOME FAILED TO VERIFY)");
    rd_kafka_headers_destroy(h);
    fb_signer_wipe(&s);
    fb_keyring_free(&kr);
    unlink(key);
    unlink(pub);
    rmdir(dir);
    free(value);
    return ok == n ? 0 : 1;
}
