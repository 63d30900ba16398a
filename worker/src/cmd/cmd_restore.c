/* cmd_restore: `fusion-backup restore ARTIFACT --pg CONNINFO [--table NAME ...] [--create] [--truncate]`.
 *
 * Loads the artifact's tables (or the named ones: only their segments are read) in one transaction that commits
 * only after every byte read was authenticated (dump_restore). --table NAME is a table of schema public, or
 * SCHEMA.NAME when no public table of that exact name is in the backup (names are matched as stored, no case
 * folding). --create on an empty database rebuilds the whole database from the artifact's schema archive (format
 * 4: every object, pg_restore's sections in the one transaction; --no-owner / --no-privileges as pg_restore's);
 * with --table, or for older artifacts, it creates only the tables from the manifest's DDL. --jobs N spreads such
 * a table-only --create over N connections (see dump_restore.h for what that changes). --create with --pg naming a
 * database that does not exist yet builds it under a temporary name on --jobs connections and renames it at the
 * end (dump_rebuild.h).
 * An INCREMENTAL or DIFFERENTIAL artifact resolves its chain by itself: the artifacts holding the tables it only
 * references are looked for in its own folder, then in each --chain-dir DIR (arc_open.h).
 * --until TIME|LSN (point-in-time recovery, issue 16): ARTIFACT is a capture base (a FULL taken with `backup
 * --capture-base`, its manifest names the slot, stream and consistent point). The FULL is rebuilt as a new
 * database under a temporary name (dump_rebuild), then the change chain found beside the artifact
 * (<artifact's folder>/capture/<stream>) is applied there up to the target, each transaction atomically in commit
 * order (cap_apply.h says what LSN and TIME targets include), and only then is the database renamed to its name:
 * a failure anywhere, in the FULL or in the chain, drops the temporary database and leaves no target. Before
 * anything is created the chain is walked with every signature checked, and a target outside its window (before
 * the base's snapshot, after the chain's end: its signed tip's time and LSN when the tip counts, capture/cap_tip.h,
 * else its last durable commit) is refused saying the window; a target between the last commit and the tip
 * applies the whole chain. So --until needs
 * --create and a --pg database that does not exist yet. TIME is any form fb_time reads; it names a whole
 * millisecond (every commit within it is included).
 * An INCREMENTAL or DIFFERENTIAL made of captured changes (manifest `capture_changes`, capture/cap_incr.h) is
 * restored the same way to its own end: the chain of such backups under it and their capture base FULL are found
 * beside it (or in --chain-dir), checked and unpacked (cap_incr_collect), the FULL rebuilt and the changes
 * applied up to the backup's end; so it too needs --create and a new database, and takes no --until.
 * Exit status is the fb_code: 7 tampered/truncated/wrong key, 13 target not empty, 9 unknown table or missing
 * chain link, 14 a chain link holding other data than recorded.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "artifact/arc_open.h"
#include "capture/cap_apply.h"
#include "capture/cap_base.h"
#include "capture/cap_incr.h"
#include "cmd/cmd.h"
#include "cmd/cmd_progress.h"
#include "common/fb_config.h"
#include "common/fb_flag.h"
#include "common/fb_json.h"
#include "common/fb_time.h"
#include "dump/dump_rebuild.h"
#include "dump/dump_restore.h"
#include "pg/pgx.h"

static fb_flag cmd_restore_stop;
static void cmd_restore_on_signal(int sig) {
    (void)sig;
    cmd_restore_stop = 1;
}

/* Maps a --table argument to a manifest table: "NAME" in public first, else "SCHEMA.NAME". */
static fb_code cmd_restore_table(const arc_manifest *m, const char *arg, arc_tref *out, fb_err *err) {
    if (arc_manifest_find(m, "public", arg)) {
        out->schema = (char *)"public";
        out->name = (char *)arg;
        return FB_OK;
    }
    for (const char *dot = strchr(arg, '.'); dot; dot = strchr(dot + 1, '.')) {
        for (size_t i = 0; i < m->n_tables; i++) {
            const arc_table *t = &m->tables[i];
            if (strlen(t->schema) == (size_t)(dot - arg) && strncmp(t->schema, arg, (size_t)(dot - arg)) == 0 &&
                strcmp(t->name, dot + 1) == 0) {
                out->schema = t->schema;
                out->name = t->name;
                return FB_OK;
            }
        }
    }
    return fb_err_set(err, FB_ERR_NOTFOUND, "table \"%s\" is not in this backup (names are case-sensitive; "
                      "`fusion-backup inspect ARTIFACT` lists the tables)", arg);
}

