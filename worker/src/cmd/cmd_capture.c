/* cmd_capture: `fusion-backup capture` — continuous change capture of one database into change segments
 * (worker/src/capture/, design notes in cap_pgoutput.h), and `capture --list` to verify and show a chain.
 *
 *   fusion-backup capture --pg CONNINFO --storage-root R --storage-path P --public-key backup.pub
 *                         --sign-key worker.key --trusted-signer worker.pub [--create-slot] [--capture-flush-s 10]
 *   fusion-backup capture --list --pg CONNINFO --storage-root R --storage-path P --trusted-signer worker.pub
 *                         [--secret-key backup.key] [--json]
 *   fusion-backup capture --apply-into CONNINFO --until LSN --pg CONNINFO --storage-root R --storage-path P
 *                         --trusted-signer worker.pub --secret-key backup.key
 *
 * --apply-into is the second half of restore --until (cmd_restore.c, owned elsewhere, is to call cap_apply the
 * same way after restoring the FULL taken in the slot's snapshot): it applies every transaction of the chain whose
 * commit ends at or before LSN, each atomically, in commit order (cap_apply.h), with session_replication_role =
 * replica so the target's triggers do not fire a second time (their effects are in the stream).
 *
 * Runs until SIGTERM or SIGINT, then writes what is pending and exits 0. A lost connection (PostgreSQL restarted)
 * is retried with a growing pause; the chain in storage says where to resume, so nothing is lost or doubled.
 * The chain's folder is P/capture/DBNAME/SLOT and its stream id "DBNAME/SLOT".
 *
 * The base: `fusion-backup backup CONFIG --type FULL --capture-base` creates the slot and takes the FULL in its
 * snapshot (capture/cap_base.h); `capture` then streams from the slot's confirmed position, which is the
 * consistent point until the first segment, and from the chain's end after. A slot that is missing or
 * invalidated (wal_status 'lost') stops capture with an error saying a new base under a new slot name is needed
 * (cap_base_slot_check), at start and at every reconnection: it is never re-created silently. --create-slot
 * (a slot without a FULL, for tests and tools that take their own base) is refused on a folder with segments.
 * Without the secret key a worker cannot read the FULL's manifest, so --list and --apply-into take the first
 * segment's start as the base; restore --until (cmd_restore.c) takes it from the FULL.
 */
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "artifact/arc_key.h"
#include "capture/cap_apply.h"
#include "capture/cap_base.h"
#include "capture/cap_capture.h"
#include "capture/cap_segment.h"
#include "capture/cap_stream.h"
#include "cmd/cmd.h"
#include "common/fb_config.h"
#include "common/fb_flag.h"
#include "common/fb_log.h"
#include "common/fb_sign.h"
#include "pg/pgx.h"
#include "storage/stor.h"

static fb_flag cc_stop;
static void cc_on_signal(int sig) {
    (void)sig;
    cc_stop = 1;
}

typedef struct cc_args {
    const char *storage_path, *apply_into, *until_s;
    uint64_t until;
    int create_slot, list, json;
    char stream[CAP_SEG_STREAM_MAX + 1];
    char dir[CAP_BASE_DIR_MAX];
} cc_args;

static const char cc_usage[] =
    "usage: fusion-backup capture --pg CONNINFO --storage-root R --storage-path P --public-key FILE\n"
    "                             --sign-key FILE --trusted-signer FILE [--create-slot] [--capture-flush-s N]\n"
    "       fusion-backup capture --list --pg CONNINFO --storage-root R --storage-path P --trusted-signer FILE\n"
    "                             [--secret-key FILE] [--json]\n"
    "       fusion-backup capture --apply-into CONNINFO --until LSN --pg CONNINFO --storage-root R\n"
    "                             --storage-path P --trusted-signer FILE --secret-key FILE\n"
    "  streams the database's committed transactions from logical slot --capture-slot into signed, encrypted\n"
    "  change segments under R/P/capture/DBNAME/SLOT until SIGTERM (wal_level=logical needed).\n"
    "  The slot and its base FULL come from `fusion-backup backup CONFIG --type FULL --capture-base`; a\n"
    "  missing or invalidated slot stops capture (take a new base under a new --capture-slot name).\n"
    "  --create-slot makes the publication and a slot without a FULL (tools that take their own base).\n"
    "  --list verifies the chain (signatures, no gap; with --secret-key every segment decrypted) and shows it.\n"
    "  --apply-into CONNINFO --until LSN --secret-key FILE applies the chain's transactions up to LSN, each\n"
    "  atomically, in commit order, onto a restore of the base (restore BASE --until does both at once).\n";

