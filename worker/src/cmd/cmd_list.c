/* cmd_list: `fusion-backup list --storage-root R (--storage-path P ... | --pg CONNINFO) [--json]`.
 *
 * What can be restored, for a DBA at 3 a.m. (pgBackRest's `info`): every backup in the given folders with its
 * configuration, type, chain (base), snapshot and completion time, size, and whether it is restorable, from the
 * chain indexes alone (arc_chain.h): no secret key, no broker. "Restorable" means its index authenticates, names
 * the same job as the file, and every artifact it draws data from (a base's table, a chunk) is in the folder and
 * restorable too; otherwise the line says what is missing.
 * With --pg, each folder's change chains of that database (capture/DBNAME/SLOT, one per slot generation of
 * --capture-slot, cap_rebase.h: a new base after a dropped slot or a migration is a new chain) are shown too:
 * the recoverable window of restore --until, from the chain's base LSN (the base FULL's consistent point, where
 * its first segment starts) to its durable end — the capture's signed tip (capture/cap_tip.h: nothing committed
 * since the last segment, up to a server time) when it counts, else the last segment's end and last commit time —
 * every segment's signature checked and no gap; a broken chain says where, a refused tip why. The base's own moment is in its manifest (restore and verify read it). With --pg, the folders are every configuration's
 * storage_path (BackupConfiguration), and each backup also shows its record's status and last verification
 * (BackupRecord); the database is only read.
 *
 * The index key is the workers' (--index-key, or --public-key when they derive it), as for prune. Who wrote each
 * backup (FORMAT.md "Signatures (format 5)") is checked against --trusted-signer: the line shows the signing key
 * id, "unsigned" (format <= 4) or "untrusted" (unknown key, bad signature, another job's file: then it is not
 * restorable, and neither is what needs it).
 */
#include <inttypes.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "artifact/arc_index.h"
#include "capture/cap_apply.h"
#include "capture/cap_base.h"
#include "capture/cap_rebase.h"
#include "cmd/cmd.h"
#include "cmd/cmd_keys.h"
#include "common/fb_config.h"
#include "common/fb_json.h"
#include "common/fb_time.h"
#include "artifact/arc_chain.h"
#include "pg/pgx.h"
#include "storage/stor.h"

#define CL_MAX_PATHS 256

/* What the database says about one job (with --pg). */
typedef struct cl_record {
    char status[17], verify[17], verified_at[40];
} cl_record;

typedef struct cl_out {
    int json, first;
} cl_out;

static void cl_time(int64_t ms, char *out, size_t cap) {
    if (ms <= 0) {
        snprintf(out, cap, "-");
        return;
    }
    fb_time_format_utc(ms, out, cap);
}

/* Why entry e cannot be restored ("" when it can): its own problem, or the first artifact it needs that is
 * missing or unusable. depth bounds a (corrupt) cyclic chain. */
static void cl_restorable(const arc_chain *ch, const arc_chain_entry *e, int depth, char *why, size_t cap) {
    why[0] = '\0';
    if (e->problem[0]) {
        snprintf(why, cap, "%s", e->problem);
        return;
    }
    if (e->sig.state == ARC_SIG_UNTRUSTED) {
        snprintf(why, cap, "untrusted: %s", e->untrusted_why[0] ? e->untrusted_why : "not signed by a trusted key");
        return;
    }
    if (!e->ix) return; /* a format-1 FULL: self-contained */
    if (depth > 64) {
        snprintf(why, cap, "its chain is longer than 64 links or loops");
        return;
    }
    for (size_t t = 0; t < e->ix->n_tables && !why[0]; t++) {
        const arc_index_table *it = &e->ix->tables[t];
        /* k == 0: where the table's data is; k >= 1: where each of its chunks is. */
        for (size_t k = 0; k <= it->n_deps && !why[0]; k++) {
            const char *dep = k == 0 ? it->stored_in : it->deps[k - 1];
            if (!dep || strcmp(dep, e->job_id) == 0) continue;
            const arc_chain_entry *d = arc_chain_find(ch, dep);
            if (!d) {
                snprintf(why, cap, "needs backup %s (table %s.%s), which is not in this folder", dep, it->schema,
                         it->name);
                return;
            }
            char inner[400];
            cl_restorable(ch, d, depth + 1, inner, sizeof inner);
            if (inner[0]) snprintf(why, cap, "needs backup %s, which is not restorable: %s", dep, inner);
        }
    }
}

