/* arc_reader: see arc_reader.h and FORMAT.md.
 *
 * A segment is read with a bounded buffer: one message (at most ARC_MESSAGE_MAX) at a time, authenticated and
 * decrypted by arc_stream (shared with rekey), then fed through zstd's streaming decompressor into a 256 KiB output buffer that goes to the sink. Nothing is trusted
 * before it is authenticated: lengths read from the file only bound how much is read next, and every byte read
 * is covered by a Poly1305 tag before it is decompressed.
 *
 * An assembled table (format 3) is its chunks concatenated (listed in the manifest before format 5, streamed
 * from the chain index's binary records since; arc_clist.h): each chunk names an artifact (this one or another,
 * opened through the resolver like a referenced table) and a segment of it. Those segments are decompressed once
 * each into unlinked temporary files (disk, not memory: about the table's size plus its new chunks, in $TMPDIR),
 * and chunks are copied out in order through one 64 KiB buffer, so memory does not grow with the table. The
 * assembled stream is hashed and must match the table's BLAKE2b in this manifest: a wrong chunk (a lying index, a
 * mixed-up chain) fails the table, it never restores wrong data.
 */
#include "artifact/arc_reader.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "artifact/arc_clist.h"
#include "artifact/arc_format.h"
#include "artifact/arc_index.h"
#include "artifact/arc_sign.h"
#include "artifact/arc_stream.h"
#include "common/fb_progress.h"

/* An artifact opened to read a table this one references; owned by the reader that opened it. */
typedef struct ar_link {
    struct ar_link *next;
    char *job_id;
    stor_rfile *f;
    arc_reader *r;
} ar_link;

#define AR_MAX_DEPTH 64 /* references are direct (FORMAT.md); a longer path means a loop */

struct arc_reader {
    stor_rfile *f;
    unsigned char header[ARC_HEADER_BYTES];
    size_t ad_len;            /* additional data of every message: the whole header (v1) or its fixed part (v2) */
    unsigned char data_key[crypto_kdf_KEYBYTES];
    unsigned char sk[crypto_box_SECRETKEYBYTES], pk[crypto_box_PUBLICKEYBYTES]; /* to open referenced artifacts */
    arc_resolve_fn resolve;
    void *resolve_opaque;
    void (*resolve_free)(void *);
    ar_link *links;
    int depth;
    arc_stream_bufs bufs;     /* one message's ciphertext and plaintext (arc_stream.h) */
    unsigned char *obuf;      /* decompressed output */
    ZSTD_DCtx *dctx;
    char *manifest_raw;
    size_t manifest_len;
    arc_manifest *manifest;
    /* Format 5: the head of the chain index (authenticated by its signature and, unless rekey re-signed it, by
     * the manifest's index_blake2b) and the file offset of its chunk records, from which assembled tables are read
     * (arc_clist.h). NULL before format 5. */
    arc_index *ix;
    uint64_t records_off;
    int borrowed;             /* a dup: manifest, manifest_raw and ix belong to the original */
    /* Who wrote it (format 5, arc_sign.h): the keyring (borrowed) links are opened with, and the outcome. */
    const fb_keyring *signers;
    int allow_unsigned;
    arc_sig_status sig;
    /* The manifest segment as read once for its signature check; decrypted from here, so the bytes decrypted
     * are the bytes whose signature was checked even if the file changes meanwhile. Owned; NULL before format 5. */
    unsigned char *mcache;
    uint64_t mcache_off, mcache_len;
};

#define AR_OUT_BYTES (256u * 1024u)

fb_code arc_reader_peek_version(stor_rfile *f, int *version, fb_err *err) {
    unsigned char h[16];
    if (f->size < ARC_HEADER_BYTES + ARC_TRAILER_BYTES || stor_rfile_pread(f, h, sizeof h, 0, NULL) != FB_OK ||
        memcmp(h, ARC_MAGIC, ARC_MAGIC_LEN) != 0)
        return fb_err_set(err, FB_ERR_FORMAT, "\"%s\" is not a fusion-backup artifact (bad magic or too short)", f->name);
    *version = arc_get_u16(h + 8);
    return FB_OK;
}

/* Reads and checks the trailer: v1 (24 bytes: manifest) or v2 (40 bytes: manifest, then chain index). */
static fb_code ar_trailer(stor_rfile *f, int version, uint64_t *moff, uint64_t *mlen, uint64_t *ioff, uint64_t *ilen,
                          fb_err *err) {
    unsigned char tr[ARC_TRAILER_BYTES_V2];
    size_t tl = version >= 2 ? ARC_TRAILER_BYTES_V2 : ARC_TRAILER_BYTES;
    /* format 5: the signature block sits between the index and the trailer (arc_sign.h) */
    size_t tail = tl + (version >= ARC_SIG_FIRST_VERSION ? ARC_SIG_BLOCK_BYTES : 0);
    uint64_t io = 0, il = 0;
    if (f->size < ARC_HEADER_BYTES + tail)
        return fb_err_set(err, FB_ERR_FORMAT, "\"%s\" is truncated (shorter than a header and a trailer)", f->name);
    fb_code rc = stor_rfile_pread(f, tr, tl, f->size - tl, err);
    if (rc) return rc;
    *moff = arc_get_u64(tr + 8);
    *mlen = arc_get_u64(tr + 16);
    if (version >= 2) {
        io = arc_get_u64(tr + 24);
        il = arc_get_u64(tr + 32);
    } else {
        io = *moff + *mlen;
    }
    if (memcmp(tr, ARC_TRAILER_MAGIC, 8) != 0 || *moff < ARC_HEADER_BYTES || *mlen > f->size || il > f->size ||
        *moff + *mlen != io || io + il + tail != f->size)
        return fb_err_set(err, FB_ERR_FORMAT, "\"%s\" has no valid trailer: the file is truncated or was altered (an "
                          "interrupted copy?)", f->name);
    if (ioff) *ioff = io;
    if (ilen) *ilen = il;
    return FB_OK;
}

fb_code arc_reader_peek_index(stor_rfile *f, char **out, size_t *len, fb_err *err) {
    return arc_reader_peek_index_at(f, out, len, NULL, NULL, err);
}