/* --- --until: a capture base and its chain ------------------------------------------------------------------ */

typedef struct cr_until {
    cap_target t;
    const arc_capture_base *base;
    stor *st;                           /* the artifact's folder */
    char dir[CAP_BASE_DIR_MAX];         /* capture/<stream> in it */
    cap_seg_in in;
    unsigned char sk[ARC_SK_BYTES], pk[ARC_PK_BYTES];
    cap_window w;
    cap_apply_stats as;
    char tmp[1100];                     /* backup of captured changes: the folder its chain is unpacked into */
    char text[40];                      /* ... and its end, as the target's text */
} cr_until;

/* An LSN ("X/Y") or a time (fb_time: its whole millisecond). */
static fb_code cr_until_parse(const char *s, cap_target *t, fb_err *err) {
    int64_t ms;
    t->text = s;
    if (cap_lsn_parse(s, &t->lsn) == 0) return FB_OK;
    if (fb_time_parse(s, fb_now_ms(), &ms, err) != FB_OK)
        return fb_err_prefix(err, "--until is neither an LSN (X/Y, as pg_current_wal_lsn() prints) nor a time: ");
    t->by_time = 1;
    t->time_us = ms >= INT64_MAX / 1000 - 1 ? INT64_MAX : ms * 1000 + 999;
    return FB_OK;
}

/* The chain the manifest names, beside the artifact; its window checked against the target. */
static fb_code cr_until_open(const fb_config *cfg, const char *path, const arc_manifest *m, const fb_keyring *kr,
                             cr_until *u, fb_err *err) {
    const arc_capture_base *b = m->capture;
    if (!b)
        return fb_err_set(err, FB_ERR_USAGE, "--until needs a capture base: \"%s\" is a backup without a change chain "
                          "(take one with `fusion-backup backup CONFIG --type FULL --capture-base`)", path);
    if (!cfg->secret_key || !*cfg->secret_key)
        return fb_err_set(err, FB_ERR_USAGE, "--until decrypts the change chain: give --secret-key FILE");
    u->base = b;
    fb_code rc = arc_key_load_secret(cfg->secret_key, u->sk, u->pk, err);
    if (!rc) rc = cap_base_chain_open(cfg, path, b->stream, &u->st, u->dir, err);
    u->in = (cap_seg_in){.stream = b->stream, .signers = kr, .sk = u->sk, .pk = u->pk};
    cap_seg_in peek = u->in;
    peek.sk = NULL; /* signatures and headers say the window; the apply decrypts */
    if (!rc) rc = cap_apply_window(u->st, u->dir, &peek, b->lsn, b->time_us, &u->w, err);
    if (rc && rc != FB_ERR_USAGE) fb_err_prefix(err, "change chain %s beside the artifact: ", u->dir);
    if (!rc && u->w.tip_problem[0]) fprintf(stderr, "fusion-backup restore: warning: %s\n", u->w.tip_problem);
    if (!rc) rc = cap_apply_check_target(&u->w, &u->t, err);
    return rc;
}

/* --- a backup of captured changes (capture/cap_incr.h) ----------------------------------------------------- */

/* An INCREMENTAL / DIFFERENTIAL of captured changes: restored as its capture base FULL (which replaces *f, *r)
 * with the chain of captured changes under it, unpacked into a private folder, applied up to its end, as --until
 * that LSN would. Everything is checked (links, stream, FULL, every segment's signature, no gap) before the target
 * is touched. */