/* The stream id and folder: DBNAME from the conninfo (no connection needed), SLOT from the settings. */
static fb_code cc_names(const fb_config *cfg, cc_args *a, fb_err *err) {
    return cap_base_names(cfg->pg, cfg->capture_slot, a->storage_path, a->stream, a->dir, err);
}

static fb_code cc_parse(fb_config *cfg, int *argc, char **argv, cc_args *a, int *help, fb_err *err) {
    fb_code rc = cmd_args(cfg, argc, argv, FB_CMD_CAPTURE, cc_usage, help, err);
    if (rc || *help) return rc;
    if (*argc > 1) return fb_err_set(err, FB_ERR_USAGE, "unexpected argument \"%s\" (see capture --help)", argv[1]);
    a->create_slot = cfg->create_slot != 0;
    a->list = cfg->list != 0;
    a->json = cfg->json != 0;
    a->apply_into = cfg->apply_into && *cfg->apply_into ? cfg->apply_into : NULL;
    a->until_s = cfg->until && *cfg->until ? cfg->until : NULL;
    if (cfg->storage_path.n > 1) return fb_err_set(err, FB_ERR_USAGE, "capture takes exactly one --storage-path");
    a->storage_path = cfg->storage_path.n ? cfg->storage_path.v[0] : NULL;
    if (!a->apply_into != !a->until_s)
        return fb_err_set(err, FB_ERR_USAGE, "--apply-into CONNINFO and --until LSN go together");
    if (a->until_s && cap_lsn_parse(a->until_s, &a->until) != 0)
        return fb_err_set(err, FB_ERR_USAGE, "--until \"%s\" is not an LSN (X/Y in hex, as pg_current_wal_lsn() prints)", a->until_s);
    if (!cfg->pg || !*cfg->pg) return fb_err_set(err, FB_ERR_USAGE, "capture needs --pg CONNINFO (the captured database)");
    if (!cfg->storage_root || !*cfg->storage_root || !a->storage_path || !*a->storage_path)
        return fb_err_set(err, FB_ERR_USAGE, "capture needs --storage-root R and --storage-path P (where segments go)");
    return cc_names(cfg, a, err);
}

/* ---- --list -------------------------------------------------------------------------------------------------- */

typedef struct cc_list {
    int json;
    uint64_t nseg, ntxn;
} cc_list;

static fb_code cc_print(void *opaque, const cap_segment *s, fb_err *err) {
    (void)err;
    cc_list *l = opaque;
    l->nseg++;
    l->ntxn += s->ntxn;
    if (l->json) {
        printf("{\"segment\":\"%s\",\"start_lsn\":\"" CAP_LSN_FMT "\",\"end_lsn\":\"" CAP_LSN_FMT "\",\"transactions\":%u,"
               "\"first_commit_us\":%" PRId64 ",\"last_commit_us\":%" PRId64 ",\"signer\":\"%s\"}\n", s->name,
               CAP_LSN_ARGS(s->start_lsn), CAP_LSN_ARGS(s->end_lsn), s->ntxn, s->first_commit_us, s->last_commit_us,
               s->signer);
        for (uint32_t i = 0; s->txns && i < s->ntxn; i++)
            printf("{\"xid\":%u,\"commit_lsn\":\"" CAP_LSN_FMT "\",\"end_lsn\":\"" CAP_LSN_FMT "\",\"changes\":%zu,"
                   "\"commit_us\":%" PRId64 "}\n", s->txns[i]->xid, CAP_LSN_ARGS(s->txns[i]->commit_lsn),
                   CAP_LSN_ARGS(s->txns[i]->end_lsn), s->txns[i]->nchanges, s->txns[i]->commit_time_us);
    } else {
        printf("%s  " CAP_LSN_FMT ".." CAP_LSN_FMT "  %u transactions  signed by %s%s\n", s->name,
               CAP_LSN_ARGS(s->start_lsn), CAP_LSN_ARGS(s->end_lsn), s->ntxn, s->signer, s->txns ? "  decrypted" : "");
    }
    return FB_OK;
}

