/* test_sign_vectors: kfk_sign (the signature of a Kafka message) against the signed-message golden vectors of
 * schemas/vectors/signed/ (SPEC.md, "Signed messages"), which fusion_events.sign passes too
 * (tests/python/test_sign_vectors.py): every "ok" vector verifies, with the trusted key's id; every "untrusted"
 * one is refused with FB_ERR_UNTRUSTED and a reason containing its reason_contains. Also: kfk_sign_headers
 * writes the generator's headers byte for byte (Ed25519 is deterministic), and an empty keyring trusts nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kafka/kfk_sign.h"
#include "tap.h"
#include "vectors.h"

static char base[1024];

static unsigned char *read_all(const char *name, const char *ext, size_t *len) {
    char path[1400];
    snprintf(path, sizeof path, "%s/%s%s", base, name, ext);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = malloc(1 << 20);
    *len = buf ? fread(buf, 1, 1 << 20, f) : 0;
    fclose(f);
    return buf;
}

/* NAME.headers: one "name<TAB>value" line per header, in order. */
static rd_kafka_headers_t *read_headers(const char *name) {
    size_t len = 0;
    unsigned char *text = read_all(name, ".headers", &len);
    if (!text) return NULL;
    rd_kafka_headers_t *h = rd_kafka_headers_new(8);
    char *p = (char *)text, *stop = (char *)text + len;
    while (p < stop) {
        char *nl = memchr(p, '\n', (size_t)(stop - p));
        char *line_end = nl ? nl : stop;
        char *tab = memchr(p, '\t', (size_t)(line_end - p));
        if (tab) rd_kafka_header_add(h, p, tab - p, tab + 1, line_end - tab - 1);
        p = line_end + 1;
    }
    free(text);
    return h;
}

int main(void) {
    const char *src = getenv("FB_SOURCE_DIR");
    snprintf(base, sizeof base, "%s/schemas/vectors/signed", src ? src : ".");
    char path[1200];
    snprintf(path, sizeof path, "%s/INDEX.json", base);
    char *index = vec_read_text(path);
    CHECKF(index != NULL, "cannot read %s", path);
    if (!index) return tap_done();
    fb_err err;
    fb_keyring kr = {0};
    snprintf(path, sizeof path, "%s/trusted.pub", base);
    CHECKF(fb_keyring_load(&kr, path, "--trusted-signer", &err) == FB_OK, "%s", err.msg);

    int n = 0, n_ok = 0;
    for (const char *e = strstr(index, "\"name\": \""); e; e = strstr(e + 1, "\"name\": \"")) {
        char name[256], topic[512], key[512], expect[32], reason[128];
        int q = 0, key_quoted = 0;
        if (vec_entry_field(e, "name", name, sizeof name, &q) || vec_entry_field(e, "topic", topic, sizeof topic, &q) ||
            vec_entry_field(e, "key", key, sizeof key, &key_quoted) ||
            vec_entry_field(e, "expect", expect, sizeof expect, &q) ||
            vec_entry_field(e, "reason_contains", reason, sizeof reason, &q)) {
            CHECKF(0, "an INDEX.json entry lacks a field near \"%.40s\"", e);
            continue;
        }
        n++;
        size_t vlen = 0;
        unsigned char *value = read_all(name, ".value", &vlen);
        rd_kafka_headers_t *h = read_headers(name);
        CHECKF(value && h, "%s: missing .value or .headers", name);
        const fb_trusted_key *who = NULL;
        fb_err ve = {0};
        fb_code rc = kfk_sign_verify(&kr, topic, key_quoted ? key : NULL, strlen(key), value, vlen, h, KFK_HDR_KEY_ID,
                                     KFK_HDR_SIG, name, &who, &ve);
        if (strcmp(expect, "ok") == 0) {
            n_ok++;
            CHECKF(rc == FB_OK && who == &kr.keys[0], "%s should verify: %s", name, ve.msg);
        } else {
            CHECKF(rc == FB_ERR_UNTRUSTED && strstr(ve.msg, reason), "%s: code %d, \"%s\" (want \"%s\")", name, rc,
                   ve.msg, reason);
        }
        if (h) rd_kafka_headers_destroy(h);
        free(value);
    }
    CHECKF(n >= 20 && n_ok >= 4, "%d vectors, %d ok", n, n_ok);

    /* Ed25519 is deterministic: our signer writes the generator's headers for ok_request. RFC 8032 test 1's
     * seed, written as a key file the way keygen --sign writes one. */
    char dir[] = "/tmp/fb-test-signvec-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/t.key", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "ed25519-seed 9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60\n");
    fclose(f);
    chmod(path, 0600);
    fb_signer s;
    CHECKF(fb_signer_load(&s, path, "--sign-key", &err) == FB_OK, "%s", err.msg);
    size_t vlen = 0;
    unsigned char *value = read_all("ok_request", ".value", &vlen);
    char kid[FB_SIGN_KEY_ID_HEX], sig[KFK_SIG_HEX];
    kfk_sign_headers(&s, "fusion.backup.requested", "3", 1, value, vlen, kid, sig);
    size_t hl = 0;
    unsigned char *want = read_all("ok_request", ".headers", &hl);
    char mine[400];
    snprintf(mine, sizeof mine, "fb-key-id\t%s\nfb-sig\t%s\n", kid, sig);
    CHECKF(want && hl == strlen(mine) && memcmp(want, mine, hl) == 0, "kfk_sign_headers differs from the vector:\n%s",
           mine);
    /* A verifier that trusts no key accepts nothing, however well signed. */
    fb_keyring empty = {0};
    rd_kafka_headers_t *h = read_headers("ok_request");
    CHECK(kfk_sign_verify(&empty, "fusion.backup.requested", "3", 1, value, vlen, h, KFK_HDR_KEY_ID, KFK_HDR_SIG,
                          "x", NULL, &err) == FB_ERR_UNTRUSTED);
    rd_kafka_headers_destroy(h);
    free(want);
    free(value);
    unlink(path);
    rmdir(dir);
    fb_signer_wipe(&s);
    fb_keyring_free(&kr);
    free(index);
    return tap_done();
}