fb_code arc_reader_peek_index_at(stor_rfile *f, char **out, size_t *len, uint64_t *index_off, uint64_t *index_len,
                                 fb_err *err) {
    int version = 0;
    uint64_t moff, mlen, ioff, ilen, head = 0;
    char first[ARC_INDEX_PEEK_BYTES];
    *out = NULL;
    fb_code rc = arc_reader_peek_version(f, &version, err);
    if (rc) return rc;
    if (version < 2) return fb_err_set(err, FB_ERR_NOTFOUND, "\"%s\" is format %d: it has no chain index", f->name, version);
    if (version > ARC_FORMAT_VERSION)
        return fb_err_set(err, FB_ERR_FORMAT, "\"%s\" has artifact format version %d; this build reads up to %d",
                          f->name, version, ARC_FORMAT_VERSION);
    if ((rc = ar_trailer(f, version, &moff, &mlen, &ioff, &ilen, err))) return rc;
    if (ilen == 0) return fb_err_set(err, FB_ERR_NOTFOUND, "\"%s\" has no chain index", f->name);
    /* Version 3 (format 5): only the head, whose length its second line gives; the chunk records after it are
     * streamed by whoever needs them (arc_clist_iter). */
    size_t fl = ilen < sizeof first ? (size_t)ilen : sizeof first;
    if ((rc = stor_rfile_pread(f, first, fl, ioff, err))) return rc;
    if ((rc = arc_index_head_len(first, fl, &head, err))) {
        fb_err_prefix(err, "\"%s\": ", f->name);
        return rc;
    }
    if (head > ilen)
        return fb_err_set(err, FB_ERR_FORMAT, "\"%s\": the chain index's head (%llu bytes) is longer than the index",
                          f->name, (unsigned long long)head);
    if (index_off) *index_off = ioff;
    if (index_len) *index_len = ilen;
    if (head) ilen = head;
    if (ilen > ARC_INDEX_HEAD_MAX) return fb_err_set(err, FB_ERR_FORMAT, "\"%s\": chain index too large", f->name);
    char *b = malloc((size_t)ilen + 1);
    if (!b) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    if ((rc = stor_rfile_pread(f, b, (size_t)ilen, ioff, err))) {
        free(b);
        return rc;
    }
    b[ilen] = '\0';
    *out = b;
    *len = (size_t)ilen;
    return FB_OK;
}

typedef struct ar_membuf {
    char *p;
    size_t len, cap;
    fb_code overflow;
} ar_membuf;

static fb_code ar_mem_sink(void *opaque, const void *buf, size_t len, fb_err *err) {
    ar_membuf *m = opaque;
    if (m->len + len > ARC_MANIFEST_MAX) return fb_err_set(err, FB_ERR_FORMAT, "manifest larger than %u bytes", ARC_MANIFEST_MAX);
    if (m->len + len > m->cap) {
        size_t cap = m->cap ? m->cap : 65536;
        while (cap < m->len + len) cap *= 2;
        char *p = realloc(m->p, cap);
        if (!p) return fb_err_set(err, FB_ERR_NOMEM, "out of memory reading the manifest");
        m->p = p;
        m->cap = cap;
    }
    memcpy(m->p + m->len, buf, len);
    m->len += len;
    return FB_OK;
}

/* ---- reading a segment: stream (arc_stream) -> decompress -> hash, progress, sink ---------------------------- */

/* One segment being read by ar_segment: where its plaintext goes and what was seen of it. */
typedef struct ar_seg {
    arc_reader *r;
    const char *what;
    int progress;       /* a table's COPY text: counted for a command's progress display */
    arc_sink_fn sink;   /* NULL: only check */
    void *opaque;
    crypto_generichash_state hs;
    int64_t raw;        /* decompressed bytes so far */
    size_t zleft;       /* zstd's hint: 0 once the frame is complete */
} ar_seg;

/* A piece of decompressed output: hashed, counted, shown as progress, handed to the sink. */
static fb_code ar_seg_emit(ar_seg *g, const unsigned char *buf, size_t n, fb_err *err) {
    crypto_generichash_update(&g->hs, buf, n);
    g->raw += (int64_t)n;
    if (g->progress) fb_progress_data(buf, n);
    return g->sink ? g->sink(g->opaque, buf, n, err) : FB_OK;
}

/* One authenticated message's plaintext through zstd's streaming decompressor; after the final message, also
 * what the decompressor still holds. */
static fb_code ar_seg_inflate(ar_seg *g, const unsigned char *p, size_t n, int final, fb_err *err) {
    arc_reader *r = g->r;
    ZSTD_inBuffer in = {p, n, 0};
    while (in.pos < in.size || (final && g->zleft != 0)) {
        ZSTD_outBuffer o = {r->obuf, AR_OUT_BYTES, 0};
        g->zleft = ZSTD_decompressStream(r->dctx, &o, &in);
        if (ZSTD_isError(g->zleft))
            return fb_err_set(err, FB_ERR_FORMAT, "%s: zstd could not decompress authenticated data (%s): written by "
                              "an incompatible tool?", g->what, ZSTD_getErrorName(g->zleft));
        fb_code rc = o.pos ? ar_seg_emit(g, r->obuf, o.pos, err) : FB_OK;
        if (rc) return rc;
        if (in.pos == in.size && o.pos < o.size) break; /* needs more input */
    }
    return FB_OK;
}

/* Reads segment `segment` at [off, off+len): every message authenticated (arc_stream), decompressed, hashed into
 * hash and streamed to sink; *raw is the decompressed length. */
