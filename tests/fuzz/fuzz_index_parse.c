/* fuzz_index_parse: libFuzzer target for the chain index parser (worker/src/artifact/arc_index.c).
 * The index is plaintext beside the ciphertext: anyone who can write the storage can hand a reader any bytes here.
 * Property: any bytes either parse or are refused with FB_ERR_FORMAT / FB_ERR_CRYPTO / FB_ERR_NOMEM; never a
 * crash, leak or out-of-bounds read (ASan/UBSan). Parsed without a key (as the reader does once the signature or
 * the manifest's hash authenticated the bytes), so the fuzzer reaches past the MAC line; and with a key, which
 * must refuse what the fuzzer did not MAC. Whatever parses must format again and parse back to the same job,
 * tables and record count.
 * The same bytes are also read as a run of compact chunk records (index version 4, arc_clist.h), which the
 * decoder must refuse or accept exactly as the encoder writes them (every accepted record re-encodes to its bytes).
 * Seed corpus: tests/fuzz/index_seeds (a version-2, 3 and 4 index, a run of compact records, and regress-* inputs
 * that once crashed it). tests/run.sh runs it for a bounded time. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "artifact/arc_clist.h"
#include "artifact/arc_index.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* data as consecutive compact records of one range: each accepted one must be its canonical encoding. */
static void compact_records(const uint8_t *data, size_t size) {
    arc_clist_rec prev, r;
    unsigned char again[ARC_CLIST_COMPACT_MAX];
    size_t at = 0, n = 0;
    while (at < size && (n = arc_clist_decode_compact(data + at, size - at, at ? &prev : NULL, &r)) > 0) {
        if (n < ARC_CLIST_COMPACT_MIN || n > ARC_CLIST_COMPACT_MAX || !r.length) abort();
        if (arc_clist_encode_compact(&r, at ? &prev : NULL, again) != n || memcmp(again, data + at, n) != 0) abort();
        prev = r;
        at += n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const unsigned char key[ARC_INDEX_KEY_BYTES] = {1, 2, 3};
    arc_index *ix = NULL;
    fb_err err;
    if (size == 0) return 0;
    compact_records(data, size);
    fb_code rc = arc_index_parse((const char *)data, size, NULL, &ix, &err);
    if (rc != FB_OK) {
        if (ix || (rc != FB_ERR_FORMAT && rc != FB_ERR_NOMEM)) abort();
        return 0;
    }
    char *again = NULL;
    size_t again_len = 0;
    arc_index *back = NULL;
    if (arc_index_format(ix, key, &again, &again_len, &err) == FB_OK) {
        if (arc_index_parse(again, again_len, key, &back, &err) != FB_OK) abort();
        if (strcmp(back->job_id, ix->job_id) != 0 || back->n_tables != ix->n_tables ||
            back->n_records != ix->n_records || back->n_record_bytes != ix->n_record_bytes ||
            back->version != (ix->version < 3 ? 2 : ix->version)) /* a version 1 is written as 2 */
            abort();
    }
    /* The fuzzer's bytes under a key: refused unless they happen to carry that key's MAC. */
    arc_index *keyed = NULL;
    fb_code krc = arc_index_parse((const char *)data, size, key, &keyed, &err);
    if (krc != FB_OK && krc != FB_ERR_CRYPTO) abort();
    arc_index_free(keyed);
    arc_index_free(back);
    free(again);
    arc_index_free(ix);
    return 0;
}