static fb_code cc_run_list(const fb_config *cfg, const cc_args *a, stor *st, const fb_keyring *kr, fb_err *err) {
    unsigned char sk[ARC_SK_BYTES], pk[ARC_PK_BYTES];
    int have_sk = cfg->secret_key && *cfg->secret_key;
    fb_code rc = have_sk ? arc_key_load_secret(cfg->secret_key, sk, pk, err) : FB_OK;
    uint64_t base = 0, end = 0;
    if (!rc) rc = cap_base_chain_first(st, a->dir, &base, err);
    cap_seg_in in = {.stream = a->stream, .signers = kr, .sk = have_sk ? sk : NULL, .pk = pk};
    cc_list l = {.json = a->json};
    if (!rc) rc = cap_segment_chain(st, a->dir, &in, base, cc_print, &l, &end, err);
    if (!rc && !a->json)
        printf("chain %s: %" PRIu64 " segments, %" PRIu64 " transactions, " CAP_LSN_FMT ".." CAP_LSN_FMT ", no gap%s\n",
               a->stream, l.nseg, l.ntxn, CAP_LSN_ARGS(base), CAP_LSN_ARGS(end),
               have_sk ? ", every segment decrypted and checked" : " (signatures checked; --secret-key also decrypts)");
    sodium_memzero(sk, sizeof sk);
    return rc;
}

/* ---- --apply-into ------------------------------------------------------------------------------------------- */

static fb_code cc_run_apply(const fb_config *cfg, const cc_args *a, stor *st, const fb_keyring *kr, fb_err *err) {
    unsigned char sk[ARC_SK_BYTES], pk[ARC_PK_BYTES];
    if (!cfg->secret_key || !*cfg->secret_key)
        return fb_err_set(err, FB_ERR_USAGE, "--apply-into decrypts the chain: give --secret-key FILE");
    fb_code rc = arc_key_load_secret(cfg->secret_key, sk, pk, err);
    uint64_t base = 0;
    cap_seg_in in = {.stream = a->stream, .signers = kr, .sk = sk, .pk = pk};
    cap_window w;
    cap_target t = {.lsn = a->until, .text = a->until_s};
    cap_apply_stats as;
    PGconn *c = NULL;
    /* Step: the whole chain must be authentic and reach --until before the target is touched. */
    if (!rc) rc = cap_base_chain_first(st, a->dir, &base, err);
    if (!rc) rc = cap_apply_window(st, a->dir, &in, base, 0, &w, err);
    if (!rc && a->until > w.end_lsn)
        rc = fb_err_set(err, FB_ERR_NOTFOUND, "chain %s ends at " CAP_LSN_FMT ", before --until %s: nothing applied "
                        "(restore to at most its end)", a->stream, CAP_LSN_ARGS(w.end_lsn), a->until_s);
    if (!rc && !(c = pgx_connect(a->apply_into, "fusion-backup capture apply", err))) rc = err->code;
    if (!rc) rc = cap_apply_chain(c, st, a->dir, &in, base, &t, &as, err);
    if (!rc)
        printf("applied %" PRIu64 " transactions of chain %s to the target, up to " CAP_LSN_FMT " (--until %s)\n",
               as.applied, a->stream, CAP_LSN_ARGS(as.last_end), a->until_s);
    if (c) PQfinish(c);
    sodium_memzero(sk, sizeof sk);
    return rc;
}

/* ---- capture ------------------------------------------------------------------------------------------------- */

/* Opens the stream (creating publication and slot when asked) and the capture from the chain's end. */
static fb_code cc_begin(const fb_config *cfg, const cc_args *a, const cap_capture_opts *o, cap_stream **s,
                        cap_capture **c, int create, fb_err *err) {
    /* A new slot never continues an old chain; an old slot must still hold everything since the chain's end. */
    fb_code rc = create ? cap_base_folder_empty(o->st, o->dir, err) : cap_base_slot_check(cfg->pg, cfg->capture_slot, err);
    if (!rc) rc = cap_stream_open(cfg->pg, "fusion-backup capture", s, err);
    uint64_t base = 0;
    if (!rc && create) {
        cap_slot_info info;
        rc = cap_stream_identity_check(*s, err);
        if (!rc) rc = cap_stream_publication_ensure(*s, cfg->capture_publication, NULL, 0, err);
        if (!rc) rc = cap_stream_slot_create(*s, cfg->capture_slot, &info, err);
        if (!rc) {
            printf("slot %s created: consistent point " CAP_LSN_FMT ", snapshot %s (a FULL taken in it joins this "
                   "chain without gap or overlap)\n", info.slot, CAP_LSN_ARGS(info.consistent_lsn), info.snapshot);
            fflush(stdout);
            base = info.consistent_lsn;
        }
    }
    if (!rc && !create) rc = cap_base_chain_first(o->st, o->dir, &base, err);
    if (!rc && !create && base == 0) rc = cap_stream_slot_position(*s, cfg->capture_slot, &base, err);
    if (!rc) rc = cap_capture_begin(*s, o, cfg->capture_slot, cfg->capture_publication, base, c, err);
    if (rc == FB_ERR_NOTFOUND) fb_err_prefix(err, "chain %s: ", a->stream);
    return rc;
}

