/* fb_topic: the four topics of the event contract (schemas/SPEC.md, "Topics"), named once for the C side.
 *
 * A topic's name is the configured topic-prefix (default "fusion.") followed by its suffix. The suffixes, the
 * default partition counts and what the message key is are the contract's: the Python side has the same table in
 * schemas/python/fusion_events/topics.py, and tests/python/test_topics_shared.py fails when the two differ (it reads
 * the rows below as text: keep one row per line, in this form). Which request goes to which topic is the request
 * table's (job/job_request.h). */
#ifndef FB_TOPIC_H
#define FB_TOPIC_H

typedef enum fb_topic {
    FB_TOPIC_BACKUP,     /* backup.requested: backup and verify requests */
    FB_TOPIC_ARCHIVE,    /* archive.due: archival requests */
    FB_TOPIC_COMPLETED,  /* jobs.completed: status events */
    FB_TOPIC_DLQ,        /* jobs.dlq: dead letters */
    FB_N_TOPICS
} fb_topic;

/* Default partitions. The request topics': the most workers that can share the work. */
#define FB_TOPIC_REQUEST_PARTITIONS 12
#define FB_TOPIC_COMPLETED_PARTITIONS 6
#define FB_TOPIC_DLQ_PARTITIONS 3
#define FB_TOPIC_STR_(x) #x
#define FB_TOPIC_STR(x) FB_TOPIC_STR_(x) /* a default as the settings table's text: "12" */

typedef struct fb_topic_row {
    const char *kind;        /* the Python side's name for it: "backup", "archive", "completed", "dlq" */
    const char *suffix;      /* "backup.requested" */
    int default_partitions;
    int requests;            /* 1: workers consume requests from it (status shows its consumer lag) */
    const char *key;         /* what the message key is */
} fb_topic_row;

extern const fb_topic_row fb_topics[FB_N_TOPICS];

#endif
