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

/* The whole chain index of a format-5 file f (its head, then its chunk records: FORMAT.md "Chunk lists"), into
 * *buf (malloc'd, NUL-terminated) of *len bytes, of which the first *head_len are the head. The records are held in
 * memory here (40 bytes a chunk, about 1 % of the data): rekey is an operator's command, not the backup path. */
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

/* --new-data-key: one segment re-encrypted message by message from the old data key to the new one. Each
 * message keeps its plaintext, tag and length (a secretstream message is its plaintext + 17 bytes), so every offset
 * and length in the manifest stays right. Appends to fd; hs (may be NULL) hashes what is written. */
static fb_code cmd_rekey_segment(stor_rfile *f, int fd, uint32_t seg, uint64_t off, uint64_t len,
                                 const unsigned char *hdr16, const unsigned char *old_dk, const unsigned char *new_dk,
                                 unsigned char *cbuf, unsigned char *pbuf, crypto_generichash_state *hs, fb_err *err) {
    unsigned char ko[32], kn[32], h[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
    crypto_secretstream_xchacha20poly1305_state so, sn;
    uint64_t pos = off, end = off + len;
    int final = 0;
    fb_code rc = FB_OK;
    crypto_kdf_derive_from_key(ko, sizeof ko, seg, ARC_KDF_CONTEXT, old_dk);
    crypto_kdf_derive_from_key(kn, sizeof kn, seg, ARC_KDF_CONTEXT, new_dk);
    if ((rc = stor_rfile_pread(f, h, sizeof h, pos, err))) goto out;
    pos += sizeof h;
    if (crypto_secretstream_xchacha20poly1305_init_pull(&so, h, ko) != 0) {
        rc = fb_err_set(err, FB_ERR_CRYPTO, "segment %u: bad stream header", seg);
        goto out;
    }
    crypto_secretstream_xchacha20poly1305_init_push(&sn, h, kn);
    if (write(fd, h, sizeof h) != (ssize_t)sizeof h) goto werr;
    if (hs) crypto_generichash_update(hs, h, sizeof h);
    while (!final) {
        unsigned char lb[4], tag = 0;
        unsigned long long plen = 0, clen2 = 0;
        if (pos + 4 > end || (rc = stor_rfile_pread(f, lb, 4, pos, err))) {
            if (!rc) rc = fb_err_set(err, FB_ERR_CRYPTO, "segment %u ends before its final tag", seg);
            goto out;
        }
        uint32_t clen = arc_get_u32(lb);
        pos += 4;
        if (clen < crypto_secretstream_xchacha20poly1305_ABYTES || clen > ARC_MESSAGE_MAX || pos + clen > end) {
            rc = fb_err_set(err, FB_ERR_CRYPTO, "segment %u: bad message length", seg);
            goto out;
        }
        if ((rc = stor_rfile_pread(f, cbuf, clen, pos, err))) goto out;
        pos += clen;
        if (crypto_secretstream_xchacha20poly1305_pull(&so, pbuf, &plen, &tag, cbuf, clen, hdr16, ARC_AD_BYTES_V2) != 0) {
            rc = fb_err_set(err, FB_ERR_CRYPTO, "segment %u: authentication failed: the artifact was altered", seg);
            goto out;
        }
        final = tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL;
        crypto_secretstream_xchacha20poly1305_push(&sn, cbuf + 4, &clen2, pbuf, plen, hdr16, ARC_AD_BYTES_V2, tag);
        arc_put_u32(cbuf, (uint32_t)clen2);
        if (write(fd, cbuf, 4 + (size_t)clen2) != (ssize_t)(4 + clen2)) goto werr;
        if (hs) crypto_generichash_update(hs, cbuf, 4 + (size_t)clen2);
    }
    if (pos != end) rc = fb_err_set(err, FB_ERR_CRYPTO, "segment %u: final tag before its end", seg);
    goto out;
werr:
    rc = fb_err_set(err, FB_ERR_IO, "could not write the re-encrypted copy: %s", strerror(errno));
out:
    sodium_memzero(ko, sizeof ko);
    sodium_memzero(kn, sizeof kn);
    sodium_memzero(&so, sizeof so);
    sodium_memzero(&sn, sizeof sn);
    sodium_memzero(pbuf, ARC_MESSAGE_MAX);
    return rc;
}

static int cmd_rekey_cmp_seg(const void *a, const void *b) {
    const uint64_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* --new-data-key: writes the whole artifact, re-encrypted under new_dk (sealed in header), into the open file fd:
 * every data segment re-encrypted in place (same offsets), the manifest rewritten (its index_blake2b patched to the
 * new index's hash when the index changed) and re-encrypted, the index, then both signatures by signer (an
 * operator key: a new ciphertext needs a new manifest signature) and the trailer. r has authenticated everything. */
static fb_code cmd_rekey_reencrypt(stor_rfile *f, const arc_reader *r, int fd, const unsigned char *header,
                                   const unsigned char *old_dk, const unsigned char *new_dk, const char *index,
                                   size_t ilen, size_t head_len, const fb_signer *signer, fb_err *err) {
    const arc_manifest *m = arc_reader_manifest(r);
    size_t n = 0, raw_len = 0;
    uint64_t (*segs)[3] = calloc(m->n_tables + 2, sizeof *segs); /* offset, length, segment id */
    unsigned char *cbuf = malloc(4 + ARC_MESSAGE_MAX + 64), *pbuf = malloc(ARC_MESSAGE_MAX + 64), *z = NULL;
    char *raw = NULL;
    fb_code rc = FB_OK;
    if (!segs || !cbuf || !pbuf) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (m->schema) segs[n][0] = m->schema->offset, segs[n][1] = m->schema->length, segs[n++][2] = m->schema->segment;
    for (size_t i = 0; i < m->n_tables; i++)
        if (arc_table_kind_of(m, &m->tables[i]) != ARC_TABLE_REFERENCED && m->tables[i].length)
            segs[n][0] = m->tables[i].offset, segs[n][1] = m->tables[i].length, segs[n++][2] = m->tables[i].segment;
    qsort(segs, n, sizeof *segs, cmd_rekey_cmp_seg);
    if (write(fd, header, ARC_HEADER_BYTES) != ARC_HEADER_BYTES) goto werr;
    for (size_t i = 0; i < n; i++)
        if ((rc = cmd_rekey_segment(f, fd, (uint32_t)segs[i][2], segs[i][0], segs[i][1], header, old_dk, new_dk, cbuf,
                                    pbuf, NULL, err)))
            goto out;
    /* The manifest: the same msgpack, with index_blake2b (a 32-byte bin after its key) set to the new index. */
    const void *mr = arc_reader_manifest_raw(r, &raw_len);
    if (!(raw = malloc(raw_len + 1))) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }
    memcpy(raw, mr, raw_len);
    if (m->has_index_hash) {
        static const char key[] = "\xad" "index_blake2b" "\xc4\x20";
        char *at = memmem(raw, raw_len, key, sizeof key - 1);
        if (!at || (size_t)(at - raw) + sizeof key - 1 + 32 > raw_len ||
            memcmp(at + sizeof key - 1, m->index_blake2b, 32) != 0) {
            rc = fb_err_set(err, FB_ERR_FORMAT, "could not find the manifest's index hash to update");
            goto out;
        }
        /* the manifest hashes (and the index signature covers) the head; the records are bound by the head */
        crypto_generichash((unsigned char *)at + sizeof key - 1, 32, (const unsigned char *)index, head_len, NULL, 0);
    }
    size_t zcap = ZSTD_compressBound(raw_len);
    if (!(z = malloc(zcap))) {
        rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t zl = ZSTD_compress(z, zcap, raw, raw_len, 3);
    if (ZSTD_isError(zl)) {
        rc = fb_err_set(err, FB_ERR_INTERNAL, "zstd: %s", ZSTD_getErrorName(zl));
        goto out;
    }
    unsigned char key0[32], h[crypto_secretstream_xchacha20poly1305_HEADERBYTES], ct_hash[32];
    crypto_secretstream_xchacha20poly1305_state st;
    crypto_generichash_state hs;
    crypto_generichash_init(&hs, NULL, 0, sizeof ct_hash);
    crypto_kdf_derive_from_key(key0, sizeof key0, ARC_MANIFEST_SEGMENT, ARC_KDF_CONTEXT, new_dk);
    crypto_secretstream_xchacha20poly1305_init_push(&st, h, key0);
    sodium_memzero(key0, sizeof key0);
    uint64_t moff = m->data_end, mlen = sizeof h;
    if (write(fd, h, sizeof h) != (ssize_t)sizeof h) goto werr;
    crypto_generichash_update(&hs, h, sizeof h);
    for (size_t at = 0; at < zl || at == 0;) {
        size_t piece = zl - at < ARC_CHUNK_BYTES ? zl - at : ARC_CHUNK_BYTES;
        unsigned long long cl = 0;
        unsigned char tag = at + piece == zl ? crypto_secretstream_xchacha20poly1305_TAG_FINAL : 0;
        crypto_secretstream_xchacha20poly1305_push(&st, cbuf + 4, &cl, z + at, piece, header, ARC_AD_BYTES_V2, tag);
        arc_put_u32(cbuf, (uint32_t)cl);
        if (write(fd, cbuf, 4 + (size_t)cl) != (ssize_t)(4 + cl)) goto werr;
        crypto_generichash_update(&hs, cbuf, 4 + (size_t)cl);
        mlen += 4 + cl;
        at += piece;
        if (tag) break;
    }
    sodium_memzero(&st, sizeof st);
    crypto_generichash_final(&hs, ct_hash, sizeof ct_hash);
    if (ilen && write(fd, index, ilen) != (ssize_t)ilen) goto werr;
    arc_sig_block b = {0};
    unsigned char blk[ARC_SIG_BLOCK_BYTES], tr[ARC_TRAILER_BYTES_V2];
    arc_sign_manifest(signer, header, m->job_id, moff, mlen, ct_hash, &b);
    arc_sign_index(signer, header, moff + mlen, index, head_len, &b);
    if ((rc = arc_sign_block_encode(&b, blk, err))) goto out;
    memcpy(tr, ARC_TRAILER_MAGIC, 8);
    arc_put_u64(tr + 8, moff);
    arc_put_u64(tr + 16, mlen);
    arc_put_u64(tr + 24, moff + mlen);
    arc_put_u64(tr + 32, ilen);
    if (write(fd, blk, sizeof blk) != (ssize_t)sizeof blk || write(fd, tr, sizeof tr) != (ssize_t)sizeof tr) goto werr;
    if (fsync(fd) != 0) goto werr;
    goto out;
werr:
    rc = fb_err_set(err, FB_ERR_IO, "could not write the re-encrypted copy: %s", strerror(errno));
out:
    if (raw) sodium_memzero(raw, raw_len);
    free(raw);
    free(z);
    free(segs);
    free(cbuf);
    free(pbuf);
    return rc;
}

static fb_code cmd_rekey_one(const fb_config *cfg, const char *path, const unsigned char *sk, const unsigned char *pk,
                             const unsigned char *new_pk, const arc_trust *base_trust, const fb_signer *signer,
                             int new_data_key, fb_err *err) {
    stor_rfile *f = NULL, *orig = NULL;
    char rtmp[4200] = "";
    arc_reader *r = NULL;
    unsigned char header[ARC_HEADER_BYTES], data_key[crypto_kdf_KEYBYTES], *tail = NULL;
    char *tmp = NULL, *dir = NULL, named[ARC_SIG_JOB_MAX + 1];
    int version = 0;
    arc_trust trust = *base_trust;
    if (arc_sign_job_from_name(path, named, sizeof named) == 0) trust.job_id = named;
    fb_code rc = stor_open_file(path, cfg, &f, err);
    cmd_rekey_out no = {header, 0, NULL, 0};
    if (!rc) rc = arc_reader_peek_version(f, &version, err);
    if (!rc && version < 2)
        rc = fb_err_set(err, FB_ERR_FORMAT, "\"%s\" is format %d, whose sealed key is authenticated into every "
                        "message: it cannot be re-sealed without re-encrypting (restore it and back up again)",
                        path, version);
    /* A full open: a trusted signature, the old key opens it and its manifest authenticates, before anything is
     * written. */
    if (!rc) rc = arc_reader_open(f, sk, pk, &trust, &r, err);
    if (!rc) rc = stor_rfile_pread(f, header, sizeof header, 0, err);
    if (!rc && crypto_box_seal_open(data_key, header + 16, ARC_SEALED_KEY_BYTES, pk, sk) != 0)
        rc = fb_err_set(err, FB_ERR_CRYPTO, "\"%s\": the secret key does not open it", path);
    unsigned char new_dk[crypto_kdf_KEYBYTES];
    if (new_data_key) crypto_kdf_keygen(new_dk);
    else memcpy(new_dk, data_key, sizeof new_dk);
    if (!rc && new_data_key && version < ARC_SIG_FIRST_VERSION)
        rc = fb_err_set(err, FB_ERR_USAGE, "--new-data-key re-encrypts signed artifacts (format 5); \"%s\" is format %d",
                        path, version);
    if (!rc && new_data_key && !signer->loaded)
        rc = fb_err_set(err, FB_ERR_USAGE, "--new-data-key rewrites the manifest, which must then be signed again: give "
                        "--sign-key FILE (an operator key the readers trust)");
    if (!rc && new_data_key) rc = arc_reader_verify_all(r, err); /* every byte authenticated before rewriting */
    if (!rc && crypto_box_seal(header + 16, new_dk, sizeof new_dk, new_pk) != 0)
        rc = fb_err_set(err, FB_ERR_CRYPTO, "could not seal to the new public key (is it a valid key?)");
    if (!rc) no.keep = f->size;
    size_t new_head_len = 0;
    if (!rc && version >= ARC_SIG_FIRST_VERSION)
        rc = cmd_rekey_index(cfg, f, r, pk, new_pk, signer, &no.keep, &tail, &no.tail_len, &new_head_len, err);
    no.tail = tail;
    if (!rc && new_data_key) {
        /* The whole new artifact in a private temporary file, then the same checked replacement as a re-seal. */
        char *ib = NULL;
        size_t il = 0, hl = 0;
        const char *td = getenv("TMPDIR");
        snprintf(rtmp, sizeof rtmp, "%s/fusion-backup-rekey-XXXXXX", td && *td ? td : "/tmp");
        int fd = mkstemp(rtmp);
        if (fd < 0) rc = fb_err_set(err, FB_ERR_IO, "could not create a temporary file \"%s\": %s", rtmp, strerror(errno));
        if (!rc && tail) {
            il = no.tail_len - ARC_SIG_BLOCK_BYTES - ARC_TRAILER_BYTES_V2; /* the new head and the records */
            hl = new_head_len;
            ib = malloc(il + 1);
            if (ib) memcpy(ib, tail, il);
            if (!ib) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        } else if (!rc && version >= ARC_SIG_FIRST_VERSION) {
            rc = cmd_rekey_read_index(f, &ib, &il, &hl, err);
        } else if (!rc) {
            fb_err e2; /* before format 5 the index is all head (and may be absent) */
            if (arc_reader_peek_index(f, &ib, &il, &e2) != FB_OK) ib = NULL, il = 0;
            hl = il;
        }
        if (!rc) rc = cmd_rekey_reencrypt(f, r, fd, header, data_key, new_dk, ib, il, hl, signer, err);
        free(ib);
        if (fd >= 0) close(fd);
        orig = f;
        f = NULL;
        if (!rc) rc = stor_posix_open_path(rtmp, &f, err);
        if (!rc) {
            no.keep = f->size;
            no.tail = NULL;
            no.tail_len = 0;
        }
    }
    sodium_memzero(data_key, sizeof data_key);
    sodium_memzero(new_dk, sizeof new_dk);
    if (!rc && stor_is_url(path)) {
        rc = cmd_rekey_replace_url(cfg, path, f, &no, err);
        goto done;
    }
    if (!rc) {
        const char *slash = strrchr(path, '/');
        size_t dl = slash ? (size_t)(slash - path) : 0;
        const char *base = slash ? slash + 1 : path;
        tmp = malloc(strlen(path) + 16);
        dir = slash ? strndup(path, dl ? dl : 1) : strdup(".");
        if (!tmp || !dir) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        else sprintf(tmp, "%.*s%s.%s.rekey.tmp", (int)dl, path, slash ? "/" : "", base);
    }
    if (!rc) rc = cmd_rekey_write(f, &no, tmp, err);
    if (!rc && (rc = stor_posix_publish(dir, fb_path_base(tmp), fb_path_base(path), err))) unlink(tmp);
done:
    arc_reader_free(r);
    stor_rfile_close(f);
    stor_rfile_close(orig);
    if (rtmp[0]) unlink(rtmp);
    free(tail);
    free(tmp);
    free(dir);
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
