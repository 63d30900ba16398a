/* cap_schema: see cap_schema.h. */
#include "capture/cap_schema.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fb_sbuf.h"

#define CS_MAGIC "fusion-backup capture schema 1\n"
#define CS_HASH_BYTES 16
#define CS_MAX_FILE (16u << 20)
#define CS_WHY_MAX 512

typedef struct cs_rel {
    uint32_t relid;
    unsigned char hash[CS_HASH_BYTES];
} cs_rel;

struct cap_schema {
    char stream[64];
    cs_rel *rels;
    size_t n, cap;
    int ended, dirty, from_file;
    uint64_t end_lsn;
    uint32_t end_relid;
    char why[CS_WHY_MAX];
};

/* The column set: schema, table, and each column's name, type and typmod, length-prefixed so no two frame alike. */
static void cs_hash(const cap_rel *r, unsigned char out[CS_HASH_BYTES]) {
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, CS_HASH_BYTES);
    const char *names[2] = {r->nspname, r->relname};
    for (int i = 0; i < 2; i++) {
        uint32_t len = (uint32_t)strlen(names[i]);
        crypto_generichash_update(&h, (const unsigned char *)&len, sizeof len);
        crypto_generichash_update(&h, (const unsigned char *)names[i], len);
    }
    for (uint16_t i = 0; i < r->ncols; i++) {
        uint32_t f[3] = {(uint32_t)strlen(r->cols[i].name), r->cols[i].type_oid, (uint32_t)r->cols[i].typmod};
        crypto_generichash_update(&h, (const unsigned char *)f, sizeof f);
        crypto_generichash_update(&h, (const unsigned char *)r->cols[i].name, f[0]);
    }
    crypto_generichash_final(&h, out, CS_HASH_BYTES);
}

static cs_rel *cs_find(cap_schema *s, uint32_t relid) {
    for (size_t i = 0; i < s->n; i++)
        if (s->rels[i].relid == relid) return &s->rels[i];
    return NULL;
}

static fb_code cs_add(cap_schema *s, uint32_t relid, const unsigned char hash[CS_HASH_BYTES], fb_err *err) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        cs_rel *p = realloc(s->rels, cap * sizeof *p);
        if (!p) return fb_err_set(err, FB_ERR_NOMEM, "out of memory for the chain's relation definitions");
        s->rels = p;
        s->cap = cap;
    }
    size_t at = s->n; /* ascending oid, so the file is canonical */
    while (at > 0 && s->rels[at - 1].relid > relid) at--;
    memmove(&s->rels[at + 1], &s->rels[at], (s->n - at) * sizeof *s->rels);
    s->rels[at].relid = relid;
    memcpy(s->rels[at].hash, hash, CS_HASH_BYTES);
    s->n++;
    return FB_OK;
}

/* ---- the file ------------------------------------------------------------------------------------------------ */

static void cs_digest(const char *body, size_t len, unsigned char out[FB_SIGN_DIGEST_BYTES]) {
    crypto_generichash(out, FB_SIGN_DIGEST_BYTES, (const unsigned char *)body, len, NULL, 0);
}

static void cs_body(const cap_schema *s, fb_sbuf *b) {
    fb_sbuf_printf(b, CS_MAGIC "stream %s\n", s->stream);
    for (size_t i = 0; i < s->n; i++) {
        char hex[2 * CS_HASH_BYTES + 1];
        sodium_bin2hex(hex, sizeof hex, s->rels[i].hash, CS_HASH_BYTES);
        fb_sbuf_printf(b, "rel %" PRIu32 " %s\n", s->rels[i].relid, hex);
    }
    if (s->ended) fb_sbuf_printf(b, "end " CAP_LSN_FMT " %" PRIu32 " %s\n", CAP_LSN_ARGS(s->end_lsn), s->end_relid, s->why);
}

