/* arc_format: the constants of the artifact format, written down in FORMAT.md (read that first).
 *
 * File = header | table segments | manifest segment | trailer. A segment is one libsodium secretstream
 * (xchacha20poly1305) over one zstd frame; its key is derived from the backup's data key and the segment id, and
 * every message carries the file header as additional data.
 */
#ifndef ARC_FORMAT_H
#define ARC_FORMAT_H

#include <sodium.h>
#include <stdint.h>

/* "\x89FBAK\r\n\x1a": non-ASCII first byte and CR LF / ^Z catch text-mode transfers (as PNG's magic does). */
#define ARC_MAGIC "\x89" "FBAK\r\n\x1a"
#define ARC_MAGIC_LEN 8
/* Format versions (readers accept every version up to ARC_FORMAT_VERSION):
 *   1 (2026-11): first version; the whole 96-byte header is the additional data of every message.
 *   2 (2026-12): only the first ARC_AD_BYTES_V2 bytes of the header (magic, version, length, flags) are additional
 *                data, so the sealed data key can be re-sealed to another public key (`fusion-backup rekey`) without
 *                re-encrypting; manifests may reference tables stored in another artifact (INCREMENTAL,
 *                DIFFERENTIAL: `stored_in`, `base_job`).
 *   3 (2026-12): tables assembled from content-defined chunks held by this and earlier artifacts (`assembled`,
 *                `chunks`); chain index version 2 lists every table's chunks. Writers use 3 only for a backup
 *                on a base (which can assemble tables); a FULL stays 2 (its extra keys are ignored by readers of 2).
 *   4 (2026-12): a schema archive segment (`pg_dump -Fc` of everything but the tables' rows, manifest
 *                `schema_archive`), so a restore --create brings back every object of the database. Every backup
 *                with a schema archive is written as 4 (readers of 3 would find a segment that is no table).
 *   5 (2026-12): two changes shipped together. Chunk lists as binary records after the chain index's head (index
 *                version 3, arc_clist.h) instead of text lines in the index and arrays in the manifest, so neither
 *                grows in memory with the data and no cap limits the database's size. And signed artifacts
 *                (arc_sign.h): a signature block between the chain index and the trailer holds the worker's
 *                Ed25519 signatures of the manifest segment and of the index head (whose per-table record hashes
 *                bind the records). Readers refuse format <= 4 unless told to allow unsigned artifacts. Every
 *                backup is written as 5.
 *   6 (2026-12): compact chunk records (chain index version 4, arc_clist.h): a record says only what its table's
 *                previous record does not (flags, id, varints), 19 bytes in a FULL instead of 40, which the
 *                40-byte records had made 5 % of a FULL's bytes. Every backup is written as 6. */
#define ARC_FORMAT_VERSION 6
#define ARC_AD_BYTES_V2 16
#define ARC_SEALED_KEY_BYTES (crypto_box_SEALBYTES + crypto_secretstream_xchacha20poly1305_KEYBYTES)
#define ARC_HEADER_BYTES (ARC_MAGIC_LEN + 2 + 2 + 4 + ARC_SEALED_KEY_BYTES) /* 96 */

#define ARC_TRAILER_MAGIC "FBAKEND\0"
#define ARC_TRAILER_BYTES 24 /* v1: magic, u64 manifest offset, u64 manifest length (little endian) */
/* v2: magic, u64 manifest offset, u64 manifest length, u64 chain index offset, u64 chain index length. The chain
 * index (arc_index.h) is plaintext between the manifest segment and the trailer. */
#define ARC_TRAILER_BYTES_V2 40
/* The largest chain index text readers accept: all of a version-1/2 index (which lists every chunk, so a database
 * above ~4.6 GiB could not be backed up in format 3/4), or the head of a version-3 index (format 5: a few lines per
 * table, whatever the data's size; its chunk records follow it unbounded, arc_clist.h). */
#define ARC_INDEX_HEAD_MAX (64u << 20)

#define ARC_KDF_CONTEXT "FBAKSEG1"      /* crypto_kdf context (8 bytes) for segment keys */
#define ARC_MANIFEST_SEGMENT 0u         /* tables are segments 1..n */

/* Plaintext (compressed) bytes per secretstream message when writing: a message, not a content-defined chunk
 * (arc_chunk.h); readers take any length up to ARC_MESSAGE_MAX, so changing it changes no format. */
#define ARC_MESSAGE_BYTES (256u * 1024u)
#define ARC_MESSAGE_MAX (4u << 20)      /* readers refuse longer messages */
#define ARC_MANIFEST_MAX (256u << 20)   /* readers refuse larger manifests */

static inline void arc_put_u16(unsigned char *p, uint16_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }
static inline void arc_put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline void arc_put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline uint16_t arc_get_u16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t arc_get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static inline uint64_t arc_get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* What a table of an artifact is (FORMAT.md, "Chunks"), as the manifest and the chain index record it:
 *   WHOLE       its data is one segment of this artifact (chunks, if listed, only describe that segment);
 *   REFERENCED  unchanged since the base: another artifact of the chain (`stored_in`) holds its data;
 *   ASSEMBLED   its data is its chunks concatenated, each read from the artifact that holds it.
 * The kind is no field on disk (the formats predate it): it follows from `stored_in` and `assembled`, which only
 * arc_table_kind (manifest) and arc_index_table_kind (chain index) read, so no caller infers it on its own. */
typedef enum arc_table_kind { ARC_TABLE_WHOLE, ARC_TABLE_REFERENCED, ARC_TABLE_ASSEMBLED } arc_table_kind;

#endif
