/* arc_stream: the read side of one segment's secretstream (FORMAT.md "Segments"), message by message.
 *
 * A segment is a 24-byte secretstream header, then messages, each a u32 length and that many bytes of ciphertext,
 * the last one tagged FINAL exactly at the segment's end. This module owns those rules, so the two programs that
 * walk a segment apply them alike: the reader (arc_reader.c: each message's plaintext then goes to zstd, the hash
 * and the sink) and `rekey --new-data-key` (cmd_rekey.c: each message is pushed again under a new key, keeping
 * its length, tag and therefore every offset). Lengths read from the file only bound what is read next; nothing
 * leaves arc_stream_next before its Poly1305 tag has checked. The write side (arc_stream_out) frames messages the
 * same way for the writer (arc_writer.c) and rekey.
 */
#ifndef ARC_STREAM_H
#define ARC_STREAM_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>

#include "common/fb_err.h"
#include "storage/stor.h"

/* Message buffers that outlive one segment (a reader or a rekey reuses them): grown as messages need, up to
 * ARC_MESSAGE_MAX. Zero-initialise; arc_stream_bufs_free frees them (and accepts an empty one). */
typedef struct arc_stream_bufs {
    unsigned char *cipher; /* one message's ciphertext */
    unsigned char *plain;  /* its plaintext */
    size_t cap;
} arc_stream_bufs;

void arc_stream_bufs_free(arc_stream_bufs *b);

/* Bytes [off, off + len) of the file already in memory (the reader's copy of the manifest segment whose signature
 * it checked: what is decrypted is what was checked, even if the file changes meanwhile). */
typedef struct arc_stream_cache {
    const unsigned char *p;
    uint64_t off, len;
} arc_stream_cache;

/* One segment being read. Fields are private to arc_stream.c except `pos` (the offset of the next message). */
typedef struct arc_stream {
    stor_rfile *f;                      /* borrowed */
    const arc_stream_cache *cache;      /* borrowed, may be NULL */
    const unsigned char *ad;            /* additional data of every message (borrowed) */
    size_t ad_len;
    const char *what;                   /* for messages: "table \"s\".\"t\"", "segment 3", ... (borrowed) */
    arc_stream_bufs *bufs;              /* borrowed */
    uint64_t pos, end;
    int final;                          /* the FINAL message was read */
    crypto_secretstream_xchacha20poly1305_state st;
} arc_stream;

/* Opens segment `segment` at [off, off + len) of f: checks that it lies in the file, derives its key from
 * data_key and pulls its header. cache (may be NULL), ad/ad_len, what and bufs are borrowed for the stream's life;
 * cache is read instead of f where it covers. FB_ERR_FORMAT outside the file, FB_ERR_CRYPTO on a bad header. Close
 * the stream whatever this returns. */
fb_code arc_stream_open(arc_stream *s, stor_rfile *f, const arc_stream_cache *cache, const unsigned char *data_key,
                        uint32_t segment, uint64_t off, uint64_t len, const unsigned char *ad, size_t ad_len,
                        const char *what, arc_stream_bufs *bufs, fb_err *err);

/* The next message, authenticated: *plain (in s->bufs, valid until the next call) of *plen bytes and its *tag.
 * After the FINAL message s->final is set; a FINAL before the segment's end, or the end without one, is
 * FB_ERR_CRYPTO (truncated or altered). Call only while !s->final. */
fb_code arc_stream_next(arc_stream *s, const unsigned char **plain, size_t *plen, unsigned char *tag, fb_err *err);

/* Erases the stream's state (its key schedule). Accepts a stream that failed to open. */
void arc_stream_close(arc_stream *s);

/* ---- the write side: the same framing, for the writer and rekey ---- */

/* One segment being sealed. */
typedef struct arc_stream_out {
    crypto_secretstream_xchacha20poly1305_state st;
    const unsigned char *ad; /* borrowed */
    size_t ad_len;
} arc_stream_out;

/* Bytes of one message as it lies in the file: its u32 length, then n bytes of plaintext sealed (+ 17). */
#define ARC_STREAM_FRAME_BYTES(n) (4 + (size_t)(n) + crypto_secretstream_xchacha20poly1305_ABYTES)

/* Derives segment's key from data_key and starts its stream; hdr receives the stream header, the segment's first
 * bytes. ad/ad_len: the additional data of every message (borrowed while the stream is open). */
void arc_stream_out_open(arc_stream_out *o, const unsigned char *data_key, uint32_t segment, const unsigned char *ad,
                         size_t ad_len, unsigned char hdr[crypto_secretstream_xchacha20poly1305_HEADERBYTES]);
/* Seals n bytes of plain (at most ARC_MESSAGE_MAX - 17) with tag (0, or FINAL on the last) into out, framed as in
 * the file; out has room for ARC_STREAM_FRAME_BYTES(n). Returns the frame's length. */
size_t arc_stream_out_seal(arc_stream_out *o, const unsigned char *plain, size_t n, unsigned char tag,
                           unsigned char *out);
/* Erases the stream's state. */
void arc_stream_out_close(arc_stream_out *o);

#endif
