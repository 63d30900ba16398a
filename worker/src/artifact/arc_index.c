/* arc_index: the chain index file (see arc_index.h and FORMAT.md, "Chains").
 *
 * Text, one field per line, so an operator can read it with `cat`:
 *   fusion-backup chain index 1
 *   job_id J / config_id N / type T / base_job B|- / snapshot_ms N / completed_ms N / tables N
 *   table TAGHEX STORED_IN ROWS RAW_BYTES SCHEMA NAME      (one per table)
 *   chunks KIND N                                          (version 2: KIND none|whole|assembled)
 *   c IDHEX SRC SEGMENT OFFSET LENGTH                      (version 2: N lines; SRC "-": this artifact)
 *   mac HEX                                                 (BLAKE2b-256 keyed, over every byte before this line)
 * Version 3 (artifact format 5) is a head in the same style and then binary chunk records (arc_clist.h):
 *   fusion-backup chain index 3 / head NNNNNNNNNNNNNNNN (16 digits: the head's length, so a reader reads it alone)
 *   job_id ... tables N as above, but `sources K` and K lines `source JOB` before `tables`, then optionally
 *   `capture STREAM FULL_JOB START END` (a backup on a change chain, arc_index.h)
 *   table ... as above, then `chunks KIND COUNT FIRST BLAKE2BHEX DEPS` (DEPS: source numbers "1,3", or "-")
 *   records R / mac HEX, then R records of 40 bytes
 * Version 4 (artifact format 6) is version 3 with compact records of 18 to 47 bytes (arc_clist.h), so a range is
 * given in bytes: `chunks KIND COUNT FIRST BYTES BLAKE2BHEX DEPS` (FIRST: its byte offset in the records) and
 * `records R BYTES`.
 * Only the head is text and MAC'd; it grows with the number of tables, never with the data. The records are
 * authenticated per table by the BLAKE2b in its `chunks` line, checked by whoever streams them (arc_clist_iter).
 * Parsing is strict (every line in this order, nothing after the MAC) and authenticates before it decodes.
 */
#include "artifact/arc_index.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact/arc_format.h"
#include "artifact/arc_key.h"
#include "common/fb_path.h"
#include "common/fb_sbuf.h"

#define AI_MAGIC "fusion-backup chain index 1\n"
#define AI_MAGIC2 "fusion-backup chain index 2\n"
#define AI_MAGIC3 "fusion-backup chain index 3\n"
#define AI_MAGIC4 "fusion-backup chain index 4\n"
#define AI_HEAD_FIELD "head "
#define AI_HEAD_DIGITS 16
#define AI_DERIVE_KEY "fusion-backup chain index v1"
/* Versions 1 and 2 hold every chunk as a text line: they were written under this cap and are read under it. A
 * version-3 head holds a few lines per table and is read under the same cap (about 200,000 tables). */
#define AI_MAX_BYTES ARC_INDEX_HEAD_MAX

fb_code arc_index_key(const char *key_file, const unsigned char pk[32], unsigned char key[ARC_INDEX_KEY_BYTES],
                      fb_err *err) {
    if (key_file && *key_file) {
        unsigned char derived_pk[ARC_PK_BYTES];
        fb_code rc = arc_key_load_secret(key_file, key, derived_pk, err);
        if (rc) fb_err_prefix(err, "index key: ");
        return rc;
    }
    crypto_generichash(key, ARC_INDEX_KEY_BYTES, pk, 32, (const unsigned char *)AI_DERIVE_KEY,
                       sizeof AI_DERIVE_KEY - 1);
    return FB_OK;
}

void arc_index_tag(const unsigned char key[ARC_INDEX_KEY_BYTES], const unsigned char content_hash[32],
                   unsigned char tag[32]) {
    crypto_generichash(tag, 32, content_hash, 32, key, ARC_INDEX_KEY_BYTES);
}

/* --- encoding ------------------------------------------------------------------------------------------------ */

/* Percent-encodes s (NULL: "-"). */
static void ai_put_enc(fb_sbuf *b, const char *s) {
    if (!s) return fb_sbuf_puts(b, "-");
    if (strcmp(s, "-") == 0) return fb_sbuf_puts(b, "%2D");
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char e[4];
        if (*c <= 0x20 || *c == '%' || *c >= 0x7f) {
            snprintf(e, sizeof e, "%%%02X", *c);
            fb_sbuf_put(b, e, 3);
        } else {
            fb_sbuf_put(b, (const char *)c, 1);
        }
    }
}

