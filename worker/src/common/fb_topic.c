/* fb_topic: see fb_topic.h. One row per line (tests/python/test_topics_shared.py reads them). */
#include "common/fb_topic.h"

const fb_topic_row fb_topics[FB_N_TOPICS] = {
    [FB_TOPIC_BACKUP] = {"backup", "backup.requested", FB_TOPIC_REQUEST_PARTITIONS, 1, "configuration id"},
    [FB_TOPIC_ARCHIVE] = {"archive", "archive.due", FB_TOPIC_REQUEST_PARTITIONS, 1, "module.model"},
    [FB_TOPIC_COMPLETED] = {"completed", "jobs.completed", FB_TOPIC_COMPLETED_PARTITIONS, 0, "job id"},
    [FB_TOPIC_DLQ] = {"dlq", "jobs.dlq", FB_TOPIC_DLQ_PARTITIONS, 0, "job id"},
};
