/* test_artifact_sign: signed artifacts (format 5, FORMAT.md "Signatures (format 5)", arc_sign.h), no database.
 *
 * The attacker holds what a worker host or anyone with storage access holds: the backup public key and write
 * access to the folder, but no trusted signing key. Every artifact such a person can make is built here and must
 * be refused, saying why, before its manifest is decrypted:
 *   - a complete artifact of their own, signed with their own key (refused naming that key id), or unsigned in
 *     format 4 (refused unless --allow-unsigned, which then warns on stderr), or with the header's version
 *     lowered to 4 (refused; with --allow-unsigned its messages no longer authenticate);
 *   - their artifact with a genuine signature block transplanted into it; a flipped byte of either signature or
 *     of the index; a genuine index re-signed by them;
 *   - a genuine artifact of job A copied over job B's file name; a sealed key replaced by their own;
 *   - a forged artifact as the link of a genuine INCREMENTAL's chain (refused when the table is read);
 *   - in a folder listing (arc_chain: bases and retention), their artifacts are UNTRUSTED or UNSIGNED, never
 *     usable as a base.
 * And the genuine cases work: the worker's artifact opens and verifies, a chain of signed artifacts reads, and an
 * index re-signed by another trusted key (what rekey does) is accepted.
 */
#define _GNU_SOURCE /* memmem */
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>
#include <unistd.h>

#include "artifact/arc_format.h"
#include "artifact/arc_index.h"
#include "artifact/arc_key.h"
#include "artifact/arc_reader.h"
#include "artifact/arc_sign.h"
#include "artifact/arc_writer.h"
#include "artifact/arc_chain.h"
#include "tap.h"

static char root[300];
static unsigned char pk[ARC_PK_BYTES], sk[ARC_SK_BYTES];
static fb_signer worker, ops, attacker;
static fb_keyring trust_worker, trust_worker_ops;
static tap_buf content;

#define JOB_A "aaaaaaaa-1111-4222-8333-444455556666"
#define JOB_B "bbbbbbbb-1111-4222-8333-444455556666"

/* The chain index version write_art writes instead of the one its format names (0: that one). */
static int index_version_override;

/* Writes root/DIR/JOB.fbak with one table "t" (content), or, with ref_job, a table only referenced there (as an
 * INCREMENTAL does), and a real chain index. signer NULL: no signature (then version must be <= 4). */