/* Until SIGTERM: step, flush on time; on a lost connection, pause (1 s, doubling to 30 s) and resume from the chain. */
static fb_code cc_loop(const fb_config *cfg, const cc_args *a, const cap_capture_opts *o, fb_err *err) {
    cap_stream *s = NULL;
    cap_capture *c = NULL;
    fb_code rc = cc_begin(cfg, a, o, &s, &c, a->create_slot, err);
    int pause_s = 1;
    while (!cc_stop && (rc == FB_OK || rc == FB_ERR_TRANSIENT)) {
        if (rc == FB_OK) rc = cap_capture_step(c, 1000, err);
        if (rc == FB_OK) {
            pause_s = 1;
            continue;
        }
        if (rc != FB_ERR_TRANSIENT) break;
        FB_WARN("capture %s: %s; retrying in %d s (the chain in storage says where to resume)", a->stream, err->msg, pause_s);
        cap_capture_free(c);
        cap_stream_free(s);
        c = NULL;
        s = NULL;
        for (int i = 0; i < pause_s * 10 && !cc_stop; i++) usleep(100000);
        pause_s = pause_s < 16 ? pause_s * 2 : 30;
        if (!cc_stop) rc = cc_begin(cfg, a, o, &s, &c, 0, err);
    }
    if (c && rc == FB_OK) rc = cap_capture_flush(c, err); /* stopping: what is pending becomes durable first */
    if (c && rc == FB_OK)
        printf("capture %s stopped: chain ends at " CAP_LSN_FMT "\n", a->stream, CAP_LSN_ARGS(cap_capture_chain_end(c)));
    cap_capture_free(c);
    cap_stream_free(s);
    return rc;
}

static fb_code cc_run_capture(const fb_config *cfg, const cc_args *a, stor *st, const fb_keyring *kr, fb_err *err) {
    unsigned char pk[ARC_PK_BYTES];
    fb_signer signer = {0};
    fb_code rc = arc_key_load_public(cfg->public_key, pk, err);
    if (!rc) rc = fb_signer_load(&signer, cfg->sign_key, "--sign-key", err);
    if (!rc && !fb_keyring_find(kr, signer.key_id))
        rc = fb_err_set(err, FB_ERR_USAGE, "--sign-key %s (key %s) is not among --trusted-signer: the capture could not "
                        "verify its own chain to resume it; add its .pub", cfg->sign_key, signer.key_id);
    cap_capture_opts o = {.st = st, .dir = a->dir, .signers = kr, .flush_ms = (int)cfg->capture_flush_s * 1000};
    o.out.stream = a->stream;
    o.out.pk = pk;
    o.out.signer = &signer;
    o.out.zstd_level = (int)cfg->zstd_level;
    if (!rc) {
        struct sigaction sa = {.sa_handler = cc_on_signal};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        rc = cc_loop(cfg, a, &o, err);
    }
    fb_signer_wipe(&signer);
    return rc;
}

int cmd_capture(int argc, char **argv) {
    fb_config cfg;
    fb_err err;
    cc_args a = {0};
    int help = 0;
    stor *st = NULL;
    fb_keyring kr = {0};
    fb_code rc = cc_parse(&cfg, &argc, argv, &a, &help, &err);
    if (help) {
        fb_config_free(&cfg);
        return FB_OK;
    }
    if (!rc) rc = fb_keyring_load(&kr, cfg.trusted_signers, "--trusted-signer", &err);
    if (!rc && kr.n == 0) rc = fb_err_set(&err, FB_ERR_USAGE, "capture needs --trusted-signer FILE (the key that signs the chain)");
    if (!rc) rc = stor_open_location(cfg.storage_root, &cfg, &st, &err);
    if (!rc) rc = a.apply_into ? cc_run_apply(&cfg, &a, st, &kr, &err)
                  : a.list     ? cc_run_list(&cfg, &a, st, &kr, &err)
                               : cc_run_capture(&cfg, &a, st, &kr, &err);
    if (rc) fprintf(stderr, "fusion-backup capture: %s\n", err.msg);
    stor_free(st);
    fb_keyring_free(&kr);
    fb_config_free(&cfg);
    return rc;
}
