/* test_chain_index: arc_index_parse, the reader of the plaintext chain index that retention and incremental base
 * selection trust. It authenticates before it decodes (a wrong MAC or another index key is FB_ERR_CRYPTO) and is
 * strict about every line (FB_ERR_FORMAT naming the line). The malformed cases are re-MAC'd with the right key,
 * as a key holder with a bug (or a forger who has the key) would write them, so the line checks themselves are
 * what refuses them, not the MAC. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact/arc_index.h"
#include "tap.h"

static unsigned char key[ARC_INDEX_KEY_BYTES];

/* A version-3 head (version 4: the same with compact records, ranges in bytes): two sources, a table stored here
 * whose chunks also come from j1, one only referenced. */
static char *format_head(int version, size_t *len) {
    static char *sources[] = {"11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"};
    static const char *deps[] = {"11111111-1111-4111-8111-111111111111"};
    arc_index_table t[2];
    memset(t, 0, sizeof t);
    t[0].schema = "public";
    t[0].name = "Cpda Application"; /* a space: percent-encoded on the line */
    t[0].stored_in = "33333333-3333-4333-8333-333333333333";
    t[0].rows = 42;
    t[0].raw_bytes = 4200;
    t[0].assembled = 1;
    t[0].rec_first = 0;
    t[0].rec_count = 3;
    t[0].rec_bytes = version == 4 ? 60 : 0;
    memset(t[0].rec_blake2b, 0xab, 32);
    memset(t[0].tag, 0x11, 32);
    t[0].deps = deps;
    t[0].n_deps = 1;
    t[1].schema = "hr";
    t[1].name = "leave";
    t[1].stored_in = sources[0];
    t[1].rows = 7;
    t[1].raw_bytes = 70;
    t[1].rec_first = version == 4 ? 60 : 3; /* no records, but its (empty) range still follows the one before */
    memset(t[1].tag, 0x22, 32);
    arc_index ix = {0};
    ix.job_id = "33333333-3333-4333-8333-333333333333";
    ix.config_id = 7;
    ix.type = "INCREMENTAL";
    ix.base_job = sources[0];
    ix.snapshot_ms = 1795756200000LL;
    ix.completed_ms = 1795756260000LL;
    ix.tables = t;
    ix.n_tables = 2;
    ix.version = version;
    ix.sources = sources;
    ix.n_sources = 2;
    ix.n_records = 3;
    ix.n_record_bytes = version == 4 ? 60 : 0;
    char *out = NULL;
    fb_err err;
    CHECK_EQ_INT(arc_index_format(&ix, key, &out, len, &err), FB_OK);
    return out;
}

static char *format_v3(size_t *len) { return format_head(3, len); }

/* A version-2 index (chunk lines in the text). */
static char *format_v2(size_t *len) {
    arc_chunk ck[2];
    memset(ck, 0, sizeof ck);
    memset(ck[0].id, 0x01, sizeof ck[0].id);
    ck[0].length = 100;
    memset(ck[1].id, 0x02, sizeof ck[1].id);
    ck[1].src = "11111111-1111-4111-8111-111111111111";
    ck[1].segment = 3;
    ck[1].offset = 100;
    ck[1].length = 50;
    arc_index_table t = {0};
    t.schema = "public";
    t.name = "t";
    t.stored_in = "44444444-4444-4444-8444-444444444444";
    t.assembled = 1;
    t.chunks = ck;
    t.n_chunks = 2;
    arc_index ix = {0};
    ix.job_id = "44444444-4444-4444-8444-444444444444";
    ix.config_id = 1;
    ix.type = "FULL";
    ix.tables = &t;
    ix.n_tables = 1;
    ix.version = 2;
    char *out = NULL;
    fb_err err;
    CHECK_EQ_INT(arc_index_format(&ix, key, &out, len, &err), FB_OK);
    return out;
}