static void write_art(const char *dir, const char *job, int version, const fb_signer *signer, const char *ref_job) {
    fb_err err;
    stor *st = NULL;
    stor_wfile *wf = NULL;
    arc_writer *w = NULL;
    arc_manifest m = {0};
    arc_index ix = {0};
    arc_index_table it = {0};
    arc_seg_info si;
    uint32_t id;
    char rel[400], *ibuf = NULL, *mb = NULL;
    size_t ilen = 0, ml = 0;
    unsigned char ikey[ARC_INDEX_KEY_BYTES];
    snprintf(rel, sizeof rel, "%s/%s.fbak", dir, job);
    CHECK_EQ_INT(arc_index_key(NULL, pk, ikey, &err), FB_OK);
    CHECK_EQ_INT(stor_posix_new(root, &st, &err), FB_OK);
    CHECK_EQ_INT(stor_create(st, rel, &wf, &err), FB_OK);
    CHECK_EQ_INT(arc_writer_new_version(wf, pk, 3, version, &w, &err), FB_OK);
    if (signer) CHECK_EQ_INT(arc_writer_set_signer(w, signer, job, &err), FB_OK);
    m.format = version;
    m.job_id = strdup(job);
    m.config_id = 3;
    m.backup_type = strdup(ref_job ? "INCREMENTAL" : "FULL");
    m.base_job = ref_job ? strdup(ref_job) : NULL;
    m.tables = calloc(1, sizeof *m.tables);
    m.n_tables = 1;
    arc_table *t = &m.tables[0];
    t->schema = strdup("public");
    t->name = strdup("t");
    crypto_generichash(t->blake2b, ARC_HASH_BYTES, content.p, content.len, NULL, 0);
    t->raw_bytes = (int64_t)content.len;
    t->rows = 3;
    if (ref_job) {
        t->stored_in = strdup(ref_job);
    } else {
        CHECK_EQ_INT(arc_writer_begin(w, &id, &err), FB_OK);
        CHECK_EQ_INT(arc_writer_write(w, content.p, content.len, &err), FB_OK);
        CHECK_EQ_INT(arc_writer_end(w, &si, &err), FB_OK);
        t->segment = si.segment;
        t->offset = si.offset;
        t->length = si.length;
        t->stored_bytes = (int64_t)si.length;
    }
    m.data_end = arc_writer_offset(w);
    ix.job_id = (char *)job;
    ix.version = arc_index_version_of(version); /* format >= 5: the index head of "Chunk lists" (no records here) */
    if (index_version_override) ix.version = index_version_override;
    ix.config_id = 3;
    ix.type = m.backup_type;
    ix.base_job = m.base_job;
    ix.snapshot_ms = ix.completed_ms = 1764000000000;
    it.schema = t->schema;
    it.name = t->name;
    it.stored_in = (char *)(ref_job ? ref_job : job);
    it.rows = t->rows;
    it.raw_bytes = t->raw_bytes;
    arc_index_tag(ikey, t->blake2b, it.tag);
    ix.tables = &it;
    ix.n_tables = 1;
    CHECK_EQ_INT(arc_index_format(&ix, ikey, &ibuf, &ilen, &err), FB_OK);
    crypto_generichash(m.index_blake2b, sizeof m.index_blake2b, (unsigned char *)ibuf, ilen, NULL, 0);
    m.has_index_hash = 1;
    CHECK_EQ_INT(arc_writer_set_index(w, ibuf, ilen, &err), FB_OK);
    CHECK_EQ_INT(arc_manifest_pack(&m, &mb, &ml, &err), FB_OK);
    CHECK_EQ_INT(arc_writer_finish(w, mb, ml, &err), FB_OK);
    arc_writer_free(w);
    CHECK_EQ_INT(stor_wfile_commit(wf, &err), FB_OK);
    stor_free(st);
    free(mb);
    free(ibuf);
    arc_manifest_clear(&m);
}

static void path_of(const char *dir, const char *job, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s/%s.fbak", root, dir, job);
}

typedef struct resolver {
    char dir[400];
} resolver;

static fb_code resolve(void *opaque, const char *job_id, stor_rfile **out, fb_err *err) {
    const resolver *rs = opaque;
    char p[600];
    snprintf(p, sizeof p, "%s/%s.fbak", rs->dir, job_id);
    return stor_posix_open_path(p, out, err);
}

/* Opens path under trust, reads every table (following the chain in its folder); returns the first error. */
static fb_code open_all(const char *path, const fb_keyring *kr, int allow_unsigned, const char *job, fb_err *err) {
    stor_rfile *f = NULL;
    arc_reader *r = NULL;
    arc_trust trust = {kr, allow_unsigned, job};
    resolver rs;
    snprintf(rs.dir, sizeof rs.dir, "%s", path);
    *strrchr(rs.dir, '/') = '\0';
    fb_code rc = stor_posix_open_path(path, &f, err);
    if (rc == FB_OK) rc = arc_reader_open(f, sk, pk, &trust, &r, err);
    if (rc == FB_OK) {
        arc_reader_set_resolver(r, resolve, &rs, NULL);
        const arc_manifest *m = arc_reader_manifest(r);
        for (size_t i = 0; rc == FB_OK && i < m->n_tables; i++)
            rc = arc_reader_read_table(r, &m->tables[i], NULL, NULL, err);
    }
    arc_reader_free(r);
    stor_rfile_close(f);
    return rc;
}