static fb_code ar_segment(arc_reader *r, uint32_t segment, uint64_t off, uint64_t len, const char *what,
                          arc_sink_fn sink, void *opaque, unsigned char *hash, int64_t *raw, fb_err *err) {
    const arc_schema_archive *schema = r->manifest ? r->manifest->schema : NULL;
    ar_seg g = {.r = r, .what = what, .sink = sink, .opaque = opaque, .zleft = 1,
                .progress = segment != ARC_MANIFEST_SEGMENT && !(schema && segment == schema->segment)};
    arc_stream_cache mc = {r->mcache, r->mcache_off, r->mcache_len};
    arc_stream s;
    crypto_generichash_init(&g.hs, NULL, 0, ARC_HASH_BYTES);
    fb_code rc = arc_stream_open(&s, r->f, &mc, r->data_key, segment, off, len, r->header, r->ad_len, what, &r->bufs,
                                 err);
    ZSTD_DCtx_reset(r->dctx, ZSTD_reset_session_only);
    while (rc == FB_OK && !s.final) {
        const unsigned char *p = NULL;
        size_t n = 0;
        unsigned char tag = 0;
        rc = arc_stream_next(&s, &p, &n, &tag, err);
        if (rc == FB_OK) rc = ar_seg_inflate(&g, p, n, s.final, err);
    }
    if (rc == FB_OK && g.zleft != 0) rc = fb_err_set(err, FB_ERR_FORMAT, "%s: the compressed stream ends early", what);
    if (rc == FB_OK) crypto_generichash_final(&g.hs, hash, ARC_HASH_BYTES);
    *raw = g.raw;
    arc_stream_close(&s);
    return rc;
}

/* Format 5: reads the manifest segment (into r->mcache), the index head and the signature block once, and checks
 * the signatures against the trusted keys before anything of the manifest is used. *index (malloc'd) and *ilen:
 * the index head as checked; *ioff and *whole: where the index starts and its whole length (head and records). The
 * records are not read: the signed head holds the BLAKE2b of each table's range of them. */
static fb_code ar_check_signature(arc_reader *r, const arc_trust *trust, char **index, size_t *ilen, uint64_t *ioff,
                                  uint64_t *whole, fb_err *err) {
    arc_sig_layout l;
    arc_sig_block b;
    unsigned char sb[ARC_SIG_BLOCK_BYTES], ct_hash[32];
    fb_code rc = arc_sign_layout(r->f, &l, err);
    if (rc) return rc;
    r->sig.state = ARC_SIG_UNTRUSTED;
    if (!(r->mcache = malloc(l.mlen ? (size_t)l.mlen : 1)))
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory reading the manifest of \"%s\"", r->f->name);
    if ((rc = stor_rfile_pread(r->f, r->mcache, (size_t)l.mlen, l.moff, err)) ||
        (rc = stor_rfile_pread(r->f, sb, sizeof sb, l.soff, err)))
        return rc;
    *ilen = 0;
    *ioff = l.ioff;
    *whole = l.ilen;
    if (l.ilen) {
        if ((rc = arc_reader_peek_index_at(r->f, index, ilen, ioff, whole, err))) return rc;
    } else if (!(*index = calloc(1, 1))) {
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    r->mcache_off = l.moff;
    r->mcache_len = l.mlen;
    if ((rc = arc_sign_block_decode(sb, &b, err))) {
        fb_err_prefix(err, "refusing \"%s\" (nothing was read from it): ", r->f->name);
        return rc;
    }
    memcpy(r->sig.manifest_key, b.manifest_key, sizeof r->sig.manifest_key);
    memcpy(r->sig.index_key, b.index_key, sizeof r->sig.index_key);
    memcpy(r->sig.job_id, b.job_id, sizeof r->sig.job_id);
    crypto_generichash(ct_hash, sizeof ct_hash, r->mcache, (size_t)l.mlen, NULL, 0);
    if ((rc = arc_sign_check(&b, trust, r->f->name, r->header, l.moff, l.mlen, ct_hash, l.ioff, *index, *ilen, err)))
        return rc;
    r->sig.state = ARC_SIG_TRUSTED;
    return FB_OK;
}

/* ---- opening: header -> who signed it -> data key -> manifest -> chain index ------------------------------------ */

/* The index head as read for the signature check (format 5), handed on to ar_open_index so the bytes parsed are
 * the bytes whose signature was checked. */
typedef struct ar_signed_index {
    char *head; /* malloc'd, or NULL before format 5 */
    size_t len;
    uint64_t off, whole;
} ar_signed_index;

/* Checks the magic, version and header fields, and reads the header (the additional data of every message). */
static fb_code ar_open_header(arc_reader *r, int *version, fb_err *err) {
    stor_rfile *f = r->f;
    fb_code rc = arc_reader_peek_version(f, version, err);
    if (rc) return rc;
    if (*version < 1 || *version > ARC_FORMAT_VERSION)
        return fb_err_set(err, FB_ERR_FORMAT, "\"%s\" has artifact format version %d; this build reads up to %d "
                          "(use a newer fusion-backup)", f->name, *version, ARC_FORMAT_VERSION);
    if ((rc = stor_rfile_pread(f, r->header, sizeof r->header, 0, err))) return rc;
    if (arc_get_u16(r->header + 10) != ARC_HEADER_BYTES || arc_get_u32(r->header + 12) != 0)
        return fb_err_set(err, FB_ERR_FORMAT, "\"%s\": unsupported header (length %u, flags %u)", f->name,
                          arc_get_u16(r->header + 10), arc_get_u32(r->header + 12));
    r->ad_len = *version >= 2 ? ARC_AD_BYTES_V2 : ARC_HEADER_BYTES;
    return FB_OK;
}

/* Who wrote it, before the data key is even unsealed: a refused artifact is never decrypted. */
static fb_code ar_open_trust(arc_reader *r, int version, const arc_trust *trust, ar_signed_index *si, fb_err *err) {
    r->signers = trust->signers;
    r->allow_unsigned = trust->allow_unsigned;
    if (version >= ARC_SIG_FIRST_VERSION) return ar_check_signature(r, trust, &si->head, &si->len, &si->off, &si->whole, err);
    return arc_sign_unsigned(trust, r->f->name, version, err);
}

/* The data key, unsealed with the key pair (kept to open the artifacts this one references). */
static fb_code ar_open_key(arc_reader *r, const unsigned char *sk, const unsigned char *pk, fb_err *err) {
    memcpy(r->sk, sk, sizeof r->sk);
    memcpy(r->pk, pk, sizeof r->pk);
    if (crypto_box_seal_open(r->data_key, r->header + 16, ARC_SEALED_KEY_BYTES, pk, sk) != 0)
        return fb_err_set(err, FB_ERR_CRYPTO, "\"%s\": the secret key does not open this artifact (wrong key, or the "
                          "header was altered); use the key pair whose public key the worker had", r->f->name);
    return FB_OK;
}

