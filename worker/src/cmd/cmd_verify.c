/* cmd_verify: `fusion-backup verify ARTIFACT [--restore-into CONNINFO]`.
 *
 * Without a database: authenticates and decompresses every segment, checks sizes, BLAKE2b hashes and that the
 * segments tile the file. With --restore-into (an empty database): also restores everything there with --create,
 * re-dumps each table and compares it with the manifest, all inside a transaction that is rolled back, so the
 * database is left empty again. An incremental or differential is checked with its chain (the artifacts holding
 * the tables it references: its own folder, then --chain-dir DIR).
 * A capture base (backup --capture-base) is checked with its change chain (beside the artifact, capture/<stream>):
 * no LSN gap from the base's consistent point on, every segment signed by a trusted key and decrypted with the
 * secret key, its transactions well-formed — everything restore --until would apply — and its tip
 * (capture/cap_tip.h): a tip file that is not authentic, or one saying the chain reached further than its
 * segments do (segments missing at the end), fails the check.
 * A backup of captured changes (an INCREMENTAL / DIFFERENTIAL with `capture_changes`, capture/cap_incr.h) is
 * checked with the chain restore would apply: every backup of changes down to its capture base FULL (the links,
 * the FULL's identity) and every change segment, unpacked into a private folder, signed, decrypted, without a gap.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "capture/cap_apply.h"
#include "capture/cap_base.h"
#include "capture/cap_incr.h"
#include "cmd/cmd.h"
#include "cmd/cmd_progress.h"
#include "common/fb_config.h"
#include "common/fb_json.h"
#include "artifact/arc_open.h"
#include "dump/dump_restore.h"
#include "pg/pgx.h"

static const char cmd_verify_usage[] =
    "usage: fusion-backup verify ARTIFACT [--restore-into CONNINFO] [--secret-key FILE] [--chain-dir DIR] [--json]\n"
    "  checks every segment (authentication, sizes, BLAKE2b); --restore-into also restores into that\n"
    "  empty database, compares each table with the manifest, and rolls back\n";

/* The capture chain of a base FULL, every segment decrypted (see the file comment). */
static fb_code cmd_verify_chain(const fb_config *cfg, const char *path, const arc_capture_base *b,
                                const fb_keyring *kr, cap_window *w, fb_err *err) {
    unsigned char sk[ARC_SK_BYTES], pk[ARC_PK_BYTES];
    stor *st = NULL;
    char dir[CAP_BASE_DIR_MAX];
    fb_code rc = arc_key_load_secret(cfg->secret_key, sk, pk, err);
    if (!rc) rc = cap_base_chain_open(cfg, path, b->stream, &st, dir, err);
    cap_seg_in in = {.stream = b->stream, .signers = kr, .sk = sk, .pk = pk};
    if (!rc) rc = cap_apply_window(st, dir, &in, b->lsn, b->time_us, w, err);
    if (!rc && w->tip_problem[0]) rc = fb_err_set(err, FB_ERR_VERIFY, "%s", w->tip_problem);
    if (rc && rc != FB_ERR_USAGE) fb_err_prefix(err, "its change chain %s: ", dir);
    stor_free(st);
    sodium_memzero(sk, sizeof sk);
    return rc;
}

/* The captured changes under a backup of them, down to its FULL, every segment decrypted (the file comment). */
static fb_code cmd_verify_changes(const fb_config *cfg, const char *path, arc_reader *r, const arc_trust *trust,
                                  const fb_keyring *kr, cap_window *w, fb_err *err) {
    unsigned char sk[ARC_SK_BYTES], pk[ARC_PK_BYTES];
    char tmp[1100] = "";
    stor *st = NULL;
    stor_rfile *ff = NULL;
    arc_reader *fr = NULL;
    cap_incr_chain ch;
    const char *stream = arc_reader_manifest(r)->changes->stream;
    fb_code rc = arc_key_load_secret(cfg->secret_key, sk, pk, err);
    if (!rc) rc = cap_incr_scratch_open(tmp, sizeof tmp, &st, err);
    if (!rc) rc = cap_incr_collect(path, r, cfg->secret_key, (const char *const *)cfg->chain_dir.v, cfg->chain_dir.n,
                                   trust, st, CAP_INCR_SCRATCH_DIR, &ff, &fr, &ch, err);
    cap_seg_in in = {.stream = stream, .signers = kr, .sk = sk, .pk = pk};
    if (!rc) rc = cap_apply_window(st, CAP_INCR_SCRATCH_DIR, &in, ch.base_lsn, arc_reader_manifest(fr)->capture->time_us, w, err);
    if (!rc && w->chain_end_lsn != ch.end_lsn)
        rc = fb_err_set(err, FB_ERR_VERIFY, "the captured changes end at " CAP_LSN_FMT ", the backup says " CAP_LSN_FMT,
                        CAP_LSN_ARGS(w->chain_end_lsn), CAP_LSN_ARGS(ch.end_lsn));
    if (rc && rc != FB_ERR_USAGE) fb_err_prefix(err, "its captured changes: ");
    arc_reader_free(fr);
    stor_rfile_close(ff);
    stor_free(st);
    cap_incr_scratch_remove(tmp);
    sodium_memzero(sk, sizeof sk);
    return rc;
}

