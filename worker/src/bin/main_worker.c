/* fusion-backup-worker: the job daemon. It parses settings, installs the signal handlers and hands over to
 * daemon/: --role worker runs jobs, --role recorder applies completion events to BackupRecord, --role all runs
 * both (the recorder on a thread of its own). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "codec/ev_event.h"
#include "common/fb_config.h"
#include "common/fb_err.h"
#include "common/fb_flag.h"
#include "common/fb_log.h"
#include "daemon/dmn_metrics.h"
#include "daemon/dmn_recorder.h"
#include "daemon/dmn_worker.h"
#include "kafka/kfk_sign.h"

static fb_flag worker_signals = 0;

static void worker_on_signal(int sig) {
    (void)sig;
    if (worker_signals < 100) worker_signals++;
}

typedef struct recorder_arg {
    const fb_config *cfg;
    const fb_keyring *signers;
    fb_code rc;
    fb_err err;
} recorder_arg;

static void *worker_recorder_thread(void *p) {
    recorder_arg *a = p;
    a->rc = dmn_recorder_run(a->cfg, a->signers, &worker_signals, &a->err);
    if (a->rc) FB_ERROR("recorder stopped: %s", a->err.msg);
    return NULL;
}

static const char worker_usage[] =
    "usage: fusion-backup-worker [options]\n"
    "Consumes backup and archive requests from Kafka and runs them; --role recorder|all also applies\n"
    "completion events to BackupRecord. SIGTERM/SIGINT: finish running jobs within the grace period,\n"
    "then abort them; a second signal aborts at once.\n";

/* --log-level and --log-format are enum rows of the table: their values were checked when they were read. */
static fb_code worker_setup_logging(const fb_config *cfg, fb_err *err) {
    int lvl = fb_log_level_parse(cfg->log_level);
    if (lvl < 0) return fb_err_set(err, FB_ERR_USAGE, "--log-level must be debug, info, warn or error, got \"%s\"", cfg->log_level);
    fb_log_set_level((fb_log_level)lvl);
    fb_log_set_json(strcmp(cfg->log_format, "json") == 0);
    return FB_OK;
}

int main(int argc, char **argv) {
    fb_config cfg;
    fb_err err = {0};
    fb_code rc;
    fb_signer signer = {0};
    fb_keyring requesters = {0}, signers = {0};
    if ((rc = fb_config_init(&cfg, &err)) || (rc = fb_config_parse_args(&cfg, &argc, argv, FB_CFG_WORKER, NULL, &err)))
        goto out;
    if (cfg.version) {
        rc = cmd_version("fusion-backup-worker");
        goto out;
    }
    if (cfg.help) {
        fputs(worker_usage, stdout);
        fb_config_print_options(FB_CFG_WORKER, stdout);
        goto out;
    }
    if ((rc = worker_setup_logging(&cfg, &err))) goto out;
    if (argc > 1) {
        rc = fb_err_set(&err, FB_ERR_USAGE, "unexpected argument \"%s\" (see --help)", argv[1]);
        goto out;
    }
    char name[300];
    if (cfg.worker_name && *cfg.worker_name) {
        /* The name goes into every status event: one the contract refuses would make every outcome unpublishable
         * (each job would then run again until max_deliveries). Refuse it here, where a person reads the error. */
        const char *why = ev_worker_name_problem(cfg.worker_name);
        if (why) {
            rc = fb_err_set(&err, FB_ERR_USAGE, "--worker-name / FB_WORKER_NAME: %s", why);
            goto out;
        }
        snprintf(name, sizeof name, "%s", cfg.worker_name);
    } else {
        char host[256] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(name, sizeof name, "%s:%d", host, (int)getpid());
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = worker_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int run_jobs = strcmp(cfg.role, "worker") == 0 || strcmp(cfg.role, "all") == 0;
    int run_recorder = strcmp(cfg.role, "recorder") == 0 || strcmp(cfg.role, "all") == 0;
    if (!run_jobs && !run_recorder) {
        rc = fb_err_set(&err, FB_ERR_USAGE, "--role must be worker, recorder or all, got \"%s\"", cfg.role);
        goto out;
    }
    /* Who is speaking (kafka/kfk_sign.h): a worker signs what it sends and accepts only requests of trusted
     * requesters; a recorder accepts only statuses of trusted workers. Missing keys stop it here, saying which
     * setting to set, rather than at the first message. */
    if (run_jobs && (rc = kfk_sign_load("the worker", cfg.sign_key, 1, &signer, cfg.trusted_requesters,
                                        "--trusted-requester (FB_TRUSTED_REQUESTERS)",
                                        "the Django app and the operators", &requesters, &err)))
        goto out;
    if (run_recorder && (rc = kfk_sign_load("the recorder", NULL, 0, NULL, cfg.trusted_signers,
                                            "--trusted-signer (FB_TRUSTED_SIGNERS)", "the workers", &signers, &err)))
        goto out;
    /* One endpoint per process, whatever the role: the recorder's counters are there too. */
    dmn_metrics_health_expect((run_jobs ? 1u << DMN_CONSUMER_WORKER : 0) | (run_recorder ? 1u << DMN_CONSUMER_RECORDER : 0));
    if (cfg.metrics_listen && *cfg.metrics_listen && (rc = dmn_metrics_serve(cfg.metrics_listen, &err))) goto out;
    if (run_jobs && !run_recorder) {
        rc = dmn_worker_run(&cfg, name, &signer, &requesters, &worker_signals, &err);
    } else if (!run_jobs) {
        rc = dmn_recorder_run(&cfg, &signers, &worker_signals, &err);
    } else {
        recorder_arg ra = {&cfg, &signers, FB_OK, {0}};
        pthread_t t;
        if (pthread_create(&t, NULL, worker_recorder_thread, &ra) != 0) {
            rc = fb_err_set(&err, FB_ERR_INTERNAL, "could not start the recorder thread");
            goto out;
        }
        rc = dmn_worker_run(&cfg, name, &signer, &requesters, &worker_signals, &err);
        if (!worker_signals) worker_signals = 1; /* the worker failed to start: stop the recorder too */
        pthread_join(t, NULL);
        if (!rc && ra.rc) {
            rc = ra.rc;
            err = ra.err;
        }
    }
out:
    if (rc) fprintf(stderr, "fusion-backup-worker: %s\n", err.msg);
    fb_signer_wipe(&signer);
    fb_keyring_free(&requesters);
    fb_keyring_free(&signers);
    fb_config_free(&cfg);
    return rc;
}