/* The manifest segment, authenticated and decoded (its raw msgpack into mb): it must be the signed job's and end
 * where the data ends. */
static fb_code ar_open_manifest(arc_reader *r, int version, ar_membuf *mb, fb_err *err) {
    stor_rfile *f = r->f;
    unsigned char hash[ARC_HASH_BYTES];
    int64_t raw = 0;
    uint64_t moff = 0, mlen = 0;
    fb_code rc = ar_trailer(f, version, &moff, &mlen, NULL, NULL, err);
    if (rc) return rc;
    if ((rc = ar_segment(r, ARC_MANIFEST_SEGMENT, moff, mlen, "manifest", ar_mem_sink, mb, hash, &raw, err))) return rc;
    if ((rc = arc_manifest_unpack(mb->p, mb->len, &r->manifest, err))) return rc;
    if (r->sig.state == ARC_SIG_TRUSTED && (!r->manifest->job_id || strcmp(r->manifest->job_id, r->sig.job_id) != 0))
        return fb_err_set(err, FB_ERR_VERIFY, "\"%s\": its signature is for backup %s but its manifest is of backup %s: "
                          "refusing it", f->name, r->sig.job_id, r->manifest->job_id ? r->manifest->job_id : "?");
    if (r->manifest->data_end != moff)
        return fb_err_set(err, FB_ERR_FORMAT, "\"%s\": the manifest says the data ends at %llu but it starts at %llu: "
                          "the file was altered", f->name, (unsigned long long)r->manifest->data_end,
                          (unsigned long long)moff);
    return FB_OK;
}

/* Format >= 5: the authenticated index head parsed into r->ix, of the index version the format names (3 in
 * format 5, 4 since format 6, so an index cannot be passed off as the other kind), whose chunk records must fill
 * the rest of the index. */
static fb_code ar_open_records(arc_reader *r, int version, char *ib, size_t il, uint64_t io, uint64_t whole,
                               fb_err *err) {
    fb_code rc = arc_index_parse(ib, il, NULL, &r->ix, err); /* authenticated by the caller */
    if (!rc && r->ix->version != arc_index_version_of(version))
        rc = fb_err_set(err, FB_ERR_FORMAT, "\"%s\": an artifact of format %d holds a chain index of version %d (%d "
                        "expected): the file was altered", r->f->name, version, r->ix->version,
                        arc_index_version_of(version));
    else if (!rc && whole - il != r->ix->n_record_bytes)
        rc = fb_err_set(err, FB_ERR_FORMAT, "\"%s\": the chain index's chunk records do not fill the index (%llu bytes "
                        "after a head of %zu for %llu records of %llu bytes)", r->f->name,
                        (unsigned long long)(whole - il), il, (unsigned long long)r->ix->n_records,
                        (unsigned long long)r->ix->n_record_bytes);
    r->records_off = io + il;
    return rc;
}

/* Format >= 2: the plaintext chain index is covered too: the authenticated manifest records its hash. */
static fb_code ar_open_index(arc_reader *r, int version, ar_signed_index *si, fb_err *err) {
    stor_rfile *f = r->f;
    uint64_t moff = 0, mlen = 0, ioff = 0, ilen = 0;
    unsigned char ih[ARC_HASH_BYTES];
    fb_code rc = ar_trailer(f, version, &moff, &mlen, &ioff, &ilen, err);
    if (rc) return rc;
    if (!r->manifest->has_index_hash != !ilen)
        return fb_err_set(err, FB_ERR_CRYPTO, "\"%s\": the chain index was added or removed after the backup was "
                          "written", f->name);
    if (!ilen) return FB_OK;
    /* Format 5: the index bytes are those whose signature was checked. An index re-signed by another trusted key
     * (rekey re-MACs it for the new key) no longer has the hash the manifest recorded: its signature is what
     * authenticates it then (FORMAT.md, "Signatures (format 5)"). */
    int resigned = r->sig.state == ARC_SIG_TRUSTED && strcmp(r->sig.index_key, r->sig.manifest_key) != 0;
    char *ib = si->head;
    size_t il = si->len;
    uint64_t io = si->off, whole = si->whole;
    si->head = NULL;
    if (!ib && (rc = arc_reader_peek_index_at(f, &ib, &il, &io, &whole, err))) return rc;
    /* Format 5: the hash covers the head, which records the BLAKE2b of each table's chunk records. */
    crypto_generichash(ih, sizeof ih, (const unsigned char *)ib, il, NULL, 0);
    if (!resigned && sodium_memcmp(ih, r->manifest->index_blake2b, sizeof ih) != 0)
        rc = fb_err_set(err, FB_ERR_CRYPTO, "\"%s\": the chain index (plaintext, before the trailer) was altered: its "
                        "BLAKE2b differs from the one the manifest recorded", f->name);
    else if (version >= 5)
        rc = ar_open_records(r, version, ib, il, io, whole, err);
    free(ib);
    return rc;
}