static fb_code cr_changes_open(const fb_config *cfg, const char *path, const arc_trust *trust, const fb_keyring *kr,
                               stor_rfile **f, arc_reader **r, cr_until *u, const char **until, fb_err *err) {
    stor_rfile *ff = NULL;
    arc_reader *fr = NULL;
    cap_incr_chain chain;
    if (*until) return fb_err_set(err, FB_ERR_USAGE, "a backup of captured changes restores to its own end: no --until");
    fb_code rc = cap_incr_scratch_open(u->tmp, sizeof u->tmp, &u->st, err);
    if (!rc) rc = arc_key_load_secret(cfg->secret_key, u->sk, u->pk, err);
    if (!rc) rc = cap_incr_collect(path, *r, cfg->secret_key, (const char *const *)cfg->chain_dir.v, cfg->chain_dir.n,
                                   trust, u->st, CAP_INCR_SCRATCH_DIR, &ff, &fr, &chain, err);
    if (rc) return rc;
    arc_reader_free(*r);
    stor_rfile_close(*f);
    *r = fr;
    *f = ff;
    u->base = arc_reader_manifest(fr)->capture;
    snprintf(u->dir, sizeof u->dir, "%s", CAP_INCR_SCRATCH_DIR);
    snprintf(u->text, sizeof u->text, CAP_LSN_FMT, CAP_LSN_ARGS(chain.end_lsn));
    u->t = (cap_target){.lsn = chain.end_lsn, .text = u->text};
    *until = u->text;
    u->in = (cap_seg_in){.stream = u->base->stream, .signers = kr, .sk = u->sk, .pk = u->pk};
    cap_seg_in peek = u->in;
    peek.sk = NULL;
    rc = cap_apply_window(u->st, u->dir, &peek, u->base->lsn, u->base->time_us, &u->w, err);
    if (!rc && u->w.chain_end_lsn != chain.end_lsn)
        rc = fb_err_set(err, FB_ERR_VERIFY, "the captured changes end at " CAP_LSN_FMT ", the backup says " CAP_LSN_FMT,
                        CAP_LSN_ARGS(u->w.chain_end_lsn), CAP_LSN_ARGS(chain.end_lsn));
    if (rc) return fb_err_prefix(err, "captured changes: ");
    fprintf(stderr, "fusion-backup restore: captured changes from " CAP_LSN_FMT " to " CAP_LSN_FMT " (%lld backups, %lld "
            "segments) on the capture base FULL %s\n", CAP_LSN_ARGS(chain.base_lsn), CAP_LSN_ARGS(chain.end_lsn),
            (long long)chain.links, (long long)chain.segments, chain.full_job);
    return FB_OK;
}

/* dump_restore_opts.before_rename: the chain applied into the temporary database. */
static fb_code cr_until_apply(void *opaque, PGconn *c, fb_err *err) {
    cr_until *u = opaque;
    fb_code rc = cap_apply_chain(c, u->st, u->dir, &u->in, u->base->lsn, &u->t, &u->as, err);
    if (rc) return fb_err_prefix(err, "applying the change chain: ");
    fprintf(stderr, "fusion-backup restore: applied %llu captured transactions, up to " CAP_LSN_FMT " (--until %s)\n",
            (unsigned long long)u->as.applied, CAP_LSN_ARGS(u->as.last_end), u->t.text);
    return FB_OK;
}

static const char cmd_restore_usage[] =
    "usage: fusion-backup restore ARTIFACT --pg CONNINFO [--table NAME ...] [--create] [--truncate]\n"
    "                              [--no-owner] [--no-privileges] [--secret-key FILE] [--chain-dir DIR ...] [--json]\n"
    "       fusion-backup restore BASE_FULL --until TIME|LSN --create --pg NEW_DB --secret-key FILE\n"
    "                              --trusted-signer FILE\n"
    "Restores the artifact's tables (or the --table ones) into the database --pg.\n"
    "Into an existing database everything is loaded in one transaction, committed only when all data\n"
    "read was authenticated; a new database (--create, --pg naming one that does not exist) is built\n"
    "under a temporary name on --jobs N connections and appears only complete, by one rename (a\n"
    "failure leaves no database).\n"
    "With --create --table, or a backup without a schema archive, --jobs N uses N transactions; none\n"
    "commits before all data was read and authenticated, then they commit one after the other and the\n"
    "foreign keys are added last.\n"
    "--until TIME|LSN: point-in-time recovery from a capture base (backup --capture-base): the FULL, then\n"
    "its change chain (beside it, capture/DB/SLOT) applied up to TIME or LSN, each transaction whole, in\n"
    "commit order, into a new database that appears only complete. A target outside the recoverable\n"
    "window (`fusion-backup list` shows it) is refused.\n"
    "An INCREMENTAL/DIFFERENTIAL made of captured changes restores (--create, a new database) as its\n"
    "capture base FULL with the changes of every backup down to it applied up to its end.\n";