static fb_code cl_record_of(PGconn *c, const char *job_id, cl_record *r, fb_err *err) {
    memset(r, 0, sizeof *r);
    if (!c) return FB_OK;
    const char *p[1] = {job_id};
    PGresult *res = PQexecParams(c,
                                 "SELECT status, verify_status, coalesce(to_char(last_verified_at AT TIME ZONE 'UTC', "
                                 "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '') FROM backup_archive_backuprecord "
                                 "WHERE job_id::text = $1",
                                 1, NULL, p, NULL, NULL, 0);
    fb_code rc = pgx_check(c, res, PGRES_TUPLES_OK, "reading the backup records", err);
    if (rc) return rc;
    if (PQntuples(res) == 1) {
        snprintf(r->status, sizeof r->status, "%s", PQgetvalue(res, 0, 0));
        snprintf(r->verify, sizeof r->verify, "%s", PQgetvalue(res, 0, 1));
        snprintf(r->verified_at, sizeof r->verified_at, "%s", PQgetvalue(res, 0, 2));
    }
    PQclear(res);
    return FB_OK;
}

static void cl_json_str_field(const char *key, const char *v, int comma) {
    printf("%s\"%s\":", comma ? "," : "", key);
    if (v && *v) fb_json_string(stdout, v);
    else printf("null");
}

/* "KEYID" (and "KEYID index KEYID2" when rekey re-signed the index), "unsigned" or "untrusted". */
static void cl_signer(const arc_chain_entry *e, char *out, size_t cap) {
    if (e->sig.state == ARC_SIG_UNSIGNED) snprintf(out, cap, "unsigned");
    else if (e->sig.state == ARC_SIG_UNTRUSTED) snprintf(out, cap, "untrusted");
    else if (strcmp(e->sig.manifest_key, e->sig.index_key) != 0)
        snprintf(out, cap, "%s index %s", e->sig.manifest_key, e->sig.index_key);
    else snprintf(out, cap, "%s", e->sig.manifest_key);
}

