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

int cmd_restore(int argc, char **argv) {
    static const char *const extra[] = {"table", "create", "truncate", "jobs", "chain-dir", "no-owner", "no-privileges",
                                        "help", NULL};
    fb_config cfg;
    fb_err err;
    const char *path = NULL;
    const char **names = calloc((size_t)argc + 1, sizeof *names);
    arc_tref *tables = calloc((size_t)argc + 1, sizeof *tables);
    const char **chain = calloc((size_t)argc + 1, sizeof *chain);
    size_t n_names = 0, n_chain = 0;
    dump_restore_opts o = {0};
    dump_restore_stats st;
    stor_rfile *f = NULL;
    arc_reader *r = NULL;
    PGconn *c = NULL;
    struct timespec t0, t1;
    fb_keyring kr = {0};
    arc_trust trust;
    char new_db[256];
    fb_code rc = fb_config_init(&cfg, &err);
    if (!names || !tables || !chain) rc = fb_err_set(&err, FB_ERR_NOMEM, "out of memory");
    if (!rc) rc = fb_config_parse_args(&cfg, &argc, argv, FB_CFG_CLI, extra, &err);
    for (int i = 1; !rc && i < argc; i++) {
        if (strcmp(argv[i], "--table") == 0 && i + 1 < argc) names[n_names++] = argv[++i];
        else if (strncmp(argv[i], "--table=", 8) == 0) names[n_names++] = argv[i] + 8;
        else if (strcmp(argv[i], "--chain-dir") == 0 && i + 1 < argc) chain[n_chain++] = argv[++i];
        else if (strncmp(argv[i], "--chain-dir=", 12) == 0) chain[n_chain++] = argv[i] + 12;
        else if (strcmp(argv[i], "--create") == 0) o.create = 1;
        else if (strcmp(argv[i], "--no-owner") == 0) o.no_owner = 1;
        else if (strcmp(argv[i], "--no-privileges") == 0) o.no_privileges = 1;
        else if ((strcmp(argv[i], "--jobs") == 0 && i + 1 < argc) || strncmp(argv[i], "--jobs=", 7) == 0) {
            const char *v = argv[i][6] == '=' ? argv[i] + 7 : argv[++i];
            char *end = NULL;
            long j = strtol(v, &end, 10);
            if (!*v || *end || j < 1 || j > 16) rc = fb_err_set(&err, FB_ERR_USAGE, "--jobs takes 1..16, got \"%s\"", v);
            o.jobs = (int)j;
        }
        else if (strcmp(argv[i], "--truncate") == 0) o.truncate = 1;
        else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: fusion-backup restore ARTIFACT --pg CONNINFO [--table NAME ...] [--create] [--truncate]\n"
                   "                              [--no-owner] [--no-privileges] [--secret-key FILE] [--chain-dir DIR ...]\n"
                   "  --table NAME  restore only this table (NAME in schema public, or SCHEMA.NAME); repeatable\n"
                   "  --create      an empty database: the whole database (every object: types, functions, views,\n"
                   "                triggers, policies, grants, large objects, ...) from the backup's schema archive,\n"
                   "                with pg_restore's sections (--pg-restore PROGRAM); with --table, or a backup\n"
                   "                older than format 4: only the tables, their sequences, indexes and keys\n"
                   "  --no-owner    with --create: objects belong to the restoring role (pg_restore --no-owner);\n"
                   "                default: the owners of the backup (the roles must exist)\n"
                   "  --no-privileges  with --create: no GRANT/REVOKE (pg_restore --no-privileges)\n"
                   "  --truncate    replace the rows of non-empty target tables (default: refuse)\n"
                   "  --jobs N      with --create of a database that does not exist yet: built under a temporary name\n"
                   "                on N connections and renamed when complete (a failure leaves no database); with\n"
                   "                --create --table, or a backup without a schema archive: load and index on N\n"
                   "                connections (like pg_restore -j); into an existing database: one transaction\n"
                   "  --chain-dir DIR  where else the backups an incremental/differential builds on may be (after\n"
                   "                the artifact's own folder); repeatable\n"
                   "Into an existing database everything is loaded in one transaction, committed only when all data\n"
                   "read was authenticated; a new database (--create, --pg naming one that does not exist) appears\n"
                   "only complete, by one rename.\n"
                   "With --jobs N (when used) there are N transactions; none commits before all data was read and\n"
                   "authenticated, then they commit one after the other and the foreign keys are added last.\n");
            goto out;
        } else if (!path && argv[i][0] != '-') path = argv[i];
        else rc = fb_err_set(&err, FB_ERR_USAGE, "unexpected argument \"%s\" (see restore --help)", argv[i]);
    }
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
    if (!rc) rc = dump_open_chain(path, cfg.secret_key, chain, n_chain, &trust, &f, &r, &err);
    /* Say what is about to be restored before anything touches the target. */
    if (!rc) dump_open_describe(r, stderr);
    for (size_t i = 0; !rc && i < n_names; i++) rc = cmd_restore_table(arc_reader_manifest(r), names[i], &tables[i], &err);
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
    free(names);
    free(tables);
    free(chain);
    fb_config_free(&cfg);
    return rc;
}