static void ai_put_field(fb_sbuf *b, const char *k, const char *v_enc, long long v_int, int is_int) {
    char num[32];
    fb_sbuf_puts(b, k);
    fb_sbuf_puts(b, " ");
    if (is_int) {
        snprintf(num, sizeof num, "%lld", v_int);
        fb_sbuf_puts(b, num);
    } else {
        ai_put_enc(b, v_enc);
    }
    fb_sbuf_puts(b, "\n");
}

/* The head's first lines: magic, (version >= 3) the head-length field to fill in later, the job's fields and
 * (version >= 3) its source jobs. */
static void ai_format_job(fb_sbuf *b, const arc_index *ix) {
    char num[96];
    int v3 = ix->version >= 3;
    fb_sbuf_puts(b, ix->version == 4 ? AI_MAGIC4 : v3 ? AI_MAGIC3 : AI_MAGIC2);
    if (v3) {
        snprintf(num, sizeof num, "%s%0*d\n", AI_HEAD_FIELD, AI_HEAD_DIGITS, 0); /* filled in by ai_format_seal */
        fb_sbuf_puts(b, num);
    }
    ai_put_field(b, "job_id", ix->job_id, 0, 0);
    ai_put_field(b, "config_id", NULL, (long long)ix->config_id, 1);
    ai_put_field(b, "type", ix->type, 0, 0);
    ai_put_field(b, "base_job", ix->base_job, 0, 0);
    ai_put_field(b, "snapshot_ms", NULL, (long long)ix->snapshot_ms, 1);
    ai_put_field(b, "completed_ms", NULL, (long long)ix->completed_ms, 1);
    if (v3) {
        ai_put_field(b, "sources", NULL, (long long)ix->n_sources, 1);
        for (size_t i = 0; i < ix->n_sources; i++) ai_put_field(b, "source", ix->sources[i], 0, 0);
    }
    if (v3 && ix->cap_stream) {
        snprintf(num, sizeof num, " %016llX %016llX\n", (unsigned long long)ix->cap_start,
                 (unsigned long long)ix->cap_end);
        fb_sbuf_puts(b, "capture ");
        ai_put_enc(b, ix->cap_stream);
        fb_sbuf_puts(b, " ");
        ai_put_enc(b, ix->cap_full);
        fb_sbuf_puts(b, num);
    }
}

/* A table's `table` line. */
static void ai_format_table(fb_sbuf *b, const arc_index_table *t) {
    char hex[65], num[96];
    sodium_bin2hex(hex, sizeof hex, t->tag, 32);
    fb_sbuf_puts(b, "table ");
    fb_sbuf_puts(b, hex);
    fb_sbuf_puts(b, " ");
    ai_put_enc(b, t->stored_in);
    snprintf(num, sizeof num, " %lld %lld ", (long long)t->rows, (long long)t->raw_bytes);
    fb_sbuf_puts(b, num);
    ai_put_enc(b, t->schema);
    fb_sbuf_puts(b, " ");
    ai_put_enc(b, t->name);
    fb_sbuf_puts(b, "\n");
}

/* Version 3, 4: a table's `chunks` line (kind, record range, BLAKE2b of the range, source numbers of its deps). */
static fb_code ai_format_chunks_v3(fb_sbuf *b, const arc_index *ix, const arc_index_table *t, fb_err *err) {
    char rh[65], num[96];
    sodium_bin2hex(rh, sizeof rh, t->rec_blake2b, sizeof t->rec_blake2b);
    snprintf(num, sizeof num, "chunks %s %llu %llu ", !t->rec_count ? "none" : t->assembled ? "assembled" : "whole",
             (unsigned long long)t->rec_count, (unsigned long long)t->rec_first);
    fb_sbuf_puts(b, num);
    if (ix->version == 4) {
        snprintf(num, sizeof num, "%llu ", (unsigned long long)t->rec_bytes);
        fb_sbuf_puts(b, num);
    }
    fb_sbuf_puts(b, rh);
    fb_sbuf_puts(b, t->n_deps ? " " : " -");
    for (size_t d = 0; d < t->n_deps; d++) {
        size_t k = 0;
        while (k < ix->n_sources && strcmp(ix->sources[k], t->deps[d]) != 0) k++;
        if (k == ix->n_sources)
            return fb_err_set(err, FB_ERR_INTERNAL, "chain index: table \"%s\".\"%s\" depends on job %s, which is not "
                              "among the index's sources", t->schema, t->name, t->deps[d]);
        snprintf(num, sizeof num, "%s%zu", d ? "," : "", k + 1);
        fb_sbuf_puts(b, num);
    }
    fb_sbuf_puts(b, "\n");
    return FB_OK;
}