/* One line of the body after the header lines. */
static int cs_parse_line(cap_schema *s, const char *line) {
    char hex[2 * CS_HASH_BYTES + 2], lsn[40];
    unsigned relid;
    int n = 0;
    if (sscanf(line, "rel %u %33s%n", &relid, hex, &n) == 2 && line[n] == '\0') {
        unsigned char h[CS_HASH_BYTES];
        size_t hl = 0;
        if (sodium_hex2bin(h, sizeof h, hex, strlen(hex), NULL, &hl, NULL) != 0 || hl != CS_HASH_BYTES) return -1;
        return cs_find(s, relid) || cs_add(s, relid, h, NULL) != FB_OK ? -1 : 0;
    }
    if (sscanf(line, "end %39s %u %n", lsn, &relid, &n) == 2 && n > 0 && cap_lsn_parse(lsn, &s->end_lsn) == 0) {
        s->ended = 1;
        s->end_relid = relid;
        snprintf(s->why, sizeof s->why, "%s", line + n);
        return 0;
    }
    return -1;
}

static fb_code cs_parse(cap_schema *s, char *buf, size_t len, const fb_keyring *signers, const char *where, fb_err *err) {
    char *key = strstr(buf, "\nkey ");
    if (strncmp(buf, CS_MAGIC, strlen(CS_MAGIC)) != 0 || !key || memchr(buf, '\0', len))
        return fb_err_set(err, FB_ERR_FORMAT, "%s is not a capture schema file", where);
    size_t body_len = (size_t)(key - buf) + 1;
    char kid[FB_SIGN_KEY_ID_HEX + 2], sighex[2 * FB_SIGN_BYTES + 2];
    unsigned char sig[FB_SIGN_BYTES], digest[FB_SIGN_DIGEST_BYTES];
    size_t sl = 0;
    int n = 0;
    if (sscanf(key + 1, "key %17s\nsig %129s\n%n", kid, sighex, &n) != 2 || key[1 + n] != '\0' ||
        sodium_hex2bin(sig, sizeof sig, sighex, strlen(sighex), NULL, &sl, NULL) != 0 || sl != FB_SIGN_BYTES)
        return fb_err_set(err, FB_ERR_FORMAT, "%s: malformed signature lines", where);
    cs_digest(buf, body_len, digest);
    fb_code rc = fb_keyring_verify(signers, kid, CAP_SCHEMA_SIGN_CONTEXT, digest, sig, where, NULL, err);
    if (rc != FB_OK) return rc;
    key[1] = '\0';
    char *line = buf + strlen(CS_MAGIC), *nl = strchr(line, '\n');
    char want[80];
    snprintf(want, sizeof want, "stream %s", s->stream);
    if (!nl || (size_t)(nl - line) != strlen(want) || strncmp(line, want, strlen(want)) != 0)
        return fb_err_set(err, FB_ERR_VERIFY, "%s belongs to another chain (want \"%s\")", where, want);
    for (line = nl + 1; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        *nl = '\0';
        if (cs_parse_line(s, line) != 0) return fb_err_set(err, FB_ERR_FORMAT, "%s: bad line \"%.80s\"", where, line);
    }
    return FB_OK;
}

fb_code cap_schema_load(stor *st, const char *dir, const char *stream, const fb_keyring *signers, cap_schema **out,
                        fb_err *err) {
    *out = NULL;
    cap_schema *s = calloc(1, sizeof *s);
    if (!s) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    snprintf(s->stream, sizeof s->stream, "%s", stream);
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, CAP_SCHEMA_FILE);
    stor_rfile *f = NULL;
    char *buf = NULL;
    fb_code rc = stor_open(st, path, &f, err);
    if (rc == FB_ERR_NOTFOUND) { /* a chain that has not written a segment yet */
        *out = s;
        return FB_OK;
    }
    if (rc == FB_OK && (f->size == 0 || f->size > CS_MAX_FILE))
        rc = fb_err_set(err, FB_ERR_FORMAT, "%s: %" PRIu64 " bytes is not the size of a schema file", path, f->size);
    if (rc == FB_OK && !(buf = malloc(f->size + 1))) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    if (rc == FB_OK) rc = stor_rfile_pread(f, buf, f->size, 0, err);
    if (rc == FB_OK) {
        buf[f->size] = '\0';
        rc = cs_parse(s, buf, f->size, signers, path, err);
        s->from_file = 1;
    }
    stor_rfile_close(f);
    free(buf);
    if (rc != FB_OK) {
        cap_schema_free(s);
        return rc;
    }
    *out = s;
    return FB_OK;
}