static void cl_print(cl_out *o, const char *folder, const arc_chain_entry *e, const char *why, const cl_record *rec,
                     int with_db) {
    char snap[32], done[32], signer[64];
    cl_signer(e, signer, sizeof signer);
    const char *type = arc_chain_type(e);
    cl_time(e->ix ? e->ix->snapshot_ms : 0, snap, sizeof snap);
    cl_time(arc_chain_time(e), done, sizeof done);
    if (o->json) {
        printf("%s{", o->first ? "" : ",\n");
        o->first = 0;
        cl_json_str_field("folder", folder, 0);
        cl_json_str_field("job_id", e->job_id, 1);
        if (e->ix) printf(",\"config_id\":%" PRId64, e->ix->config_id);
        else printf(",\"config_id\":null");
        cl_json_str_field("type", type, 1);
        cl_json_str_field("base_job", e->ix ? e->ix->base_job : NULL, 1);
        cl_json_str_field("snapshot", e->ix ? snap : NULL, 1);
        cl_json_str_field("completed", done, 1);
        printf(",\"size\":%" PRIu64 ",\"format\":%d,\"restorable\":%s", e->artifact_size, e->artifact_version,
               why[0] ? "false" : "true");
        cl_json_str_field("problem", why, 1);
        cl_json_str_field("signed_by", signer, 1);
        if (e->ix && e->ix->cap_stream) { /* on a change chain (arc_index.h): its stream, base FULL and range */
            char a[40], b[40];
            snprintf(a, sizeof a, CAP_LSN_FMT, CAP_LSN_ARGS(e->ix->cap_start));
            snprintf(b, sizeof b, CAP_LSN_FMT, CAP_LSN_ARGS(e->ix->cap_end));
            cl_json_str_field("capture_stream", e->ix->cap_stream, 1);
            cl_json_str_field("capture_full_job", e->ix->cap_full, 1);
            cl_json_str_field("capture_start_lsn", a, 1);
            cl_json_str_field("capture_end_lsn", b, 1);
        }
        if (with_db) {
            cl_json_str_field("record_status", rec->status, 1);
            cl_json_str_field("verify_status", rec->verify, 1);
            cl_json_str_field("verified_at", rec->verified_at, 1);
        }
        printf("}");
        return;
    }
    printf("%-36s %-12s %-20s %12" PRIu64 "  %-36s %s", e->job_id, type ? type : "?", snap, e->artifact_size, e->ix && e->ix->base_job ? e->ix->base_job : "-",
           why[0] ? "NOT RESTORABLE" : "restorable");
    printf("  signed-by %s", signer);
    if (with_db)
        printf("  record %s, verified %s%s%s", rec->status[0] ? rec->status : "(none)",
               rec->verify[0] ? rec->verify : "never", rec->verified_at[0] ? " at " : "", rec->verified_at);
    if (why[0]) printf("\n    why: %s", why);
    if (e->ix && e->ix->cap_stream && strcmp(e->ix->type, "FULL") != 0)
        printf("\n    captured changes of %s " CAP_LSN_FMT ".." CAP_LSN_FMT " on capture base %s (no table read)",
               e->ix->cap_stream, CAP_LSN_ARGS(e->ix->cap_start), CAP_LSN_ARGS(e->ix->cap_end), e->ix->cap_full);
    printf("\n");
}

/* Sorts entries by completion time, oldest first (the order a DBA reads a chain in). */
static int cl_cmp(const void *a, const void *b) {
    int64_t x = arc_chain_time(a), y = arc_chain_time(b);
    return x < y ? -1 : x > y;
}

static fb_code cl_folder(stor *st, const char *folder, const unsigned char key[ARC_INDEX_KEY_BYTES],
                         const fb_keyring *signers, PGconn *db, cl_out *o, int64_t *n_listed, fb_err *err) {
    arc_chain ch;
    fb_code rc = arc_chain_load(st, folder, key, signers, &ch, err);
    if (rc) return rc;
    qsort(ch.e, ch.n, sizeof *ch.e, cl_cmp);
    if (!o->json && ch.n)
        printf("%s (%zu backup%s)\n%-36s %-12s %-20s %12s  %-36s %s\n", folder, ch.n, ch.n == 1 ? "" : "s", "job",
               "type", "snapshot (UTC)", "bytes", "base", "state");
    for (size_t i = 0; i < ch.n && !rc; i++) {
        char why[600];
        cl_record rec;
        cl_restorable(&ch, &ch.e[i], 0, why, sizeof why);
        rc = cl_record_of(db, ch.e[i].job_id, &rec, err);
        if (!rc) cl_print(o, folder, &ch.e[i], why, &rec, db != NULL);
        (*n_listed)++;
    }
    arc_chain_clear(&ch);
    return rc;
}

/* The recoverable window of folder's change chain of slot on the --pg database, when it has one (*had 1; see the
 * file comment). */