/* Version 2: a table's `chunks` line and one `c` line per chunk. */
static void ai_format_chunks_v2(fb_sbuf *b, const arc_index_table *t) {
    char num[96];
    snprintf(num, sizeof num, "chunks %s %zu\n", !t->n_chunks ? "none" : t->assembled ? "assembled" : "whole",
             t->n_chunks);
    fb_sbuf_puts(b, num);
    for (size_t k = 0; k < t->n_chunks; k++) {
        const arc_chunk *ck = &t->chunks[k];
        char idhex[2 * ARC_CHUNK_ID_BYTES + 1];
        sodium_bin2hex(idhex, sizeof idhex, ck->id, sizeof ck->id);
        fb_sbuf_puts(b, "c ");
        fb_sbuf_puts(b, idhex);
        fb_sbuf_puts(b, " ");
        ai_put_enc(b, ck->src);
        snprintf(num, sizeof num, " %lu %llu %llu\n", (unsigned long)ck->segment, (unsigned long long)ck->offset,
                 (unsigned long long)ck->length);
        fb_sbuf_puts(b, num);
    }
}

/* The end: (version >= 3) the head's length, mac line included, in its fixed-width field; then the MAC line over
 * every byte before it. */
static void ai_format_seal(fb_sbuf *b, int v3, const unsigned char key[ARC_INDEX_KEY_BYTES]) {
    char hex[65];
    unsigned char mac[32];
    if (v3) {
        size_t total = b->len + 4 + 64 + 1;
        char d[AI_HEAD_DIGITS + 2];
        snprintf(d, sizeof d, "%0*zu", AI_HEAD_DIGITS, total);
        memcpy(b->p + sizeof AI_MAGIC3 - 1 + sizeof AI_HEAD_FIELD - 1, d, AI_HEAD_DIGITS);
    }
    crypto_generichash(mac, sizeof mac, (const unsigned char *)b->p, b->len, key, ARC_INDEX_KEY_BYTES);
    sodium_bin2hex(hex, sizeof hex, mac, sizeof mac);
    fb_sbuf_puts(b, "mac ");
    fb_sbuf_puts(b, hex);
    fb_sbuf_puts(b, "\n");
}

fb_code arc_index_format(const arc_index *ix, const unsigned char key[ARC_INDEX_KEY_BYTES], char **out, size_t *len,
                         fb_err *err) {
    fb_sbuf b = {0};
    int v3 = ix->version >= 3;
    fb_code rc = FB_OK;
    ai_format_job(&b, ix);
    ai_put_field(&b, "tables", NULL, (long long)ix->n_tables, 1);
    for (size_t i = 0; i < ix->n_tables && rc == FB_OK; i++) {
        ai_format_table(&b, &ix->tables[i]);
        if (v3) rc = ai_format_chunks_v3(&b, ix, &ix->tables[i], err);
        else ai_format_chunks_v2(&b, &ix->tables[i]);
    }
    if (rc == FB_OK && v3) {
        char num[96];
        if (ix->version == 4)
            snprintf(num, sizeof num, "records %llu %llu\n", (unsigned long long)ix->n_records,
                     (unsigned long long)ix->n_record_bytes);
        else
            snprintf(num, sizeof num, "records %llu\n", (unsigned long long)ix->n_records);
        fb_sbuf_puts(&b, num);
    }
    if (rc == FB_OK && !b.oom) ai_format_seal(&b, v3, key); /* b.p is whole: the head field can be filled in */
    if (rc == FB_OK && b.oom) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory writing the chain index");
    if (rc) {
        free(b.p);
        return rc;
    }
    *out = b.p;
    *len = b.len;
    return FB_OK;
}

/* --- decoding ------------------------------------------------------------------------------------------------ */

