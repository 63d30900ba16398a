/* cmd_rekey: `fusion-backup rekey ARTIFACT... --secret-key OLD --new-public-key NEW.pub`.
 *
 * Key rotation without re-encryption: the data is encrypted under each artifact's own random data key; only the
 * 80-byte sealed copy of that key in the header is tied to the key pair. rekey opens the artifact with the old
 * secret key (which also authenticates its manifest), seals the same data key to the new public key, and writes
 * the artifact again with only bytes 16..96 changed.
 *
 * Why this is possible from format 2 on: the additional data of every message is the fixed part of the header
 * (magic, version, length, flags), not the sealed key, so a new sealed key leaves every tag valid; a forged sealed
 * key gains nothing (it opens to another data key, under which no segment authenticates). Format 1 used the whole
 * header as additional data: its sealed key cannot change without re-encrypting everything, and rekey says so.
 *
 * Why a copy and a rename rather than an in-place write of 80 bytes: a torn write of the sealed key (a crash, a
 * full disk, a sector half written) would leave an artifact no key opens. The copy is written beside the artifact
 * (".NAME.rekey.tmp"), fsynced, read back and compared, then renamed over it and the folder fsynced: at every
 * instant the artifact opens with the old key or with the new one. It costs one read and one write of the file.
 *
 * Format 5 (signed, FORMAT.md "Signatures (format 5)"): the artifact must be signed by a trusted key
 * (--trusted-signer) and be the job its name says before anything is written. When the workers derive the index
 * key from the public key (no --index-key), the chain index is re-MACed for the new public key (its table tags
 * recomputed from the manifest's hashes), otherwise retention and the next INCREMENTAL would find it altered; the
 * new index bytes are then re-signed with --sign-key, an operator key the readers must trust. The manifest and
 * its signature (the worker's) are untouched: rekey never needs a worker's key.
 *
 * What rekey protects against: a LOST secret key (rotate while the old one still opens the artifacts). Not a
 * COMPROMISED one: whoever holds the old secret key and any copy of an artifact (an offsite copy, a snapshot of
 * the storage) keeps its data key, which rekey does not change. For that, `rekey --new-data-key` re-encrypts every
 * segment message by message under a fresh data key (a message keeps its length, so every offset in the manifest
 * stays valid), rewrites the manifest (its index hash) and signs both parts again with --sign-key; every copy made
 * before must then be destroyed (FORMAT.md, "Re-sealing").
 */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "artifact/arc_format.h"
#include "artifact/arc_index.h"
#include "artifact/arc_key.h"
#include "artifact/arc_reader.h"
#include "artifact/arc_stream.h"
#include "cmd/cmd.h"
#include "common/fb_config.h"
#include "common/fb_json.h"
#include "common/fb_path.h"
#include "storage/stor.h"
#include "storage/stor_s3.h"

/* The new file: the new header, bytes [96, keep) of the old one, then tail (the re-MACed index, the signature
 * block and the trailer; empty when only the sealed key changes). */
typedef struct cmd_rekey_out {
    const unsigned char *header;
    uint64_t keep;
    const unsigned char *tail;
    size_t tail_len;
} cmd_rekey_out;

/* Writes the new file (cmd_rekey_out) to tmp, fsyncs, reads it back and compares with the expected BLAKE2b. */
static fb_code cmd_rekey_write(stor_rfile *f, const cmd_rekey_out *no, const char *tmp, fb_err *err) {
    size_t cap = 1u << 20;
    unsigned char *buf = malloc(cap), want[32], got[32];
    crypto_generichash_state hs;
    fb_code rc = FB_OK;
    int fd = -1;
    if (!buf) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (fd < 0) {
        rc = fb_err_set(err, FB_ERR_IO, "could not create \"%s\": %s%s", tmp, strerror(errno),
                        errno == EEXIST ? " (another rekey running, or a leftover of an interrupted one: remove it)" : "");
        goto out;
    }
    crypto_generichash_init(&hs, NULL, 0, 32);
    for (uint64_t off = 0; off < no->keep && !rc; off += cap) {
        size_t n = no->keep - off < cap ? (size_t)(no->keep - off) : cap;
        if ((rc = stor_rfile_pread(f, buf, n, off, err))) break;
        if (off == 0) memcpy(buf, no->header, ARC_HEADER_BYTES);
        crypto_generichash_update(&hs, buf, n);
        if (write(fd, buf, n) != (ssize_t)n) rc = fb_err_set(err, FB_ERR_IO, "could not write \"%s\": %s", tmp, strerror(errno));
    }
    if (!rc && no->tail_len) {
        crypto_generichash_update(&hs, no->tail, no->tail_len);
        if (write(fd, no->tail, no->tail_len) != (ssize_t)no->tail_len)
            rc = fb_err_set(err, FB_ERR_IO, "could not write \"%s\": %s", tmp, strerror(errno));
    }
    crypto_generichash_final(&hs, want, sizeof want);
    if (!rc && fsync(fd) != 0) rc = fb_err_set(err, FB_ERR_IO, "could not fsync \"%s\": %s", tmp, strerror(errno));
    if (fd >= 0) close(fd);
    if (!rc) {
        stor_rfile *back = NULL;
        rc = stor_posix_open_path(tmp, &back, err);
        if (!rc) rc = stor_rfile_digest(back, got, err);
        stor_rfile_close(back);
        if (!rc && sodium_memcmp(got, want, 32) != 0)
            rc = fb_err_set(err, FB_ERR_IO, "\"%s\" reads back different bytes than were written: check the disk", tmp);
    }
    if (rc) unlink(tmp);
out:
    free(buf);
    return rc;
}

