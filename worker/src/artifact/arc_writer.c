/* arc_writer: the artifact writer (see arc_writer.h, FORMAT.md).
 *
 * Two threads, one direction: the caller fills 1 MiB blocks (and hashes them: BLAKE2b runs at ~1 GB/s, cheap
 * next to zstd), hands full blocks through a small queue, and the writer thread turns them into zstd output, cut
 * into 256 KiB secretstream messages, written to storage. Blocks come back on a free list, so the caller waits
 * only when the compressor is behind (back-pressure, bounded memory). The writer thread owns the zstd context,
 * the secretstream state and the storage file between arc_writer_begin and arc_writer_end; the caller owns them
 * otherwise (end waits for the thread to drain). An error in the writer thread is reported at the caller's next
 * call.
 *
 * Lanes (a parallel dump): a lane is a writer of its own (blocks, thread, zstd context) that shares the parent's
 * header, data key and segment counter and writes to a temporary file; its finished segments are copied into the
 * parent's output between the parent's segments. Segments stay contiguous in the artifact, so readers see
 * nothing new.
 */
#include "artifact/arc_writer.h"

#define _GNU_SOURCE /* fallocate, to punch out a lane's copied segments */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "artifact/arc_format.h"
#include "artifact/arc_sign.h"
#include "artifact/arc_stream.h"
#include "common/fb_assert.h"

#define AW_BLOCK (1u << 20)
#define AW_NBLOCKS 4
/* A lane: two 256 KiB blocks and no zstd worker thread (its writer thread compresses in zstd's single-threaded
 * streaming mode, where the block size does not change the output), so that a second connection adds ~4 MB, not
 * ~10 (bench/backup/README.md: peak RSS <= 32 MB deployed). */
#define AW_LANE_NBLOCKS 2
#define AW_LANE_BLOCK (256u << 10)
#define AW_PARENT_MIN_BLOCKS 2

typedef enum { AW_DATA, AW_END, AW_STOP } aw_kind;

typedef struct aw_item {
    aw_kind kind;
    int block;      /* AW_DATA: index of the block */
    size_t len;
    uint32_t segment; /* the segment it belongs to (the thread opens it with its first item) */
} aw_item;

struct arc_writer {
    stor_wfile *out;
    unsigned char header[ARC_HEADER_BYTES];
    unsigned char data_key[crypto_kdf_KEYBYTES];
    int level;
    uint64_t offset;          /* file offset: written by the thread while a segment is open */

    /* caller side */
    uint32_t next_segment;    /* under mu; a lane takes its ids from its parent's */
    uint32_t cur_segment;     /* the open segment */
    int in_segment;
    struct arc_writer *parent; /* a lane (arc_writer_new_lane): whose header, key and segment ids it shares */
    int spool_fd;             /* a lane: its unlinked temporary file (instead of out), else -1 */
    crypto_generichash_state hash;
    int64_t raw;
    int cur;                  /* block being filled, -1 none */
    size_t block;             /* bytes per block */
    size_t cur_len;

    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned char *blocks[AW_NBLOCKS];
    int free_blocks[AW_NBLOCKS];
    int n_free;
    aw_item queue[AW_NBLOCKS + 2];
    int q_head, q_len;
    int ends_done;            /* AW_END items processed */
    fb_code thr_rc;
    fb_err thr_err;
    int thread_started;
    pthread_t thread;

    /* thread side */
    uint32_t t_segment;
    int t_open;
    uint64_t t_seg_start;
    arc_stream_out so;        /* the open segment's stream (arc_stream.h) */
    ZSTD_CCtx *cctx;
    unsigned char *zbuf;      /* compressed bytes awaiting encryption, ARC_MESSAGE_BYTES */
    size_t zlen;
    unsigned char *cbuf;      /* 4-byte length + ciphertext */
    arc_seg_info t_info;

    unsigned char *index;     /* chain index, written after the manifest */
    size_t index_len;
    int records_fd;           /* format 5: the chunk records to copy after the index head (borrowed; read when records_len > 0) */
    uint64_t records_len;

    /* Format 5: who signs (borrowed), and the BLAKE2b of the manifest segment's bytes as they are written (only
     * the writer thread touches it, while the manifest segment is open: arc_sign.h). */
    const fb_signer *signer;
    char *job_id;
    int version;
    int hashing;
    crypto_generichash_state ct_hash;
};

/* --- writer thread ------------------------------------------------------------------------------------------- */