/* The text with its MAC line (and, for version 3, the head length) made right again for key: the MAC is
 * BLAKE2b-256 keyed with the index key over every byte before the "mac " line (arc_index.c). */
static char *remac(const char *body, size_t *len) {
    size_t n = strlen(body);
    char *t = malloc(n + 80);
    memcpy(t, body, n + 1);
    const char *head = "fusion-backup chain index 3\nhead ", *head4 = "fusion-backup chain index 4\nhead ";
    if (strncmp(t, head, strlen(head)) == 0 || strncmp(t, head4, strlen(head4)) == 0) {
        char d[17];
        snprintf(d, sizeof d, "%016zu", n + 4 + 64 + 1);
        memcpy(t + strlen(head), d, 16);
    }
    unsigned char mac[32];
    char hex[65];
    crypto_generichash(mac, 32, (const unsigned char *)t, n, key, ARC_INDEX_KEY_BYTES);
    sodium_bin2hex(hex, sizeof hex, mac, 32);
    snprintf(t + n, 80, "mac %s\n", hex);
    *len = strlen(t);
    return t;
}

/* good without its MAC line, with the nth (0-based) line starting with `prefix ` replaced by repl (NULL:
 * deleted; a repl starting with "+" is inserted after that line instead). */
static char *edit(const char *good, const char *prefix, int nth, const char *repl) {
    size_t n = strlen(good);
    char *out = calloc(1, n + 4096);
    const char *p = good;
    int seen = 0;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t ll = (size_t)(nl - p) + 1;
        if (strncmp(p, "mac ", 4) == 0) break;
        int hit = strncmp(p, prefix, strlen(prefix)) == 0 && p[strlen(prefix)] == ' ' && seen++ == nth;
        if (hit && repl && repl[0] == '+') {
            strncat(out, p, ll);
            strcat(out, repl + 1);
            strcat(out, "\n");
        } else if (hit) {
            if (repl) {
                strcat(out, repl);
                strcat(out, "\n");
            }
        } else {
            strncat(out, p, ll);
        }
        p = nl + 1;
    }
    return out;
}

/* Parses text and expects code and a message containing want. */
static void expect(const char *what, const char *text, size_t len, fb_code code, const char *want) {
    arc_index *ix = NULL;
    fb_err err;
    memset(&err, 0, sizeof err);
    fb_code rc = arc_index_parse(text, len, key, &ix, &err);
    CHECKF(rc == code && (!want || strstr(err.msg, want)) && (rc ? !ix : ix != NULL),
           "%s: got %d \"%s\", wanted %d \"%s\"", what, (int)rc, rc ? err.msg : "", (int)code, want ? want : "");
    arc_index_free(ix);
}

/* One malformed line behind a correct MAC: FB_ERR_FORMAT naming it. */
static void malformed(const char *good, const char *what, const char *prefix, int nth, const char *repl,
                      const char *want) {
    char *body = edit(good, prefix, nth, repl);
    size_t len;
    char *t = remac(body, &len);
    expect(what, t, len, FB_ERR_FORMAT, want);
    free(body);
    free(t);
}

static void round_trip(const char *v3, size_t len) {
    arc_index *ix = NULL;
    fb_err err;
    CHECK_EQ_INT(arc_index_parse(v3, len, key, &ix, &err), FB_OK);
    if (!ix) return;
    CHECK_EQ_INT(ix->version, 3);
    CHECK_EQ_STR(ix->type, "INCREMENTAL");
    CHECK_EQ_INT(ix->config_id, 7);
    CHECK_EQ_INT(ix->n_tables, 2);
    CHECK_EQ_STR(ix->tables[0].name, "Cpda Application");
    CHECK_EQ_INT(ix->tables[0].rec_count, 3);
    CHECK_EQ_INT(ix->tables[0].n_deps, 1);
    CHECK(ix->tables[0].n_deps == 1 && strcmp(ix->tables[0].deps[0], ix->sources[0]) == 0);
    CHECK_EQ_INT(ix->n_records, 3);
    CHECK_EQ_INT(ix->records_at, len);
    CHECK(arc_index_find(ix, "hr", "leave") == &ix->tables[1]);
    CHECK(arc_index_find(ix, "hr", "Leave") == NULL);
    arc_index_free(ix);
    /* The edit helper itself changes nothing when asked to replace nothing: the re-MAC'd copy parses. */
    char *body = edit(v3, "nosuchline", 0, NULL);
    size_t l2;
    char *t = remac(body, &l2);
    CHECKF(l2 == len && memcmp(t, v3, len) == 0, "remac does not reproduce the writer's bytes");
    free(body);
    free(t);
}