/* The object-store form of the copy and rename above, through the driver: the copy is written as
 * FOLDER/.NAME.rekey.tmp (a multipart upload: it exists only once complete), read back and compared, then renamed
 * over the artifact (a server-side copy, atomic per object: the artifact is the old object or the new one). */
static fb_code cmd_rekey_replace_url(const fb_config *cfg, const char *url, stor_rfile *f, const cmd_rekey_out *no,
                                     fb_err *err) {
    char *loc = strdup(url), *base = loc ? strrchr(loc, '/') : NULL, *dir = NULL, *rel = NULL, *tmp = NULL;
    size_t cap = 1u << 20;
    unsigned char *buf = malloc(cap), want[32], got[32];
    stor *st = NULL;
    stor_wfile *wf = NULL;
    stor_rfile *back = NULL;
    fb_code rc = loc && buf ? FB_OK : fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    if (!rc) {
        *base++ = '\0';
        dir = strrchr(loc, '/');
        if (!dir || dir < loc + STOR_S3_SCHEME_LEN + 1 || !strchr(loc + STOR_S3_SCHEME_LEN, '/'))
            rc = fb_err_set(err, FB_ERR_USAGE, "\"%s\": rekey needs the artifact in a folder of the bucket", url);
        else
            *dir++ = '\0';
    }
    if (!rc) {
        rel = malloc(strlen(dir) + strlen(base) + 18); /* DIR/.NAME.rekey.tmp */
        tmp = malloc(strlen(base) + 16);
        if (!rel || !tmp) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        else {
            sprintf(tmp, ".%s.rekey.tmp", base);
            sprintf(rel, "%s/%s", dir, tmp);
        }
    }
    if (!rc) rc = stor_open_location(loc, cfg, &st, err);
    if (!rc) {
        /* a leftover of an interrupted rekey is ours to replace: it never was the artifact */
        fb_err e2;
        stor_remove(st, rel, &e2);
        rc = stor_create(st, rel, &wf, err);
    }
    for (uint64_t off = 0; !rc && off < no->keep; off += cap) {
        size_t n = no->keep - off < cap ? (size_t)(no->keep - off) : cap;
        if ((rc = stor_rfile_pread(f, buf, n, off, err))) break;
        if (off == 0) memcpy(buf, no->header, ARC_HEADER_BYTES);
        rc = stor_wfile_write(wf, buf, n, err);
    }
    if (!rc && no->tail_len) rc = stor_wfile_write(wf, no->tail, no->tail_len, err);
    if (!rc) {
        stor_wfile_digest(wf, want);
        rc = stor_wfile_commit(wf, err);
        wf = NULL;
    }
    if (!rc) rc = stor_open(st, rel, &back, err);
    if (!rc) rc = stor_rfile_digest(back, got, err);
    if (!rc && sodium_memcmp(got, want, 32) != 0)
        rc = fb_err_set(err, FB_ERR_IO, "the re-sealed copy of \"%s\" reads back different bytes", url);
    stor_rfile_close(back);
    if (!rc) rc = stor_rename(st, dir, tmp, base, err);
    else if (st && !wf) {
        fb_err e2;
        stor_remove(st, rel, &e2);
    }
    stor_wfile_abort(wf);
    stor_free(st);
    free(buf);
    free(rel);
    free(tmp);
    free(loc);
    return rc;
}

/* The whole chain index of a format-5 or 6 file f (its head, then its chunk records: FORMAT.md "Chunk lists"), into
 * *buf (malloc'd, NUL-terminated) of *len bytes, of which the first *head_len are the head. The records are held in
 * memory here (19 to 40 bytes a chunk, under 1 % of the data): rekey is an operator's command, not the backup path. */
