/* test_daemon_ledger: the ledger's request digest, its entries and the delivery counters (issue 10).
 * Proves: the digest ignores ts, attempt and requested_by but changes with anything the job acts on; an entry
 * matches only the request it was written for (and an entry from before digests matches none); delivery counts
 * persist across calls (files under .ledger, as after a crash), are per request and attempt, and are cleared;
 * the in-memory fallback counts too; a request over max_deliveries is answered without running its job.
 * Needs no PostgreSQL or Kafka: the given-up request never reaches a job. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codec/ev_event.h"
#include "common/fb_config.h"
#include "common/fb_log.h"
#include "daemon/dmn_jobs.h"
#include "daemon/dmn_ledger.h"
#include "tap.h"

static ev_event *backup_request(const char *job_id, int64_t ts, int64_t attempt, int64_t requested_by,
                                const char *table) {
    ev_event *ev = ev_event_new(EV_BACKUP_REQUESTED);
    memcpy(ev->job_id, job_id, 37);
    ev->ts = ts;
    ev->attempt = attempt;
    if (requested_by) ev->requested_by = (ev_opt_i64){1, requested_by};
    ev_backup_requested *b = &ev->u.backup;
    b->record_id = 42;
    b->config_id = 3;
    b->config_name = ev_strdup(ev, "nightly");
    b->backup_type = EV_FULL;
    b->n_tables = 1;
    b->tables = ev_alloc(ev, sizeof(ev_table));
    b->tables[0].schema = "public";
    b->tables[0].name = ev_strdup(ev, table);
    b->storage_path = ev_strdup(ev, "fusion/nightly");
    b->retention_days = 30;
    return ev;
}

static void test_digest(void) {
    const char *job = "0b6e7d8c-3f2a-4c1e-9a5b-7d2e4f6a8b0c";
    unsigned char d1[DMN_DIGEST_BYTES], d2[DMN_DIGEST_BYTES], d3[DMN_DIGEST_BYTES];
    fb_err err;
    ev_event *a = backup_request(job, 1000, 1, 0, "auth_group");
    ev_event *replay = backup_request(job, 999999, 2, 7, "auth_group"); /* later, attempt + 1, by a person */
    ev_event *decoy = backup_request(job, 1000, 1, 0, "django_session");
    CHECK(dmn_ledger_digest(a, d1, &err) == FB_OK);
    CHECK(dmn_ledger_digest(replay, d2, &err) == FB_OK);
    CHECK(dmn_ledger_digest(decoy, d3, &err) == FB_OK);
    CHECKF(memcmp(d1, d2, sizeof d1) == 0, "a replay of the same request must have the same digest");
    CHECKF(memcmp(d1, d3, sizeof d1) != 0, "another request under the same job id must not");
    CHECK(a->ts == 1000 && a->attempt == 1); /* the request itself is untouched */
    ev_event_free(a);
    ev_event_free(replay);
    ev_event_free(decoy);
}