typedef struct ai_in {
    const char *p, *end;
} ai_in;

/* The next line without its '\n' (NUL-terminated copy into line); 0 at the end or when too long. */
static int ai_line(ai_in *in, char *line, size_t cap) {
    const char *nl = memchr(in->p, '\n', (size_t)(in->end - in->p));
    if (!nl || (size_t)(nl - in->p) >= cap) return 0;
    memcpy(line, in->p, (size_t)(nl - in->p));
    line[nl - in->p] = '\0';
    in->p = nl + 1;
    return 1;
}

static int ai_hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Decodes a percent-encoded token; "-" is NULL (*ok stays 1). A byte ai_put_enc escapes (control, space, DEL and
 * above) is refused when it stands raw: every writer since the index's first version escaped them, and a token
 * that re-encodes longer than it was read would not fit its field when the index is written again
 * (fuzz_index_parse: 300 raw 0xFF bytes in a table's stored_in became 900 and no longer parsed). */
static char *ai_dec(const char *s, int *ok) {
    if (strcmp(s, "-") == 0) return NULL;
    size_t n = strlen(s), k = 0;
    char *o = malloc(n + 1);
    if (!o) {
        *ok = 0;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int h = i + 2 < n ? ai_hexval(s[i + 1]) : -1, l = h >= 0 ? ai_hexval(s[i + 2]) : -1;
            if (h < 0 || l < 0 || (h == 0 && l == 0)) {
                free(o);
                *ok = 0;
                return NULL;
            }
            o[k++] = (char)(h * 16 + l);
            i += 2;
        } else if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f) {
            free(o);
            *ok = 0;
            return NULL;
        } else {
            o[k++] = s[i];
        }
    }
    o[k] = '\0';
    return o;
}

static int ai_field(ai_in *in, const char *k, char *line, size_t cap, const char **val) {
    size_t kl = strlen(k);
    if (!ai_line(in, line, cap) || strncmp(line, k, kl) != 0 || line[kl] != ' ') return 0;
    *val = line + kl + 1;
    return 1;
}

static int ai_int(const char *s, long long *v) {
    char *end = NULL;
    *v = strtoll(s, &end, 10);
    return *s && end && !*end;
}

fb_code arc_index_head_len(const char *first, size_t len, uint64_t *head_len, fb_err *err) {
    size_t m = sizeof AI_MAGIC3 - 1, f = sizeof AI_HEAD_FIELD - 1;
    *head_len = 0;
    if (len < m || (memcmp(first, AI_MAGIC3, m) != 0 && memcmp(first, AI_MAGIC4, m) != 0)) return FB_OK;
    uint64_t v = 0;
    if (len < m + f + AI_HEAD_DIGITS + 1 || memcmp(first + m, AI_HEAD_FIELD, f) != 0 ||
        first[m + f + AI_HEAD_DIGITS] != '\n')
        return fb_err_set(err, FB_ERR_FORMAT, "chain index of version %c without its head line", first[m - 2]);
    for (size_t i = 0; i < AI_HEAD_DIGITS; i++) {
        char c = first[m + f + i];
        if (c < '0' || c > '9') return fb_err_set(err, FB_ERR_FORMAT, "chain index: bad head length");
        v = v * 10 + (uint64_t)(c - '0');
    }
    if (v < m + f + AI_HEAD_DIGITS + 1 || v > AI_MAX_BYTES)
        return fb_err_set(err, FB_ERR_FORMAT, "chain index: head length %llu out of range", (unsigned long long)v);
    *head_len = v;
    return FB_OK;
}

/* Adds job j to t's deps unless it is there (version 2: from its chunks' sources). */
static int ai_dep_add(arc_index_table *t, const char *j, size_t cap) {
    for (size_t d = 0; d < t->n_deps; d++)
        if (strcmp(t->deps[d], j) == 0) return 1;
    if (!t->deps && !(t->deps = calloc(cap ? cap : 1, sizeof *t->deps))) return 0;
    t->deps[t->n_deps++] = j;
    return 1;
}

/* Fails the parse (from inside a parsing step) with what was malformed. */
#define AI_NEED(cond, what)                                                                                        \
    do {                                                                                                           \
        if (!(cond)) return fb_err_set(err, FB_ERR_FORMAT, "malformed chain index: bad %s", what);                   \
    } while (0)

