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

fb_code job_verify_run(const job_ctx *ctx, job_result *res, fb_err *err) {
    const fb_config *cfg = ctx->cfg;
    const ev_backup_verify *rq = &ctx->ev->u.verify;
    int64_t t0 = fb_now_ms();
    unsigned char sk[ARC_SK_BYTES], pk[ARC_PK_BYTES];
    stor *st = NULL;
    stor_rfile *f = NULL;
    arc_reader *rd = NULL;
    PGconn *c = NULL;
    char scratch[64] = "";
    fb_code rc = FB_OK;
    int restore = 0;
    fb_keyring kr = {0};
    char named[ARC_SIG_JOB_MAX + 1];

    if (ctx->ev->type != EV_BACKUP_VERIFY) return fb_err_set(err, FB_ERR_INTERNAL, "job_verify_run: not a verify event");
    /* The record asked for this verification of this artifact. */
    if ((rc = job_authority_authorise(cfg, ctx->ev, err))) goto out;
    if (!rq->file_path) {
        rc = fb_err_set(err, FB_ERR_INVALID, "the verify request names no artifact (file_path is empty): verify a "
                        "backup record that has a file");
        goto out;
    }
    if (rq->mode && strcmp(rq->mode, "restore") == 0) restore = 1;
    else if (rq->mode && strcmp(rq->mode, "integrity") != 0) {
        rc = fb_err_set(err, FB_ERR_INVALID, "unknown verify mode \"%s\" (integrity or restore)", rq->mode);
        goto out;
    }
    if (!cfg->secret_key || !*cfg->secret_key) {
        rc = fb_err_set(err, FB_ERR_USAGE, "cannot verify \"%s\": verification decrypts the backup and needs the "
                        "secret key, and this worker holds only the public key (configure --secret-key / "
                        "FB_SECRET_KEY on a worker trusted with it, or run `fusion-backup verify` where the key is)",
                        rq->file_path);
        goto out;
    }
    if ((rc = arc_key_load_secret(cfg->secret_key, sk, pk, err))) goto out;
    if ((rc = stor_open_location(cfg->storage_root, cfg, &st, err))) goto out;
    if ((rc = stor_open(st, rq->file_path, &f, err))) goto out;
    /* Only an artifact a trusted worker signed, for the backup the record names: its file_path (authorised above
     * against the record) is "<folder>/<job>.fbak", so a copy of another backup over it is refused. */
    if (arc_sign_job_from_name(rq->file_path, named, sizeof named) != 0) {
        rc = fb_err_set(err, FB_ERR_INVALID, "the record's artifact \"%s\" is not named JOB%s, so it cannot be bound to "
                        "its backup", rq->file_path, ARC_ARTIFACT_SUFFIX);
        goto out;
    }
    if ((rc = fb_keyring_load(&kr, cfg->trusted_signers, "--trusted-signer", err))) goto out;
    arc_trust trust = {&kr, cfg->allow_unsigned != 0, named};
    if ((rc = arc_reader_open(f, sk, pk, &trust, &rd, err))) goto out;
    jv_chain chain = {st, ""};
    {
        const char *slash = strrchr(rq->file_path, '/');
        if (slash) snprintf(chain.dir, sizeof chain.dir, "%.*s", (int)(slash - rq->file_path), rq->file_path);
    }
    arc_reader_set_resolver(rd, jv_resolve, &chain, NULL);
    if ((rc = arc_reader_verify_all(rd, err))) {
        fb_err_prefix(err, "verification of \"%s\" failed: ", rq->file_path);
        goto out;
    }
    const arc_manifest *m = arc_reader_manifest(rd);
    int64_t rows = 0, raw = 0;
    for (size_t i = 0; i < m->n_tables; i++) {
        rows += m->tables[i].rows;
        raw += m->tables[i].raw_bytes;
    }
    if (restore) {
        int64_t r0 = fb_now_ms();
        char id[40] = "";
        size_t k = 0;
        for (const char *p = ctx->ev->job_id; *p && k < 32; p++)
            if (*p != '-') id[k++] = *p;
        snprintf(scratch, sizeof scratch, "fb_verify_%s", id);
        if ((rc = dump_scratch_create(cfg->scratch_pg, scratch, &c, err))) {
            scratch[0] = '\0';
            goto out;
        }
        dump_restore_opts o = {0};
        dump_restore_stats rs;
        o.create = 1;
        o.compare = 1;
        /* a check of the data, not of the roles: the scratch database need not have them */
        o.no_owner = 1;
        o.no_privileges = 1;
        o.pg_restore = cfg->pg_restore;
        o.commit = 0; /* the comparison runs inside the transaction; nothing needs to persist */
        o.abort = ctx->abort;
        if ((rc = dump_restore(rd, c, &o, &rs, err))) {
            fb_err_prefix(err, "restore check of \"%s\" failed: ", rq->file_path);
            goto out;
        }
        job_result_set(res, "restore_ms", fb_now_ms() - r0);
    }
    snprintf(res->file_path, sizeof res->file_path, "%s", rq->file_path);
    res->file_size = (int64_t)f->size;
    job_result_set(res, "tables", (int64_t)m->n_tables);
    job_result_set(res, "rows", rows);
    job_result_set(res, "raw_bytes", raw);
    job_result_set(res, "stored_bytes", (int64_t)f->size);
    job_result_set(res, "duration_ms", fb_now_ms() - t0);
    FB_INFO("job=%s verified \"%s\" (%s): %zu tables, %lld rows", ctx->ev->job_id, rq->file_path,
            restore ? "restore" : "integrity", m->n_tables, (long long)rows);
out:
    if (scratch[0]) {
        fb_err e2;
        if (dump_scratch_drop(cfg->scratch_pg, scratch, c, &e2) != FB_OK)
            FB_WARN("job=%s could not drop scratch database \"%s\": %s", ctx->ev->job_id, scratch, e2.msg);
    } else if (c) {
        PQfinish(c);
    }
    arc_reader_free(rd);
    stor_rfile_close(f);
    stor_free(st);
    fb_keyring_free(&kr);
    sodium_memzero(sk, sizeof sk);
    return rc;
}