fb_code arc_reader_open(stor_rfile *f, const unsigned char *sk, const unsigned char *pk, const arc_trust *trust,
                        arc_reader **out, fb_err *err) {
    int version = 0;
    ar_membuf mb = {0};
    ar_signed_index si = {0};
    arc_reader *r = calloc(1, sizeof *r);
    *out = NULL;
    if (!r || sodium_init() < 0) {
        free(r);
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    r->f = f;
    r->dctx = ZSTD_createDCtx();
    r->obuf = malloc(AR_OUT_BYTES);
    fb_code rc = r->dctx && r->obuf ? FB_OK : fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    if (!rc) rc = ar_open_header(r, &version, err);
    if (!rc) rc = ar_open_trust(r, version, trust, &si, err);
    if (!rc) rc = ar_open_key(r, sk, pk, err);
    if (!rc) rc = ar_open_manifest(r, version, &mb, err);
    if (!rc && version >= 2) rc = ar_open_index(r, version, &si, err);
    if (!rc) {
        r->manifest_raw = mb.p;
        r->manifest_len = mb.len;
        mb.p = NULL;
        *out = r;
        r = NULL;
    }
    free(mb.p);
    free(si.head);
    arc_reader_free(r);
    return rc;
}

const arc_sig_status *arc_reader_signature(const arc_reader *r) { return &r->sig; }

const arc_manifest *arc_reader_manifest(const arc_reader *r) { return r->manifest; }

const void *arc_reader_manifest_raw(const arc_reader *r, size_t *len) {
    *len = r->manifest_len;
    return r->manifest_raw;
}

void arc_reader_set_resolver(arc_reader *r, arc_resolve_fn fn, void *opaque, void (*opaque_free)(void *)) {
    if (r->resolve_free) r->resolve_free(r->resolve_opaque);
    r->resolve = fn;
    r->resolve_opaque = opaque;
    r->resolve_free = opaque_free;
}

/* The reader of the artifact of job_id, opened once through the resolver and kept. */
static fb_code ar_link_get(arc_reader *r, const char *job_id, const char *what, arc_reader **out, fb_err *err) {
    fb_code rc = FB_OK;
    ar_link *l;
    for (l = r->links; l; l = l->next)
        if (strcmp(l->job_id, job_id) == 0) {
            *out = l->r;
            return FB_OK;
        }
    if (!r->resolve)
        return fb_err_set(err, FB_ERR_NOTFOUND, "%s is not stored in this artifact but in backup %s (this is an "
                          "incremental or differential backup): its chain is needed (restore finds it in the "
                          "artifact's folder or in --chain-dir DIR)", what, job_id);
    if (r->depth >= AR_MAX_DEPTH)
        return fb_err_set(err, FB_ERR_FORMAT, "%s: references between backups loop (deeper than %d)", what,
                          AR_MAX_DEPTH);
    l = calloc(1, sizeof *l);
    if (!l || !(l->job_id = strdup(job_id))) {
        free(l);
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    if ((rc = r->resolve(r->resolve_opaque, job_id, &l->f, err))) {
        fb_err_prefix(err, "%s: the backup chain is broken: ", what);
        goto out;
    }
    /* Every link must be signed by a trusted key too, and be the job the reference names. */
    arc_trust lt = {r->signers, r->allow_unsigned, job_id};
    if ((rc = arc_reader_open(l->f, r->sk, r->pk, &lt, &l->r, err))) {
        fb_err_prefix(err, "%s: its data is in backup %s, which cannot be read: ", what, job_id);
        goto out;
    }
    const arc_manifest *lm = arc_reader_manifest(l->r);
    if (!lm->job_id || strcmp(lm->job_id, job_id) != 0) {
        rc = fb_err_set(err, FB_ERR_VERIFY, "%s: its data should be in backup %s, but \"%s\" holds backup %s (a "
                        "renamed or swapped file)", what, job_id, l->f->name, lm->job_id ? lm->job_id : "?");
        goto out;
    }
    l->r->depth = r->depth + 1;
    arc_reader_set_resolver(l->r, r->resolve, r->resolve_opaque, NULL);
    l->next = r->links;
    r->links = l;
    *out = l->r;
    l = NULL;
out:
    if (l) {
        arc_reader_free(l->r);
        stor_rfile_close(l->f);
        free(l->job_id);
        free(l);
    }
    return rc;
}

/* A referenced table: the artifact holding it must record the same bytes and hash before anything is read. */
static fb_code ar_read_ref(arc_reader *r, const arc_table *t, const char *what, arc_sink_fn sink, void *opaque,
                           fb_err *err) {
    arc_reader *lr = NULL;
    fb_code rc = ar_link_get(r, t->stored_in, what, &lr, err);
    if (rc) return rc;
    const arc_table *lt = arc_manifest_find(arc_reader_manifest(lr), t->schema, t->name);
    if (!lt)
        return fb_err_set(err, FB_ERR_VERIFY, "%s: backup %s, which should hold its data, has no such table: the "
                          "chain is inconsistent", what, t->stored_in);
    if (lt->raw_bytes != t->raw_bytes || sodium_memcmp(lt->blake2b, t->blake2b, ARC_HASH_BYTES) != 0)
        return fb_err_set(err, FB_ERR_VERIFY, "%s: backup %s holds different data for it (%lld bytes) than this "
                          "backup recorded (%lld bytes, BLAKE2b): the chain was altered or mixed up", what,
                          t->stored_in, (long long)lt->raw_bytes, (long long)t->raw_bytes);
    return arc_reader_read_table(lr, lt, sink, opaque, err);
}

/* A decompressed segment an assembled table draws chunks from. It is spilled to an unlinked temporary file (mode
 * 0600, in $TMPDIR or /tmp) rather than held in memory, so restoring a table bigger than memory works: memory stays
 * at one copy buffer whatever the table's size. The file holds plaintext for the length of the restore, which is
 * headed for a database anyway; it disappears with the process. */
typedef struct ar_segbuf {
    const arc_reader *owner;
    uint32_t segment;
    int fd;
    size_t len;
} ar_segbuf;

static fb_code ar_spill_sink(void *opaque, const void *buf, size_t len, fb_err *err) {
    ar_segbuf *sb = opaque;
    const char *p = buf;
    while (len) {
        ssize_t w = write(sb->fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return fb_err_set(err, FB_ERR_IO, "could not write a temporary file while assembling a table: %s (free "
                              "space in $TMPDIR, or point TMPDIR elsewhere)", strerror(errno));
        p += w;
        len -= (size_t)w;
        sb->len += (size_t)w;
    }
    return FB_OK;
}

static fb_code ar_spill_open(ar_segbuf *sb, fb_err *err) {
    const char *dir = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/fusion-backup-assemble-XXXXXX", dir && *dir ? dir : "/tmp");
    sb->fd = mkstemp(path);
    if (sb->fd < 0)
        return fb_err_set(err, FB_ERR_IO, "could not create a temporary file in \"%s\": %s (set TMPDIR to a writable "
                          "folder)", dir && *dir ? dir : "/tmp", strerror(errno));
    unlink(path); /* gone from the file system now; freed when closed */
    return FB_OK;
}

/* Decompresses segment `segment` of artifact sr (found through its manifest: the table stored whole in it, or
 * the new chunks of an assembled table) into sb. */
static fb_code ar_load_segment(arc_reader *sr, uint32_t segment, const char *what, ar_segbuf *sb, fb_err *err) {
    const arc_manifest *m = sr->manifest;
    const arc_table *st = NULL;
    unsigned char hash[ARC_HASH_BYTES];
    int64_t raw = 0;
    for (size_t i = 0; i < m->n_tables && !st; i++)
        if (arc_table_kind_of(m, &m->tables[i]) != ARC_TABLE_REFERENCED && m->tables[i].segment == segment &&
            m->tables[i].length)
            st = &m->tables[i];
    if (!st || segment == ARC_MANIFEST_SEGMENT || st->offset < ARC_HEADER_BYTES || st->offset + st->length > m->data_end)
        return fb_err_set(err, FB_ERR_VERIFY, "%s: a chunk lies in segment %u of backup %s, which has no such "
                          "segment: the chain is inconsistent", what, segment, m->job_id ? m->job_id : "?");
    sb->owner = sr;
    sb->segment = segment;
    fb_code rc = ar_spill_open(sb, err);
    if (rc) return rc;
    rc = ar_segment(sr, segment, st->offset, st->length, what, ar_spill_sink, sb, hash, &raw, err);
    if (!rc && arc_table_kind_of(m, st) != ARC_TABLE_ASSEMBLED &&
        (raw != st->raw_bytes || sodium_memcmp(hash, st->blake2b, ARC_HASH_BYTES) != 0))
        rc = fb_err_set(err, FB_ERR_VERIFY, "%s: segment %u of backup %s does not match its manifest", what, segment,
                        m->job_id ? m->job_id : "?");
    return rc;
}

/* The chunks of an assembled table in order: from the manifest (format 3, 4) or streamed from the chain index's
 * records (format 5), whose range is checked against its BLAKE2b at the end. */
typedef struct ar_chunks {
    const arc_table *t;
    size_t i;
    const arc_index *ix;
    arc_clist_iter it;
} ar_chunks;

static fb_code ar_chunks_open(arc_reader *r, const arc_table *t, const char *what, ar_chunks *cs, fb_err *err) {
    memset(cs, 0, sizeof *cs);
    cs->t = t;
    if (!r->ix) return FB_OK;
    const arc_index_table *it = arc_index_find(r->ix, t->schema, t->name);
    if (!it)
        return fb_err_set(err, FB_ERR_FORMAT, "%s: assembled, but the chain index lists no chunks for it", what);
    cs->ix = r->ix;
    arc_clist_range rg = arc_index_table_range(r->ix, it);
    return arc_clist_iter_open(&cs->it, r->f, r->records_off, r->ix->n_record_bytes, &rg, err);
}

/* *got = 0 at the end; ck->src is borrowed (NULL: this artifact). */
static fb_code ar_chunks_next(ar_chunks *cs, arc_chunk *ck, int *got, const char *what, fb_err *err) {
    *got = 0;
    if (!cs->ix) {
        if (cs->i == cs->t->n_chunks) return FB_OK;
        *ck = cs->t->chunks[cs->i++];
        *got = 1;
        return FB_OK;
    }
    arc_clist_rec rec;
    fb_code rc = arc_clist_iter_next(&cs->it, &rec, got, err);
    if (rc || !*got) return rc;
    if (rec.src > cs->ix->n_sources)
        return fb_err_set(err, FB_ERR_FORMAT, "%s: a chunk names source %u of %zu: the chain index is malformed", what,
                          rec.src, cs->ix->n_sources);
    memcpy(ck->id, rec.id, sizeof ck->id);
    ck->src = rec.src ? cs->ix->sources[rec.src - 1] : NULL;
    ck->segment = rec.segment;
    ck->offset = rec.offset;
    ck->length = rec.length;
    cs->i++;
    return FB_OK;
}

static fb_code ar_read_assembled(arc_reader *r, const arc_table *t, const char *what, arc_sink_fn sink,
                                 void *opaque, fb_err *err) {
    fb_code rc = FB_OK;
    crypto_generichash_state hs;
    unsigned char hash[ARC_HASH_BYTES];
    int64_t raw = 0;
    ar_segbuf *segs = NULL;
    size_t n_segs = 0, cap_segs = 0;
    ar_chunks cs;
    arc_chunk cbuf = {0};
    int got = 0;
    enum { copybuf_size = 1 << 16 };
    unsigned char *copybuf = malloc(copybuf_size);
    if (!copybuf) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    crypto_generichash_init(&hs, NULL, 0, ARC_HASH_BYTES);
    if ((rc = ar_chunks_open(r, t, what, &cs, err))) goto out;
    for (size_t i = 0;; i++) {
        if ((rc = ar_chunks_next(&cs, &cbuf, &got, what, err))) goto out;
        if (!got) break;
        const arc_chunk *ck = &cbuf;
        arc_reader *sr = r;
        if (ck->src && !(r->manifest->job_id && strcmp(ck->src, r->manifest->job_id) == 0) &&
            (rc = ar_link_get(r, ck->src, what, &sr, err)))
            goto out;
        ar_segbuf *sb = NULL;
        for (size_t k = 0; k < n_segs && !sb; k++)
            if (segs[k].owner == sr && segs[k].segment == ck->segment) sb = &segs[k];
        if (!sb) {
            if (n_segs == cap_segs) {
                size_t nc = cap_segs ? 2 * cap_segs : 4;
                ar_segbuf *ns = realloc(segs, nc * sizeof *ns);
                if (!ns) {
                    rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
                    goto out;
                }
                segs = ns;
                cap_segs = nc;
            }
            sb = &segs[n_segs++];
            memset(sb, 0, sizeof *sb);
            sb->fd = -1;
            if ((rc = ar_load_segment(sr, ck->segment, what, sb, err))) goto out;
        }
        if (ck->offset > sb->len || ck->length > sb->len - ck->offset) {
            rc = fb_err_set(err, FB_ERR_VERIFY, "%s: chunk %zu lies outside its segment (%llu+%llu of %zu bytes): the "
                            "chain is inconsistent", what, i, (unsigned long long)ck->offset,
                            (unsigned long long)ck->length, sb->len);
            goto out;
        }
        /* Copy the chunk out of the spilled segment in pieces: memory stays at one buffer. */
        uint64_t at = ck->offset, left = ck->length;
        while (left) {
            size_t n = left < copybuf_size ? (size_t)left : copybuf_size;
            ssize_t rd = pread(sb->fd, copybuf, n, (off_t)at);
            if (rd <= 0) {
                rc = fb_err_set(err, FB_ERR_IO, "%s: could not read back a temporary file: %s", what,
                                rd < 0 ? strerror(errno) : "short read");
                goto out;
            }
            crypto_generichash_update(&hs, copybuf, (size_t)rd);
            if (sink && (rc = sink(opaque, copybuf, (size_t)rd, err))) goto out;
            at += (uint64_t)rd;
            left -= (uint64_t)rd;
        }
        raw += (int64_t)ck->length;
    }
    crypto_generichash_final(&hs, hash, sizeof hash);
    if (raw != t->raw_bytes || sodium_memcmp(hash, t->blake2b, ARC_HASH_BYTES) != 0)
        rc = fb_err_set(err, FB_ERR_VERIFY, "%s: the data assembled from its chunks (%lld bytes) does not match the "
                        "manifest (%lld bytes, BLAKE2b): the backup chain is inconsistent", what, (long long)raw,
                        (long long)t->raw_bytes);
out:
    arc_clist_iter_close(&cs.it);
    for (size_t k = 0; k < n_segs; k++)
        if (segs[k].fd >= 0) close(segs[k].fd);
    free(segs);
    free(copybuf);
    return rc;
}

const arc_index *arc_reader_index(const arc_reader *r) { return r->ix; }

fb_code arc_reader_read_table(arc_reader *r, const arc_table *t, arc_sink_fn sink, void *opaque, fb_err *err) {
    unsigned char hash[ARC_HASH_BYTES];
    int64_t raw = 0;
    char what[300];
    snprintf(what, sizeof what, "table \"%s\".\"%s\"", t->schema, t->name);
    switch (arc_table_kind_of(r->manifest, t)) {
    case ARC_TABLE_REFERENCED: return ar_read_ref(r, t, what, sink, opaque, err);
    case ARC_TABLE_ASSEMBLED: return ar_read_assembled(r, t, what, sink, opaque, err);
    case ARC_TABLE_WHOLE: break;
    }
    if (t->segment == ARC_MANIFEST_SEGMENT || t->offset < ARC_HEADER_BYTES || t->offset + t->length > r->manifest->data_end)
        return fb_err_set(err, FB_ERR_FORMAT, "%s: bad segment in the manifest", what);
    fb_code rc = ar_segment(r, t->segment, t->offset, t->length, what, sink, opaque, hash, &raw, err);
    if (rc) return rc;
    if (raw != t->raw_bytes || sodium_memcmp(hash, t->blake2b, ARC_HASH_BYTES) != 0)
        return fb_err_set(err, FB_ERR_VERIFY, "%s: data (%lld bytes) does not match the manifest (%lld bytes, BLAKE2b): "
                          "the backup is inconsistent", what, (long long)raw, (long long)t->raw_bytes);
    return FB_OK;
}

fb_code arc_reader_read_schema(arc_reader *r, arc_sink_fn sink, void *opaque, fb_err *err) {
    const arc_schema_archive *a = r->manifest->schema;
    unsigned char hash[ARC_HASH_BYTES];
    int64_t raw = 0;
    if (!a)
        return fb_err_set(err, FB_ERR_NOTFOUND, "\"%s\" has no schema archive (written before format 4)", r->f->name);
    if (a->segment == ARC_MANIFEST_SEGMENT || a->offset < ARC_HEADER_BYTES || a->offset + a->length > r->manifest->data_end)
        return fb_err_set(err, FB_ERR_FORMAT, "schema archive: bad segment in the manifest");
    fb_code rc = ar_segment(r, a->segment, a->offset, a->length, "schema archive", sink, opaque, hash, &raw, err);
    if (rc) return rc;
    if (raw != a->raw_bytes || sodium_memcmp(hash, a->blake2b, ARC_HASH_BYTES) != 0)
        return fb_err_set(err, FB_ERR_VERIFY, "schema archive: data (%lld bytes) does not match the manifest (%lld "
                          "bytes, BLAKE2b): the backup is inconsistent", (long long)raw, (long long)a->raw_bytes);
    return FB_OK;
}

fb_code arc_reader_read_changes(arc_reader *r, arc_sink_fn sink, void *opaque, fb_err *err) {
    const arc_capture_changes *a = r->manifest->changes;
    unsigned char hash[ARC_HASH_BYTES];
    int64_t raw = 0;
    if (!a) return fb_err_set(err, FB_ERR_NOTFOUND, "\"%s\" holds no captured changes", r->f->name);
    if (a->segment == ARC_MANIFEST_SEGMENT || a->offset < ARC_HEADER_BYTES || a->offset + a->length > r->manifest->data_end)
        return fb_err_set(err, FB_ERR_FORMAT, "captured changes: bad segment in the manifest");
    fb_code rc = ar_segment(r, a->segment, a->offset, a->length, "captured changes", sink, opaque, hash, &raw, err);
    if (rc) return rc;
    if (raw != a->raw_bytes || sodium_memcmp(hash, a->blake2b, ARC_HASH_BYTES) != 0)
        return fb_err_set(err, FB_ERR_VERIFY, "captured changes: data (%lld bytes) does not match the manifest (%lld "
                          "bytes, BLAKE2b): the backup is inconsistent", (long long)raw, (long long)a->raw_bytes);
    return FB_OK;
}

static int ar_cmp_off(const void *a, const void *b) {
    const arc_table *x = *(arc_table *const *)a, *y = *(arc_table *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

fb_code arc_reader_verify_all(arc_reader *r, fb_err *err) {
    const arc_manifest *m = r->manifest;
    fb_code rc = FB_OK;
    arc_table **v = calloc(m->n_tables + 3, sizeof *v);
    /* The schema archive and the captured changes take their places in the tiling as table-shaped entries (only
     * offset and length count). */
    arc_table schema_slot = {.name = (char *)"(schema archive)"}, changes_slot = {.name = (char *)"(captured changes)"};
    if (!v) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    size_t n = 0;
    if (m->schema) {
        schema_slot.offset = m->schema->offset;
        schema_slot.length = m->schema->length;
        v[n++] = &schema_slot;
    }
    if (m->changes) {
        changes_slot.offset = m->changes->offset;
        changes_slot.length = m->changes->length;
        v[n++] = &changes_slot;
    }
    for (size_t i = 0; i < m->n_tables; i++)
        if (arc_table_kind_of(m, &m->tables[i]) == ARC_TABLE_WHOLE ||
            (arc_table_kind_of(m, &m->tables[i]) == ARC_TABLE_ASSEMBLED && m->tables[i].length))
            v[n++] = &m->tables[i];
    qsort(v, n, sizeof *v, ar_cmp_off);
    uint64_t expect = ARC_HEADER_BYTES;
    for (size_t i = 0; i < n; i++) {
        if (v[i]->offset != expect) {
            rc = fb_err_set(err, FB_ERR_FORMAT, "segments do not tile the file: expected one at %llu, found %llu (%s)",
                            (unsigned long long)expect, (unsigned long long)v[i]->offset, v[i]->name);
            goto out;
        }
        expect += v[i]->length;
        if (v[i] == &schema_slot) {
            rc = arc_reader_read_schema(r, NULL, NULL, err);
        } else if (v[i] == &changes_slot) {
            rc = arc_reader_read_changes(r, NULL, NULL, err);
        } else if (arc_table_kind_of(m, v[i]) == ARC_TABLE_ASSEMBLED) {
            /* Only its new chunks are here: authenticate and decompress them; the table is checked below. */
            unsigned char h[ARC_HASH_BYTES];
            int64_t raw = 0;
            char what[300];
            snprintf(what, sizeof what, "table \"%s\".\"%s\" (new chunks)", v[i]->schema, v[i]->name);
            rc = ar_segment(r, v[i]->segment, v[i]->offset, v[i]->length, what, NULL, NULL, h, &raw, err);
        } else {
            rc = arc_reader_read_table(r, v[i], NULL, NULL, err);
        }
        if (rc) goto out;
    }
    if (expect != m->data_end) {
        rc = fb_err_set(err, FB_ERR_FORMAT, "segments end at %llu but the manifest starts at %llu",
                        (unsigned long long)expect, (unsigned long long)m->data_end);
        goto out;
    }
    /* Format 5: every table's chunk records, against the BLAKE2b of its range in the (authenticated) index head:
     * a later backup reads them to find the chain's chunks. */
    for (size_t i = 0; r->ix && i < r->ix->n_tables; i++) {
        const arc_index_table *it = &r->ix->tables[i];
        arc_clist_iter ci;
        arc_clist_rec rec;
        int got = 1;
        arc_clist_range rg = arc_index_table_range(r->ix, it);
        rc = arc_clist_iter_open(&ci, r->f, r->records_off, r->ix->n_record_bytes, &rg, err);
        while (!rc && got) {
            rc = arc_clist_iter_next(&ci, &rec, &got, err);
            if (!rc && got && rec.src > r->ix->n_sources)
                rc = fb_err_set(err, FB_ERR_FORMAT, "a chunk record of table \"%s\".\"%s\" names source %u of %zu",
                                it->schema, it->name, rec.src, r->ix->n_sources);
        }
        arc_clist_iter_close(&ci);
        if (rc) goto out;
    }
    for (size_t i = 0; i < m->n_tables; i++) {
        const arc_table *t = &m->tables[i];
        arc_table_kind kind = arc_table_kind_of(m, t);
        int local = kind == ARC_TABLE_ASSEMBLED;
        for (size_t k = 0; local && k < t->n_chunks; k++)
            if (t->chunks[k].src && !(m->job_id && strcmp(t->chunks[k].src, m->job_id) == 0)) local = 0;
        if (local && r->ix) { /* format 5: the index head names the other artifacts each table's chunks are in */
            const arc_index_table *it = arc_index_find(r->ix, t->schema, t->name);
            local = it && it->n_deps == 0;
        }
        if ((kind != ARC_TABLE_WHOLE && r->resolve) || local)
            if ((rc = arc_reader_read_table(r, t, NULL, NULL, err))) goto out;
    }
out:
    free(v);
    return rc;
}

fb_code arc_reader_dup(const arc_reader *r, arc_reader **out, fb_err *err) {
    arc_reader *d = calloc(1, sizeof *d);
    *out = NULL;
    if (!d) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    d->f = r->f;
    memcpy(d->header, r->header, sizeof d->header);
    d->ad_len = r->ad_len;
    memcpy(d->data_key, r->data_key, sizeof d->data_key);
    memcpy(d->sk, r->sk, sizeof d->sk);
    memcpy(d->pk, r->pk, sizeof d->pk);
    d->resolve = r->resolve;
    d->resolve_opaque = r->resolve_opaque;
    d->depth = r->depth;
    d->signers = r->signers;
    d->allow_unsigned = r->allow_unsigned;
    d->sig = r->sig;
    d->manifest = r->manifest;
    d->manifest_raw = r->manifest_raw;
    d->manifest_len = r->manifest_len;
    d->ix = r->ix;
    d->records_off = r->records_off;
    d->borrowed = 1;
    d->dctx = ZSTD_createDCtx();
    d->obuf = malloc(AR_OUT_BYTES);
    if (!d->dctx || !d->obuf) {
        arc_reader_free(d);
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    *out = d;
    return FB_OK;
}

void arc_reader_free(arc_reader *r) {
    if (!r) return;
    while (r->links) {
        ar_link *l = r->links;
        r->links = l->next;
        arc_reader_free(l->r);
        stor_rfile_close(l->f);
        free(l->job_id);
        free(l);
    }
    if (r->resolve_free) r->resolve_free(r->resolve_opaque);
    sodium_memzero(r->data_key, sizeof r->data_key);
    sodium_memzero(r->sk, sizeof r->sk);
    ZSTD_freeDCtx(r->dctx);
    arc_stream_bufs_free(&r->bufs);
    free(r->obuf);
    free(r->mcache);
    if (!r->borrowed) {
        free(r->manifest_raw);
        arc_manifest_free(r->manifest);
        arc_index_free(r->ix);
    }
    free(r);
}