static void wrong_mac(const char *v3, size_t len) {
    unsigned char other[ARC_INDEX_KEY_BYTES];
    memcpy(other, key, sizeof other);
    other[0] ^= 1;
    arc_index *ix = NULL;
    fb_err err;
    CHECK_EQ_INT(arc_index_parse(v3, len, other, &ix, &err), FB_ERR_CRYPTO);
    CHECK(!ix && strstr(err.msg, "another index key"));
    /* Any byte of the body changed, with the old MAC: refused before anything is decoded. */
    char *t = malloc(len);
    memcpy(t, v3, len);
    char *rows = strstr(t, " 42 ");
    if (rows) rows[2] = '3'; /* 42 rows -> 43 */
    expect("body altered, old MAC", t, len, FB_ERR_CRYPTO, "MAC does not match");
    memcpy(t, v3, len);
    char *mac = strstr(t, "\nmac ") + 5;
    mac[10] = mac[10] == '0' ? '1' : '0';
    expect("MAC altered", t, len, FB_ERR_CRYPTO, "MAC does not match");
    /* Without a key (a reader that authenticated the bytes otherwise) the altered body parses: the MAC is the
     * only thing that caught it above. */
    memcpy(t, v3, len);
    if (rows) rows[2] = '3';
    CHECK_EQ_INT(arc_index_parse(t, len, NULL, &ix, &err), FB_OK);
    CHECK(ix && ix->tables[0].rows == 43);
    arc_index_free(ix);
    free(t);
}

static void framing(const char *v3, size_t len) {
    char *t = malloc(len + 1);
    memcpy(t, v3, len);
    t[15] = 'X';
    expect("bad first line", t, len, FB_ERR_FORMAT, "bad first line");
    expect("truncated", v3, len - 1, FB_ERR_FORMAT, "no final newline");
    expect("cut before the MAC", v3, (size_t)(strstr(v3, "\nmac ") - v3) + 1, FB_ERR_FORMAT, "no MAC line");
    memcpy(t, v3, len);
    char *mac = strstr(t, "\nmac ") + 5;
    mac[3] = 'g'; /* not hex */
    expect("MAC not hex", t, len, FB_ERR_FORMAT, "no MAC line");
    free(t);
    expect("empty", "", 0, FB_ERR_FORMAT, "bad first line");
}

