/* test_arc_stream: the one segment reader (arc_stream.h) that the artifact reader and `rekey --new-data-key` share.
 *
 * Segments are built by hand here with libsodium (header, then u32 length + ciphertext per message, FINAL last),
 * so each rule of FORMAT.md "Segments" is tested on its own: messages come back in order with their tags; a
 * segment that ends before its FINAL, a FINAL before the segment's end, a length above ARC_MESSAGE_MAX, a flipped
 * byte, the wrong additional data, the wrong key, and a segment outside the file each fail with their own message;
 * a cache covering the bytes is read instead of the file (what the reader relies on for the signed manifest); and
 * what the write side (arc_stream_out) seals reads back. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "artifact/arc_format.h"
#include "artifact/arc_stream.h"
#include "storage/stor.h"
#include "tap.h"

static unsigned char data_key[crypto_kdf_KEYBYTES];
static const unsigned char ad[ARC_AD_BYTES_V2] = "FBAK-test-ad-16";
#define SEG 3u
#define OFF 7u /* the segment starts after some unrelated bytes, as in an artifact */

/* A segment of the given messages (FINAL on the last unless no_final) at OFF in buf; returns the file's length,
 * *seg_len the segment's. */
static size_t build(unsigned char *buf, const char *const *msgs, size_t n, int no_final, size_t *seg_len) {
    unsigned char key[crypto_secretstream_xchacha20poly1305_KEYBYTES];
    crypto_secretstream_xchacha20poly1305_state st;
    crypto_kdf_derive_from_key(key, sizeof key, SEG, ARC_KDF_CONTEXT, data_key);
    memset(buf, 0xee, OFF);
    size_t at = OFF;
    crypto_secretstream_xchacha20poly1305_init_push(&st, buf + at, key);
    at += crypto_secretstream_xchacha20poly1305_HEADERBYTES;
    for (size_t i = 0; i < n; i++) {
        unsigned long long cl = 0;
        unsigned char tag = i + 1 == n && !no_final ? crypto_secretstream_xchacha20poly1305_TAG_FINAL : 0;
        crypto_secretstream_xchacha20poly1305_push(&st, buf + at + 4, &cl, (const unsigned char *)msgs[i],
                                                   strlen(msgs[i]), ad, sizeof ad, tag);
        arc_put_u32(buf + at, (uint32_t)cl);
        at += 4 + (size_t)cl;
    }
    *seg_len = at - OFF;
    return at;
}

static stor_rfile *open_bytes(const char *path, const unsigned char *p, size_t len) {
    stor_rfile *f = NULL;
    fb_err err;
    tap_spit(path, p, len);
    if (stor_posix_open_path(path, &f, &err)) fprintf(stderr, "open: %s\n", err.msg);
    return f;
}

/* Reads the whole segment; returns the code and, in got, the messages joined by '|'. */
static fb_code read_all(stor_rfile *f, const arc_stream_cache *cache, uint64_t len, const unsigned char *use_ad,
                        char *got, size_t cap, fb_err *err) {
    arc_stream s;
    arc_stream_bufs bufs = {0};
    got[0] = '\0';
    fb_code rc = arc_stream_open(&s, f, cache, data_key, SEG, OFF, len, use_ad, ARC_AD_BYTES_V2, "segment 3", &bufs,
                                 err);
    while (!rc && !s.final) {
        const unsigned char *p = NULL;
        size_t n = 0;
        unsigned char tag = 0;
        if ((rc = arc_stream_next(&s, &p, &n, &tag, err))) break;
        size_t l = strlen(got);
        snprintf(got + l, cap - l, "%s%.*s%s", l ? "|" : "", (int)n, (const char *)p,
                 tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL ? "(F)" : "");
    }
    arc_stream_close(&s);
    arc_stream_bufs_free(&bufs);
    return rc;
}