static fb_code aw_spool_write(int fd, const unsigned char *p, size_t len, fb_err *err) {
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            return fb_err_set(err, FB_ERR_IO, "could not write the parallel dump's temporary file (TMPDIR): %s",
                              n < 0 ? strerror(errno) : "no progress");
        p += n;
        len -= (size_t)n;
    }
    return FB_OK;
}

static fb_code aw_out(arc_writer *w, const void *buf, size_t len, fb_err *err) {
    fb_code rc = w->spool_fd >= 0 ? aw_spool_write(w->spool_fd, buf, len, err) : stor_wfile_write(w->out, buf, len, err);
    if (rc == FB_OK) w->offset += len;
    if (rc == FB_OK && w->hashing) crypto_generichash_update(&w->ct_hash, buf, len);
    return rc;
}

static fb_code aw_emit(arc_writer *w, unsigned char tag, fb_err *err) {
    size_t fl = arc_stream_out_seal(&w->so, w->zbuf, w->zlen, tag, w->cbuf);
    w->zlen = 0;
    return aw_out(w, w->cbuf, fl, err);
}

static fb_code aw_open_segment(arc_writer *w, uint32_t segment, fb_err *err) {
    unsigned char hdr[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
    /* Format 2: the fixed part of the header is the additional data; the sealed key is bound by itself (a
     * different sealed key opens to a different data key, or to nothing). */
    arc_stream_out_open(&w->so, w->data_key, segment, w->header, ARC_AD_BYTES_V2, hdr);
    ZSTD_CCtx_reset(w->cctx, ZSTD_reset_session_only);
    w->t_segment = segment;
    w->t_seg_start = w->offset;
    w->t_open = 1;
    w->zlen = 0;
    return aw_out(w, hdr, sizeof hdr, err);
}

static fb_code aw_compress(arc_writer *w, const void *buf, size_t len, ZSTD_EndDirective mode, fb_err *err) {
    ZSTD_inBuffer in = {buf, len, 0};
    for (;;) {
        ZSTD_outBuffer o = {w->zbuf + w->zlen, ARC_MESSAGE_BYTES - w->zlen, 0};
        size_t left = ZSTD_compressStream2(w->cctx, &o, &in, mode);
        if (ZSTD_isError(left))
            return fb_err_set(err, FB_ERR_INTERNAL, "zstd compression failed: %s", ZSTD_getErrorName(left));
        w->zlen += o.pos;
        int done = mode == ZSTD_e_end ? left == 0 : in.pos == in.size;
        if (done && mode == ZSTD_e_end) return aw_emit(w, crypto_secretstream_xchacha20poly1305_TAG_FINAL, err);
        if (w->zlen == ARC_MESSAGE_BYTES) {
            fb_code rc = aw_emit(w, 0, err);
            if (rc) return rc;
        }
        if (done) return FB_OK;
    }
}

static void *aw_thread(void *arg) {
    arc_writer *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (w->q_len == 0) pthread_cond_wait(&w->cv, &w->mu);
        aw_item it = w->queue[w->q_head];
        w->q_head = (w->q_head + 1) % (AW_NBLOCKS + 2);
        w->q_len--;
        uint32_t segment = it.segment;
        int failed = w->thr_rc != FB_OK;
        pthread_mutex_unlock(&w->mu);
        if (it.kind == AW_STOP) break;

        fb_err e;
        fb_code rc = FB_OK;
        if (!failed) {
            if (!w->t_open) rc = aw_open_segment(w, segment, &e);
            if (rc == FB_OK && it.kind == AW_DATA) rc = aw_compress(w, w->blocks[it.block], it.len, ZSTD_e_continue, &e);
            if (rc == FB_OK && it.kind == AW_END) {
                rc = aw_compress(w, NULL, 0, ZSTD_e_end, &e);
                w->t_info.segment = w->t_segment;
                w->t_info.offset = w->t_seg_start;
                w->t_info.length = w->offset - w->t_seg_start;
            }
        }
        if (it.kind == AW_END) w->t_open = 0;
        pthread_mutex_lock(&w->mu);
        if (rc != FB_OK && w->thr_rc == FB_OK) {
            w->thr_rc = rc;
            w->thr_err = e;
        }
        if (it.kind == AW_DATA) w->free_blocks[w->n_free++] = it.block;
        if (it.kind == AW_END) w->ends_done++;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
    }
    return NULL;
}