/* An index being parsed: the lines left (before the MAC line) and the index built so far. */
typedef struct ai_parser {
    ai_in in;
    arc_index *ix;
    char line[8192];
    const char *v;      /* the value of the field just read */
    uint64_t next_rec;  /* version >= 3: where the next table's record range must start (version 4: in bytes) */
    uint64_t n_rec;     /* version 4: the records of the ranges so far */
} ai_parser;

/* A count read from the index is believed only as far as the bytes left could hold that many lines of at least
 * min_line bytes each: it is checked before anything is allocated for it (fuzz_index_parse found a 19-digit
 * chunk count that asked calloc for 2.6 GB, and a table count of a few million costs as much). */
#define AI_SOURCE_LINE_MIN 9 /* "source x\n" */
#define AI_TABLE_LINE_MIN 80 /* "table " + 64 hex + " x 0 0 s n\n" */
#define AI_C_LINE_MIN 40     /* "c " + 32 hex + " - 0 0 0\n" */
static int ai_count_ok(const ai_parser *p, long long n, size_t min_line) {
    return n >= 0 && (size_t)n <= (size_t)(p->in.end - p->in.p) / min_line;
}

static int ai_next(ai_parser *p, const char *k) { return ai_field(&p->in, k, p->line, sizeof p->line, &p->v); }

/* Step 1: the first line names a known version and the last is a MAC over everything before it, checked with
 * key (NULL: the caller authenticated the bytes otherwise). *last is where the MAC line starts. */
static fb_code ai_authenticate(const char *buf, size_t len, const unsigned char *key, int *version, const char **last,
                               fb_err *err) {
    unsigned char mac[32], want[32];
    int v2 = len >= sizeof AI_MAGIC2 - 1 && memcmp(buf, AI_MAGIC2, sizeof AI_MAGIC2 - 1) == 0;
    int v3 = len >= sizeof AI_MAGIC3 - 1 && memcmp(buf, AI_MAGIC3, sizeof AI_MAGIC3 - 1) == 0;
    int v4 = len >= sizeof AI_MAGIC4 - 1 && memcmp(buf, AI_MAGIC4, sizeof AI_MAGIC4 - 1) == 0;
    if (len > AI_MAX_BYTES || len < sizeof AI_MAGIC - 1 ||
        (!v2 && !v3 && !v4 && memcmp(buf, AI_MAGIC, sizeof AI_MAGIC - 1) != 0))
        return fb_err_set(err, FB_ERR_FORMAT, "not a fusion-backup chain index (bad first line)");
    *version = v4 ? 4 : v3 ? 3 : v2 ? 2 : 1;
    /* The MAC line is the last line: authenticate everything before it first. */
    if (buf[len - 1] != '\n') return fb_err_set(err, FB_ERR_FORMAT, "chain index is truncated (no final newline)");
    const char *l = buf + len - 1;
    while (l > buf && l[-1] != '\n') l--;
    if ((size_t)(buf + len - l) != 4 + 64 + 1 || memcmp(l, "mac ", 4) != 0 ||
        sodium_hex2bin(want, sizeof want, l + 4, 64, NULL, NULL, NULL) != 0)
        return fb_err_set(err, FB_ERR_FORMAT, "chain index is truncated or malformed (no MAC line at its end)");
    if (key) {
        crypto_generichash(mac, sizeof mac, (const unsigned char *)buf, (size_t)(l - buf), key, ARC_INDEX_KEY_BYTES);
        if (sodium_memcmp(mac, want, sizeof mac) != 0)
            return fb_err_set(err, FB_ERR_CRYPTO, "chain index MAC does not match: the file was altered, or it was "
                              "written with another index key (--index-key)");
    }
    *last = l;
    return FB_OK;
}

/* Step 2b (version >= 3): the optional `capture STREAM FULL_JOB START END` line. */
static fb_code ai_parse_capture(ai_parser *p, fb_err *err) {
    static const char k[] = "capture ";
    char st[300], fj[300];
    unsigned long long a = 0, e = 0;
    int ok = 1;
    if ((size_t)(p->in.end - p->in.p) < sizeof k - 1 || memcmp(p->in.p, k, sizeof k - 1) != 0) return FB_OK;
    AI_NEED(ai_next(p, "capture") && sscanf(p->v, "%299s %299s %16llx %16llx", st, fj, &a, &e) == 4 && a <= e,
            "capture line");
    p->ix->cap_stream = ai_dec(st, &ok);
    p->ix->cap_full = ai_dec(fj, &ok);
    AI_NEED(ok && p->ix->cap_stream && p->ix->cap_full, "capture line names");
    p->ix->cap_start = a;
    p->ix->cap_end = e;
    return FB_OK;
}

