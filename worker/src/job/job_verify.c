/* job_verify: the verify job (see job_verify.h).
 *
 * Integrity first (every segment authenticated and re-hashed, without a database), then, in restore mode, a full
 * --create restore into a scratch database named after the job (so a retry replaces its own leftover), a re-dump
 * of each table compared with the manifest's hash, and the scratch database dropped whatever happened. An
 * incremental or differential is checked with its chain: the artifacts holding the tables it references are
 * opened from the same folder under the storage root. The restore time measured is the stat restore_ms.
 */
#include "job/job_verify.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "artifact/arc_index.h"
#include "artifact/arc_key.h"
#include "artifact/arc_reader.h"
#include "common/fb_log.h"
#include "common/fb_time.h"
#include "dump/dump_restore.h"
#include "dump/dump_scratch.h"
#include "job/job_authority.h"
#include "storage/stor.h"

/* Chain resolver: "<folder of the artifact>/<job>.fbak" under the storage root. */
typedef struct jv_chain {
    stor *st;
    char dir[1100];
} jv_chain;

static fb_code jv_resolve(void *opaque, const char *job_id, stor_rfile **out, fb_err *err) {
    const jv_chain *c = opaque;
    char rel[1300];
    fb_code rc = arc_artifact_name(c->dir, job_id, rel, sizeof rel, err);
    if (rc == FB_OK) rc = stor_open(c->st, rel, out, err);
    if (rc == FB_ERR_NOTFOUND)
        fb_err_set(err, rc, "backup %s, which holds tables this one references, is not under the storage root "
                   "(\"%s\"): it was removed or never copied here", job_id, rel);
    return rc;
}

/* Everything one verify job holds, from its first step to its clean-up (jv_job_clear). */
typedef struct jv_job {
    const job_ctx *ctx;
    const fb_config *cfg;
    const ev_backup_verify *rq;
    job_result *res;
    int64_t t0;
    int restore;                 /* mode restore (else integrity) */
    unsigned char sk[ARC_SK_BYTES], pk[ARC_PK_BYTES];
    fb_keyring kr;
    stor *st;
    stor_rfile *f;
    arc_reader *rd;
    jv_chain chain;              /* the reader's resolver: lives as long as rd */
    PGconn *c;
    char scratch[64];            /* the scratch database, once created ("" : none) */
} jv_job;

/* The record asked for this verification of this artifact; the request and the worker's key are usable. */
static fb_code jv_check(jv_job *j, fb_err *err) {
    const ev_backup_verify *rq = j->rq;
    fb_code rc;
    if ((rc = job_authority_authorise(j->cfg, j->ctx->ev, err))) return rc;
    if (!rq->file_path)
        return fb_err_set(err, FB_ERR_INVALID, "the verify request names no artifact (file_path is empty): verify a "
                          "backup record that has a file");
    if (rq->mode && strcmp(rq->mode, "restore") == 0) j->restore = 1;
    else if (rq->mode && strcmp(rq->mode, "integrity") != 0)
        return fb_err_set(err, FB_ERR_INVALID, "unknown verify mode \"%s\" (integrity or restore)", rq->mode);
    if (!j->cfg->secret_key || !*j->cfg->secret_key)
        return fb_err_set(err, FB_ERR_USAGE, "cannot verify \"%s\": verification decrypts the backup and needs the "
                          "secret key, and this worker holds only the public key (configure --secret-key / "
                          "FB_SECRET_KEY on a worker trusted with it, or run `fusion-backup verify` where the key "
                          "is)", rq->file_path);
    return FB_OK;
}

/* The artifact opened: only one a trusted worker signed, for the backup the record names (its file_path,
 * authorised against the record, is "<folder>/<job>.fbak", so a copy of another backup over it is refused); the
 * artifacts of its chain are resolved in the same folder. */
static fb_code jv_open(jv_job *j, fb_err *err) {
    const char *path = j->rq->file_path;
    char named[ARC_SIG_JOB_MAX + 1];
    fb_code rc;
    if ((rc = arc_key_load_secret(j->cfg->secret_key, j->sk, j->pk, err))) return rc;
    if ((rc = stor_open_location(j->cfg->storage_root, j->cfg, &j->st, err))) return rc;
    if ((rc = stor_open(j->st, path, &j->f, err))) return rc;
    if (arc_sign_job_from_name(path, named, sizeof named) != 0)
        return fb_err_set(err, FB_ERR_INVALID, "the record's artifact \"%s\" is not named JOB%s, so it cannot be bound "
                          "to its backup", path, ARC_ARTIFACT_SUFFIX);
    if ((rc = fb_keyring_load(&j->kr, j->cfg->trusted_signers, "--trusted-signer", err))) return rc;
    arc_trust trust = {&j->kr, j->cfg->allow_unsigned != 0, named};
    if ((rc = arc_reader_open(j->f, j->sk, j->pk, &trust, &j->rd, err))) return rc;
    j->chain.st = j->st;
    const char *slash = strrchr(path, '/');
    if (slash) snprintf(j->chain.dir, sizeof j->chain.dir, "%.*s", (int)(slash - path), path);
    arc_reader_set_resolver(j->rd, jv_resolve, &j->chain, NULL);
    return FB_OK;
}

