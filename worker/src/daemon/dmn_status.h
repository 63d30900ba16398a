/* dmn_status: building and publishing `job.status` events and dead letters for the daemon.
 *
 * A status event repeats the request's job id, attempt, requester and ids (record/config/policy), so a reader of
 * the completion topic needs nothing else to know what it is about. FAILED carries the original request bytes so
 * `fusion-backup replay` can republish it. Dead letters copy key and value byte for byte, with the reason in
 * headers (schemas/SPEC.md, "fusion.jobs.dlq"). Every message is signed with the worker's key (kfk_sign.h); a dead
 * letter also carries the signature headers of the message it copies, so replay can check who sent the original.
 * Publishing waits for the broker's acknowledgement.
 */
#ifndef DMN_STATUS_H
#define DMN_STATUS_H

#include <librdkafka/rdkafka.h>

#include "codec/ev_event.h"
#include "common/fb_config.h"
#include "common/fb_sign.h"
#include "job/job.h"

typedef struct dmn_pub {
    rd_kafka_t *producer;     /* borrowed, thread-safe */
    const fb_config *cfg;     /* borrowed */
    const fb_signer *signer;  /* borrowed: signs every status event and dead letter */
    const char *worker_name;
    char topic_completed[256];
    char topic_dlq[256];
} dmn_pub;

void dmn_pub_init(dmn_pub *pub, rd_kafka_t *producer, const fb_config *cfg, const fb_signer *signer,
                  const char *worker_name);

/* The job type of a request event (backup.requested -> backup, ...). */
ev_job_type dmn_job_type_of(const ev_event *req);

/* Builds the status event for req (caller frees with ev_event_free). res may be NULL; error is for FAILED. */
ev_event *dmn_status_build(const dmn_pub *pub, const ev_event *req, const unsigned char *req_raw, size_t req_len,
                           ev_status status, int64_t started_at, const job_result *res, const char *error);

/* Builds, encodes and publishes a status event (key = job_id). */
fb_code dmn_status_publish(const dmn_pub *pub, const ev_event *req, const unsigned char *req_raw, size_t req_len,
                           ev_status status, int64_t started_at, const job_result *res, const char *error, fb_err *err);

/* Publishes raw bytes of an already-encoded status event (the ledger's copy of a SUCCESS). */
fb_code dmn_status_publish_raw(const dmn_pub *pub, const char *job_id, const unsigned char *value, size_t len,
                               fb_err *err);

/* Publishes the smallest FAILED for req: ids, attempt, worker and a short fixed text (why, the code's name and a
 * pointer to the log), no stats, no request bytes. For when the full FAILED was refused by the encoder, and for a
 * request the worker gave up on (dmn_jobs): what is left is always publishable. */
fb_code dmn_status_publish_minimal(const dmn_pub *pub, const ev_event *req, fb_code code, const char *why,
                                   fb_err *err);

/* Sends a message that cannot be processed to the DLQ with its reason and origin in headers. */
fb_code dmn_dlq_publish(const dmn_pub *pub, const rd_kafka_message_t *m, const char *reason, fb_err *err);

#endif