/* Step 2: the job's fields (and, version >= 3, the head line before them and the source jobs after them). */
static fb_code ai_parse_job(ai_parser *p, const char *buf, size_t len, fb_err *err) {
    arc_index *ix = p->ix;
    long long n = 0;
    int ok = 1;
    if (ix->version >= 3) {
        uint64_t hl = 0;
        AI_NEED(arc_index_head_len(buf, len, &hl, err) == FB_OK && hl == len, "head length");
        AI_NEED(ai_next(p, "head"), "head line");
        ix->records_at = len;
    }
    AI_NEED(ai_next(p, "job_id") && (ix->job_id = ai_dec(p->v, &ok)) && ok, "job_id");
    AI_NEED(ai_next(p, "config_id") && ai_int(p->v, &n), "config_id");
    ix->config_id = n;
    AI_NEED(ai_next(p, "type") && (ix->type = ai_dec(p->v, &ok)) && ok, "type");
    AI_NEED(ai_next(p, "base_job"), "base_job");
    ix->base_job = ai_dec(p->v, &ok);
    AI_NEED(ok, "base_job");
    AI_NEED(ai_next(p, "snapshot_ms") && ai_int(p->v, &n), "snapshot_ms");
    ix->snapshot_ms = n;
    AI_NEED(ai_next(p, "completed_ms") && ai_int(p->v, &n), "completed_ms");
    ix->completed_ms = n;
    if (ix->version < 3) return FB_OK;
    AI_NEED(ai_next(p, "sources") && ai_int(p->v, &n) && ai_count_ok(p, n, AI_SOURCE_LINE_MIN), "sources");
    ix->sources = calloc((size_t)n + 1, sizeof *ix->sources);
    AI_NEED(ix->sources, "sources (out of memory)");
    for (long long i = 0; i < n; i++) {
        AI_NEED(ai_next(p, "source"), "source line");
        ix->sources[ix->n_sources] = ai_dec(p->v, &ok);
        AI_NEED(ok && ix->sources[ix->n_sources], "source job");
        ix->n_sources++;
    }
    return ai_parse_capture(p, err);
}

/* Version 3, 4: a table's `chunks` line: its kind, its range of the binary records (ranges follow each other;
 * version 4: in bytes, which must be able to hold the count) and the source jobs its chunks are in. */
/* A `chunks` line's kind: one of the three the writer writes (arc_index_format). */
static int ai_kind_ok(const char *kind) {
    return strcmp(kind, "none") == 0 || strcmp(kind, "whole") == 0 || strcmp(kind, "assembled") == 0;
}

