/* dmn_worker: the job daemon's consumer loop.
 *
 * One thread polls Kafka (so max.poll.interval.ms never expires, however long a job runs) and hands each request
 * to one of cfg->concurrency job threads. Messages wait in a small queue, in arrival order; a message starts only
 * when its partition has no running job and no earlier waiting message, so one configuration's backups (one key,
 * one partition) never run concurrently and each partition is processed in offset order. When the queue is full
 * the whole assignment is paused, so a backlog stays in Kafka and the loop keeps polling. The offset of a message
 * is stored (offset + 1) only after its outcome is durable and published (dmn_jobs_execute); librdkafka's
 * auto-commit then commits it. A message that cannot be decoded, or is not a request for this topic, goes to the
 * dead-letter topic and is not retried; so does a request the worker gave up on (delivered max_deliveries times
 * without an outcome, dmn_jobs) when not even its minimal FAILED can be published. Rebalances are eager (roundrobin): on revoke, stored offsets are committed
 * first and waiting messages dropped; a job still running for a revoked partition finishes, its offset cannot be
 * stored, and the new owner runs it again, which jobs tolerate (ledger for backups, the database for archival).
 *
 * Who sent it: every request must be signed by a key of `requesters` (the Django app's, the operators':
 * kfk_sign.h). An unsigned or wrongly signed request is checked first of all, before it is decoded for a job,
 * before the authority check and before anything is published under its job id: it goes to the dead-letter topic
 * with the reason, never a status, and is counted (fusion_backup_jobs_untrusted_total). Status events and dead letters
 * are signed with `signer`.
 *
 * Signals: the first SIGTERM/SIGINT stops taking jobs; running ones get shutdown_grace_s to finish, then are
 * aborted (rolled back, temporary files removed, FAILED with the reason). A second signal aborts at once.
 * Offsets are committed and the group is left before exit.
 */
#ifndef DMN_WORKER_H
#define DMN_WORKER_H

#include <signal.h>

#include "common/fb_config.h"
#include "common/fb_err.h"
#include "common/fb_flag.h"
#include "common/fb_sign.h"

/* Runs until *signals becomes non-zero and running jobs are done or aborted. Returns FB_OK or why it could not
 * run (err set). The worker name is used in status events and logs. signer and requesters are borrowed for the
 * run (kfk_sign_load makes them). */
fb_code dmn_worker_run(const fb_config *cfg, const char *worker_name, const fb_signer *signer,
                       const fb_keyring *requesters, fb_flag *signals, fb_err *err);

#endif