static void test_entries_and_counters(const char *root) {
    const char *job = "11111111-1111-4111-8111-111111111111";
    unsigned char real[DMN_DIGEST_BYTES], other[DMN_DIGEST_BYTES];
    memset(real, 1, sizeof real);
    memset(other, 2, sizeof other);
    fb_err err;
    unsigned char *got = NULL;
    size_t len = 0;
    int match = -1;
    fb_config cfg;
    CHECK(fb_config_init(&cfg, &err) == FB_OK);
    free(cfg.storage_root);
    cfg.storage_root = strdup(root);
    CHECK_EQ_INT(dmn_ledger_get(&cfg, job, real, &got, &len, &match, &err), FB_ERR_NOTFOUND);
    CHECK(dmn_ledger_put(&cfg, job, real, (const unsigned char *)"status", 6, &err) == FB_OK);
    CHECK(dmn_ledger_get(&cfg, job, real, &got, &len, &match, &err) == FB_OK);
    CHECK(match == 1 && len == 6 && memcmp(got, "status", 6) == 0);
    free(got);
    CHECK(dmn_ledger_get(&cfg, job, other, &got, &len, &match, &err) == FB_OK);
    CHECKF(match == 0, "an entry must not match another request's digest");
    free(got);
    /* An entry from before digests (the bare status bytes) matches nothing. */
    char path[600];
    snprintf(path, sizeof path, "%s/.ledger/%s.success", root, job);
    FILE *f = fopen(path, "w");
    fputs("legacy-status-bytes", f);
    fclose(f);
    CHECK(dmn_ledger_get(&cfg, job, real, &got, &len, &match, &err) == FB_OK);
    CHECK(match == 0 && len == strlen("legacy-status-bytes"));
    free(got);

    /* Counters: durable, per (job, attempt, digest), cleared. */
    int64_t n = 0;
    for (int i = 1; i <= 3; i++) {
        CHECK(dmn_ledger_delivery(root, job, 1, real, &n, &err) == FB_OK);
        CHECK_EQ_INT(n, i);
    }
    CHECK(dmn_ledger_delivery_count(root, job, 1, real, &n, &err) == FB_OK);
    CHECK_EQ_INT(n, 3);
    CHECK(dmn_ledger_delivery_count(root, job, 1, other, &n, &err) == FB_OK);
    CHECKF(n == 0, "a decoy's deliveries must not count against the real request (got %lld)", (long long)n);
    CHECK(dmn_ledger_delivery_count(root, job, 2, real, &n, &err) == FB_OK);
    CHECKF(n == 0, "a replay (attempt + 1) starts a fresh count (got %lld)", (long long)n);
    dmn_ledger_delivery_clear(root, job, 1, real);
    CHECK(dmn_ledger_delivery_count(root, job, 1, real, &n, &err) == FB_OK);
    CHECK_EQ_INT(n, 0);
    /* Without a storage root: in memory. */
    CHECK(dmn_ledger_delivery(NULL, job, 1, real, &n, &err) == FB_OK);
    CHECK(dmn_ledger_delivery(NULL, job, 1, real, &n, &err) == FB_OK);
    CHECK_EQ_INT(n, 2);
    CHECK(dmn_ledger_delivery_count(NULL, job, 1, real, &n, &err) == FB_OK);
    CHECK_EQ_INT(n, 2);
    dmn_ledger_delivery_clear(NULL, job, 1, real);
    CHECK(dmn_ledger_delivery_count(NULL, job, 1, real, &n, &err) == FB_OK);
    CHECK_EQ_INT(n, 0);
    fb_config_free(&cfg);
}

static void test_given_up_request_is_not_run(const char *root) {
    fb_config cfg;
    fb_err err;
    CHECK(fb_config_init(&cfg, &err) == FB_OK);
    free(cfg.storage_root);
    cfg.storage_root = strdup(root);
    const char *job = "22222222-2222-4222-8222-222222222222";
    ev_event *req = backup_request(job, 5, 1, 0, "auth_group");
    unsigned char d[DMN_DIGEST_BYTES];
    CHECK(dmn_ledger_digest(req, d, &err) == FB_OK);
    int64_t n = 0;
    for (int64_t i = 0; i < cfg.max_deliveries; i++) dmn_ledger_delivery(root, job, 1, d, &n, &err);
    dmn_pub pub;
    dmn_pub_init(&pub, NULL, &cfg, NULL, "w"); /* no producer: nothing is published */
    dmn_outcome out;
    fb_code rc = dmn_jobs_execute(&pub, &cfg, req, NULL, 0, NULL, &out, &err);
    CHECK_EQ_INT(rc, FB_OK);
    CHECKF(out.gave_up == 1 && out.status == EV_FAILED, "gave_up %d status %d", out.gave_up, out.status);
    CHECKF(strstr(out.error.msg, "not run again") && strstr(out.error.msg, "delivered 6 times"), "%s", out.error.msg);
    CHECK(dmn_ledger_delivery_count(root, job, 1, d, &n, &err) == FB_OK);
    CHECKF(n == cfg.max_deliveries, "giving up must not count a delivery (count %lld)", (long long)n);
    ev_event_free(req);
    fb_config_free(&cfg);
}

int main(void) {
    fb_log_set_level(FB_LOG_ERROR); /* the given-up job logs an error by design */
    char root[64];
    snprintf(root, sizeof root, "/tmp/fbled_%d", (int)getpid());
    mkdir(root, 0700);
    test_digest();
    test_entries_and_counters(root);
    test_given_up_request_is_not_run(root);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) printf("# could not remove %s\n", root);
    return tap_done();
}