/* --- caller side --------------------------------------------------------------------------------------------- */

static fb_code aw_thread_error(arc_writer *w, fb_err *err) {
    /* call with mu held */
    if (w->thr_rc == FB_OK) return FB_OK;
    if (err) *err = w->thr_err;
    return w->thr_rc;
}

static fb_code aw_push(arc_writer *w, aw_item it, fb_err *err) {
    pthread_mutex_lock(&w->mu);
    while (w->q_len == AW_NBLOCKS + 2) pthread_cond_wait(&w->cv, &w->mu);
    w->queue[(w->q_head + w->q_len) % (AW_NBLOCKS + 2)] = it;
    w->q_len++;
    pthread_cond_broadcast(&w->cv);
    fb_code rc = aw_thread_error(w, err);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

static fb_code aw_take_block(arc_writer *w, fb_err *err) {
    pthread_mutex_lock(&w->mu);
    while (w->n_free == 0) pthread_cond_wait(&w->cv, &w->mu);
    w->cur = w->free_blocks[--w->n_free];
    w->cur_len = 0;
    fb_code rc = aw_thread_error(w, err);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

static fb_code aw_flush_block(arc_writer *w, fb_err *err) {
    if (w->cur < 0 || w->cur_len == 0) return FB_OK;
    aw_item it = {AW_DATA, w->cur, w->cur_len, w->cur_segment};
    w->cur = -1;
    w->cur_len = 0;
    return aw_push(w, it, err);
}

/* The blocks, buffers and zstd context of a writer (or a lane). */
static fb_code aw_alloc(arc_writer *w, int zstd_level, int nblocks, size_t block, fb_err *err) {
    w->level = zstd_level;
    w->block = block;
    w->cur = -1;
    w->next_segment = 1;
    w->spool_fd = -1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->cctx = ZSTD_createCCtx();
    w->zbuf = malloc(ARC_MESSAGE_BYTES);
    w->cbuf = malloc(ARC_STREAM_FRAME_BYTES(ARC_MESSAGE_BYTES));
    for (int i = 0; i < nblocks; i++) {
        w->blocks[i] = malloc(w->block);
        if (!w->blocks[i]) break;
        w->free_blocks[w->n_free++] = i;
    }
    if (!w->cctx || !w->zbuf || !w->cbuf || w->n_free != nblocks)
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory creating the artifact writer");
    size_t zr = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, zstd_level);
    if (ZSTD_isError(zr))
        return fb_err_set(err, FB_ERR_USAGE, "zstd level %d refused: %s", zstd_level, ZSTD_getErrorName(zr));
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 0); /* secretstream already authenticates */
    /* COPY text (many short fields, separators every few bytes) compresses better with matches of at least 6
     * bytes: measured on the benchmark's tables, level 3 with minMatch 6 is 3.8% smaller at the same speed.
     * Levels 3 and 4 default to 5; the others already use 6 or are slow enough not to matter. */
    if (zstd_level == 3 || zstd_level == 4) ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_minMatch, 6);
    /* Level 3 (the default) keeps its strategy (double fast) with small tables, a 1 MiB window and matches of at
     * least 7 bytes: on COPY text in 1 MiB jobs, 16K hash and 4K chain entries (80 KB, in L2) find as many matches
     * as level 3's 128K + 64K (768 KB, cache misses) and the window of one job loses nothing; measured on 300 MB
     * of the benchmark's rows: 1.3% smaller and ~35% less zstd CPU than level 3 with minMatch 6
     * (bench/backup/README.md, 2026-12-02, session 7). Readers need nothing new: the frame header carries the
     * window. */
    if (zstd_level == 3) {
        ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_minMatch, 7);
        ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_windowLog, 20);
        ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_hashLog, 14);
        ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_chainLog, 12);
    }
    return FB_OK;
}

static fb_code aw_start(arc_writer *w, fb_err *err) {
    if (pthread_create(&w->thread, NULL, aw_thread, w) != 0)
        return fb_err_set(err, FB_ERR_INTERNAL, "could not start the compression thread");
    w->thread_started = 1;
    return FB_OK;
}

fb_code arc_writer_new(stor_wfile *out, const unsigned char *pk, int zstd_level, arc_writer **wp, fb_err *err) {
    return arc_writer_new_version(out, pk, zstd_level, ARC_FORMAT_VERSION, wp, err);
}