/* Step 1: the artifact's path and the options that decide the restore's mode, checked against each other. */
static fb_code cr_parse(const fb_config *cfg, int argc, char **argv, const char **path, const char **until,
                        dump_restore_opts *o, cr_until *u, fb_err *err) {
    size_t n_names = cfg->table.n;
    if (argc > 1) *path = argv[1];
    if (argc > 2) return fb_err_set(err, FB_ERR_USAGE, "unexpected argument \"%s\" (see restore --help)", argv[2]);
    o->create = cfg->create != 0;
    o->truncate = cfg->truncate != 0;
    o->no_owner = cfg->no_owner != 0;
    o->no_privileges = cfg->no_privileges != 0;
    o->jobs = (int)cfg->jobs;
    if (!*path) return fb_err_set(err, FB_ERR_USAGE, "restore needs the artifact's path (see restore --help)");
    if (cfg->until && *cfg->until) *until = cfg->until;
    if (*until && (!o->create || n_names || o->truncate))
        return fb_err_set(err, FB_ERR_USAGE, "--until rebuilds the whole database: it needs --create and a --pg "
                          "database that does not exist yet, and no --table or --truncate");
    fb_code rc = *until ? cr_until_parse(*until, &u->t, err) : FB_OK;
    if (rc) return rc;
    if (o->jobs > 1 && !o->create)
        return fb_err_set(err, FB_ERR_USAGE, "--jobs needs --create (loading existing tables in parallel would break "
                          "their foreign keys' order)");
    if (!o->create && (o->no_owner || o->no_privileges))
        return fb_err_set(err, FB_ERR_USAGE, "--no-owner and --no-privileges go with --create (a data-only restore "
                          "creates no objects)");
    if (o->create && o->truncate)
        return fb_err_set(err, FB_ERR_USAGE, "--create (empty database) and --truncate (existing tables) exclude each "
                          "other");
    return FB_OK;
}

/* The last step: what was restored, as text or one JSON document. */
static void cr_print(const fb_config *cfg, const char *db, const dump_restore_stats *st, double secs,
                     const char *until, const cr_until *u) {
    if (cfg->json) {
        printf("{\"ok\":true,\"database\":");
        fb_json_string(stdout, db);
        printf(",\"tables\":%lld,\"rows\":%lld,\"raw_bytes\":%lld,\"foreign_keys_skipped\":%lld,\"seconds\":%.3f",
               (long long)st->tables, (long long)st->rows, (long long)st->raw_bytes, (long long)st->fks_skipped, secs);
        if (until) {
            printf(",\"until\":");
            fb_json_string(stdout, until);
            printf(",\"transactions_applied\":%llu,\"last_lsn\":\"" CAP_LSN_FMT "\",\"last_commit_us\":%lld,"
                   "\"window\":{\"base_lsn\":\"" CAP_LSN_FMT "\",\"end_lsn\":\"" CAP_LSN_FMT "\",\"base_us\":%lld,"
                   "\"end_us\":%lld,\"tip\":%s,\"chain_end_lsn\":\"" CAP_LSN_FMT "\",\"chain_end_us\":%lld}",
                   (unsigned long long)u->as.applied, CAP_LSN_ARGS(u->as.last_end), (long long)u->as.last_commit_us,
                   CAP_LSN_ARGS(u->w.base_lsn), CAP_LSN_ARGS(u->w.end_lsn), (long long)u->w.base_us,
                   (long long)u->w.end_us, u->w.tip ? "true" : "false", CAP_LSN_ARGS(u->w.chain_end_lsn),
                   (long long)u->w.chain_end_us);
        }
        printf("}\n");
        return;
    }
    printf("restored %lld tables, %lld rows (%lld bytes of COPY text) into \"%s\" in %.2f s\n", (long long)st->tables,
           (long long)st->rows, (long long)st->raw_bytes, db, secs);
    if (st->fks_skipped)
        printf("%lld foreign keys were not created: they reference tables that were not restored\n",
               (long long)st->fks_skipped);
}