int main(void) {
    if (sodium_init() < 0) return 1;
    crypto_kdf_keygen(data_key);
    char path[] = "/tmp/test_arc_stream-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return 1;
    close(fd);
    unsigned char *buf = calloc(1, ARC_MESSAGE_MAX + 4096), *bad = calloc(1, ARC_MESSAGE_MAX + 4096);
    const char *three[] = {"COPY one", "two", "three"};
    size_t seg = 0, flen = build(buf, three, 3, 0, &seg);
    char got[256];
    fb_err err;

    /* Messages in order, FINAL on the last, exactly at the segment's end. */
    stor_rfile *f = open_bytes(path, buf, flen);
    CHECK_EQ_INT(read_all(f, NULL, seg, ad, got, sizeof got, &err), FB_OK);
    CHECK_EQ_STR(got, "COPY one|two|three(F)");
    stor_rfile_close(f);

    /* The segment cut short before its FINAL (the file cut too): "ends before the final tag". */
    size_t cut = seg - 4 - (strlen("three") + crypto_secretstream_xchacha20poly1305_ABYTES);
    f = open_bytes(path, buf, OFF + cut);
    CHECK_EQ_INT(read_all(f, NULL, cut, ad, got, sizeof got, &err), FB_ERR_CRYPTO);
    CHECKF(strstr(err.msg, "segment 3: data ends before the final tag"), "%s", err.msg);
    stor_rfile_close(f);

    /* A segment whose last message is not FINAL reads to its end and fails the same way. */
    size_t seg2 = 0, flen2 = build(bad, three, 3, 1, &seg2);
    f = open_bytes(path, bad, flen2);
    CHECK_EQ_INT(read_all(f, NULL, seg2, ad, got, sizeof got, &err), FB_ERR_CRYPTO);
    CHECKF(strstr(err.msg, "ends before the final tag"), "%s", err.msg);
    CHECK_EQ_STR(got, "COPY one|two|three");
    stor_rfile_close(f);

    /* Bytes after the FINAL inside the segment's length: "final tag before the segment's end". */
    memcpy(bad, buf, flen);
    memset(bad + flen, 0, 8);
    f = open_bytes(path, bad, flen + 8);
    CHECK_EQ_INT(read_all(f, NULL, seg + 8, ad, got, sizeof got, &err), FB_ERR_CRYPTO);
    CHECKF(strstr(err.msg, "final tag before the segment's end"), "%s", err.msg);
    stor_rfile_close(f);

    /* A length above ARC_MESSAGE_MAX is refused before anything that large is read or allocated. */
    memcpy(bad, buf, flen);
    arc_put_u32(bad + OFF + crypto_secretstream_xchacha20poly1305_HEADERBYTES, ARC_MESSAGE_MAX + 1);
    f = open_bytes(path, bad, flen);
    CHECK_EQ_INT(read_all(f, NULL, seg, ad, got, sizeof got, &err), FB_ERR_CRYPTO);
    CHECKF(strstr(err.msg, "bad message length 4194305"), "%s", err.msg);
    stor_rfile_close(f);

    /* Each ciphertext byte is authenticated: flip one in the second message. */
    memcpy(bad, buf, flen);
    size_t second = OFF + crypto_secretstream_xchacha20poly1305_HEADERBYTES + 4 + strlen("COPY one") +
                    crypto_secretstream_xchacha20poly1305_ABYTES;
    bad[second + 4 + 1] ^= 0x01;
    f = open_bytes(path, bad, flen);
    CHECK_EQ_INT(read_all(f, NULL, seg, ad, got, sizeof got, &err), FB_ERR_CRYPTO);
    CHECKF(strstr(err.msg, "authentication failed at offset"), "%s", err.msg);
    CHECK_EQ_STR(got, "COPY one"); /* what came before the damage, and nothing after */
    stor_rfile_close(f);

    /* The additional data (the header's fixed part) is bound to every message; so is the key. */
    f = open_bytes(path, buf, flen);
    unsigned char other_ad[ARC_AD_BYTES_V2];
    memcpy(other_ad, ad, sizeof other_ad);
    other_ad[9] ^= 0x40; /* another format version */
    CHECK_EQ_INT(read_all(f, NULL, seg, other_ad, got, sizeof got, &err), FB_ERR_CRYPTO);
    CHECKF(strstr(err.msg, "authentication failed"), "%s", err.msg);
    unsigned char keep[crypto_kdf_KEYBYTES];
    memcpy(keep, data_key, sizeof keep);
    crypto_kdf_keygen(data_key);
    CHECK(read_all(f, NULL, seg, ad, got, sizeof got, &err) == FB_ERR_CRYPTO);
    memcpy(data_key, keep, sizeof keep);

    /* A segment that does not lie in the file. */
    CHECK_EQ_INT(read_all(f, NULL, flen, ad, got, sizeof got, &err), FB_ERR_FORMAT);
    CHECKF(strstr(err.msg, "lies outside the file"), "%s", err.msg);
    CHECK_EQ_INT(read_all(f, NULL, 3, ad, got, sizeof got, &err), FB_ERR_FORMAT);
    stor_rfile_close(f);

    /* The cache is read instead of the file where it covers: a file changed after the cache was taken (here: the
     * second message damaged) still reads as the cached bytes. */
    memcpy(bad, buf, flen);
    bad[second + 4 + 1] ^= 0x01;
    f = open_bytes(path, bad, flen);
    arc_stream_cache cache = {buf + OFF, OFF, seg};
    CHECK_EQ_INT(read_all(f, &cache, seg, ad, got, sizeof got, &err), FB_OK);
    CHECK_EQ_STR(got, "COPY one|two|three(F)");
    stor_rfile_close(f);

    /* The write side frames messages the same way: a segment sealed with arc_stream_out reads back, and its
     * frames have the length ARC_STREAM_FRAME_BYTES says. */
    {
        arc_stream_out so;
        size_t at = OFF;
        memset(bad, 0xee, OFF);
        arc_stream_out_open(&so, data_key, SEG, ad, sizeof ad, bad + at);
        at += crypto_secretstream_xchacha20poly1305_HEADERBYTES;
        for (size_t i = 0; i < 3; i++) {
            unsigned char tag = i == 2 ? crypto_secretstream_xchacha20poly1305_TAG_FINAL : 0;
            size_t fl = arc_stream_out_seal(&so, (const unsigned char *)three[i], strlen(three[i]), tag, bad + at);
            CHECK_EQ_INT(fl, ARC_STREAM_FRAME_BYTES(strlen(three[i])));
            at += fl;
        }
        arc_stream_out_close(&so);
        CHECK_EQ_INT(at, flen);
        f = open_bytes(path, bad, at);
        CHECK_EQ_INT(read_all(f, NULL, at - OFF, ad, got, sizeof got, &err), FB_OK);
        CHECK_EQ_STR(got, "COPY one|two|three(F)");
        stor_rfile_close(f);
    }

    unlink(path);
    free(buf);
    free(bad);
    return tap_done();
}