static void each_malformed_line(const char *v3) {
    malformed(v3, "head missing", "head", 0, NULL, "head");
    malformed(v3, "job_id missing", "job_id", 0, NULL, "bad job_id");
    malformed(v3, "job_id empty (\"-\")", "job_id", 0, "job_id -", "bad job_id");
    malformed(v3, "job_id with %00", "job_id", 0, "job_id a%00b", "bad job_id");
    malformed(v3, "job_id with a bad escape", "job_id", 0, "job_id a%zz", "bad job_id");
    malformed(v3, "config_id not a number", "config_id", 0, "config_id seven", "bad config_id");
    malformed(v3, "config_id with junk", "config_id", 0, "config_id 7x", "bad config_id");
    malformed(v3, "type missing", "type", 0, NULL, "bad type");
    malformed(v3, "base_job bad escape", "base_job", 0, "base_job %4", "bad base_job");
    malformed(v3, "lines out of order", "snapshot_ms", 0, "+config_id 7", "bad completed_ms");
    malformed(v3, "snapshot_ms empty", "snapshot_ms", 0, "snapshot_ms ", "bad snapshot_ms");
    malformed(v3, "completed_ms missing", "completed_ms", 0, NULL, "bad completed_ms");
    malformed(v3, "sources negative", "sources", 0, "sources -1", "bad sources");
    malformed(v3, "sources more than listed", "sources", 0, "sources 3", "bad source line");
    malformed(v3, "source \"-\"", "source", 1, "source -", "bad source job");
    malformed(v3, "tables more than listed", "tables", 0, "tables 3", "bad table line");
    malformed(v3, "tables past the bytes left", "tables", 0, "tables 9999999", "bad tables");
    malformed(v3, "sources past the bytes left", "sources", 0, "sources 999999", "bad sources");
    malformed(v3, "tables fewer than listed", "tables", 0, "tables 1", "bad records line");
    malformed(v3, "table tag short", "table", 0,
              "table 11111111111111111111111111111111111111111111111111111111111111 "
              "33333333-3333-4333-8333-333333333333 42 4200 public Cpda%20Application",
              "bad table line");
    malformed(v3, "table line without its name", "table", 1,
              "table 2222222222222222222222222222222222222222222222222222222222222222 x 7 70 hr", "bad table line");
    malformed(v3, "table name with a bad escape", "table", 1,
              "table 2222222222222222222222222222222222222222222222222222222222222222 "
              "11111111-1111-4111-8111-111111111111 7 70 hr le%ave",
              "bad table names");
    /* fuzz_index_parse: a raw byte the writer escapes would re-encode three times longer than its field */
    malformed(v3, "table name with a raw byte above 0x7e", "table", 1,
              "table 2222222222222222222222222222222222222222222222222222222222222222 "
              "11111111-1111-4111-8111-111111111111 7 70 hr le\xff" "ave",
              "bad table names");
    malformed(v3, "stored_in with a raw control byte", "table", 1,
              "table 2222222222222222222222222222222222222222222222222222222222222222 "
              "11111111-1111-4111-8111-11111111111\x01 7 70 hr leave",
              "bad table");
    malformed(v3, "chunks kind none with records", "chunks", 1,
              "chunks none 2 3 0000000000000000000000000000000000000000000000000000000000000000 -", "bad chunks line");
    malformed(v3, "chunks ranges overlapping", "chunks", 0,
              "chunks assembled 3 1 abababababababababababababababababababababababababababababababab 1",
              "ranges must follow each other");
    malformed(v3, "chunks kind unknown", "chunks", 0,
              "chunks partial 3 0 abababababababababababababababababababababababababababababababab 1",
              "bad chunks line");
    malformed(v3, "chunks hash short", "chunks", 0, "chunks assembled 3 0 abab 1", "bad chunks line");
    malformed(v3, "chunk source number 0", "chunks", 0,
              "chunks assembled 3 0 abababababababababababababababababababababababababababababababab 0",
              "bad chunk source number");
    malformed(v3, "chunk source number past the sources", "chunks", 0,
              "chunks assembled 3 0 abababababababababababababababababababababababababababababababab 1,3",
              "bad chunk source number");
    malformed(v3, "records not the sum of the ranges", "records", 0, "records 4", "records line");
    malformed(v3, "records missing", "records", 0, NULL, "records line");
    malformed(v3, "a line after the records", "records", 0, "+table x", "bad end");
}