static fb_code cl_capture_chain(stor *st, const char *folder, const fb_config *cfg, const char *slot,
                                const fb_keyring *signers, cl_out *o, int *had, fb_err *err) {
    char stream[CAP_SEG_STREAM_MAX + 1], dir[CAP_BASE_DIR_MAX], problem[600] = "", end_t[40] = "-";
    uint64_t base = 0;
    *had = 0;
    fb_code rc = cap_base_names(cfg->pg, slot, folder, stream, dir, err);
    if (!rc) rc = cap_base_chain_first(st, dir, &base, err);
    if (rc || base == 0) return rc == FB_ERR_NOTFOUND ? FB_OK : rc;
    *had = 1;
    cap_seg_in in = {.stream = stream, .signers = signers};
    cap_window w;
    fb_err why;
    char last_t[40] = "-";
    if (cap_apply_window(st, dir, &in, base, 0, &w, &why) != FB_OK) snprintf(problem, sizeof problem, "%s", why.msg);
    else {
        fb_time_format_iso(w.end_us / 1000, end_t, sizeof end_t);
        fb_time_format_iso(w.chain_end_us / 1000, last_t, sizeof last_t);
    }
    if (o->json) {
        printf("%s{", o->first ? "" : ",\n");
        o->first = 0;
        cl_json_str_field("folder", folder, 0);
        cl_json_str_field("capture_chain", stream, 1);
        printf(",\"base_lsn\":\"" CAP_LSN_FMT "\"", CAP_LSN_ARGS(base));
        if (problem[0])
            printf(",\"end_lsn\":null,\"window_end\":null,\"tip\":false,\"chain_end_lsn\":null,\"last_commit\":null,"
                   "\"segments\":null,\"transactions\":null");
        else
            printf(",\"end_lsn\":\"" CAP_LSN_FMT "\",\"window_end\":\"%s\",\"tip\":%s,\"chain_end_lsn\":\"" CAP_LSN_FMT
                   "\",\"last_commit\":\"%s\",\"segments\":%llu,\"transactions\":%llu", CAP_LSN_ARGS(w.end_lsn), end_t,
                   w.tip ? "true" : "false", CAP_LSN_ARGS(w.chain_end_lsn), last_t, (unsigned long long)w.segments,
                   (unsigned long long)w.transactions);
        printf(",\"restorable\":%s", problem[0] ? "false" : "true");
        cl_json_str_field("problem", problem, 1);
        cl_json_str_field("tip_problem", problem[0] ? "" : w.tip_problem, 1);
        printf("}");
    } else if (problem[0]) {
        printf("capture chain %s in %s: NOT RESTORABLE past its break\n    why: %s\n", stream, folder, problem);
    } else {
        printf("capture chain %s in %s: restore --until from " CAP_LSN_FMT " (its base FULL's snapshot) to " CAP_LSN_FMT
               " (%s, %s; last durable commit %s at " CAP_LSN_FMT "); %llu segments, %llu transactions, no gap, "
               "signatures checked\n", stream, folder, CAP_LSN_ARGS(base), CAP_LSN_ARGS(w.end_lsn), end_t,
               w.tip ? "the capture's signed tip" : "no tip", last_t, CAP_LSN_ARGS(w.chain_end_lsn),
               (unsigned long long)w.segments, (unsigned long long)w.transactions);
        if (w.tip_problem[0]) printf("    tip: %s\n", w.tip_problem);
    }
    return FB_OK;
}

/* Every generation's chain, oldest first, until CL_GEN_GAP generations in a row hold no segment (a generation
 * whose base failed before its capture began holds none; the next base may then have taken the one after). */
#define CL_GEN_GAP 3
static fb_code cl_capture(stor *st, const char *folder, const fb_config *cfg, const fb_keyring *signers, cl_out *o,
                          fb_err *err) {
    unsigned empty = 0;
    for (unsigned g = 1; g <= CAP_REBASE_GEN_MAX && empty < CL_GEN_GAP; g++) {
        char slot[CAP_NAME_MAX + 1];
        int had = 0;
        fb_code rc = cap_rebase_slot_name(cfg->capture_slot, g, slot, err);
        if (rc) return g == 1 ? rc : FB_OK; /* no longer name fits: no further generation can exist */
        rc = cl_capture_chain(st, folder, cfg, slot, signers, o, &had, err);
        if (rc) return g > 1 && rc == FB_ERR_USAGE ? FB_OK : rc; /* a stream id too long: the same */
        empty = had ? 0 : empty + 1;
    }
    return FB_OK;
}

