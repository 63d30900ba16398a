/* fuzz_event_decode: libFuzzer target for the event decoder (worker/src/codec/).
 * Property: any bytes either decode, or are rejected with FB_ERR_INVALID; never a crash, leak or out-of-bounds read
 * (ASan/UBSan). Whatever decodes must encode, and that encoding must decode again to the same job id and type.
 * Second property (issue 10): the same bytes taken as text, ev_text_repair() always leaves valid UTF-8 of at most
 * the asked length, so an error text built from them can always be published in a FAILED.
 * Seed corpus: schemas/vectors/{valid,invalid}. tests/run.sh runs it for a bounded time. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/ev_event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_text_repair(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return;
    memcpy(text, data, size);
    text[size] = '\0';
    size_t max = size ? data[0] % (size + 1) : 0;
    size_t n = ev_text_repair(text, max);
    if (n > max || n != strlen(text) || !ev_utf8_valid(text, n)) abort();
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_text_repair(data, size);
    ev_event *ev = NULL;
    fb_err err;
    fb_code rc = ev_decode(data, size, &ev, &err);
    if (rc != FB_OK) {
        if (rc != FB_ERR_INVALID || ev != NULL) abort();
        return 0;
    }
    unsigned char *enc = NULL;
    size_t len = 0;
    if (ev_encode(ev, &enc, &len, &err) != FB_OK) abort();
    ev_event *again = NULL;
    if (ev_decode(enc, len, &again, &err) != FB_OK) abort();
    if (strcmp(again->job_id, ev->job_id) != 0 || again->type != ev->type) abort();
    ev_event_free(again);
    free(enc);
    ev_event_free(ev);
    return 0;
}
