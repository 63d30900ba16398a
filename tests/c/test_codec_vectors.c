/* test_codec_vectors: the C codec against the golden vectors of schemas/vectors/.
 * Proves: every valid vector decodes; canonical ones re-encode to the same bytes; every invalid one is rejected
 * with FB_ERR_INVALID and a message containing the fragment its INDEX.json names; truncating any valid vector at
 * every length is rejected, never crashes. */
#include <stdlib.h>
#include <string.h>

#include "codec/ev_event.h"
#include "tap.h"
#include "vectors.h"

/* In INDEX.json, finds the entry for name and returns the value of field (a string or true/false) in buf. */
static int index_field(const char *index, const char *name, const char *field, char *buf, size_t cap) {
    char needle[400];
    snprintf(needle, sizeof needle, "\"name\": \"%s\"", name);
    const char *p = strstr(index, needle);
    if (!p) return -1;
    const char *end = strchr(p, '}');
    char key[128];
    snprintf(key, sizeof key, "\"%s\": ", field);
    const char *f = strstr(p, key);
    if (!f || (end && f > end)) return -1;
    f += strlen(key);
    size_t n = 0;
    if (*f == '"') {
        f++;
        while (*f && *f != '"' && n + 1 < cap) {
            if (*f == '\\' && f[1]) f++;
            buf[n++] = *f++;
        }
    } else {
        while (*f && *f != ',' && *f != '\n' && *f != '}' && n + 1 < cap) buf[n++] = *f++;
    }
    buf[n] = 0;
    return 0;
}

int main(void) {
    const char *src = getenv("FB_SOURCE_DIR");
    char path[1024];
    vec_file *valid = NULL, *invalid = NULL;
    int nv = vec_load("valid", &valid), ni = vec_load("invalid", &invalid);
    CHECKF(nv >= 8, "found %d valid vectors", nv);
    CHECKF(ni >= 25, "found %d invalid vectors", ni);
    snprintf(path, sizeof path, "%s/schemas/vectors/valid/INDEX.json", src ? src : ".");
    char *vindex = vec_read_text(path);
    snprintf(path, sizeof path, "%s/schemas/vectors/invalid/INDEX.json", src ? src : ".");
    char *iindex = vec_read_text(path);
    CHECK(vindex != NULL && iindex != NULL);
    if (!vindex || !iindex) return tap_done();

    for (int i = 0; i < nv; i++) {
        fb_err err = {0};
        ev_event *ev = NULL;
        fb_code rc = ev_decode(valid[i].data, valid[i].len, &ev, &err);
        CHECKF(rc == FB_OK, "valid vector %s rejected: %s", valid[i].name, err.msg);
        if (rc) continue;
        unsigned char *enc = NULL;
        size_t enc_len = 0;
        rc = ev_encode(ev, &enc, &enc_len, &err);
        CHECKF(rc == FB_OK, "re-encoding %s failed: %s", valid[i].name, err.msg);
        char canon[16] = "";
        CHECKF(index_field(vindex, valid[i].name, "canonical", canon, sizeof canon) == 0, "%s not in INDEX.json",
               valid[i].name);
        if (rc == FB_OK && strcmp(canon, "true") == 0)
            CHECKF(enc_len == valid[i].len && memcmp(enc, valid[i].data, enc_len) == 0,
                   "canonical vector %s re-encodes to different bytes (%zu vs %zu)", valid[i].name, enc_len, valid[i].len);
        /* Whatever we encode must decode again to an event of the same type and job. */
        ev_event *again = NULL;
        if (rc == FB_OK) {
            CHECKF(ev_decode(enc, enc_len, &again, &err) == FB_OK, "%s: own encoding rejected: %s", valid[i].name, err.msg);
            if (again) CHECK_EQ_STR(again->job_id, ev->job_id);
        }
        ev_event_free(again);
        free(enc);
        /* Every strict prefix of a valid message is truncated and must be rejected. */
        int prefixes_rejected = 1;
        for (size_t cut = 0; cut < valid[i].len; cut++) {
            ev_event *t = NULL;
            if (ev_decode(valid[i].data, cut, &t, NULL) != FB_ERR_INVALID) prefixes_rejected = 0;
            ev_event_free(t);
        }
        CHECKF(prefixes_rejected, "a truncated copy of %s was accepted", valid[i].name);
        ev_event_free(ev);
    }

    for (int i = 0; i < ni; i++) {
        fb_err err = {0};
        ev_event *ev = NULL;
        fb_code rc = ev_decode(invalid[i].data, invalid[i].len, &ev, &err);
        CHECKF(rc == FB_ERR_INVALID && ev == NULL, "invalid vector %s: got code %d", invalid[i].name, rc);
        char frag[256] = "";
        CHECKF(index_field(iindex, invalid[i].name, "error_contains", frag, sizeof frag) == 0,
               "%s has no error_contains in INDEX.json", invalid[i].name);
        if (rc == FB_ERR_INVALID)
            CHECKF(strstr(err.msg, frag) != NULL, "%s: message \"%s\" lacks \"%s\"", invalid[i].name, err.msg, frag);
        ev_event_free(ev);
    }
    free(vindex);
    free(iindex);
    vec_free(valid, nv);
    vec_free(invalid, ni);
    return tap_done();
}