/* Runs open_all with stderr captured into out (what an operator would see). */
static fb_code open_all_stderr(const char *path, const fb_keyring *kr, int allow_unsigned, const char *job,
                               char *out, size_t cap, fb_err *err) {
    char tmp[400];
    snprintf(tmp, sizeof tmp, "%s/stderr.txt", root);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600), saved = dup(2);
    dup2(fd, 2);
    fb_code rc = open_all(path, kr, allow_unsigned, job, err);
    dup2(saved, 2);
    close(saved);
    close(fd);
    size_t n = 0;
    unsigned char *p = tap_slurp(tmp, &n);
    snprintf(out, cap, "%.*s", (int)n, (char *)p);
    free(p);
    return rc;
}

/* The signature block's offset in a format-5 file of len bytes. */
static size_t sig_off(size_t len) { return len - ARC_TRAILER_BYTES_V2 - ARC_SIG_BLOCK_BYTES; }

static void test_genuine(void) {
    fb_err err;
    char p[600];
    write_art("good", JOB_B, ARC_FORMAT_VERSION, &worker, NULL);
    write_art("good", JOB_A, ARC_FORMAT_VERSION, &worker, JOB_B); /* an INCREMENTAL on B */
    path_of("good", JOB_B, p, sizeof p);
    fb_code rc = open_all(p, &trust_worker, 0, JOB_B, &err);
    CHECKF(rc == FB_OK, "genuine FULL: %s", err.msg);
    path_of("good", JOB_A, p, sizeof p);
    rc = open_all(p, &trust_worker, 0, JOB_A, &err);
    CHECKF(rc == FB_OK, "genuine INCREMENTAL through its chain: %s", err.msg);
    /* who signed it is known after opening */
    stor_rfile *f = NULL;
    arc_reader *r = NULL;
    arc_trust t = {&trust_worker, 0, JOB_A};
    CHECK_EQ_INT(stor_posix_open_path(p, &f, &err), FB_OK);
    CHECK_EQ_INT(arc_reader_open(f, sk, pk, &t, &r, &err), FB_OK);
    if (r) {
        CHECK_EQ_INT(arc_reader_signature(r)->state, ARC_SIG_TRUSTED);
        CHECK_EQ_STR(arc_reader_signature(r)->manifest_key, worker.key_id);
    }
    arc_reader_free(r);
    stor_rfile_close(f);
    /* no trusted signers configured: nothing is accepted, and the message says what to configure */
    fb_keyring none = {0};
    rc = open_all(p, &none, 0, JOB_A, &err);
    CHECKF(rc == FB_ERR_UNTRUSTED && strstr(err.msg, "--trusted-signer"), "no keyring: %d %s", rc, err.msg);
}

static void test_forged_own_key(void) {
    fb_err err;
    char p[600];
    write_art("forged", JOB_B, ARC_FORMAT_VERSION, &attacker, NULL);
    path_of("forged", JOB_B, p, sizeof p);
    fb_code rc = open_all(p, &trust_worker, 0, JOB_B, &err);
    CHECKF(rc == FB_ERR_UNTRUSTED && strstr(err.msg, attacker.key_id) && strstr(err.msg, "not trusted") &&
           strstr(err.msg, worker.key_id), "signed by an unknown key: %d %s", rc, err.msg);
    /* allow_unsigned does not help a signed forgery */
    rc = open_all(p, &trust_worker, 1, JOB_B, &err);
    CHECKF(rc == FB_ERR_UNTRUSTED, "unknown key with allow_unsigned: %d %s", rc, err.msg);
}