int cmd_verify(int argc, char **argv) {
    fb_config cfg;
    fb_err err;
    const char *path = NULL, *into = NULL;
    stor_rfile *f = NULL;
    arc_reader *r = NULL;
    PGconn *c = NULL;
    struct timespec t0, t1;
    fb_keyring kr = {0};
    arc_trust trust;
    int help = 0;
    cap_window w = {0};
    int chain = 0;
    fb_code rc = cmd_args(&cfg, &argc, argv, FB_CMD_VERIFY, cmd_verify_usage, &help, &err);
    if (help) {
        fb_config_free(&cfg);
        return FB_OK;
    }
    if (!rc && argc > 1) path = argv[1];
    if (!rc && argc > 2) rc = fb_err_set(&err, FB_ERR_USAGE, "unexpected argument \"%s\" (see verify --help)", argv[2]);
    if (cfg.restore_into && *cfg.restore_into) into = cfg.restore_into;
    if (!rc && !path) rc = fb_err_set(&err, FB_ERR_USAGE, "verify needs the artifact's path");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!rc) rc = arc_open_trust(&cfg, &kr, &trust, &err);
    if (!rc) rc = arc_open_chain(path, cfg.secret_key, (const char *const *)cfg.chain_dir.v, cfg.chain_dir.n, &trust, &f, &r, &err);
    if (!rc) arc_open_describe(r, stderr);
    fb_progress *prog = rc ? NULL : cmd_progress_reading(&cfg, "verify", arc_reader_manifest(r), NULL, 0, 0);
    if (!rc) rc = arc_reader_verify_all(r, &err);
    const char *stream = NULL; /* the change chain checked with it, if any */
    if (!rc && arc_reader_manifest(r)->capture) rc = cmd_verify_chain(&cfg, path, arc_reader_manifest(r)->capture, &kr, &w, &err);
    if (!rc && arc_reader_manifest(r)->changes) rc = cmd_verify_changes(&cfg, path, r, &trust, &kr, &w, &err);
    if (!rc && (chain = arc_reader_manifest(r)->capture || arc_reader_manifest(r)->changes))
        stream = arc_reader_manifest(r)->capture ? arc_reader_manifest(r)->capture->stream
                                                 : arc_reader_manifest(r)->changes->stream;
    fb_progress_done(prog, rc == FB_OK);
    fb_progress_free(prog);
    if (!rc && into && arc_reader_manifest(r)->changes)
        rc = fb_err_set(&err, FB_ERR_USAGE, "--restore-into compares tables with the manifest, and a backup of captured "
                        "changes has none: check it by `fusion-backup restore ARTIFACT --create --pg NEW` instead "
                        "(verify without --restore-into has checked every change segment)");
    if (!rc && into) {
        c = pgx_connect(into, "fusion-backup verify", &err);
        if (!c) rc = err.code;
        dump_restore_opts o = {0};
        dump_restore_stats st;
        o.create = 1;
        o.compare = 1;
        /* a check of the data, not of the roles: the scratch database need not have them */
        o.no_owner = 1;
        o.no_privileges = 1;
        o.pg_restore = cfg.pg_restore;
        o.commit = 0;
        if (!rc) rc = dump_restore(r, c, &o, &st, &err);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (rc) {
        fprintf(stderr, "fusion-backup verify: %s: %s\n", path ? path : "", err.msg);
        if (cfg.json) cmd_json_failure(rc, err.msg);
    } else {
        const arc_manifest *m = arc_reader_manifest(r);
        long long rows = 0;
        for (size_t i = 0; i < m->n_tables; i++) rows += m->tables[i].rows;
        if (cfg.json) {
            printf("{\"ok\":true,\"artifact\":");
            fb_json_string(stdout, path);
            printf(",\"tables\":%zu,\"rows\":%lld,\"restored_and_compared\":%s,\"seconds\":%.3f", m->n_tables,
                   rows, into ? "true" : "false", secs);
            if (chain)
                printf(",\"capture_chain\":{\"stream\":\"%s\",\"segments\":%llu,\"transactions\":%llu,"
                       "\"base_lsn\":\"" CAP_LSN_FMT "\",\"end_lsn\":\"" CAP_LSN_FMT "\",\"base_us\":%lld,"
                       "\"end_us\":%lld,\"tip\":%s,\"chain_end_lsn\":\"" CAP_LSN_FMT "\",\"chain_end_us\":%lld}", stream,
                       (unsigned long long)w.segments, (unsigned long long)w.transactions, CAP_LSN_ARGS(w.base_lsn),
                       CAP_LSN_ARGS(w.end_lsn), (long long)w.base_us, (long long)w.end_us, w.tip ? "true" : "false",
                       CAP_LSN_ARGS(w.chain_end_lsn), (long long)w.chain_end_us);
            printf("}\n");
        } else {
            printf("OK %s: %zu tables, %lld rows authenticated and hashes match%s (%.2f s)\n", path, m->n_tables,
                   rows, into ? "; restored and compared, then rolled back" : "", secs);
            if (chain)
                printf("OK change chain %s: %llu segments, %llu transactions, " CAP_LSN_FMT ".." CAP_LSN_FMT
                       ", no gap, every segment signed and decrypted%s\n", stream,
                       (unsigned long long)w.segments, (unsigned long long)w.transactions, CAP_LSN_ARGS(w.base_lsn),
                       CAP_LSN_ARGS(w.end_lsn), w.tip ? " (the end is its signed tip's)" : "");
        }
    }
    if (c) PQfinish(c);
    arc_reader_free(r);
    stor_rfile_close(f);
    fb_keyring_free(&kr);
    fb_config_free(&cfg);
    return rc;
}