fb_code arc_writer_new_version(stor_wfile *out, const unsigned char *pk, int zstd_level, int version,
                               arc_writer **wp, fb_err *err) {
    fb_code rc = FB_OK;
    if (version < 2 || version > ARC_FORMAT_VERSION)
        return fb_err_set(err, FB_ERR_INTERNAL, "arc_writer: cannot write format version %d", version);
    arc_writer *w = calloc(1, sizeof *w);
    *wp = NULL;
    if (!w || sodium_init() < 0) {
        free(w);
        return fb_err_set(err, FB_ERR_NOMEM, "could not initialise the artifact writer (out of memory or libsodium)");
    }
    w->out = out;
    w->version = version;
    if ((rc = aw_alloc(w, zstd_level, AW_NBLOCKS, AW_BLOCK, err))) goto out;

    /* Header: magic, version, header length, flags, sealed data key. */
    crypto_kdf_keygen(w->data_key);
    memcpy(w->header, ARC_MAGIC, ARC_MAGIC_LEN);
    arc_put_u16(w->header + 8, (uint16_t)version);
    arc_put_u16(w->header + 10, ARC_HEADER_BYTES);
    arc_put_u32(w->header + 12, 0);
    if (crypto_box_seal(w->header + 16, w->data_key, sizeof w->data_key, pk) != 0) {
        rc = fb_err_set(err, FB_ERR_CRYPTO, "could not seal the data key to the public key (is it a valid key?)");
        goto out;
    }
    rc = aw_out(w, w->header, sizeof w->header, err);
    if (!rc) rc = aw_start(w, err);
    if (rc) goto out;
    *wp = w;
    w = NULL;
out:
    arc_writer_free(w);
    return rc;
}

fb_code arc_writer_new_lane(arc_writer *parent, arc_writer **wp, fb_err *err) {
    *wp = NULL;
    arc_writer *w = calloc(1, sizeof *w);
    if (!w) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    fb_code rc = aw_alloc(w, parent->level, AW_LANE_NBLOCKS, AW_LANE_BLOCK, err);
    w->parent = parent;
    w->version = parent->version;
    memcpy(w->header, parent->header, sizeof w->header);
    memcpy(w->data_key, parent->data_key, sizeof w->data_key);
    if (!rc) {
        const char *dir = getenv("TMPDIR");
        char path[1024];
        snprintf(path, sizeof path, "%s/fusion-backup-lane-XXXXXX", dir && *dir ? dir : "/tmp");
        w->spool_fd = mkstemp(path);
        if (w->spool_fd < 0)
            rc = fb_err_set(err, FB_ERR_IO, "could not create a temporary file in \"%s\" for the parallel dump: %s "
                            "(set TMPDIR to a writable folder, or dump-connections to 1)", dir && *dir ? dir : "/tmp",
                            strerror(errno));
        else
            unlink(path); /* nobody else ever sees it; it goes away with the descriptor */
    }
    if (!rc) rc = aw_start(w, err);
    if (rc) {
        arc_writer_free(w);
        return rc;
    }
    /* The lane's blocks take the place of one of the parent's (idle, between segments): the parent keeps at
     * least AW_PARENT_MIN_BLOCKS, enough to keep its compressor fed, and memory stays that of one dump. */
    pthread_mutex_lock(&parent->mu);
    if (!parent->in_segment && parent->n_free > AW_PARENT_MIN_BLOCKS) {
        int b = parent->free_blocks[--parent->n_free];
        free(parent->blocks[b]);
        parent->blocks[b] = NULL;
    }
    pthread_mutex_unlock(&parent->mu);
    *wp = w;
    return FB_OK;
}

/* Copies len bytes of temporary file fd from off into the output, 1 MiB at a time. whose: for the message. */
static fb_code aw_copy_in(arc_writer *w, int fd, uint64_t off, uint64_t len, const char *whose, fb_err *err) {
    size_t cap = 1u << 20;
    unsigned char *buf = malloc(cap);
    fb_code rc = buf ? FB_OK : fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    for (uint64_t done = 0; done < len && !rc;) {
        size_t n = len - done < cap ? (size_t)(len - done) : cap;
        ssize_t got = pread(fd, buf, n, (off_t)(off + done));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            rc = fb_err_set(err, FB_ERR_IO, "could not read back %s temporary file: %s", whose,
                            got < 0 ? strerror(errno) : "it is shorter than written");
            break;
        }
        rc = aw_out(w, buf, (size_t)got, err);
        done += (uint64_t)got;
    }
    free(buf);
    return rc;
}