static void test_unsigned(void) {
    fb_err err;
    char p[600], se[4096];
    write_art("old", JOB_B, 4, NULL, NULL);
    path_of("old", JOB_B, p, sizeof p);
    fb_code rc = open_all_stderr(p, &trust_worker, 0, JOB_B, se, sizeof se, &err);
    CHECKF(rc == FB_ERR_UNTRUSTED && strstr(err.msg, "format 4") && strstr(err.msg, "--allow-unsigned"),
           "format 4 without --allow-unsigned: %d %s", rc, err.msg);
    rc = open_all_stderr(p, &trust_worker, 1, JOB_B, se, sizeof se, &err);
    CHECKF(rc == FB_OK, "format 4 with --allow-unsigned: %s", err.msg);
    CHECKF(strstr(se, "UNSIGNED") && strstr(se, "--allow-unsigned"), "warning on stderr: \"%s\"", se);
    /* a genuine artifact whose header says 4: unsigned, so refused; allowed, its messages fail (the version is
     * additional data of every message) */
    size_t len = 0;
    char g[600];
    path_of("good", JOB_B, g, sizeof g);
    unsigned char *b = tap_slurp(g, &len);
    b[8] = 4;
    mkdir(strcat(strcpy(p, root), "/downgrade"), 0700);
    path_of("downgrade", JOB_B, p, sizeof p);
    tap_spit(p, b, len);
    free(b);
    rc = open_all(p, &trust_worker, 0, JOB_B, &err);
    CHECKF(rc == FB_ERR_UNTRUSTED, "downgraded to 4: %d %s", rc, err.msg);
    rc = open_all_stderr(p, &trust_worker, 1, JOB_B, se, sizeof se, &err);
    CHECKF(rc == FB_ERR_CRYPTO || rc == FB_ERR_FORMAT, "downgraded to 4, allowed: %d %s", rc, err.msg);
}

/* Copies good/JOB_B with a change into DIR/JOB_B and returns its refusal. */
static fb_code tamper(const char *dir, size_t at_from_sig, int from_start, size_t at, fb_err *err) {
    size_t len = 0;
    char g[600], p[600];
    path_of("good", JOB_B, g, sizeof g);
    unsigned char *b = tap_slurp(g, &len);
    if (from_start) b[at] ^= 0x01;
    else b[sig_off(len) + at_from_sig] ^= 0x01;
    snprintf(p, sizeof p, "%s/%s", root, dir);
    mkdir(p, 0700);
    path_of(dir, JOB_B, p, sizeof p);
    tap_spit(p, b, len);
    free(b);
    return open_all(p, &trust_worker, 0, JOB_B, err);
}

static void test_tampered(void) {
    fb_err err;
    /* the manifest signature (block offset 8 + 16), the index signature (8 + 16 + 64 + 16), the magic */
    fb_code rc = tamper("t1", 8 + 16 + 5, 0, 0, &err);
    CHECKF(rc == FB_ERR_UNTRUSTED && strstr(err.msg, "bad signature") && strstr(err.msg, worker.key_id),
           "flipped manifest signature: %d %s", rc, err.msg);
    rc = tamper("t2", 8 + 16 + 64 + 16 + 5, 0, 0, &err);
    CHECKF(rc == FB_ERR_UNTRUSTED && strstr(err.msg, "chain index") && strstr(err.msg, "bad signature"),
           "flipped index signature: %d %s", rc, err.msg);
    rc = tamper("t3", 0, 0, 0, &err);
    CHECKF(rc == FB_ERR_UNTRUSTED && strstr(err.msg, "signature block"), "no signature magic: %d %s", rc, err.msg);
    /* a byte of the chain index (just before the block) */
    size_t len = 0;
    char g[600];
    path_of("good", JOB_B, g, sizeof g);
    free(tap_slurp(g, &len));
    rc = tamper("t4", 0, 1, sig_off(len) - 3, &err);
    CHECKF(rc == FB_ERR_UNTRUSTED && strstr(err.msg, "chain index"), "flipped index byte: %d %s", rc, err.msg);
    /* a byte of the signed job id in the block: the signatures no longer verify */
    rc = tamper("t5", 8 + 16 + 64 + 16 + 64 + 2 + 1, 0, 0, &err);
    CHECKF(rc == FB_ERR_UNTRUSTED, "flipped signed job id: %d %s", rc, err.msg);
}