static fb_code cmd_rekey_read_index(stor_rfile *f, char **buf, size_t *len, size_t *head_len, fb_err *err) {
    arc_sig_layout l;
    char *head = NULL;
    size_t hl = 0;
    *buf = NULL;
    *len = *head_len = 0;
    fb_code rc = arc_sign_layout(f, &l, err);
    if (rc || !l.ilen) return rc;
    if ((rc = arc_reader_peek_index(f, &head, &hl, err))) return rc;
    free(head);
    if (!(*buf = malloc((size_t)l.ilen + 1))) return fb_err_set(err, FB_ERR_NOMEM, "out of memory reading the index");
    if ((rc = stor_rfile_pread(f, *buf, (size_t)l.ilen, l.ioff, err))) {
        free(*buf);
        *buf = NULL;
        return rc;
    }
    (*buf)[l.ilen] = '\0';
    *len = (size_t)l.ilen;
    *head_len = hl;
    return FB_OK;
}

/* Format 5 with an index key derived from the public key: the index re-MACed for the new public key (tags from
 * the manifest's hashes, under the new key) and re-signed by signer; *tail (malloc'd) is the new index, signature
 * block and trailer, to replace everything from the index on. *tail stays NULL when the index key does not
 * change (--index-key: the same for every public key). */
static fb_code cmd_rekey_index(const fb_config *cfg, stor_rfile *f, const arc_reader *r, const unsigned char *pk,
                               const unsigned char *new_pk, const fb_signer *signer, uint64_t *keep,
                               unsigned char **tail, size_t *tail_len, size_t *head_len, fb_err *err) {
    unsigned char okey[ARC_INDEX_KEY_BYTES], nkey[ARC_INDEX_KEY_BYTES], hdr[ARC_AD_BYTES_V2], sb[ARC_SIG_BLOCK_BYTES];
    char *ibuf = NULL, *nbuf = NULL;
    size_t ilen = 0, nlen = 0, whole = 0;
    arc_index *ix = NULL;
    arc_sig_layout l;
    arc_sig_block b;
    fb_code rc = FB_OK;
    *tail = NULL;
    if (cfg->index_key && *cfg->index_key) return FB_OK;
    if (!signer->loaded)
        return fb_err_set(err, FB_ERR_USAGE, "\"%s\" is signed (format 5) and its chain index must be re-MACed for the "
                          "new public key and signed again: give --sign-key FILE (an operator's signing key that "
                          "the workers and readers trust: --trusted-signer)", f->name);
    if ((rc = arc_index_key(NULL, pk, okey, err)) || (rc = arc_index_key(NULL, new_pk, nkey, err))) goto out;
    if ((rc = arc_sign_layout(f, &l, err)) || (rc = stor_rfile_pread(f, hdr, sizeof hdr, 0, err)) ||
        (rc = stor_rfile_pread(f, sb, sizeof sb, l.soff, err)) || (rc = arc_sign_block_decode(sb, &b, err)))
        goto out;
    if ((rc = cmd_rekey_read_index(f, &ibuf, &whole, &ilen, err)) || (rc = arc_index_parse(ibuf, ilen, okey, &ix, err))) {
        fb_err_prefix(err, "re-MACing the chain index: ");
        goto out;
    }
    const arc_manifest *m = arc_reader_manifest(r);
    for (size_t i = 0; i < ix->n_tables; i++) {
        const arc_table *t = arc_manifest_find(m, ix->tables[i].schema, ix->tables[i].name);
        if (!t) {
            rc = fb_err_set(err, FB_ERR_VERIFY, "\"%s\": its chain index lists table %s.%s, which its manifest does "
                            "not have", f->name, ix->tables[i].schema, ix->tables[i].name);
            goto out;
        }
        arc_index_tag(nkey, t->blake2b, ix->tables[i].tag);
    }
    if ((rc = arc_index_format(ix, nkey, &nbuf, &nlen, err))) goto out;
    /* The signature covers the new head; the chunk records follow it unchanged (their ids stay under the old key:
     * later backups cannot reuse those chunks, FORMAT.md "Re-sealing"), bound by the head's per-table hashes. */
    arc_sign_index(signer, hdr, l.ioff, nbuf, nlen, &b);
    size_t rlen = whole - ilen;
    *tail_len = nlen + rlen + ARC_SIG_BLOCK_BYTES + ARC_TRAILER_BYTES_V2;
    if (!(*tail = malloc(*tail_len))) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }
    memcpy(*tail, nbuf, nlen);
    memcpy(*tail + nlen, ibuf + ilen, rlen);
    if ((rc = arc_sign_block_encode(&b, *tail + nlen + rlen, err))) goto out;
    unsigned char *tr = *tail + nlen + rlen + ARC_SIG_BLOCK_BYTES;
    memcpy(tr, ARC_TRAILER_MAGIC, 8);
    arc_put_u64(tr + 8, l.moff);
    arc_put_u64(tr + 16, l.mlen);
    arc_put_u64(tr + 24, l.ioff);
    arc_put_u64(tr + 32, nlen + rlen);
    *keep = l.ioff;
    *head_len = nlen;