fb_code arc_writer_import(arc_writer *w, const arc_writer *lane, const arc_seg_info *in, uint64_t *at, fb_err *err) {
    if (w->in_segment || lane->parent != w)
        return fb_err_set(err, FB_ERR_INTERNAL, "arc_writer_import: not between segments, or not this writer's lane");
    *at = w->offset;
    fb_code rc = aw_copy_in(w, lane->spool_fd, in->offset, in->length, "the parallel dump's", err);
    /* Copied: give the space back (the file only grows, so a hole keeps the lane's offsets valid). */
#ifdef FALLOC_FL_PUNCH_HOLE
    if (!rc) (void)fallocate(lane->spool_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)in->offset,
                             (off_t)in->length);
#endif
    return rc;
}

fb_code arc_writer_begin(arc_writer *w, uint32_t *segment, fb_err *err) {
    if (w->in_segment) return fb_err_set(err, FB_ERR_INTERNAL, "arc_writer_begin: a segment is already open");
    arc_writer *ids = w->parent ? w->parent : w;
    pthread_mutex_lock(&ids->mu);
    *segment = ids->next_segment++;
    pthread_mutex_unlock(&ids->mu);
    w->cur_segment = *segment;
    w->in_segment = 1;
    w->raw = 0;
    crypto_generichash_init(&w->hash, NULL, 0, ARC_HASH_BYTES);
    return FB_OK;
}

fb_code arc_writer_write(arc_writer *w, const void *buf, size_t len, fb_err *err) {
    FB_ASSERT(w->in_segment); /* only between arc_writer_begin and arc_writer_end (arc_writer.h) */
    const unsigned char *p = buf;
    crypto_generichash_update(&w->hash, p, len);
    w->raw += (int64_t)len;
    while (len > 0) {
        if (w->cur < 0) {
            fb_code rc = aw_take_block(w, err);
            if (rc) return rc;
        }
        size_t n = w->block - w->cur_len;
        if (n > len) n = len;
        memcpy(w->blocks[w->cur] + w->cur_len, p, n);
        w->cur_len += n;
        p += n;
        len -= n;
        if (w->cur_len == w->block) {
            fb_code rc = aw_flush_block(w, err);
            if (rc) return rc;
        }
    }
    return FB_OK;
}

fb_code arc_writer_end(arc_writer *w, arc_seg_info *info, fb_err *err) {
    fb_code rc = aw_flush_block(w, err);
    if (w->cur >= 0) { /* an empty block taken but unused: give it back */
        pthread_mutex_lock(&w->mu);
        w->free_blocks[w->n_free++] = w->cur;
        pthread_mutex_unlock(&w->mu);
        w->cur = -1;
    }
    pthread_mutex_lock(&w->mu);
    int target = w->ends_done + 1;
    pthread_mutex_unlock(&w->mu);
    aw_item it = {AW_END, -1, 0, w->cur_segment};
    fb_code rc2 = aw_push(w, it, err);
    if (rc == FB_OK) rc = rc2;
    pthread_mutex_lock(&w->mu);
    while (w->ends_done < target) pthread_cond_wait(&w->cv, &w->mu);
    if (rc == FB_OK) rc = aw_thread_error(w, err);
    pthread_mutex_unlock(&w->mu);
    w->in_segment = 0;
    if (rc) return rc;
    *info = w->t_info;
    info->raw_bytes = w->raw;
    crypto_generichash_final(&w->hash, info->blake2b, ARC_HASH_BYTES);
    return FB_OK;
}

uint64_t arc_writer_offset(const arc_writer *w) { return w->offset; }

fb_code arc_writer_set_signer(arc_writer *w, const fb_signer *s, const char *job_id, fb_err *err) {
    if (!s || !s->loaded) return fb_err_set(err, FB_ERR_USAGE, "arc_writer: no signing key loaded");
    char *j = strdup(job_id);
    if (!j) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    free(w->job_id);
    w->job_id = j;
    w->signer = s;
    return FB_OK;
}