static void each_malformed_line_v2(void) {
    size_t len;
    char *v2 = format_v2(&len);
    if (!v2) return;
    arc_index *ix = NULL;
    fb_err err;
    CHECK_EQ_INT(arc_index_parse(v2, len, key, &ix, &err), FB_OK);
    CHECK(ix && ix->version == 2 && ix->tables[0].n_chunks == 2 && ix->tables[0].n_deps == 1);
    CHECK(ix && ix->tables[0].chunks[1].offset == 100 && ix->tables[0].chunks[0].src == NULL);
    arc_index_free(ix);
    malformed(v2, "chunks count more than listed", "chunks", 0, "chunks assembled 3", "bad chunk line");
    malformed(v2, "chunks count fewer than listed", "chunks", 0, "chunks assembled 1", "bad end");
    malformed(v2, "chunks kind none with lines", "chunks", 0, "chunks none 2", "bad chunks line");
    /* fuzz_index_parse: an unknown kind, and a count no input of this size could hold (it once asked calloc for
     * 2.6 GB before the first `c` line was read). */
    malformed(v2, "chunks kind unknown", "chunks", 0, "chunks wholeX 2", "bad chunks line");
    malformed(v2, "chunks kind glued to the count", "chunks", 0, "chunks none5555555555555555555 0",
              "bad chunks line");
    malformed(v2, "chunks count past the bytes left", "chunks", 0, "chunks whole 99999999", "bad chunks line");
    malformed(v2, "chunk id short", "c", 0, "c 0101 - 0 0 100", "bad chunk line");
    malformed(v2, "chunk id not hex", "c", 0, "c 0101010101010101010101010101010g - 0 0 100", "bad chunk line");
    malformed(v2, "chunk line short", "c", 1, "c 02020202020202020202020202020202 x 3 100", "bad chunk line");
    malformed(v2, "chunk source bad escape", "c", 1, "c 02020202020202020202020202020202 a%g1 3 100 50",
              "bad chunk source");
    free(v2);
}

/* The optional `capture` line (a backup on a change chain): written after the sources, read back, and strict. */
static void capture_line(void) {
    arc_index_table t = {.schema = "public", .name = "leave", .stored_in = "55555555-5555-4555-8555-555555555555"};
    arc_index ix = {.job_id = "66666666-6666-4666-8666-666666666666", .config_id = 3, .type = "INCREMENTAL",
                    .base_job = "55555555-5555-4555-8555-555555555555", .tables = &t, .n_tables = 1, .version = 3,
                    .cap_stream = "fusion db/slot_1", .cap_full = "55555555-5555-4555-8555-555555555555",
                    .cap_start = 0x16B374D848ULL, .cap_end = 0x16B3750000ULL};
    char *out = NULL;
    size_t len = 0;
    fb_err err;
    CHECK_EQ_INT(arc_index_format(&ix, key, &out, &len, &err), FB_OK);
    if (!out) return;
    CHECK(strstr(out, "\ncapture fusion%20db/slot_1 55555555-5555-4555-8555-555555555555 00000016B374D848 "
                      "00000016B3750000\ntables 1\n") != NULL);
    arc_index *got = NULL;
    CHECK_EQ_INT(arc_index_parse(out, len, key, &got, &err), FB_OK);
    CHECK(got && got->cap_stream && strcmp(got->cap_stream, "fusion db/slot_1") == 0);
    CHECK(got && got->cap_full && strcmp(got->cap_full, ix.cap_full) == 0);
    CHECK(got && got->cap_start == ix.cap_start && got->cap_end == ix.cap_end);
    arc_index_free(got);
    malformed(out, "capture range backwards", "capture", 0,
              "capture s/x 55555555-5555-4555-8555-555555555555 00000016B3750000 00000016B374D848", "bad capture line");
    malformed(out, "capture line short", "capture", 0, "capture s/x 00000016B3750000", "bad capture line");
    malformed(out, "capture stream \"-\"", "capture", 0, "capture - x 0 0", "bad capture line names");
    malformed(out, "a capture line after the tables", "chunks", 0, "+capture s/x j 0000000000000000 0000000000000000",
              "records line");
    free(out);
    /* Without one, the fields stay empty (every backup not on a change chain). */
    size_t l3;
    char *v3 = format_v3(&l3);
    CHECK_EQ_INT(arc_index_parse(v3, l3, key, &got, &err), FB_OK);
    CHECK(got && !got->cap_stream && !got->cap_full);
    arc_index_free(got);
    free(v3);
}