out:
    if (rc) {
        free(*tail);
        *tail = NULL;
    }
    sodium_memzero(okey, sizeof okey);
    sodium_memzero(nkey, sizeof nkey);
    arc_index_free(ix);
    free(ibuf);
    free(nbuf);
    return rc;
}

/* Appends n bytes to the re-encrypted copy. */
static fb_code cmd_rekey_put(int fd, const void *buf, size_t n, fb_err *err) {
    if (write(fd, buf, n) == (ssize_t)n) return FB_OK;
    return fb_err_set(err, FB_ERR_IO, "could not write the re-encrypted copy: %s", strerror(errno));
}

/* --new-data-key: one segment re-encrypted message by message from the old data key to the new one. The old one
 * is read exactly as the reader reads it (arc_stream: same bounds, same authentication); each message keeps its
 * plaintext, tag and length (a secretstream message is its plaintext + 17 bytes), so every offset and length in
 * the manifest stays right. Appends to fd through out (ARC_STREAM_FRAME_BYTES(ARC_MESSAGE_MAX)); bufs are reused
 * across segments. */
static fb_code cmd_rekey_segment(stor_rfile *f, int fd, uint32_t seg, uint64_t off, uint64_t len,
                                 const unsigned char *hdr16, const unsigned char *old_dk, const unsigned char *new_dk,
                                 arc_stream_bufs *bufs, unsigned char *out, fb_err *err) {
    unsigned char h[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
    char what[32];
    arc_stream s;
    arc_stream_out so;
    snprintf(what, sizeof what, "segment %u", seg);
    fb_code rc = arc_stream_open(&s, f, NULL, old_dk, seg, off, len, hdr16, ARC_AD_BYTES_V2, what, bufs, err);
    arc_stream_out_open(&so, new_dk, seg, hdr16, ARC_AD_BYTES_V2, h);
    if (!rc) rc = cmd_rekey_put(fd, h, sizeof h, err);
    while (!rc && !s.final) {
        const unsigned char *p = NULL;
        size_t plen = 0;
        unsigned char tag = 0;
        if (!(rc = arc_stream_next(&s, &p, &plen, &tag, err)))
            rc = cmd_rekey_put(fd, out, arc_stream_out_seal(&so, p, plen, tag, out), err);
    }
    arc_stream_close(&s);
    arc_stream_out_close(&so);
    if (bufs->plain) sodium_memzero(bufs->plain, bufs->cap);
    return rc;
}

static int cmd_rekey_cmp_seg(const void *a, const void *b) {
    const uint64_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Step 1 of --new-data-key: the header, then every data segment (the schema archive and each table stored here)
 * in file order, re-encrypted under new_dk. */
static fb_code cmd_rekey_data(stor_rfile *f, const arc_manifest *m, int fd, const unsigned char *header,
                              const unsigned char *old_dk, const unsigned char *new_dk, fb_err *err) {
    size_t n = 0;
    uint64_t (*segs)[3] = calloc(m->n_tables + 2, sizeof *segs); /* offset, length, segment id */
    unsigned char *out = malloc(ARC_STREAM_FRAME_BYTES(ARC_MESSAGE_MAX));
    arc_stream_bufs bufs = {0};
    fb_code rc = segs && out ? FB_OK : fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    if (!rc && m->schema)
        segs[n][0] = m->schema->offset, segs[n][1] = m->schema->length, segs[n++][2] = m->schema->segment;
    for (size_t i = 0; !rc && i < m->n_tables; i++)
        if (arc_table_kind_of(m, &m->tables[i]) != ARC_TABLE_REFERENCED && m->tables[i].length)
            segs[n][0] = m->tables[i].offset, segs[n][1] = m->tables[i].length, segs[n++][2] = m->tables[i].segment;
    if (!rc) qsort(segs, n, sizeof *segs, cmd_rekey_cmp_seg);
    if (!rc) rc = cmd_rekey_put(fd, header, ARC_HEADER_BYTES, err);
    for (size_t i = 0; !rc && i < n; i++)
        rc = cmd_rekey_segment(f, fd, (uint32_t)segs[i][2], segs[i][0], segs[i][1], header, old_dk, new_dk, &bufs, out,
                               err);
    arc_stream_bufs_free(&bufs);
    free(segs);
    free(out);
    return rc;
}

/* Step 2: the manifest's plaintext, the same msgpack with index_blake2b (a 32-byte bin after its key) set to the
 * BLAKE2b of the new index head. *raw is malloc'd (erase it: it names every table). */
static fb_code cmd_rekey_manifest_plain(const arc_reader *r, const char *index, size_t head_len, char **raw,
                                        size_t *raw_len, fb_err *err) {
    const arc_manifest *m = arc_reader_manifest(r);
    const void *mr = arc_reader_manifest_raw(r, raw_len);
    if (!(*raw = malloc(*raw_len + 1))) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    memcpy(*raw, mr, *raw_len);
    if (!m->has_index_hash) return FB_OK;
    static const char key[] = "\xad" "index_blake2b" "\xc4\x20";
    char *at = memmem(*raw, *raw_len, key, sizeof key - 1);
    if (!at || (size_t)(at - *raw) + sizeof key - 1 + 32 > *raw_len ||
        memcmp(at + sizeof key - 1, m->index_blake2b, 32) != 0)
        return fb_err_set(err, FB_ERR_FORMAT, "could not find the manifest's index hash to update");
    /* the manifest hashes (and the index signature covers) the head; the records are bound by the head */
    crypto_generichash((unsigned char *)at + sizeof key - 1, 32, (const unsigned char *)index, head_len, NULL, 0);
    return FB_OK;
}

/* Step 3: the manifest segment, compressed and encrypted under new_dk (messages of ARC_MESSAGE_BYTES), appended;
 * *mlen is its length and ct_hash the BLAKE2b of its ciphertext (what the manifest signature covers). */
static fb_code cmd_rekey_manifest_seal(int fd, const unsigned char *header, const unsigned char *new_dk,
                                       const char *raw, size_t raw_len, uint64_t *mlen, unsigned char ct_hash[32],
                                       fb_err *err) {
    unsigned char h[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
    arc_stream_out so;
    crypto_generichash_state hs;
    size_t zcap = ZSTD_compressBound(raw_len), zl = 0;
    unsigned char *z = malloc(zcap), *cbuf = malloc(ARC_STREAM_FRAME_BYTES(ARC_MESSAGE_BYTES));
    fb_code rc = z && cbuf ? FB_OK : fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    if (!rc && ZSTD_isError(zl = ZSTD_compress(z, zcap, raw, raw_len, 3)))
        rc = fb_err_set(err, FB_ERR_INTERNAL, "zstd: %s", ZSTD_getErrorName(zl));
    if (rc) goto out;
    crypto_generichash_init(&hs, NULL, 0, 32);
    arc_stream_out_open(&so, new_dk, ARC_MANIFEST_SEGMENT, header, ARC_AD_BYTES_V2, h);
    *mlen = sizeof h;
    rc = cmd_rekey_put(fd, h, sizeof h, err);
    crypto_generichash_update(&hs, h, sizeof h);
    for (size_t at = 0; !rc && (at < zl || at == 0);) {
        size_t piece = zl - at < ARC_MESSAGE_BYTES ? zl - at : ARC_MESSAGE_BYTES;
        unsigned char tag = at + piece == zl ? crypto_secretstream_xchacha20poly1305_TAG_FINAL : 0;
        size_t fl = arc_stream_out_seal(&so, z + at, piece, tag, cbuf);
        rc = cmd_rekey_put(fd, cbuf, fl, err);
        crypto_generichash_update(&hs, cbuf, fl);
        *mlen += fl;
        at += piece;
        if (tag) break;
    }
    arc_stream_out_close(&so);
    crypto_generichash_final(&hs, ct_hash, 32);
out:
    free(z);
    free(cbuf);
    return rc;
}

/* Step 4: the index, both signatures by signer (an operator key: a new ciphertext needs a new manifest signature),
 * the trailer, then fsync. The manifest segment is [moff, moff + mlen). */
static fb_code cmd_rekey_finish(int fd, const unsigned char *header, const arc_manifest *m, uint64_t moff,
                                uint64_t mlen, const unsigned char *ct_hash, const char *index, size_t ilen,
                                size_t head_len, const fb_signer *signer, fb_err *err) {
    arc_sig_block b = {0};
    unsigned char blk[ARC_SIG_BLOCK_BYTES], tr[ARC_TRAILER_BYTES_V2];
    fb_code rc = ilen ? cmd_rekey_put(fd, index, ilen, err) : FB_OK;
    if (rc) return rc;
    arc_sign_manifest(signer, header, m->job_id, moff, mlen, ct_hash, &b);
    arc_sign_index(signer, header, moff + mlen, index, head_len, &b);
    if ((rc = arc_sign_block_encode(&b, blk, err))) return rc;
    memcpy(tr, ARC_TRAILER_MAGIC, 8);
    arc_put_u64(tr + 8, moff);
    arc_put_u64(tr + 16, mlen);
    arc_put_u64(tr + 24, moff + mlen);
    arc_put_u64(tr + 32, ilen);
    if ((rc = cmd_rekey_put(fd, blk, sizeof blk, err)) || (rc = cmd_rekey_put(fd, tr, sizeof tr, err))) return rc;
    if (fsync(fd) != 0) return fb_err_set(err, FB_ERR_IO, "could not write the re-encrypted copy: %s", strerror(errno));
    return FB_OK;
}

/* --new-data-key: writes the whole artifact, re-encrypted under new_dk (sealed in header), into the open file fd:
 * every data segment re-encrypted in place (same offsets), the manifest rewritten (its index_blake2b patched to the
 * new index's hash when the index changed) and re-encrypted, the index, then both signatures and the trailer. r
 * has authenticated everything. */
static fb_code cmd_rekey_reencrypt(stor_rfile *f, const arc_reader *r, int fd, const unsigned char *header,
                                   const unsigned char *old_dk, const unsigned char *new_dk, const char *index,
                                   size_t ilen, size_t head_len, const fb_signer *signer, fb_err *err) {
    const arc_manifest *m = arc_reader_manifest(r);
    char *raw = NULL;
    size_t raw_len = 0;
    uint64_t mlen = 0;
    unsigned char ct_hash[32];
    fb_code rc = cmd_rekey_data(f, m, fd, header, old_dk, new_dk, err);
    if (!rc) rc = cmd_rekey_manifest_plain(r, index, head_len, &raw, &raw_len, err);
    if (!rc) rc = cmd_rekey_manifest_seal(fd, header, new_dk, raw, raw_len, &mlen, ct_hash, err);
    if (!rc) rc = cmd_rekey_finish(fd, header, m, m->data_end, mlen, ct_hash, index, ilen, head_len, signer, err);
    if (raw) sodium_memzero(raw, raw_len);
    free(raw);
    return rc;
}

/* One artifact being rekeyed: what cmd_rekey_one's steps share. */
typedef struct cmd_rekey_job {
    const char *path;
    int version;
    stor_rfile *f;      /* the artifact, or (after --new-data-key's rewrite) its re-encrypted copy */
    stor_rfile *orig;   /* the artifact while f is the copy */
    arc_reader *r;
    unsigned char header[ARC_HEADER_BYTES];
    unsigned char data_key[crypto_kdf_KEYBYTES], new_dk[crypto_kdf_KEYBYTES];
    unsigned char *tail; /* the re-MACed index, signature block and trailer (format 5), or NULL */
    size_t new_head_len;
    char rtmp[4200];     /* --new-data-key's temporary file, "" when none */
    cmd_rekey_out no;
} cmd_rekey_job;

/* Step 1: a full open (a trusted signature, the old key opens it and its manifest authenticates) before anything
 * is written, and the data key unsealed from the header. */
static fb_code cmd_rekey_open(const fb_config *cfg, cmd_rekey_job *j, const unsigned char *sk,
                              const unsigned char *pk, const arc_trust *base_trust, fb_err *err) {
    char named[ARC_SIG_JOB_MAX + 1];
    arc_trust trust = *base_trust;
    if (arc_sign_job_from_name(j->path, named, sizeof named) == 0) trust.job_id = named;
    fb_code rc = stor_open_file(j->path, cfg, &j->f, err);
    if (!rc) rc = arc_reader_peek_version(j->f, &j->version, err);
    if (!rc && j->version < 2)
        rc = fb_err_set(err, FB_ERR_FORMAT, "\"%s\" is format %d, whose sealed key is authenticated into every "
                        "message: it cannot be re-sealed without re-encrypting (restore it and back up again)",
                        j->path, j->version);
    if (!rc) rc = arc_reader_open(j->f, sk, pk, &trust, &j->r, err);
    /* The change segments packed in a backup of captured changes are sealed to the key the capture used and signed
     * by the capture (header bytes included): re-sealing them means re-encrypting and re-signing each one, which
     * rekey does not do yet. Refused rather than leave a backup that looks rekeyed and still needs the old key. */
    if (!rc && arc_reader_manifest(j->r)->changes)
        rc = fb_err_set(err, FB_ERR_USAGE, "\"%s\" is a backup of captured changes: its change segments are sealed to "
                        "the key the capture used and rekey cannot re-seal them; keep the old secret key until a new "
                        "capture base taken under the new key makes this backup unnecessary (nothing was changed)",
                        j->path);
    if (!rc) rc = stor_rfile_pread(j->f, j->header, sizeof j->header, 0, err);
    if (!rc && crypto_box_seal_open(j->data_key, j->header + 16, ARC_SEALED_KEY_BYTES, pk, sk) != 0)
        rc = fb_err_set(err, FB_ERR_CRYPTO, "\"%s\": the secret key does not open it", j->path);
    return rc;
}

/* Step 2: the data key to seal (a fresh one for --new-data-key, after checking the artifact may be rewritten and
 * authenticating every byte of it), sealed to the new public key into the new header. */
static fb_code cmd_rekey_seal(cmd_rekey_job *j, const unsigned char *new_pk, const fb_signer *signer, int new_data_key,
                              fb_err *err) {
    fb_code rc = FB_OK;
    if (new_data_key) crypto_kdf_keygen(j->new_dk);
    else memcpy(j->new_dk, j->data_key, sizeof j->new_dk);
    if (new_data_key && j->version < ARC_SIG_FIRST_VERSION)
        rc = fb_err_set(err, FB_ERR_USAGE, "--new-data-key re-encrypts signed artifacts (format 5); \"%s\" is format %d",
                        j->path, j->version);
    if (!rc && new_data_key && !signer->loaded)
        rc = fb_err_set(err, FB_ERR_USAGE, "--new-data-key rewrites the manifest, which must then be signed again: give "
                        "--sign-key FILE (an operator key the readers trust)");
    if (!rc && new_data_key) rc = arc_reader_verify_all(j->r, err); /* every byte authenticated before rewriting */
    if (!rc && crypto_box_seal(j->header + 16, j->new_dk, sizeof j->new_dk, new_pk) != 0)
        rc = fb_err_set(err, FB_ERR_CRYPTO, "could not seal to the new public key (is it a valid key?)");
    return rc;
}

/* Step 3 (--new-data-key): the whole new artifact in a private temporary file, which then replaces the artifact
 * by the same checked copy as a re-seal (j->f becomes the temporary file, j->no all of it). */
static fb_code cmd_rekey_rewrite(cmd_rekey_job *j, const fb_signer *signer, fb_err *err) {
    char *ib = NULL;
    size_t il = 0, hl = 0;
    fb_code rc = FB_OK;
    const char *td = getenv("TMPDIR");
    snprintf(j->rtmp, sizeof j->rtmp, "%s/fusion-backup-rekey-XXXXXX", td && *td ? td : "/tmp");
    int fd = mkstemp(j->rtmp);
    if (fd < 0) rc = fb_err_set(err, FB_ERR_IO, "could not create a temporary file \"%s\": %s", j->rtmp, strerror(errno));
    if (!rc && j->tail) {
        il = j->no.tail_len - ARC_SIG_BLOCK_BYTES - ARC_TRAILER_BYTES_V2; /* the new head and the records */
        hl = j->new_head_len;
        ib = malloc(il + 1);
        if (ib) memcpy(ib, j->tail, il);
        if (!ib) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    } else if (!rc && j->version >= ARC_SIG_FIRST_VERSION) {
        rc = cmd_rekey_read_index(j->f, &ib, &il, &hl, err);
    } else if (!rc) {
        fb_err e2; /* before format 5 the index is all head (and may be absent) */
        if (arc_reader_peek_index(j->f, &ib, &il, &e2) != FB_OK) ib = NULL, il = 0;
        hl = il;
    }
    if (!rc) rc = cmd_rekey_reencrypt(j->f, j->r, fd, j->header, j->data_key, j->new_dk, ib, il, hl, signer, err);
    free(ib);
    if (fd >= 0) close(fd);
    j->orig = j->f;
    j->f = NULL;
    if (!rc) rc = stor_posix_open_path(j->rtmp, &j->f, err);
    if (!rc) {
        j->no.keep = j->f->size;
        j->no.tail = NULL;
        j->no.tail_len = 0;
    }
    return rc;
}

/* Step 4 (a local file): the checked copy beside the artifact (".NAME.rekey.tmp"), renamed over it, the folder
 * fsynced. */
static fb_code cmd_rekey_replace_file(cmd_rekey_job *j, fb_err *err) {
    const char *path = j->path, *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path) : 0;
    const char *base = slash ? slash + 1 : path;
    char *tmp = malloc(strlen(path) + 16), *dir = slash ? strndup(path, dl ? dl : 1) : strdup(".");
    fb_code rc = tmp && dir ? FB_OK : fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    if (!rc) sprintf(tmp, "%.*s%s.%s.rekey.tmp", (int)dl, path, slash ? "/" : "", base);
    if (!rc) rc = cmd_rekey_write(j->f, &j->no, tmp, err);
    if (!rc && (rc = stor_posix_publish(dir, fb_path_base(tmp), fb_path_base(path), err))) unlink(tmp);
    free(tmp);
    free(dir);
    return rc;
}

static fb_code cmd_rekey_one(const fb_config *cfg, const char *path, const unsigned char *sk, const unsigned char *pk,
                             const unsigned char *new_pk, const arc_trust *base_trust, const fb_signer *signer,
                             int new_data_key, fb_err *err) {
    cmd_rekey_job j = {.path = path};
    j.no.header = j.header;
    fb_code rc = cmd_rekey_open(cfg, &j, sk, pk, base_trust, err);
    if (!rc) rc = cmd_rekey_seal(&j, new_pk, signer, new_data_key, err);
    if (!rc) j.no.keep = j.f->size;
    if (!rc && j.version >= ARC_SIG_FIRST_VERSION)
        rc = cmd_rekey_index(cfg, j.f, j.r, pk, new_pk, signer, &j.no.keep, &j.tail, &j.no.tail_len, &j.new_head_len,
                             err);
    j.no.tail = j.tail;
    if (!rc && new_data_key) rc = cmd_rekey_rewrite(&j, signer, err);
    sodium_memzero(j.data_key, sizeof j.data_key);
    sodium_memzero(j.new_dk, sizeof j.new_dk);
    if (!rc) rc = stor_is_url(path) ? cmd_rekey_replace_url(cfg, path, j.f, &j.no, err) : cmd_rekey_replace_file(&j, err);
    arc_reader_free(j.r);
    stor_rfile_close(j.f);
    stor_rfile_close(j.orig);
    if (j.rtmp[0]) unlink(j.rtmp);
    free(j.tail);
    return rc;
}

static const char cmd_rekey_usage[] =
    "usage: fusion-backup rekey ARTIFACT... --secret-key OLD.key --new-public-key NEW.pub [--json]\n"
    "                         [--sign-key OPERATOR.key] [--trusted-signer FILE ...]\n"
    "  re-seals each artifact's data key to the new public key without re-encrypting its data\n"
    "  (format 2 and later); the file is replaced atomically (copy, fsync, check, rename).\n"
    "  Signed artifacts (format 5) must be signed by a trusted key; their chain index is re-MACed\n"
    "  for the new key and re-signed with --sign-key (a key the readers trust), unless the\n"
    "  workers use --index-key. This protects against a LOST secret key, not a compromised one:\n"
    "  the data key stays the same, so anyone with the old key and an old copy still reads it.\n"
    "  --new-data-key  for a COMPROMISED key: re-encrypts every segment under a fresh data key\n"
    "                (same sizes; the manifest is re-signed with --sign-key); destroy every older\n"
    "                copy of the artifact afterwards, they still open with the old key\n";

int cmd_rekey(int argc, char **argv) {
    fb_config cfg;
    fb_err err;
    const char *new_pub = NULL;
    const char **paths = NULL;
    size_t n = 0, done = 0;
    unsigned char sk[ARC_SK_BYTES], pk[ARC_PK_BYTES], npk[ARC_PK_BYTES];
    fb_keyring kr = {0};
    fb_signer signer = {0};
    arc_trust trust = {0};
    int help = 0;
    fb_code rc = cmd_args(&cfg, &argc, argv, FB_CMD_REKEY, cmd_rekey_usage, &help, &err);
    if (help) goto out;
    int new_data_key = cfg.new_data_key != 0;
    if (*cfg.new_public_key) new_pub = cfg.new_public_key;
    /* the arguments are the artifacts */
    paths = (const char **)(argv + 1);
    n = argc > 1 ? (size_t)argc - 1 : 0;
    if (!rc && (!n || !new_pub))
        rc = fb_err_set(&err, FB_ERR_USAGE, "rekey needs artifacts and --new-public-key FILE (see rekey --help)");
    if (!rc) rc = arc_key_load_secret(cfg.secret_key, sk, pk, &err);
    if (!rc) rc = arc_key_load_public(new_pub, npk, &err);
    if (!rc) rc = fb_keyring_load(&kr, cfg.trusted_signers, "--trusted-signer", &err);
    if (!rc && cfg.sign_key && *cfg.sign_key) rc = fb_signer_load(&signer, cfg.sign_key, "--sign-key", &err);
    trust.signers = &kr;
    trust.allow_unsigned = cfg.allow_unsigned != 0;
    if (!rc && cfg.json) printf("{\"rekeyed\":[");
    int listing = !rc && cfg.json; /* the JSON object is open: close it whatever happens below */
    for (size_t i = 0; !rc && i < n; i++) {
        rc = cmd_rekey_one(&cfg, paths[i], sk, pk, npk, &trust, &signer, new_data_key, &err);
        if (!rc) {
            if (cfg.json) {
                if (done) printf(",");
                fb_json_string(stdout, paths[i]);
            } else {
                printf("rekeyed %s\n", paths[i]);
            }
            done++;
        }
    }
    if (listing) {
        printf("],\"of\":%zu,\"ok\":%s", n, rc ? "false" : "true");
        if (rc) {
            printf(",\"code\":%d,\"error\":", (int)rc);
            fb_json_string(stdout, err.msg);
        }
        printf("}\n");
    } else if (rc && cfg.json) {
        cmd_json_failure(rc, err.msg);
    }
    if (rc) {
        fprintf(stderr, "fusion-backup rekey: %s\n", err.msg);
        if (n) fprintf(stderr, "fusion-backup rekey: %zu of %zu artifacts rekeyed; the others are unchanged\n", done, n);
    }
out:
    sodium_memzero(sk, sizeof sk);
    fb_keyring_free(&kr);
    fb_signer_wipe(&signer);
    fb_config_free(&cfg);
    return rc;
}