int cmd_restore(int argc, char **argv) {
    fb_config cfg;
    fb_err err;
    const char *path = NULL;
    arc_tref *tables = NULL;
    dump_restore_opts o = {0};
    dump_restore_stats st;
    stor_rfile *f = NULL;
    arc_reader *r = NULL;
    PGconn *c = NULL;
    struct timespec t0, t1;
    fb_keyring kr = {0};
    arc_trust trust;
    char new_db[256];
    int help = 0;
    cr_until u = {0};
    const char *until = NULL;
    fb_code rc = cmd_args(&cfg, &argc, argv, FB_CMD_RESTORE, cmd_restore_usage, &help, &err);
    if (help) goto out;
    size_t n_names = cfg.table.n;
    if (!rc && !(tables = calloc(n_names + 1, sizeof *tables))) rc = fb_err_set(&err, FB_ERR_NOMEM, "out of memory");
    if (!rc) rc = cr_parse(&cfg, argc, argv, &path, &until, &o, &u, &err);
    if (!rc) rc = arc_open_trust(&cfg, &kr, &trust, &err);
    if (!rc) rc = arc_open_chain(path, cfg.secret_key, (const char *const *)cfg.chain_dir.v, cfg.chain_dir.n, &trust, &f, &r, &err);
    /* Say what is about to be restored before anything touches the target. */
    if (!rc) arc_open_describe(r, stderr);
    if (!rc && arc_reader_manifest(r)->changes) {
        rc = cr_changes_open(&cfg, path, &trust, &kr, &f, &r, &u, &until, &err);
        if (!rc && (!o.create || n_names || o.truncate))
            rc = fb_err_set(&err, FB_ERR_USAGE, "a backup of captured changes rebuilds the whole database: it needs "
                            "--create and a --pg database that does not exist yet, and no --table or --truncate");
    } else if (!rc && until) {
        rc = cr_until_open(&cfg, path, arc_reader_manifest(r), &kr, &u, &err);
    }
    for (size_t i = 0; !rc && i < n_names; i++) rc = cmd_restore_table(arc_reader_manifest(r), cfg.table.v[i], &tables[i], &err);
    if (!rc) rc = dump_rebuild_connect_target(cfg.pg, o.create, &c, new_db, sizeof new_db, &err);
    if (!rc && until && c)
        rc = fb_err_set(&err, FB_ERR_CONFLICT, "--until builds a new database, and \"%s\" exists: name one that does "
                        "not (it appears only when the FULL and the chain are both applied)", PQdb(c));
    if (!rc) {
        signal(SIGINT, cmd_restore_on_signal);
        signal(SIGTERM, cmd_restore_on_signal);
        o.tables = tables;
        o.n_tables = n_names;
        o.commit = 1;
        o.abort = &cmd_restore_stop;
        o.conninfo = cfg.pg;
        o.pg_restore = cfg.pg_restore;
        o.new_db = c ? NULL : new_db;
        if (until) {
            o.before_rename = cr_until_apply;
            o.before_rename_opaque = &u;
        }
        clock_gettime(CLOCK_MONOTONIC, &t0);
        fb_progress *prog = cmd_progress_reading(&cfg, "restore", arc_reader_manifest(r), tables, n_names, 1);
        rc = dump_restore(r, c, &o, &st, &err);
        fb_progress_done(prog, rc == FB_OK);
        fb_progress_free(prog);
        clock_gettime(CLOCK_MONOTONIC, &t1);
    }
    if (rc) {
        fprintf(stderr, "fusion-backup restore: %s\n", err.msg);
        if (rc != FB_ERR_USAGE)
            fprintf(stderr, "fusion-backup restore: nothing was committed; the target database is unchanged\n");
        if (cfg.json) cmd_json_failure(rc, err.msg);
    } else {
        cr_print(&cfg, c ? PQdb(c) : new_db, &st,
                 (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, until, &u);
    }
out:
    stor_free(u.st);
    cap_incr_scratch_remove(u.tmp);
    sodium_memzero(u.sk, sizeof u.sk);
    if (c) PQfinish(c);
    arc_reader_free(r);
    stor_rfile_close(f);
    fb_keyring_free(&kr);
    free(tables);
    fb_config_free(&cfg);
    return rc;
}