/* Version 4 (format 6, compact records): ranges in bytes, which must follow each other and be able to hold their
 * count (18 to 47 bytes a record), and a records line with both sums. Version 3's fixed records count 40 bytes. */
static void version4(void) {
    size_t len = 0;
    char *v4 = format_head(4, &len);
    if (!v4) return;
    arc_index *ix = NULL;
    fb_err err;
    CHECK(strstr(v4, "fusion-backup chain index 4\nhead ") == v4);
    CHECK(strstr(v4, "\nchunks assembled 3 0 60 abab") && strstr(v4, "\nchunks none 0 60 0 ") &&
          strstr(v4, "\nrecords 3 60\n"));
    CHECK_EQ_INT(arc_index_parse(v4, len, key, &ix, &err), FB_OK);
    CHECK(ix && ix->version == 4 && ix->n_records == 3 && ix->n_record_bytes == 60 && ix->records_at == len);
    CHECK(ix && ix->tables[0].rec_first == 0 && ix->tables[0].rec_bytes == 60 && ix->tables[1].rec_first == 60);
    if (ix) {
        arc_clist_range g = arc_index_table_range(ix, &ix->tables[0]);
        CHECK(g.compact && g.first == 0 && g.count == 3 && g.bytes == 60 && g.hash == ix->tables[0].rec_blake2b);
    }
    arc_index_free(ix);
    size_t l3 = 0;
    char *v3 = format_v3(&l3);
    CHECK_EQ_INT(arc_index_parse(v3, l3, key, &ix, &err), FB_OK);
    CHECK(ix && ix->n_record_bytes == 3 * ARC_CLIST_REC_BYTES && ix->tables[0].rec_bytes == 3 * ARC_CLIST_REC_BYTES);
    if (ix) CHECK(!arc_index_table_range(ix, &ix->tables[0]).compact);
    arc_index_free(ix);
    free(v3);
    const char *h = "abababababababababababababababababababababababababababababababab";
    char line[200];
    snprintf(line, sizeof line, "chunks assembled 3 0 %s 1", h);
    malformed(v4, "v4 chunks line without its bytes", "chunks", 0, line, "bad chunks line");
    snprintf(line, sizeof line, "chunks assembled 3 0 53 %s 1", h);
    malformed(v4, "v4 range too short for its records", "chunks", 0, line, "cannot hold");
    snprintf(line, sizeof line, "chunks assembled 3 0 142 %s 1", h);
    malformed(v4, "v4 range too long for its records", "chunks", 0, line, "cannot hold");
    snprintf(line, sizeof line, "chunks assembled 0 0 20 %s 1", h);
    malformed(v4, "v4 bytes without records", "chunks", 0, line, "bad chunks line");
    malformed(v4, "v4 next range not after the last", "chunks", 1,
              "chunks none 0 59 0 0000000000000000000000000000000000000000000000000000000000000000 -",
              "ranges must follow each other");
    malformed(v4, "v4 records bytes not the sum", "records", 0, "records 3 61", "records line");
    malformed(v4, "v4 records count not the sum", "records", 0, "records 2 60", "records line");
    malformed(v4, "v4 records line without bytes", "records", 0, "records 3", "records line");
    free(v4);
}

int main(void) {
    if (sodium_init() < 0) return 1;
    randombytes_buf(key, sizeof key);
    size_t len = 0;
    char *v3 = format_v3(&len);
    if (!v3) return tap_done();
    round_trip(v3, len);
    wrong_mac(v3, len);
    framing(v3, len);
    each_malformed_line(v3);
    each_malformed_line_v2();
    capture_line();
    version4();
    free(v3);
    return tap_done();
}