static const char cl_usage[] =
    "usage: fusion-backup list --storage-root R (--storage-path P ... | --pg CONNINFO) [--json]\n"
    "                          [--index-key FILE | --public-key FILE]\n"
    "  every backup in R/P (or, with --pg, in every configuration's storage_path): type, chain, snapshot,\n"
    "  size, restorable or why not; with --pg also the record's status and last verification, and the\n"
    "  recoverable window of the database's change chain (capture/DBNAME/SLOT, --capture-slot) per folder.\n"
    "  Needs no secret key and no broker: it reads the chain indexes (the workers' index key).\n";

int cmd_list(int argc, char **argv) {
    fb_config cfg;
    fb_err err;
    const char *paths[CL_MAX_PATHS];
    char *owned[CL_MAX_PATHS];
    size_t n_paths = 0, n_owned = 0;
    unsigned char key[ARC_INDEX_KEY_BYTES];
    cl_out o = {0, 1};
    stor *st = NULL;
    PGconn *db = NULL;
    int64_t listed = 0;
    fb_keyring kr = {0};
    int help = 0;
    fb_code rc = cmd_args(&cfg, &argc, argv, FB_CMD_LIST, cl_usage, &help, &err);
    if (help) {
        fb_config_free(&cfg);
        return FB_OK;
    }
    o.json = cfg.json != 0;
    if (!rc && argc > 1) rc = fb_err_set(&err, FB_ERR_USAGE, "unexpected argument \"%s\" (see list --help)", argv[1]);
    if (!rc && cfg.storage_path.n > CL_MAX_PATHS)
        rc = fb_err_set(&err, FB_ERR_USAGE, "at most %d --storage-path", CL_MAX_PATHS);
    for (size_t i = 0; !rc && i < cfg.storage_path.n; i++) paths[n_paths++] = cfg.storage_path.v[i];
    if (!rc && (!cfg.storage_root || !*cfg.storage_root))
        rc = fb_err_set(&err, FB_ERR_USAGE, "list needs --storage-root R (the folder the workers write under)");
    if (!rc && n_paths == 0 && (!cfg.pg || !*cfg.pg))
        rc = fb_err_set(&err, FB_ERR_USAGE, "list needs --storage-path P (repeatable), or --pg CONNINFO to list every "
                        "configuration's folder");
    if (!rc) rc = cmd_index_key(&cfg, "list", key, &err);
    if (!rc) rc = fb_keyring_load(&kr, cfg.trusted_signers, "--trusted-signer", &err);
    if (!rc && cfg.pg && *cfg.pg) {
        if (!(db = pgx_connect(cfg.pg, "fusion-backup list", &err))) rc = err.code;
        if (!rc && n_paths == 0) {
            PGresult *r = PQexec(db, "SELECT DISTINCT storage_path FROM backup_archive_backupconfiguration "
                                     "WHERE storage_path <> '' ORDER BY 1");
            rc = pgx_check(db, r, PGRES_TUPLES_OK, "reading the configurations' storage paths", &err);
            for (int i = 0; !rc && i < PQntuples(r) && n_owned < CL_MAX_PATHS; i++)
                if ((owned[n_owned] = strdup(PQgetvalue(r, i, 0)))) paths[n_paths++] = owned[n_owned++];
            if (!rc) PQclear(r);
        }
    }
    if (!rc) rc = stor_open_location(cfg.storage_root, &cfg, &st, &err);
    if (!rc && o.json) printf("[");
    for (size_t i = 0; !rc && i < n_paths; i++) {
        rc = cl_folder(st, paths[i], key, &kr, db, &o, &listed, &err);
        if (!rc && db) rc = cl_capture(st, paths[i], &cfg, &kr, &o, &err);
    }
    if (o.json && st) printf("%s]\n", o.first ? "" : "\n");
    else if (!rc) printf("%lld backup(s) in %zu folder(s) under %s\n", (long long)listed, n_paths, cfg.storage_root);
    if (rc) fprintf(stderr, "fusion-backup list: %s\n", err.msg);
    for (size_t i = 0; i < n_owned; i++) free(owned[i]);
    if (db) PQfinish(db);
    stor_free(st);
    sodium_memzero(key, sizeof key);
    fb_keyring_free(&kr);
    fb_config_free(&cfg);
    return rc;
}
