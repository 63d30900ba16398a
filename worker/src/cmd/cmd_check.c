/* cmd_check: `fusion-backup check [--json]`: a preflight of everything a worker or a restore needs, each said ok or
 * what to fix, before a risky migration or after an installation.
 *
 * Checks, each independent (one failing does not hide the others), each only for what is configured:
 *   settings  the settings parsed (flags, environment, config file);
 *   database  --pg connects; the backup_archive tables and their migration-0003 columns exist; the role is not a
 *             superuser (least privilege: deploy/sql/roles.sql) and can read the policies;
 *   broker    --brokers answers metadata; the four topics exist under --topic-prefix;
 *   storage   --storage-root is a folder where a file can be created, synced and removed; free space;
 *   keys      --public-key loads; --secret-key loads, is not readable by others, and matches the public key;
 *             --index-key loads;
 *   signing   --sign-key loads (an Ed25519 seed file, mode 0600) and which of the lists below trusts it;
 *             --trusted-signer and --trusted-requester load, with their key ids.
 * Exit code: 0 when every check that ran passed, otherwise the code of the first failure. Nothing is changed
 * except a temporary file in the storage root, removed at once.
 */
#include <fcntl.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "artifact/arc_index.h"
#include "artifact/arc_key.h"
#include "cmd/cmd.h"
#include "common/fb_config.h"
#include "common/fb_json.h"
#include "common/fb_sign.h"
#include "kafka/kfk.h"
#include "pg/pgx.h"
#include "storage/stor.h"

typedef struct ck_run {
    int json, n_done, n_failed;
    fb_code first_rc;
} ck_run;

/* Reports one check: ok (what was found) or failed (what is wrong and what to do). */
static void ck_say(ck_run *run, const char *name, fb_code rc, const char *detail) {
    if (rc) {
        run->n_failed++;
        if (!run->first_rc) run->first_rc = rc;
    }
    if (run->json) {
        printf("%s{\"check\":", run->n_done ? ",\n" : "");
        fb_json_string(stdout, name);
        printf(",\"ok\":%s,\"detail\":", rc ? "false" : "true");
        fb_json_string(stdout, detail);
        printf("}");
    } else {
        printf("%-4s %-9s %s\n", rc ? "FAIL" : "ok", name, detail);
    }
    run->n_done++;
}

static void ck_database(ck_run *run, const fb_config *cfg) {
    fb_err err;
    char msg[1200];
    if (!cfg->pg || !*cfg->pg) {
        ck_say(run, "database", FB_OK, "not configured (--pg): skipped");
        return;
    }
    PGconn *c = pgx_connect(cfg->pg, "fusion-backup check", &err);
    if (!c) {
        ck_say(run, "database", err.code, err.msg);
        return;
    }
    /* The columns the authority checks read (migration 0003): their absence means the app is not migrated. */
    PGresult *r = PQexec(c,
                         "SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
                         "current_setting('server_version'), "
                         "(SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public' AND "
                         "((table_name = 'backup_archive_archivepolicy' AND column_name IN "
                         "('db_schema','db_table','pk_column')) OR (table_name = 'backup_archive_backuprecord' AND "
                         "column_name IN ('tables','verify_job_id')))), "
                         "has_table_privilege('public.backup_archive_archivepolicy', 'SELECT') "
                         "  AND has_table_privilege('public.backup_archive_backuprecord', 'UPDATE')");
    fb_code rc = pgx_check(c, r, PGRES_TUPLES_OK, "reading the role and the app's tables", &err);
    if (rc) {
        snprintf(msg, sizeof msg, "%s (are the backup_archive migrations applied? manage.py migrate backup_archive)",
                 err.msg);
        ck_say(run, "database", rc, msg);
    } else {
        int super = strcmp(PQgetvalue(r, 0, 1), "t") == 0, cols = atoi(PQgetvalue(r, 0, 3));
        int privs = strcmp(PQgetvalue(r, 0, 4), "t") == 0;
        if (cols != 5)
            ck_say(run, "database", FB_ERR_NOTFOUND,
                   "the backup_archive tables lack migration 0003's columns: run manage.py migrate backup_archive");
        else if (!privs) {
            snprintf(msg, sizeof msg, "role %s cannot read the policies or update the records: apply "
                     "deploy/sql/roles.sql for it", PQgetvalue(r, 0, 0));
            ck_say(run, "database", FB_ERR_PG, msg);
        } else {
            snprintf(msg, sizeof msg, "PostgreSQL %s as %s%s", PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 0),
                     super ? " (a SUPERUSER: workers should use the least-privilege role of deploy/sql/roles.sql)"
                           : ", not a superuser");
            ck_say(run, "database", FB_OK, msg);
        }
        PQclear(r);
    }
    PQfinish(c);
}