static void test_transplant(void) {
    fb_err err;
    size_t glen = 0, flen = 0;
    char g[600], p[600];
    /* the attacker's own artifact (sealed to the real public key), unsigned... */
    write_art("transplant", JOB_B, ARC_FORMAT_VERSION, &attacker, NULL);
    path_of("good", JOB_B, g, sizeof g);
    path_of("transplant", JOB_B, p, sizeof p);
    unsigned char *good = tap_slurp(g, &glen), *forged = tap_slurp(p, &flen);
    /* ...with the genuine artifact's signature block */
    memcpy(forged + sig_off(flen), good + sig_off(glen), ARC_SIG_BLOCK_BYTES);
    tap_spit(p, forged, flen);
    fb_code rc = open_all(p, &trust_worker, 0, JOB_B, &err);
    CHECKF(rc == FB_ERR_UNTRUSTED && strstr(err.msg, "bad signature") && strstr(err.msg, "manifest"),
           "transplanted signature block: %d %s", rc, err.msg);
    /* the genuine file with the sealed key replaced by the attacker's own data key: the signature holds (the
     * sealed key is outside it), but nothing decrypts */
    unsigned char dk[crypto_kdf_KEYBYTES];
    crypto_kdf_keygen(dk);
    CHECK(crypto_box_seal(good + 16, dk, sizeof dk, pk) == 0);
    mkdir(strcat(strcpy(p, root), "/resealed"), 0700);
    path_of("resealed", JOB_B, p, sizeof p);
    tap_spit(p, good, glen);
    rc = open_all(p, &trust_worker, 0, JOB_B, &err);
    CHECKF(rc == FB_ERR_CRYPTO, "replaced sealed key: %d %s", rc, err.msg);
    free(good);
    free(forged);
}

static void test_renamed(void) {
    fb_err err;
    size_t len = 0;
    char g[600], p[600];
    /* job A's genuine artifact copied over job B's name */
    path_of("good", JOB_A, g, sizeof g);
    unsigned char *b = tap_slurp(g, &len);
    mkdir(strcat(strcpy(p, root), "/renamed"), 0700);
    path_of("renamed", JOB_B, p, sizeof p);
    tap_spit(p, b, len);
    free(b);
    fb_code rc = open_all(p, &trust_worker, 0, JOB_B, &err);
    CHECKF(rc == FB_ERR_VERIFY && strstr(err.msg, JOB_A) && strstr(err.msg, JOB_B) && strstr(err.msg, "copied"),
           "A over B: %d %s", rc, err.msg);
    CHECK_EQ_INT(arc_sign_job_from_name(p, g, sizeof g), 0);
    CHECK_EQ_STR(g, JOB_B);
    CHECK_EQ_INT(arc_sign_job_from_name("/x/.tmp.fbak", g, sizeof g), -1);
    CHECK_EQ_INT(arc_sign_job_from_name("/x/backup.bin", g, sizeof g), -1);
}

static void test_chain_link(void) {
    fb_err err;
    char p[600];
    /* a genuine INCREMENTAL on B, next to a forged B (attacker-signed, then unsigned) */
    write_art("chain1", JOB_A, ARC_FORMAT_VERSION, &worker, JOB_B);
    write_art("chain1", JOB_B, ARC_FORMAT_VERSION, &attacker, NULL);
    path_of("chain1", JOB_A, p, sizeof p);
    fb_code rc = open_all(p, &trust_worker, 0, JOB_A, &err);
    CHECKF(rc == FB_ERR_UNTRUSTED && strstr(err.msg, JOB_B) && strstr(err.msg, attacker.key_id),
           "forged chain link: %d %s", rc, err.msg);
    write_art("chain2", JOB_A, ARC_FORMAT_VERSION, &worker, JOB_B);
    write_art("chain2", JOB_B, 4, NULL, NULL);
    path_of("chain2", JOB_A, p, sizeof p);
    rc = open_all(p, &trust_worker, 0, JOB_A, &err);
    CHECKF(rc == FB_ERR_UNTRUSTED && strstr(err.msg, "format 4"), "unsigned chain link: %d %s", rc, err.msg);
    /* a genuine B of another name: the link must be the job the reference names */
    write_art("chain3", JOB_A, ARC_FORMAT_VERSION, &worker, JOB_B);
    {
        size_t len = 0;
        char g[600];
        path_of("good", JOB_A, g, sizeof g); /* A: genuine, but not B */
        unsigned char *b = tap_slurp(g, &len);
        path_of("chain3", JOB_B, g, sizeof g);
        tap_spit(g, b, len);
        free(b);
    }
    path_of("chain3", JOB_A, p, sizeof p);
    rc = open_all(p, &trust_worker, 0, JOB_A, &err);
    CHECKF(rc == FB_ERR_VERIFY && strstr(err.msg, JOB_B), "another job as the chain link: %d %s", rc, err.msg);
}