static fb_code ai_parse_chunks_v3(ai_parser *p, arc_index_table *t, fb_err *err) {
    arc_index *ix = p->ix;
    char kind[16], rh[66], deps[8000];
    unsigned long long cnt = 0, first = 0, bytes = 0;
    int v4 = ix->version == 4;
    AI_NEED(ai_next(p, "chunks") &&
                (v4 ? sscanf(p->v, "%15s %llu %llu %llu %65s %7999s", kind, &cnt, &first, &bytes, rh, deps) == 6
                    : sscanf(p->v, "%15s %llu %llu %65s %7999s", kind, &cnt, &first, rh, deps) == 5) &&
                strlen(rh) == 64 && sodium_hex2bin(t->rec_blake2b, 32, rh, 64, NULL, NULL, NULL) == 0 &&
                ai_kind_ok(kind) && (strcmp(kind, "none") == 0) == (cnt == 0) && first == p->next_rec,
            "chunks line (ranges must follow each other)");
    if (!v4) {
        AI_NEED(cnt <= UINT64_MAX / 2 / ARC_CLIST_REC_BYTES, "chunks line (count out of range)");
        bytes = cnt * ARC_CLIST_REC_BYTES;
    }
    AI_NEED(arc_clist_range_fits(v4, cnt, bytes) && bytes <= UINT64_MAX / 2,
            "chunks line (its bytes cannot hold its count of records)");
    t->assembled = strcmp(kind, "assembled") == 0;
    t->rec_first = first;
    t->rec_count = cnt;
    t->rec_bytes = bytes;
    AI_NEED(p->next_rec <= UINT64_MAX / 2, "chunks line (ranges too long)");
    p->next_rec += v4 ? bytes : cnt;
    p->n_rec += cnt;
    if (strcmp(deps, "-") == 0) return FB_OK;
    for (char *save = NULL, *tok = strtok_r(deps, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        long long k = 0;
        AI_NEED(ai_int(tok, &k) && k >= 1 && (size_t)k <= ix->n_sources, "chunk source number");
        AI_NEED(ai_dep_add(t, ix->sources[k - 1], ix->n_sources), "deps (out of memory)");
    }
    return FB_OK;
}

/* Version 2: a table's `chunks` line and its `c` lines, one per chunk; deps are the other jobs they name. */
static fb_code ai_parse_chunks_v2(ai_parser *p, arc_index_table *t, fb_err *err) {
    char kind[16];
    long long nc = 0;
    int ok = 1;
    AI_NEED(ai_next(p, "chunks") && sscanf(p->v, "%15s %lld", kind, &nc) == 2 && ai_kind_ok(kind) &&
                ai_count_ok(p, nc, AI_C_LINE_MIN) && (strcmp(kind, "none") == 0) == (nc == 0),
            "chunks line");
    t->assembled = strcmp(kind, "assembled") == 0;
    if (!nc) return FB_OK;
    if (!(t->chunks = calloc((size_t)nc, sizeof *t->chunks))) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    for (long long k = 0; k < nc; k++) {
        arc_chunk *ck = &t->chunks[t->n_chunks++];
        char idhex[2 * ARC_CHUNK_ID_BYTES + 2], src[1100];
        unsigned long seg = 0;
        unsigned long long off = 0, clen = 0;
        AI_NEED(ai_next(p, "c") && sscanf(p->v, "%33s %1099s %lu %llu %llu", idhex, src, &seg, &off, &clen) == 5 &&
                    strlen(idhex) == 2 * ARC_CHUNK_ID_BYTES &&
                    sodium_hex2bin(ck->id, sizeof ck->id, idhex, 2 * ARC_CHUNK_ID_BYTES, NULL, NULL, NULL) == 0,
                "chunk line");
        ck->src = ai_dec(src, &ok);
        AI_NEED(ok, "chunk source");
        ck->segment = (uint32_t)seg;
        ck->offset = off;
        ck->length = clen;
        if (ck->src && strcmp(ck->src, p->ix->job_id) != 0)
            AI_NEED(ai_dep_add(t, ck->src, (size_t)nc), "deps (out of memory)");
    }
    return FB_OK;
}

/* Step 3, per table: its `table` line, then (version 2-4) its chunks. */
static fb_code ai_parse_table(ai_parser *p, fb_err *err) {
    arc_index_table *t = &p->ix->tables[p->ix->n_tables++];
    char hex[65], si[1100], sc[2100], nm[2100];
    long long rows = 0, raw = 0;
    int ok = 1;
    AI_NEED(ai_next(p, "table"), "table line");
    AI_NEED(sscanf(p->v, "%64s %1099s %lld %lld %2099s %2099s", hex, si, &rows, &raw, sc, nm) == 6 &&
                sodium_hex2bin(t->tag, sizeof t->tag, hex, 64, NULL, NULL, NULL) == 0,
            "table line");
    t->rows = rows;
    t->raw_bytes = raw;
    t->stored_in = ai_dec(si, &ok);
    t->schema = ai_dec(sc, &ok);
    t->name = ai_dec(nm, &ok);
    AI_NEED(ok && t->stored_in && t->schema && t->name, "table names");
    if (p->ix->version >= 3) return ai_parse_chunks_v3(p, t, err);
    if (p->ix->version == 2) return ai_parse_chunks_v2(p, t, err);
    return FB_OK;
}

/* Step 3: the tables. */
static fb_code ai_parse_tables(ai_parser *p, fb_err *err) {
    long long n = 0;
    AI_NEED(ai_next(p, "tables") && ai_int(p->v, &n) && ai_count_ok(p, n, AI_TABLE_LINE_MIN), "tables");
    if (!(p->ix->tables = calloc((size_t)n + 1, sizeof *p->ix->tables)))
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    fb_code rc = FB_OK;
    for (long long i = 0; i < n && rc == FB_OK; i++) rc = ai_parse_table(p, err);
    return rc;
}

/* Step 4: (version >= 3) the record count (version 4: and bytes), which must be the sum of the tables' ranges;
 * then nothing but the MAC. */
static fb_code ai_parse_end(ai_parser *p, fb_err *err) {
    if (p->ix->version == 3) {
        unsigned long long nr = 0;
        AI_NEED(ai_next(p, "records") && sscanf(p->v, "%llu", &nr) == 1 && nr == p->next_rec,
                "records line (must count the tables' ranges)");
        p->ix->n_records = nr;
        AI_NEED(nr <= UINT64_MAX / ARC_CLIST_REC_BYTES, "records line (count out of range)");
        p->ix->n_record_bytes = nr * ARC_CLIST_REC_BYTES;
    } else if (p->ix->version == 4) {
        unsigned long long nr = 0, nb = 0;
        AI_NEED(ai_next(p, "records") && sscanf(p->v, "%llu %llu", &nr, &nb) == 2 && nr == p->n_rec &&
                    nb == p->next_rec,
                "records line (must count the tables' ranges, records and bytes)");
        p->ix->n_records = nr;
        p->ix->n_record_bytes = nb;
    }
    AI_NEED(p->in.p == p->in.end, "end (lines after the tables)");
    return FB_OK;
}
#undef AI_NEED

fb_code arc_index_parse(const char *buf, size_t len, const unsigned char key[ARC_INDEX_KEY_BYTES], arc_index **out,
                        fb_err *err) {
    int version = 0;
    const char *last = NULL;
    *out = NULL;
    fb_code rc = ai_authenticate(buf, len, key, &version, &last, err);
    if (rc) return rc;
    ai_parser *p = calloc(1, sizeof *p);
    if (!p || !(p->ix = calloc(1, sizeof *p->ix))) {
        free(p);
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    p->in = (ai_in){buf + sizeof AI_MAGIC - 1, last}; /* all magics have the same length */
    p->ix->version = version;
    rc = ai_parse_job(p, buf, len, err);
    if (!rc) rc = ai_parse_tables(p, err);
    if (!rc) rc = ai_parse_end(p, err);
    if (!rc) *out = p->ix;
    else arc_index_free(p->ix);
    free(p);
    return rc;
}

void arc_index_free(arc_index *ix) {
    if (!ix) return;
    for (size_t i = 0; i < ix->n_tables; i++) {
        free(ix->tables[i].schema);
        free(ix->tables[i].name);
        free(ix->tables[i].stored_in);
        for (size_t k = 0; k < ix->tables[i].n_chunks; k++) free(ix->tables[i].chunks[k].src);
        free(ix->tables[i].chunks);
        free(ix->tables[i].deps);
    }
    free(ix->tables);
    for (size_t i = 0; i < ix->n_sources; i++) free(ix->sources[i]);
    free(ix->sources);
    free(ix->cap_stream);
    free(ix->cap_full);
    free(ix->job_id);
    free(ix->type);
    free(ix->base_job);
    free(ix);
}

const arc_index_table *arc_index_find(const arc_index *ix, const char *schema, const char *name) {
    for (size_t i = 0; i < ix->n_tables; i++)
        if (strcmp(ix->tables[i].schema, schema) == 0 && strcmp(ix->tables[i].name, name) == 0) return &ix->tables[i];
    return NULL;
}

fb_code arc_artifact_name(const char *dir, const char *job_id, char *out, size_t cap, fb_err *err) {
    if (fb_relpath_problem(job_id, strlen(job_id)) || strchr(job_id, '/'))
        return fb_err_set(err, FB_ERR_FORMAT, "a reference names job \"%.100s\", which is not a job id", job_id);
    int n = snprintf(out, cap, "%s%s%s%s", dir, *dir ? "/" : "", job_id, ARC_ARTIFACT_SUFFIX);
    if (n < 0 || (size_t)n >= cap) return fb_err_set(err, FB_ERR_INVALID, "path of backup %s in \"%.200s\" is too long", job_id, dir);
    return FB_OK;
}