static void ck_broker(ck_run *run, const fb_config *cfg) {
    fb_err err;
    char msg[1500];
    rd_kafka_t *rk = kfk_producer_new(cfg, &err);
    if (!rk) {
        ck_say(run, "broker", err.code, err.msg);
        return;
    }
    fb_code rc = kfk_wait_ready(rk, 10000, &err);
    if (rc) {
        snprintf(msg, sizeof msg, "%s (brokers %s)", err.msg, cfg->brokers);
        ck_say(run, "broker", rc, msg);
        kfk_producer_free(rk);
        return;
    }
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, 10000);
    if (e) {
        snprintf(msg, sizeof msg, "listing topics failed: %s", rd_kafka_err2str(e));
        ck_say(run, "broker", FB_ERR_KAFKA, msg);
        kfk_producer_free(rk);
        return;
    }
    size_t len = (size_t)snprintf(msg, sizeof msg, "brokers %s:", cfg->brokers);
    int missing = 0;
    for (int i = 0; i < FB_N_TOPICS; i++) {
        char name[300];
        fb_config_topic(cfg, (fb_topic)i, name, sizeof name);
        int parts = -1;
        for (int t = 0; t < md->topic_cnt; t++)
            if (strcmp(md->topics[t].topic, name) == 0 && !md->topics[t].err) parts = md->topics[t].partition_cnt;
        if (parts < 0) missing++;
        if (len >= sizeof msg) continue;
        if (parts < 0) len += (size_t)snprintf(msg + len, sizeof msg - len, " %s MISSING", name);
        else len += (size_t)snprintf(msg + len, sizeof msg - len, " %s ok (%d partitions)", name, parts);
        if (i < FB_N_TOPICS - 1 && len < sizeof msg) len += (size_t)snprintf(msg + len, sizeof msg - len, ",");
    }
    rd_kafka_metadata_destroy(md);
    if (missing && len < sizeof msg)
        snprintf(msg + len, sizeof msg - len, "; create them with `fusion-backup topics create`");
    ck_say(run, "broker", missing ? FB_ERR_NOTFOUND : FB_OK, msg);
    kfk_producer_free(rk);
}

/* An object store root: a probe object written, read back and removed through the driver (the worker's own path:
 * endpoint, credentials, bucket and permissions each fail with a message that says which). */
static void ck_storage_url(ck_run *run, const fb_config *cfg) {
    char msg[FB_ERR_MSG_MAX + 64], rel[64], back[8] = "";
    fb_err err;
    stor *st = NULL;
    stor_wfile *wf = NULL;
    stor_rfile *rf = NULL;
    snprintf(rel, sizeof rel, ".fusion-backup-check.%d", (int)getpid());
    fb_code rc = stor_open_location(cfg->storage_root, cfg, &st, &err);
    if (!rc) rc = stor_create(st, rel, &wf, &err);
    if (!rc && (rc = stor_wfile_write(wf, "check\n", 6, &err))) stor_wfile_abort(wf);
    if (!rc) rc = stor_wfile_commit(wf, &err);
    if (!rc) rc = stor_open(st, rel, &rf, &err);
    if (!rc) rc = stor_rfile_pread(rf, back, 6, 0, &err);
    if (!rc && memcmp(back, "check\n", 6) != 0) rc = fb_err_set(&err, FB_ERR_IO, "the probe object reads back different bytes");
    stor_rfile_close(rf);
    if (st) {
        fb_err e2;
        fb_code r2 = stor_remove(st, rel, &e2);
        if (!rc && r2) {
            rc = r2;
            err = e2;
        }
    }
    stor_free(st);
    if (rc) snprintf(msg, sizeof msg, "%s", err.msg);
    else snprintf(msg, sizeof msg, "%s writable (a probe object written, read back and removed)", cfg->storage_root);
    ck_say(run, "storage", rc, msg);
}