fb_code arc_writer_finish(arc_writer *w, const void *manifest, size_t len, fb_err *err) {
    arc_seg_info info;
    uint32_t seg;
    int sign = w->version >= ARC_SIG_FIRST_VERSION;
    if (sign && !w->signer)
        return fb_err_set(err, FB_ERR_INTERNAL, "arc_writer: format %d artifacts are signed; no signer was set",
                          w->version);
    /* The manifest is segment 0, written last: reuse the table path with the id forced to 0. */
    fb_code rc = arc_writer_begin(w, &seg, err);
    if (rc) return rc;
    w->cur_segment = ARC_MANIFEST_SEGMENT;
    pthread_mutex_lock(&w->mu);
    /* Set under mu before the segment's first item is queued: the thread sees it with that item. */
    w->hashing = sign;
    if (sign) crypto_generichash_init(&w->ct_hash, NULL, 0, 32);
    pthread_mutex_unlock(&w->mu);
    rc = arc_writer_write(w, manifest, len, err);
    if (rc == FB_OK) rc = arc_writer_end(w, &info, err);
    w->hashing = 0; /* arc_writer_end waited for the thread: it is idle */
    if (rc) return rc;
    uint64_t ioff = w->offset;
    if (w->index_len && (rc = aw_out(w, w->index, w->index_len, err))) return rc;
    if (w->records_len) {
        /* Streamed from the spool in 1 MiB pieces: the records are never all in memory. */
        if ((rc = aw_copy_in(w, w->records_fd, 0, w->records_len, "the chunk list's", err))) return rc;
    }
    if (sign) {
        unsigned char ct[32], blk[ARC_SIG_BLOCK_BYTES];
        arc_sig_block b = {0};
        crypto_generichash_final(&w->ct_hash, ct, sizeof ct);
        arc_sign_manifest(w->signer, w->header, w->job_id, info.offset, info.length, ct, &b);
        /* The index signature covers the head (w->index) only: the head holds each table's record range and its
         * BLAKE2b, so it binds the records without anyone holding them all (FORMAT.md, "Signatures"). */
        arc_sign_index(w->signer, w->header, ioff, w->index, w->index_len, &b);
        if ((rc = arc_sign_block_encode(&b, blk, err)) || (rc = aw_out(w, blk, sizeof blk, err))) return rc;
    }
    unsigned char tr[ARC_TRAILER_BYTES_V2];
    memcpy(tr, ARC_TRAILER_MAGIC, 8);
    arc_put_u64(tr + 8, info.offset);
    arc_put_u64(tr + 16, info.length);
    arc_put_u64(tr + 24, ioff);
    arc_put_u64(tr + 32, w->index_len + w->records_len);
    return aw_out(w, tr, sizeof tr, err);
}

fb_code arc_writer_set_index(arc_writer *w, const void *index, size_t len, fb_err *err) {
    if (len > ARC_INDEX_HEAD_MAX)
        return fb_err_set(err, FB_ERR_INVALID, "chain index larger than %u bytes (too many tables)", ARC_INDEX_HEAD_MAX);
    unsigned char *p = malloc(len ? len : 1);
    if (!p) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    memcpy(p, index, len);
    free(w->index);
    w->index = p;
    w->index_len = len;
    return FB_OK;
}

fb_code arc_writer_set_zstd_workers(arc_writer *w, int n, fb_err *err) {
    if (n <= 0) return FB_OK;
    size_t zr = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_nbWorkers, n);
    if (ZSTD_isError(zr))
        return fb_err_set(err, FB_ERR_USAGE, "zstd-workers %d refused (a libzstd built without threads?): %s", n,
                          ZSTD_getErrorName(zr));
    /* zstd's default job for level 3 is 8 MiB, and it buffers a few of them: 1 MiB jobs keep the worker's memory
     * flat (measured: bench/backup/README.md) at a cost in ratio the job overlap mostly hides. */
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_jobSize, 1 << 20);
    return FB_OK;
}

void arc_writer_set_index_records(arc_writer *w, int fd, uint64_t len) {
    w->records_fd = fd;
    w->records_len = len;
}

void arc_writer_free(arc_writer *w) {
    if (!w) return;
    if (w->thread_started) {
        aw_item it = {AW_STOP, -1, 0, 0};
        aw_push(w, it, NULL);
        pthread_join(w->thread, NULL);
    }
    for (int i = 0; i < AW_NBLOCKS; i++) free(w->blocks[i]);
    ZSTD_freeCCtx(w->cctx);
    free(w->zbuf);
    free(w->cbuf);
    free(w->index);
    free(w->job_id);
    if (w->spool_fd >= 0) close(w->spool_fd);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    sodium_memzero(w->data_key, sizeof w->data_key);
    arc_stream_out_close(&w->so);
    free(w);
}
