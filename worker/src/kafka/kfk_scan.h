/* kfk_scan: reading a whole topic, or following it, without joining a consumer group.
 *
 * The operator commands (replay, status, tail) read the completion and dead-letter topics as observers: they
 * assign every partition themselves (no group join, no rebalance, no committed offsets to disturb), start at the
 * beginning or the end, and for a scan stop at the high watermarks seen when they started.
 */
#ifndef KFK_SCAN_H
#define KFK_SCAN_H

#include <librdkafka/rdkafka.h>
#include <signal.h>

#include "common/fb_config.h"
#include "common/fb_err.h"
#include "common/fb_flag.h"

/* Called for each message; return non-zero to stop early. The message is borrowed for the call only. */
typedef int (*kfk_scan_fn)(void *opaque, const rd_kafka_message_t *m);

/* Reads every message of topic from the beginning up to the end as of the call. */
fb_code kfk_scan_topic(const fb_config *cfg, const char *topic, kfk_scan_fn fn, void *opaque, fb_err *err);

/* Follows topic from the end (or the beginning) until *stop or fn returns non-zero, calling fn for each message;
 * timeout_ms > 0 also ends it after that long in total. */
fb_code kfk_follow_topic(const fb_config *cfg, const char *topic, int from_beginning, int64_t timeout_ms,
                         fb_flag *stop, kfk_scan_fn fn, void *opaque, fb_err *err);

/* Consumer lag of group_id on topic: sum over partitions of (high watermark - committed offset); a partition
 * without a committed offset counts from its low watermark. *partitions receives the partition count. */
fb_code kfk_group_lag(const fb_config *cfg, const char *group_id, const char *topic, int64_t *lag, int *partitions,
                      fb_err *err);

#endif