/* Restore mode: a --create restore into the job's scratch database (named after the job, so a retry replaces its
 * own leftover), each table re-dumped and compared with the manifest's hash; its time is restore_ms. */
static fb_code jv_restore(jv_job *j, fb_err *err) {
    int64_t r0 = fb_now_ms();
    char id[40] = "";
    size_t k = 0;
    fb_code rc;
    for (const char *p = j->ctx->ev->job_id; *p && k < 32; p++)
        if (*p != '-') id[k++] = *p;
    snprintf(j->scratch, sizeof j->scratch, "fb_verify_%s", id);
    if ((rc = dump_scratch_create(j->cfg->scratch_pg, j->scratch, &j->c, err))) {
        j->scratch[0] = '\0';
        return rc;
    }
    dump_restore_opts o = {0};
    dump_restore_stats rs;
    o.create = 1;
    o.compare = 1;
    /* a check of the data, not of the roles: the scratch database need not have them */
    o.no_owner = 1;
    o.no_privileges = 1;
    o.pg_restore = j->cfg->pg_restore;
    o.commit = 0; /* the comparison runs inside the transaction; nothing needs to persist */
    o.abort = j->ctx->abort;
    if ((rc = dump_restore(j->rd, j->c, &o, &rs, err))) {
        fb_err_prefix(err, "restore check of \"%s\" failed: ", j->rq->file_path);
        return rc;
    }
    job_result_set(j->res, "restore_ms", fb_now_ms() - r0);
    return FB_OK;
}

/* The job's result: the artifact and what its manifest holds. */
static void jv_result(jv_job *j) {
    const arc_manifest *m = arc_reader_manifest(j->rd);
    job_result *res = j->res;
    int64_t rows = 0, raw = 0;
    for (size_t i = 0; i < m->n_tables; i++) {
        rows += m->tables[i].rows;
        raw += m->tables[i].raw_bytes;
    }
    snprintf(res->file_path, sizeof res->file_path, "%s", j->rq->file_path);
    res->file_size = (int64_t)j->f->size;
    job_result_set(res, "tables", (int64_t)m->n_tables);
    job_result_set(res, "rows", rows);
    job_result_set(res, "raw_bytes", raw);
    job_result_set(res, "stored_bytes", (int64_t)j->f->size);
    job_result_set(res, "duration_ms", fb_now_ms() - j->t0);
    FB_INFO("job=%s verified \"%s\" (%s): %zu tables, %lld rows", j->ctx->ev->job_id, j->rq->file_path,
            j->restore ? "restore" : "integrity", m->n_tables, (long long)rows);
}

/* The scratch database dropped whatever happened; the rest freed, the secret key erased. */
static void jv_job_clear(jv_job *j) {
    if (j->scratch[0]) {
        fb_err e2;
        if (dump_scratch_drop(j->cfg->scratch_pg, j->scratch, j->c, &e2) != FB_OK)
            FB_WARN("job=%s could not drop scratch database \"%s\": %s", j->ctx->ev->job_id, j->scratch, e2.msg);
    } else if (j->c) {
        PQfinish(j->c);
    }
    arc_reader_free(j->rd);
    stor_rfile_close(j->f);
    stor_free(j->st);
    fb_keyring_free(&j->kr);
    sodium_memzero(j->sk, sizeof j->sk);
}

fb_code job_verify_run(const job_ctx *ctx, job_result *res, fb_err *err) {
    if (ctx->ev->type != EV_BACKUP_VERIFY) return fb_err_set(err, FB_ERR_INTERNAL, "job_verify_run: not a verify event");
    jv_job j = {.ctx = ctx, .cfg = ctx->cfg, .rq = &ctx->ev->u.verify, .res = res, .t0 = fb_now_ms()};
    fb_code rc;
    /* 1. Authorised by the record; the request and the key checked. */
    if ((rc = jv_check(&j, err))) goto out;
    /* 2. The artifact, signed by a trusted worker for this backup, and its chain. */
    if ((rc = jv_open(&j, err))) goto out;
    /* 3. Integrity: every segment authenticated and re-hashed, without a database. */
    if ((rc = arc_reader_verify_all(j.rd, err))) {
        fb_err_prefix(err, "verification of \"%s\" failed: ", j.rq->file_path);
        goto out;
    }
    /* 4. Restore mode: restored into a scratch database and compared. */
    if (j.restore && (rc = jv_restore(&j, err))) goto out;
    /* 5. The result. */
    jv_result(&j);
out:
    jv_job_clear(&j);
    return rc;
}