void cap_schema_free(cap_schema *s) {
    if (!s) return;
    free(s->rels);
    free(s);
}

/* What changed, for the message: column counts and the first column that differs is enough to find it. */
fb_code cap_schema_check(cap_schema *s, const cap_rel *rel, uint64_t at, fb_err *err) {
    unsigned char h[CS_HASH_BYTES];
    cs_hash(rel, h);
    cs_rel *known = cs_find(s, rel->relid);
    if (!known) {
        fb_code rc = cs_add(s, rel->relid, h, err);
        if (rc == FB_OK) s->dirty = 1;
        return rc;
    }
    if (memcmp(known->hash, h, CS_HASH_BYTES) == 0) return FB_OK;
    return fb_err_set(err, FB_ERR_CONFLICT,
                      "table %s.%s (oid %" PRIu32 ") changed its columns (now %u) before the transaction committing at "
                      CAP_LSN_FMT ": a schema change (migration) ran. What it did to existing rows is not in the "
                      "logical stream, so applying later changes to the base's schema would restore something the "
                      "source never held", rel->nspname, rel->relname, rel->relid, rel->ncols, CAP_LSN_ARGS(at));
}

fb_code cap_schema_end(cap_schema *s, uint64_t at, uint32_t relid, const char *why, fb_err *err) {
    (void)err;
    s->ended = 1;
    s->dirty = 1;
    s->end_lsn = at;
    s->end_relid = relid;
    size_t n = 0;
    for (const char *p = why; *p && n + 1 < sizeof s->why; p++) s->why[n++] = *p == '\n' ? ' ' : *p;
    s->why[n] = '\0';
    return FB_OK;
}

int cap_schema_ended(const cap_schema *s, uint64_t *at, const char **why) {
    if (s->ended) {
        if (at) *at = s->end_lsn;
        if (why) *why = s->why;
    }
    return s->ended;
}

int cap_schema_dirty(const cap_schema *s) { return s->dirty; }
int cap_schema_from_file(const cap_schema *s) { return s->from_file; }

fb_code cap_schema_save(cap_schema *s, stor *st, const char *dir, const fb_signer *signer, fb_err *err) {
    fb_sbuf b = {0};
    cs_body(s, &b);
    if (b.oom) {
        fb_sbuf_free(&b);
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory writing the chain's schema file");
    }
    unsigned char digest[FB_SIGN_DIGEST_BYTES], sig[FB_SIGN_BYTES];
    char sighex[2 * FB_SIGN_BYTES + 1];
    cs_digest(b.p, b.len, digest);
    fb_sign_digest(signer, CAP_SCHEMA_SIGN_CONTEXT, digest, sig);
    sodium_bin2hex(sighex, sizeof sighex, sig, sizeof sig);
    fb_sbuf_printf(&b, "key %s\nsig %s\n", signer->key_id, sighex);
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, CAP_SCHEMA_FILE);
    stor_wfile *f = NULL;
    fb_code rc = b.oom ? fb_err_set(err, FB_ERR_NOMEM, "out of memory") : stor_create(st, path, &f, err);
    if (rc == FB_OK) rc = stor_wfile_write(f, b.p, b.len, err);
    if (rc == FB_OK) {
        rc = stor_wfile_commit(f, err);
        f = NULL;
    }
    stor_wfile_abort(f);
    fb_sbuf_free(&b);
    if (rc == FB_OK) s->dirty = 0;
    return rc;
}