static void ck_storage(ck_run *run, const fb_config *cfg) {
    char msg[1200], tmp[4200];
    if (!cfg->storage_root || !*cfg->storage_root) {
        ck_say(run, "storage", FB_OK, "not configured (--storage-root): skipped");
        return;
    }
    if (stor_is_url(cfg->storage_root)) {
        ck_storage_url(run, cfg);
        return;
    }
    struct stat st;
    if (stat(cfg->storage_root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(msg, sizeof msg, "%s is not a folder: create it (owned by the worker's user, mode 0750)",
                 cfg->storage_root);
        ck_say(run, "storage", FB_ERR_IO, msg);
        return;
    }
    snprintf(tmp, sizeof tmp, "%s/.fusion-backup-check.%d", cfg->storage_root, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    int ok = fd >= 0 && write(fd, "check\n", 6) == 6 && fsync(fd) == 0;
    if (fd >= 0) close(fd);
    unlink(tmp);
    if (!ok) {
        snprintf(msg, sizeof msg, "cannot create and sync a file in %s: check its owner and mode", cfg->storage_root);
        ck_say(run, "storage", FB_ERR_IO, msg);
        return;
    }
    struct statvfs vfs;
    double free_gb = statvfs(cfg->storage_root, &vfs) == 0 ? (double)vfs.f_bavail * vfs.f_frsize / 1e9 : -1;
    snprintf(msg, sizeof msg, "%s writable, %.1f GB free", cfg->storage_root, free_gb);
    ck_say(run, "storage", FB_OK, msg);
}

static void ck_keys(ck_run *run, const fb_config *cfg) {
    fb_err err;
    char msg[1200];
    unsigned char pk[ARC_PK_BYTES], pk2[ARC_PK_BYTES], sk[ARC_SK_BYTES], ik[ARC_INDEX_KEY_BYTES];
    int have_pk = cfg->public_key && *cfg->public_key, have_sk = cfg->secret_key && *cfg->secret_key;
    if (!have_pk && !have_sk) {
        ck_say(run, "keys", FB_OK, "no --public-key or --secret-key configured: skipped");
        return;
    }
    if (have_pk && arc_key_load_public(cfg->public_key, pk, &err)) {
        ck_say(run, "keys", err.code, err.msg);
        return;
    }
    if (have_sk) {
        struct stat st;
        if (stat(cfg->secret_key, &st) == 0 && (st.st_mode & 077)) {
            snprintf(msg, sizeof msg, "secret key %s is readable by others (mode %03o): chmod 600 it",
                     cfg->secret_key, (unsigned)(st.st_mode & 0777));
            ck_say(run, "keys", FB_ERR_CRYPTO, msg);
            return;
        }
        fb_code rc = arc_key_load_secret(cfg->secret_key, sk, pk2, &err);
        sodium_memzero(sk, sizeof sk);
        if (rc) {
            ck_say(run, "keys", rc, err.msg);
            return;
        }
        if (have_pk && sodium_memcmp(pk, pk2, sizeof pk) != 0) {
            snprintf(msg, sizeof msg, "secret key %s does not belong to public key %s: backups the workers write "
                     "could not be restored with it", cfg->secret_key, cfg->public_key);
            ck_say(run, "keys", FB_ERR_CRYPTO, msg);
            return;
        }
        if (!have_pk) memcpy(pk, pk2, sizeof pk);
    }
    if (arc_index_key(cfg->index_key, pk, ik, &err)) {
        ck_say(run, "keys", err.code, err.msg);
        return;
    }
    sodium_memzero(ik, sizeof ik);
    snprintf(msg, sizeof msg, "%s%s%s; chain index key %s", have_pk ? "public key loads" : "",
             have_pk && have_sk ? ", " : "", have_sk ? "secret key loads, mode 0600, matches" : "",
             cfg->index_key && *cfg->index_key ? "from --index-key" : "derived from the public key (detects damage, "
                                                                    "not tampering: set --index-key)");
    ck_say(run, "keys", FB_OK, msg);
}

/* The key ids of a keyring, "id (path), ..." into out. */
static void ck_key_ids(const fb_keyring *kr, char *out, size_t cap) {
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < kr->n && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%s (%s)", i ? ", " : "", kr->keys[i].key_id, kr->keys[i].path);
}

static void ck_signing(ck_run *run, const fb_config *cfg) {
    fb_err err;
    char msg[3000], ids[1400] = "", rids[1400] = "";
    fb_signer me = {0};
    fb_keyring signers = {0}, requesters = {0};
    int have_key = cfg->sign_key && *cfg->sign_key;
    int have_signers = cfg->trusted_signers && *cfg->trusted_signers;
    int have_requesters = cfg->trusted_requesters && *cfg->trusted_requesters;
    fb_code rc = FB_OK;
    if (!have_key && !have_signers && !have_requesters) {
        ck_say(run, "signing", FB_OK, "no --sign-key, --trusted-signer or --trusted-requester configured: skipped");
        return;
    }
    if (have_key && (rc = fb_signer_load(&me, cfg->sign_key, "--sign-key", &err))) goto out;
    if ((rc = fb_keyring_load(&signers, cfg->trusted_signers, "--trusted-signer", &err))) goto out;
    if ((rc = fb_keyring_load(&requesters, cfg->trusted_requesters, "--trusted-requester", &err))) goto out;
    ck_key_ids(&signers, ids, sizeof ids);
    ck_key_ids(&requesters, rids, sizeof rids);
    /* One key signs for every role a process has (a worker: artifacts and status events; the ops CLI: requests),
     * so say which role this configuration's own lists give it rather than guess which role is meant. */
    const char *role = !have_key                               ? ""
                       : fb_keyring_find(&signers, me.key_id)    ? " (a trusted signer here: artifacts and status)"
                       : fb_keyring_find(&requesters, me.key_id) ? " (a trusted requester here)"
                                                                 : " (in neither list here: right for a requester "
                                                                   "whose workers trust it; a worker signing with it "
                                                                   "cannot use its own backups as bases)";
    snprintf(msg, sizeof msg, "%s%s%s%s; trusted signers: %s; trusted requesters: %s", have_key ? "signing key " : "",
             have_key ? me.key_id : "no --sign-key", have_key ? " loads" : "", role, have_signers ? ids : "none",
             have_requesters ? rids : "none");
out:
    ck_say(run, "signing", rc, rc ? err.msg : msg);
    fb_signer_wipe(&me);
    fb_keyring_free(&signers);
    fb_keyring_free(&requesters);
}
static const char ck_usage[] =
    "usage: fusion-backup check [--json] [--no-broker] [settings: --pg, --brokers, --storage-root,\n"
    "                           --public-key, --secret-key, --index-key, --topic-prefix,\n"
    "                           --sign-key, --trusted-signer, --trusted-requester]\n"
    "  checks the database, broker and topics, storage and keys that are configured; each line says ok\n"
    "  or what to fix. Exit 0 when everything checked is ok.\n";

int cmd_check(int argc, char **argv) {
    fb_config cfg;
    fb_err err;
    ck_run run = {0};
    int help = 0;
    fb_code rc = cmd_args(&cfg, &argc, argv, FB_CMD_CHECK, ck_usage, &help, &err);
    if (help) {
        fb_config_free(&cfg);
        return FB_OK;
    }
    run.json = cfg.json != 0;
    int no_broker = cfg.no_broker != 0;
    if (!rc && argc > 1) rc = fb_err_set(&err, FB_ERR_USAGE, "unexpected argument \"%s\" (see check --help)", argv[1]);
    if (rc) {
        fprintf(stderr, "fusion-backup check: %s\n", err.msg);
        fb_config_free(&cfg);
        return rc;
    }
    if (run.json) printf("[");
    ck_say(&run, "settings", FB_OK, cfg.config_file && *cfg.config_file ? cfg.config_file : "flags and environment");
    ck_database(&run, &cfg);
    if (no_broker) ck_say(&run, "broker", FB_OK, "skipped (--no-broker)");
    else ck_broker(&run, &cfg);
    ck_storage(&run, &cfg);
    ck_keys(&run, &cfg);
    ck_signing(&run, &cfg);
    if (run.json) printf("\n]\n");
    else printf("%d check(s), %d failed\n", run.n_done, run.n_failed);
    fb_config_free(&cfg);
    return run.first_rc;
}
