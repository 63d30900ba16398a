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
 * references are looked for in its own folder, then in each --chain-dir DIR (dump_open.h).
 * Exit status is the fb_code: 7 tampered/truncated/wrong key, 13 target not empty, 9 unknown table or missing
 * chain link, 14 a chain link holding other data than recorded.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd/cmd.h"
#include "cmd/cmd_progress.h"
#include "common/fb_config.h"
#include "common/fb_json.h"
#include "dump/dump_open.h"
#include "dump/dump_rebuild.h"
#include "dump/dump_restore.h"
#include "pg/pgx.h"

static volatile sig_atomic_t cmd_restore_stop;
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

static const char cmd_restore_usage[] =
    "usage: fusion-backup restore ARTIFACT --pg CONNINFO [--table NAME ...] [--create] [--truncate]\n"
    "                              [--no-owner] [--no-privileges] [--secret-key FILE] [--chain-dir DIR ...] [--json]\n"
    "Restores the artifact's tables (or the --table ones) into the database --pg.\n"
    "Into an existing database everything is loaded in one transaction, committed only when all data\n"
    "read was authenticated; a new database (--create, --pg naming one that does not exist) is built\n"
    "under a temporary name on --jobs N connections and appears only complete, by one rename (a\n"
    "failure leaves no database).\n"
    "With --create --table, or a backup without a schema archive, --jobs N uses N transactions; none\n"
    "commits before all data was read and authenticated, then they commit one after the other and the\n"
    "foreign keys are added last.\n";

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
    fb_code rc = cmd_args(&cfg, &argc, argv, FB_CMD_RESTORE, cmd_restore_usage, &help, &err);
    if (help) goto out;
    size_t n_names = cfg.table.n;
    if (!rc && !(tables = calloc(n_names + 1, sizeof *tables))) rc = fb_err_set(&err, FB_ERR_NOMEM, "out of memory");
    if (!rc && argc > 1) path = argv[1];
    if (!rc && argc > 2) rc = fb_err_set(&err, FB_ERR_USAGE, "unexpected argument \"%s\" (see restore --help)", argv[2]);
    o.create = cfg.create != 0;
    o.truncate = cfg.truncate != 0;
    o.no_owner = cfg.no_owner != 0;
    o.no_privileges = cfg.no_privileges != 0;
    o.jobs = (int)cfg.jobs;
    if (!rc && !path) rc = fb_err_set(&err, FB_ERR_USAGE, "restore needs the artifact's path (see restore --help)");
    if (!rc && o.jobs > 1 && !o.create)
        rc = fb_err_set(&err, FB_ERR_USAGE, "--jobs needs --create (loading existing tables in parallel would break "
                        "their foreign keys' order)");
    if (!rc && !o.create && (o.no_owner || o.no_privileges))
        rc = fb_err_set(&err, FB_ERR_USAGE, "--no-owner and --no-privileges go with --create (a data-only restore "
                        "creates no objects)");
    if (!rc && o.create && o.truncate)
        rc = fb_err_set(&err, FB_ERR_USAGE, "--create (empty database) and --truncate (existing tables) exclude each other");
    if (!rc) rc = dump_open_trust(&cfg, &kr, &trust, &err);
    if (!rc) rc = dump_open_chain(path, cfg.secret_key, (const char *const *)cfg.chain_dir.v, cfg.chain_dir.n, &trust, &f, &r, &err);
    /* Say what is about to be restored before anything touches the target. */
    if (!rc) dump_open_describe(r, stderr);
    for (size_t i = 0; !rc && i < n_names; i++) rc = cmd_restore_table(arc_reader_manifest(r), cfg.table.v[i], &tables[i], &err);
    if (!rc) rc = dump_rebuild_connect_target(cfg.pg, o.create, &c, new_db, sizeof new_db, &err);
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
    } else if (cfg.json) {
        printf("{\"ok\":true,\"database\":");
        fb_json_string(stdout, c ? PQdb(c) : new_db);
        printf(",\"tables\":%lld,\"rows\":%lld,\"raw_bytes\":%lld,\"foreign_keys_skipped\":%lld,\"seconds\":%.3f}\n",
               (long long)st.tables, (long long)st.rows, (long long)st.raw_bytes, (long long)st.fks_skipped,
               (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    } else {
        printf("restored %lld tables, %lld rows (%lld bytes of COPY text) into \"%s\" in %.2f s\n",
               (long long)st.tables, (long long)st.rows, (long long)st.raw_bytes, c ? PQdb(c) : new_db,
               (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
        if (st.fks_skipped)
            printf("%lld foreign keys were not created: they reference tables that were not restored\n",
                   (long long)st.fks_skipped);
    }
out:
    if (c) PQfinish(c);
    arc_reader_free(r);
    stor_rfile_close(f);
    fb_keyring_free(&kr);
    free(tables);
    fb_config_free(&cfg);
    return rc;
}
