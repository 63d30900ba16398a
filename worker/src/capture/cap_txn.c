/* cap_txn: see cap_txn.h. */
#include "capture/cap_txn.h"

#include "capture/cap_wire.h"
#include "common/fb_sbuf.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cap_lsn_parse(const char *s, uint64_t *out) {
    unsigned hi, lo;
    int n = 0;
    if (!s || sscanf(s, "%8X/%8X%n", &hi, &lo, &n) != 2 || s[n] != '\0') return -1;
    *out = ((uint64_t)hi << 32) | lo;
    return 0;
}

cap_txn *cap_txn_new(void) { return calloc(1, sizeof(cap_txn)); }

static void cap_tuple_clear(cap_tuple *tp) {
    for (uint16_t i = 0; i < tp->ncols; i++) free(tp->vals[i].data);
    free(tp->vals);
    tp->vals = NULL;
    tp->ncols = 0;
}

void cap_txn_free(cap_txn *t) {
    if (!t) return;
    for (size_t i = 0; i < t->nchanges; i++) {
        cap_tuple_clear(&t->changes[i].old_tup);
        cap_tuple_clear(&t->changes[i].new_tup);
        free(t->changes[i].trunc_rels);
    }
    free(t->changes);
    free(t);
}

cap_change *cap_txn_add(cap_txn *t, cap_kind kind) {
    if (t->nchanges == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        cap_change *p = realloc(t->changes, cap * sizeof *p);
        if (!p) return NULL;
        t->changes = p;
        t->cap = cap;
    }
    cap_change *c = &t->changes[t->nchanges++];
    memset(c, 0, sizeof *c);
    c->kind = kind;
    t->bytes += sizeof *c;
    return c;
}

int cap_tuple_alloc(cap_tuple *tp, uint16_t ncols) {
    tp->ncols = 0;
    tp->vals = calloc(ncols ? ncols : 1, sizeof(cap_val));
    if (!tp->vals) return -1;
    tp->ncols = ncols;
    return 0;
}

void cap_rel_free(cap_rel *r) {
    if (!r) return;
    for (uint16_t i = 0; i < r->ncols; i++) free(r->cols[i].name);
    free(r->cols);
    free(r->nspname);
    free(r->relname);
    free(r);
}

void cap_relset_add(cap_relset *s, cap_rel *rel) {
    rel->next = s->head;
    s->head = rel;
}

const cap_rel *cap_relset_current(const cap_relset *s, uint32_t relid) {
    for (const cap_rel *r = s->head; r; r = r->next)
        if (r->relid == relid) return r;
    return NULL;
}

void cap_relset_clear(cap_relset *s) {
    while (s->head) {
        cap_rel *n = s->head->next;
        cap_rel_free(s->head);
        s->head = n;
    }
}

fb_code cap_tuple_read(cap_rd *r, cap_tuple *tp, size_t *bytes, fb_err *err) {
    uint16_t n = cap_rd_u16(r);
    if (r->bad) return fb_err_set(err, FB_ERR_FORMAT, "tuple data truncated before its column count");
    if (n > CAP_MAX_COLS)
        return fb_err_set(err, FB_ERR_FORMAT, "tuple data with %u columns (PostgreSQL allows %u)", n, CAP_MAX_COLS);
    if (cap_tuple_alloc(tp, n) != 0) return fb_err_set(err, FB_ERR_NOMEM, "out of memory for a %u-column tuple", n);
    *bytes += (size_t)n * sizeof(cap_val);
    for (uint16_t i = 0; i < n; i++) {
        cap_val *v = &tp->vals[i];
        v->kind = (char)cap_rd_u8(r);
        if (v->kind == 'n' || v->kind == 'u') continue;
        if (v->kind != 't') {
            if (r->bad) break;
            return fb_err_set(err, FB_ERR_FORMAT, "column %u of a tuple has kind 0x%02x (expected 'n', 'u' or 't'%s)",
                              i + 1, (unsigned char)v->kind, v->kind == 'b' ? "; binary mode is never requested" : "");
        }
        uint32_t len = cap_rd_u32(r);
        const unsigned char *p = cap_rd_bytes(r, len);
        if (!p) break;
        if (memchr(p, '\0', len))
            return fb_err_set(err, FB_ERR_FORMAT, "column %u of a tuple holds a NUL byte (text output never does)", i + 1);
        v->data = malloc((size_t)len + 1);
        if (!v->data) return fb_err_set(err, FB_ERR_NOMEM, "out of memory for a %u-byte value", len);
        memcpy(v->data, p, len);
        v->data[len] = '\0';
        v->len = len;
        *bytes += len;
    }
    if (r->bad) return fb_err_set(err, FB_ERR_FORMAT, "tuple data truncated (%u columns announced)", n);
    return FB_OK;
}

void cap_tuple_write(fb_sbuf *b, const cap_tuple *tp) {
    cap_wr_u16(b, tp->ncols);
    for (uint16_t i = 0; i < tp->ncols; i++) {
        const cap_val *v = &tp->vals[i];
        cap_wr_u8(b, (uint8_t)v->kind);
        if (v->kind != 't') continue;
        cap_wr_u32(b, v->len);
        fb_sbuf_put(b, v->data, v->len);
    }
}