static void test_resigned_index(void) {
    fb_err err;
    size_t len = 0;
    char g[600], p[600];
    /* What rekey does: a new index (here: re-MACed under another key), re-signed by an operator key. */
    path_of("good", JOB_B, g, sizeof g);
    unsigned char *b = tap_slurp(g, &len);
    arc_sig_block blk;
    CHECK_EQ_INT(arc_sign_block_decode(b + sig_off(len), &blk, &err), FB_OK);
    uint64_t ioff = arc_get_u64(b + len - 16), ilen = arc_get_u64(b + len - 8);
    /* any change to the index bytes that leaves it an index: a digit of its MAC (which nobody re-MACed here) */
    unsigned char *mac = memmem(b + ioff, (size_t)ilen, "\nmac ", 5);
    CHECK(mac != NULL);
    if (mac) mac[5] = mac[5] == '0' ? '1' : '0';
    for (int k = 0; k < 2; k++) {
        const fb_signer *who = k == 0 ? &ops : &attacker;
        arc_sign_index(who, b, ioff, b + ioff, (size_t)ilen, &blk);
        CHECK_EQ_INT(arc_sign_block_encode(&blk, b + sig_off(len), &err), FB_OK);
        snprintf(p, sizeof p, "%s/resigned%d", root, k);
        mkdir(p, 0700);
        path_of(k == 0 ? "resigned0" : "resigned1", JOB_B, p, sizeof p);
        tap_spit(p, b, len);
    }
    free(b);
    path_of("resigned0", JOB_B, p, sizeof p);
    fb_code rc = open_all(p, &trust_worker_ops, 0, JOB_B, &err);
    CHECKF(rc == FB_OK, "index re-signed by a trusted operator key: %s", err.msg);
    rc = open_all(p, &trust_worker, 0, JOB_B, &err);
    CHECKF(rc == FB_ERR_UNTRUSTED && strstr(err.msg, ops.key_id), "re-signed by a key not trusted: %d %s", rc,
           err.msg);
    path_of("resigned1", JOB_B, p, sizeof p);
    rc = open_all(p, &trust_worker_ops, 0, JOB_B, &err);
    CHECKF(rc == FB_ERR_UNTRUSTED && strstr(err.msg, attacker.key_id), "re-signed by the attacker: %d %s", rc,
           err.msg);
}

static void test_listing(void) {
    fb_err err;
    unsigned char ikey[ARC_INDEX_KEY_BYTES];
    stor *st = NULL;
    arc_chain ch;
    /* one folder: the worker's FULL, the attacker's (newer) one, an unsigned one, A's artifact under C's name */
    write_art("list", JOB_B, ARC_FORMAT_VERSION, &worker, NULL);
    write_art("list", JOB_A, ARC_FORMAT_VERSION, &attacker, NULL);
    write_art("list", "cccccccc-1111-4222-8333-444455556666", 4, NULL, NULL);
    {
        size_t len = 0;
        char g[600];
        path_of("good", JOB_A, g, sizeof g);
        unsigned char *b = tap_slurp(g, &len);
        path_of("list", "dddddddd-1111-4222-8333-444455556666", g, sizeof g);
        tap_spit(g, b, len);
        free(b);
    }
    CHECK_EQ_INT(arc_index_key(NULL, pk, ikey, &err), FB_OK);
    CHECK_EQ_INT(stor_posix_new(root, &st, &err), FB_OK);
    CHECK_EQ_INT(arc_chain_load(st, "list", ikey, &trust_worker, &ch, &err), FB_OK);
    CHECK_EQ_INT(ch.n, 4);
    arc_chain_entry *e = arc_chain_find(&ch, JOB_B);
    CHECK(e && e->sig.state == ARC_SIG_TRUSTED && arc_chain_usable(e) && strcmp(e->sig.manifest_key, worker.key_id) == 0);
    e = arc_chain_find(&ch, JOB_A);
    CHECKF(e && e->sig.state == ARC_SIG_UNTRUSTED && !arc_chain_usable(e) && strstr(e->untrusted_why, attacker.key_id),
           "attacker's: %s", e ? e->untrusted_why : "missing");
    e = arc_chain_find(&ch, "cccccccc-1111-4222-8333-444455556666");
    CHECK(e && e->sig.state == ARC_SIG_UNSIGNED && !arc_chain_usable(e) && e->ix); /* retention still reads it */
    e = arc_chain_find(&ch, "dddddddd-1111-4222-8333-444455556666");
    CHECKF(e && e->sig.state == ARC_SIG_UNTRUSTED && !arc_chain_usable(e) && strstr(e->untrusted_why, "copied"),
           "renamed: %s", e ? e->untrusted_why : "missing");
    arc_chain_clear(&ch);
    stor_free(st);
}

/* A format-6 artifact with a version-3 index (fixed records), genuinely signed: a reader of the chain and a reader
 * of the artifact both refuse it, so the record layout is never taken from anything but the format. */
static void test_index_version_pairing(void) {
    fb_err err;
    char p[600];
    index_version_override = 3;
    write_art("pairing", JOB_B, ARC_FORMAT_VERSION, &worker, NULL);
    index_version_override = 0;
    path_of("pairing", JOB_B, p, sizeof p);
    fb_code rc = open_all(p, &trust_worker, 0, JOB_B, &err);
    CHECKF(rc == FB_ERR_FORMAT && strstr(err.msg, "holds a chain index of version 3 (4 expected)"),
           "format 6 with index 3: rc %d: %s", rc, err.msg);
    stor *st = NULL;
    arc_chain ch;
    unsigned char ikey[ARC_INDEX_KEY_BYTES];
    CHECK_EQ_INT(arc_index_key(NULL, pk, ikey, &err), FB_OK);
    CHECK_EQ_INT(stor_posix_new(root, &st, &err), FB_OK);
    CHECK_EQ_INT(arc_chain_load(st, "pairing", ikey, &trust_worker, &ch, &err), FB_OK);
    arc_chain_entry *e = arc_chain_find(&ch, JOB_B);
    CHECKF(e && !arc_chain_usable(e) && strstr(e->problem, "chain index of version 3 (4 expected"), "chain: %s",
           e ? e->problem : "(no entry)");
    arc_chain_clear(&ch);
    stor_free(st);
}

int main(void) {
    char dir[256];
    if (sodium_init() < 0) return 1;
    crypto_box_keypair(pk, sk);
    tap_signer(&worker, &trust_worker);
    tap_signer(&attacker, NULL);
    /* the operators' trust: the worker and the operator key rekey signs with */
    tap_signer(&ops, &trust_worker_ops);
    {
        fb_trusted_key *k = &trust_worker_ops.keys[trust_worker_ops.n++];
        memcpy(k->pk, worker.pk, sizeof k->pk);
        memcpy(k->key_id, worker.key_id, sizeof k->key_id);
        k->path = strdup("(worker)");
    }
    snprintf(dir, sizeof dir, "/tmp/fbas_%d", (int)getpid());
    snprintf(root, sizeof root, "%s/root", dir);
    mkdir(dir, 0700);
    mkdir(root, 0700);
    content.p = (unsigned char *)strdup("1\tone\n2\ttwo\n3\tthree\n");
    content.len = strlen((char *)content.p);
    test_genuine();
    test_forged_own_key();
    test_unsigned();
    test_tampered();
    test_transplant();
    test_renamed();
    test_chain_link();
    test_resigned_index();
    test_listing();
    test_index_version_pairing();
    free(content.p);
    fb_keyring_free(&trust_worker);
    fb_keyring_free(&trust_worker_ops);
    sodium_memzero(sk, sizeof sk);
    if (tap_failed == 0) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0) printf("# could not remove %s\n", dir);
    }
    return tap_done();
}
