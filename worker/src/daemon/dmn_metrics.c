/* dmn_metrics: see dmn_metrics.h. Fixed-size tables: a handful of job types, statuses and partitions. */
#include "daemon/dmn_metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/fb_version.h"

#define M_TYPES 3
#define M_BUCKETS 10
#define M_CONFIGS 256
#define M_PARTS 256
#define M_CAPTURES 64

static const char *const m_type_names[M_TYPES] = {"backup", "archive", "verify"};
/* Why the recorder left a status event unapplied (dmn_recorder.c): a fixed set, so the label cannot grow. */
static const char *const m_ignored_names[DMN_IGNORED_N] = {"no_record", "record_mismatch", "config_mismatch",
                                                           "attempt_too_high", "verify_job_mismatch", "stale",
                                                           "untrusted"};
static const double m_bucket_s[M_BUCKETS] = {0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400};

static struct {
    pthread_mutex_t mu;
    uint64_t jobs[M_TYPES][2];       /* [type][0 success, 1 failed] */
    uint64_t hist[M_TYPES][M_BUCKETS + 1];
    double dur_sum[M_TYPES];
    int64_t in_flight[M_TYPES];
    uint64_t rows[M_TYPES], bytes[M_TYPES];
    double archive_throttle_s; /* paused by archival throttling (job_archive.c) */
    uint64_t archive_live_batches; /* archival batches after which a live load was seen (smaller, longer pauses) */
    uint64_t dlq;
    uint64_t ignored[DMN_IGNORED_N];
    uint64_t given_up, ledger_mismatch, minimal_failed, untrusted;
    uint64_t denied[M_TYPES];
    struct { int64_t config_id, when_ms; } last_ok[M_CONFIGS];
    size_t n_last_ok;
    struct { char topic[200]; int32_t partition; int64_t lag; } lag[M_PARTS];
    size_t n_lag;
    struct m_capture {
        char database[128], slot[64], slot_state[16];
        int leader, stopped, polled;
        uint64_t lag_bytes;
        double lag_s;
        int64_t safe_wal;
    } cap[M_CAPTURES];
    size_t n_cap;
    /* /healthz: which consumer loops this process runs, and when each last came back from a poll (0: not yet,
     * -1: it has left its loop). */
    unsigned expect;
    int64_t beat_ms[DMN_CONSUMER_N];
} m = {.mu = PTHREAD_MUTEX_INITIALIZER};

static const char *const m_consumer_names[DMN_CONSUMER_N] = {"worker", "recorder"};

/* Monotonic: a wall clock step must not make a polling consumer look stale. */
static int64_t m_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int m_type(const char *t) {
    for (int i = 0; i < M_TYPES; i++)
        if (strcmp(t, m_type_names[i]) == 0) return i;
    return 0;
}

void dmn_metrics_job_started(const char *job_type) {
    pthread_mutex_lock(&m.mu);
    m.in_flight[m_type(job_type)]++;
    pthread_mutex_unlock(&m.mu);
}

void dmn_metrics_job_finished(const char *job_type, const char *status, int64_t duration_ms, const job_result *res) {
    int t = m_type(job_type);
    double s = (double)duration_ms / 1000.0;
    pthread_mutex_lock(&m.mu);
    m.in_flight[t]--;
    m.jobs[t][strcmp(status, "SUCCESS") == 0 ? 0 : 1]++;
    int b = 0;
    while (b < M_BUCKETS && s > m_bucket_s[b]) b++;
    m.hist[t][b]++;
    m.dur_sum[t] += s;
    if (res) {
        m.rows[t] += (uint64_t)(job_result_get(res, "rows") + job_result_get(res, "archived"));
        m.bytes[t] += (uint64_t)job_result_get(res, "stored_bytes");
        m.archive_throttle_s += (double)job_result_get(res, "throttle_ms") / 1000.0;
        m.archive_live_batches += (uint64_t)job_result_get(res, "throttle_live_batches");
    }
    pthread_mutex_unlock(&m.mu);
}

void dmn_metrics_last_backup_success(int64_t config_id, int64_t when_ms) {
    pthread_mutex_lock(&m.mu);
    size_t i = 0;
    while (i < m.n_last_ok && m.last_ok[i].config_id != config_id) i++;
    if (i < M_CONFIGS) {
        if (i == m.n_last_ok) m.n_last_ok++;
        m.last_ok[i].config_id = config_id;
        m.last_ok[i].when_ms = when_ms;
    }
    pthread_mutex_unlock(&m.mu);
}

void dmn_metrics_dlq(void) {
    pthread_mutex_lock(&m.mu);
    m.dlq++;
    pthread_mutex_unlock(&m.mu);
}

void dmn_metrics_recorder_ignored(dmn_ignored reason) {
    if ((int)reason < 0 || reason >= DMN_IGNORED_N) return;
    pthread_mutex_lock(&m.mu);
    m.ignored[reason]++;
    pthread_mutex_unlock(&m.mu);
}

const char *dmn_metrics_ignored_name(dmn_ignored reason) {
    return (int)reason >= 0 && reason < DMN_IGNORED_N ? m_ignored_names[reason] : "?";
}

void dmn_metrics_given_up(void) {
    pthread_mutex_lock(&m.mu);
    m.given_up++;
    pthread_mutex_unlock(&m.mu);
}

void dmn_metrics_denied(const char *job_type) {
    int t = m_type(job_type);
    pthread_mutex_lock(&m.mu);
    if (t >= 0) m.denied[t]++;
    pthread_mutex_unlock(&m.mu);
}

void dmn_metrics_ledger_mismatch(void) {
    pthread_mutex_lock(&m.mu);
    m.ledger_mismatch++;
    pthread_mutex_unlock(&m.mu);
}

void dmn_metrics_untrusted_request(void) {
    pthread_mutex_lock(&m.mu);
    m.untrusted++;
    pthread_mutex_unlock(&m.mu);
}

void dmn_metrics_minimal_failed(void) {
    pthread_mutex_lock(&m.mu);
    m.minimal_failed++;
    pthread_mutex_unlock(&m.mu);
}

void dmn_metrics_lag_clear(void) {
    pthread_mutex_lock(&m.mu);
    m.n_lag = 0;
    pthread_mutex_unlock(&m.mu);
}

void dmn_metrics_lag(const char *topic, int32_t partition, int64_t lag) {
    pthread_mutex_lock(&m.mu);
    size_t i = 0;
    while (i < m.n_lag && !(m.lag[i].partition == partition && strcmp(m.lag[i].topic, topic) == 0)) i++;
    if (i < M_PARTS) {
        if (i == m.n_lag) m.n_lag++;
        snprintf(m.lag[i].topic, sizeof m.lag[i].topic, "%s", topic);
        m.lag[i].partition = partition;
        m.lag[i].lag = lag;
    }
    pthread_mutex_unlock(&m.mu);
}

/* The row of (database, slot), made on first use; NULL when the table is full. Under m.mu. */
static struct m_capture *m_capture_row(const char *database, const char *slot) {
    for (size_t i = 0; i < m.n_cap; i++)
        if (strcmp(m.cap[i].database, database) == 0 && strcmp(m.cap[i].slot, slot) == 0) return &m.cap[i];
    if (m.n_cap == M_CAPTURES) return NULL;
    struct m_capture *r = &m.cap[m.n_cap++];
    memset(r, 0, sizeof *r);
    snprintf(r->database, sizeof r->database, "%s", database);
    snprintf(r->slot, sizeof r->slot, "%s", slot);
    return r;
}

void dmn_metrics_capture(const char *database, const char *slot, int leader, const char *state,
                         const cap_slot_health *h, double lag_s) {
    (void)state;
    pthread_mutex_lock(&m.mu);
    struct m_capture *r = m_capture_row(database, slot);
    if (r) {
        r->leader = leader;
        r->polled = 1;
        snprintf(r->slot_state, sizeof r->slot_state, "%s", cap_slot_state(h));
        r->lag_bytes = h->lag_bytes;
        r->lag_s = lag_s;
        r->safe_wal = h->safe_wal_size;
    }
    pthread_mutex_unlock(&m.mu);
}

void dmn_metrics_capture_leader(const char *database, const char *slot, int leader) {
    pthread_mutex_lock(&m.mu);
    struct m_capture *r = m_capture_row(database, slot);
    if (r) r->leader = leader;
    if (r && !leader) r->stopped = 0; /* a standby reports no stop of its own */
    pthread_mutex_unlock(&m.mu);
}

void dmn_metrics_capture_stopped(const char *database, const char *slot, int stopped) {
    pthread_mutex_lock(&m.mu);
    struct m_capture *r = m_capture_row(database, slot);
    if (r) r->stopped = stopped;
    pthread_mutex_unlock(&m.mu);
}

static void m_render_capture(FILE *out) {
    static const char *const states[] = {"ok", "unreserved", "lost", "missing", "not_pgoutput"};
    fprintf(out, "# HELP fusion_backup_capture_leader 1 when this worker leads the database's capture.\n"
                 "# TYPE fusion_backup_capture_leader gauge\n");
    for (size_t i = 0; i < m.n_cap; i++)
        fprintf(out, "fusion_backup_capture_leader{database=\"%s\",slot=\"%s\"} %d\n", m.cap[i].database, m.cap[i].slot,
                m.cap[i].leader);
    fprintf(out, "# HELP fusion_backup_capture_stopped 1 when this worker's capture stopped on a condition that "
                 "needs a new base (slot dropped or invalidated, chain ended by a schema change).\n"
                 "# TYPE fusion_backup_capture_stopped gauge\n");
    for (size_t i = 0; i < m.n_cap; i++)
        fprintf(out, "fusion_backup_capture_stopped{database=\"%s\",slot=\"%s\"} %d\n", m.cap[i].database,
                m.cap[i].slot, m.cap[i].stopped);
    fprintf(out, "# HELP fusion_backup_capture_slot_state The slot's state (1 for the current one): ok, unreserved "
                 "(about to be invalidated), lost (invalidated), missing, not_pgoutput.\n"
                 "# TYPE fusion_backup_capture_slot_state gauge\n");
    for (size_t i = 0; i < m.n_cap; i++)
        for (size_t k = 0; m.cap[i].polled && k < sizeof states / sizeof states[0]; k++)
            fprintf(out, "fusion_backup_capture_slot_state{database=\"%s\",slot=\"%s\",state=\"%s\"} %d\n",
                    m.cap[i].database, m.cap[i].slot, states[k], strcmp(states[k], m.cap[i].slot_state) == 0);
    fprintf(out, "# HELP fusion_backup_capture_slot_lag_bytes WAL the slot holds beyond its confirmed position "
                 "(pg_current_wal_lsn() - confirmed_flush_lsn).\n# TYPE fusion_backup_capture_slot_lag_bytes gauge\n");
    for (size_t i = 0; i < m.n_cap; i++)
        if (m.cap[i].polled)
            fprintf(out, "fusion_backup_capture_slot_lag_bytes{database=\"%s\",slot=\"%s\"} %llu\n", m.cap[i].database,
                    m.cap[i].slot, (unsigned long long)m.cap[i].lag_bytes);
    fprintf(out, "# HELP fusion_backup_capture_slot_lag_seconds Time since the slot's confirmed position last moved "
                 "while WAL beyond it exists (0 when caught up).\n# TYPE fusion_backup_capture_slot_lag_seconds gauge\n");
    for (size_t i = 0; i < m.n_cap; i++)
        if (m.cap[i].polled)
            fprintf(out, "fusion_backup_capture_slot_lag_seconds{database=\"%s\",slot=\"%s\"} %.3f\n", m.cap[i].database,
                    m.cap[i].slot, m.cap[i].lag_s);
    fprintf(out, "# HELP fusion_backup_capture_slot_safe_wal_bytes WAL that may still be written before the slot is "
                 "invalidated (pg_replication_slots.safe_wal_size; absent when max_slot_wal_keep_size is -1).\n"
                 "# TYPE fusion_backup_capture_slot_safe_wal_bytes gauge\n");
    for (size_t i = 0; i < m.n_cap; i++)
        if (m.cap[i].polled && m.cap[i].safe_wal >= 0)
            fprintf(out, "fusion_backup_capture_slot_safe_wal_bytes{database=\"%s\",slot=\"%s\"} %lld\n",
                    m.cap[i].database, m.cap[i].slot, (long long)m.cap[i].safe_wal);
}

void dmn_metrics_health_expect(unsigned consumers) {
    pthread_mutex_lock(&m.mu);
    m.expect = consumers;
    pthread_mutex_unlock(&m.mu);
}

void dmn_metrics_consumer_beat(dmn_consumer which) {
    int64_t now = m_mono_ms();
    pthread_mutex_lock(&m.mu);
    m.beat_ms[which] = now;
    pthread_mutex_unlock(&m.mu);
}

void dmn_metrics_consumer_stopped(dmn_consumer which) {
    pthread_mutex_lock(&m.mu);
    m.beat_ms[which] = -1;
    pthread_mutex_unlock(&m.mu);
}

int dmn_metrics_health(FILE *out) {
    int64_t now = m_mono_ms();
    int ok = 1;
    pthread_mutex_lock(&m.mu);
    if (!m.expect) {
        ok = 0;
        fprintf(out, "no consumer loop started yet\n");
    }
    for (int i = 0; i < DMN_CONSUMER_N; i++) {
        if (!(m.expect & (1u << i))) continue;
        int64_t b = m.beat_ms[i];
        if (b == 0) fprintf(out, "%s: not consuming yet (connecting to Kafka or the database)\n", m_consumer_names[i]);
        else if (b < 0) fprintf(out, "%s: stopped\n", m_consumer_names[i]);
        else if (now - b > DMN_HEALTH_STALE_MS)
            fprintf(out, "%s: no poll for %.1f s (stuck, or waiting for the database)\n", m_consumer_names[i],
                    (double)(now - b) / 1000.0);
        else fprintf(out, "%s: ok\n", m_consumer_names[i]);
        if (b <= 0 || now - b > DMN_HEALTH_STALE_MS) ok = 0;
    }
    pthread_mutex_unlock(&m.mu);
    return ok;
}

void dmn_metrics_render(FILE *out) {
    pthread_mutex_lock(&m.mu);
    fprintf(out, "# HELP fusion_backup_build_info The worker's version (always 1).\n"
                 "# TYPE fusion_backup_build_info gauge\nfusion_backup_build_info{version=\"%s\"} 1\n", fb_version());
    fprintf(out, "# HELP fusion_backup_jobs_total Jobs finished, by type and status.\n# TYPE fusion_backup_jobs_total counter\n");
    for (int t = 0; t < M_TYPES; t++) {
        fprintf(out, "fusion_backup_jobs_total{type=\"%s\",status=\"SUCCESS\"} %llu\n", m_type_names[t],
                (unsigned long long)m.jobs[t][0]);
        fprintf(out, "fusion_backup_jobs_total{type=\"%s\",status=\"FAILED\"} %llu\n", m_type_names[t],
                (unsigned long long)m.jobs[t][1]);
    }
    fprintf(out, "# HELP fusion_backup_jobs_in_flight Jobs running now.\n# TYPE fusion_backup_jobs_in_flight gauge\n");
    for (int t = 0; t < M_TYPES; t++)
        fprintf(out, "fusion_backup_jobs_in_flight{type=\"%s\"} %lld\n", m_type_names[t], (long long)m.in_flight[t]);
    fprintf(out, "# HELP fusion_backup_job_duration_seconds Job wall time.\n# TYPE fusion_backup_job_duration_seconds histogram\n");
    for (int t = 0; t < M_TYPES; t++) {
        uint64_t cum = 0;
        for (int b = 0; b < M_BUCKETS; b++) {
            cum += m.hist[t][b];
            fprintf(out, "fusion_backup_job_duration_seconds_bucket{type=\"%s\",le=\"%g\"} %llu\n", m_type_names[t],
                    m_bucket_s[b], (unsigned long long)cum);
        }
        cum += m.hist[t][M_BUCKETS];
        fprintf(out, "fusion_backup_job_duration_seconds_bucket{type=\"%s\",le=\"+Inf\"} %llu\n", m_type_names[t],
                (unsigned long long)cum);
        fprintf(out, "fusion_backup_job_duration_seconds_sum{type=\"%s\"} %.3f\n", m_type_names[t], m.dur_sum[t]);
        fprintf(out, "fusion_backup_job_duration_seconds_count{type=\"%s\"} %llu\n", m_type_names[t], (unsigned long long)cum);
    }
    fprintf(out, "# HELP fusion_backup_rows_total Rows backed up or archived.\n# TYPE fusion_backup_rows_total counter\n");
    for (int t = 0; t < M_TYPES; t++)
        fprintf(out, "fusion_backup_rows_total{type=\"%s\"} %llu\n", m_type_names[t], (unsigned long long)m.rows[t]);
    fprintf(out, "# HELP fusion_backup_archive_throttle_seconds_total Time archival paused for the database's load.\n"
                 "# TYPE fusion_backup_archive_throttle_seconds_total counter\n");
    fprintf(out, "fusion_backup_archive_throttle_seconds_total %.3f\n", m.archive_throttle_s);
    fprintf(out, "# HELP fusion_backup_archive_live_batches_total Archival batches after which a live load was seen "
                 "(archive-live-window-ms): those batches were smaller and followed by longer pauses.\n"
                 "# TYPE fusion_backup_archive_live_batches_total counter\n"
                 "fusion_backup_archive_live_batches_total %llu\n", (unsigned long long)m.archive_live_batches);
    fprintf(out, "# HELP fusion_backup_stored_bytes_total Artifact bytes written.\n# TYPE fusion_backup_stored_bytes_total counter\n");
    fprintf(out, "fusion_backup_stored_bytes_total %llu\n", (unsigned long long)m.bytes[0]);
    fprintf(out, "# HELP fusion_backup_dlq_total Messages sent to the dead-letter topic.\n# TYPE fusion_backup_dlq_total counter\n");
    fprintf(out, "fusion_backup_dlq_total %llu\n", (unsigned long long)m.dlq);
    fprintf(out, "# HELP fusion_backup_recorder_ignored_total Status events the recorder did not apply, by why.\n"
                 "# TYPE fusion_backup_recorder_ignored_total counter\n");
    for (int i = 0; i < DMN_IGNORED_N; i++)
        fprintf(out, "fusion_backup_recorder_ignored_total{reason=\"%s\"} %llu\n", m_ignored_names[i],
                (unsigned long long)m.ignored[i]);
    fprintf(out, "# HELP fusion_backup_jobs_given_up_total Requests not run again after max_deliveries deliveries.\n"
                 "# TYPE fusion_backup_jobs_given_up_total counter\n");
    fprintf(out, "fusion_backup_jobs_given_up_total %llu\n", (unsigned long long)m.given_up);
    fprintf(out, "# HELP fusion_backup_jobs_denied_total Requests the database did not authorise (dead-lettered, not run).\n"
                 "# TYPE fusion_backup_jobs_denied_total counter\n");
    for (int t = 0; t < M_TYPES; t++)
        fprintf(out, "fusion_backup_jobs_denied_total{type=\"%s\"} %llu\n", m_type_names[t], (unsigned long long)m.denied[t]);
    fprintf(out, "# HELP fusion_backup_jobs_untrusted_total Requests not signed by a trusted requester "
                 "(dead-lettered, not run).\n# TYPE fusion_backup_jobs_untrusted_total counter\n"
                 "fusion_backup_jobs_untrusted_total %llu\n", (unsigned long long)m.untrusted);
    fprintf(out, "# HELP fusion_backup_ledger_mismatch_total Ledger entries whose request digest differs from the request.\n"
                 "# TYPE fusion_backup_ledger_mismatch_total counter\n");
    fprintf(out, "fusion_backup_ledger_mismatch_total %llu\n", (unsigned long long)m.ledger_mismatch);
    fprintf(out, "# HELP fusion_backup_minimal_failed_total FAILED statuses sent in minimal form (the full one was refused).\n"
                 "# TYPE fusion_backup_minimal_failed_total counter\n");
    fprintf(out, "fusion_backup_minimal_failed_total %llu\n", (unsigned long long)m.minimal_failed);
    fprintf(out, "# HELP fusion_backup_last_backup_success_timestamp_seconds Last successful backup per configuration.\n"
                 "# TYPE fusion_backup_last_backup_success_timestamp_seconds gauge\n");
    for (size_t i = 0; i < m.n_last_ok; i++)
        fprintf(out, "fusion_backup_last_backup_success_timestamp_seconds{config_id=\"%lld\"} %.3f\n",
                (long long)m.last_ok[i].config_id, (double)m.last_ok[i].when_ms / 1000.0);
    fprintf(out, "# HELP fusion_backup_consumer_lag Messages not yet consumed, per partition.\n"
                 "# TYPE fusion_backup_consumer_lag gauge\n");
    for (size_t i = 0; i < m.n_lag; i++)
        fprintf(out, "fusion_backup_consumer_lag{topic=\"%s\",partition=\"%d\"} %lld\n", m.lag[i].topic, (int)m.lag[i].partition,
                (long long)m.lag[i].lag);
    m_render_capture(out);
    pthread_mutex_unlock(&m.mu);
}

/* The endpoint: one thread, one poll() loop over the listening socket and up to M_CONNS clients. A client gets
 * M_REQUEST_MS to send its request head, then it is dropped: a scraper sends it at once, and a connection that
 * sends nothing (a port scan, a stuck proxy) must not hold the endpoint, as a blocking recv() would. */
#define M_CONNS 16
#define M_REQUEST_MS 5000
#define M_REQ_MAX 4096

typedef struct m_conn {
    int fd; /* -1: free */
    int64_t deadline;
    size_t len;
    char buf[M_REQ_MAX];
} m_conn;

static void m_send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return; /* the scraper went away or stalled past SO_SNDTIMEO: nothing to tell it */
        p += w;
        n -= (size_t)w;
    }
}

static void m_reply(int fd, int status, const char *reason, const char *ctype, const char *body, size_t blen,
                    int head_only) {
    char head[320];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", status,
                      reason, ctype, blen);
    m_send_all(fd, head, (size_t)hl);
    if (!head_only && body) m_send_all(fd, body, blen);
}

/* Answers one request head ("GET /metrics HTTP/1.1\r\n..."): /metrics, /healthz, 404 for any other path. */
static void m_answer(int fd, char *req) {
    char *sp1 = strchr(req, ' '), *sp2 = sp1 ? strpbrk(sp1 + 1, " \r\n") : NULL;
    if (!sp1 || !sp2) {
        static const char bad[] = "bad request line\n";
        m_reply(fd, 400, "Bad Request", "text/plain", bad, sizeof bad - 1, 0);
        return;
    }
    *sp1 = '\0';
    *sp2 = '\0';
    char *path = sp1 + 1, *q = strchr(path, '?');
    if (q) *q = '\0'; /* scrapers may add parameters; none changes what is served */
    int head_only = strcmp(req, "HEAD") == 0;
    if (!head_only && strcmp(req, "GET") != 0) {
        static const char msg[] = "only GET and HEAD\n";
        m_reply(fd, 405, "Method Not Allowed", "text/plain", msg, sizeof msg - 1, 0);
        return;
    }
    char *body = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&body, &blen);
    if (!f) {
        m_reply(fd, 500, "Internal Server Error", "text/plain", NULL, 0, 0);
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        dmn_metrics_render(f);
        fclose(f);
        m_reply(fd, 200, "OK", "text/plain; version=0.0.4", body, blen, head_only);
    } else if (strcmp(path, "/healthz") == 0) {
        int ok = dmn_metrics_health(f);
        fclose(f);
        m_reply(fd, ok ? 200 : 503, ok ? "OK" : "Service Unavailable", "text/plain", body, blen, head_only);
    } else {
        fprintf(f, "not found: %s (this endpoint serves /metrics and /healthz)\n", path);
        fclose(f);
        m_reply(fd, 404, "Not Found", "text/plain", body, blen, head_only);
    }
    free(body);
}

static void m_close(m_conn *c) {
    close(c->fd);
    c->fd = -1;
}

static void *dmn_metrics_thread(void *arg) {
    int lfd = (int)(intptr_t)arg;
    static m_conn conns[M_CONNS];
    for (int i = 0; i < M_CONNS; i++) conns[i].fd = -1;
    for (;;) {
        struct pollfd pf[M_CONNS + 1];
        int map[M_CONNS + 1], n = 0, free_slot = -1;
        int64_t now = m_mono_ms(), wait = -1;
        for (int i = 0; i < M_CONNS; i++) {
            if (conns[i].fd < 0) {
                if (free_slot < 0) free_slot = i;
                continue;
            }
            if (now >= conns[i].deadline) {
                m_close(&conns[i]); /* sent no complete request in time */
                if (free_slot < 0) free_slot = i;
                continue;
            }
            int64_t left = conns[i].deadline - now;
            if (wait < 0 || left < wait) wait = left;
            pf[n] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
            map[n++] = i;
        }
        /* With every slot taken, stop accepting until one frees: the kernel's backlog holds newcomers meanwhile. */
        if (free_slot >= 0) {
            pf[n] = (struct pollfd){.fd = lfd, .events = POLLIN};
            map[n++] = -1;
        }
        int r = poll(pf, (nfds_t)n, (int)wait);
        if (r < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int k = 0; k < n; k++) {
            if (!pf[k].revents) continue;
            if (map[k] < 0) {
                int c = accept(lfd, NULL, NULL);
                if (c < 0) continue;
                fcntl(c, F_SETFD, FD_CLOEXEC); /* job threads start pg_dump; it must not inherit scrapers */
                /* A scraper that stops reading must not stall the thread either; bodies are small. */
                struct timeval tv = {.tv_sec = M_REQUEST_MS / 1000};
                setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
                conns[free_slot] = (m_conn){.fd = c, .deadline = m_mono_ms() + M_REQUEST_MS, .len = 0};
                continue;
            }
            m_conn *c = &conns[map[k]];
            ssize_t got = recv(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len, MSG_DONTWAIT);
            if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
            if (got <= 0) {
                m_close(c);
                continue;
            }
            c->len += (size_t)got;
            c->buf[c->len] = '\0';
            /* The request line is all that is read; the rest of the head may follow, but a full buffer answers. */
            if (strstr(c->buf, "\r\n\r\n") || strstr(c->buf, "\n\n") || c->len == sizeof c->buf - 1) {
                m_answer(c->fd, c->buf);
                m_close(c);
            }
        }
    }
    close(lfd);
    return NULL;
}

/* Parses "host:port", "[v6]:port" or ":port" (127.0.0.1) into sa. */
static fb_code m_parse_listen(const char *listen_addr, struct sockaddr_storage *sa, socklen_t *salen, fb_err *err) {
    char host[256] = "127.0.0.1";
    const char *colon = strrchr(listen_addr, ':');
    if (!colon)
        return fb_err_set(err, FB_ERR_USAGE, "--metrics-listen wants host:port, [v6addr]:port or :port, got \"%s\"",
                          listen_addr);
    int v6 = listen_addr[0] == '[';
    if (v6) {
        if (colon < listen_addr + 2 || colon[-1] != ']')
            return fb_err_set(err, FB_ERR_USAGE, "--metrics-listen: an IPv6 address goes in brackets, e.g. [::]:%s",
                              colon + 1);
        snprintf(host, sizeof host, "%.*s", (int)(colon - listen_addr - 2), listen_addr + 1);
    } else if (colon != listen_addr) {
        snprintf(host, sizeof host, "%.*s", (int)(colon - listen_addr), listen_addr);
    }
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || port <= 0 || port > 65535)
        return fb_err_set(err, FB_ERR_USAGE, "--metrics-listen: bad port in \"%s\" (1-65535)", listen_addr);
    memset(sa, 0, sizeof *sa);
    if (v6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
            return fb_err_set(err, FB_ERR_USAGE, "--metrics-listen: \"%s\" is not an IPv6 address", host);
        *salen = sizeof *s6;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)sa;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
            return fb_err_set(err, FB_ERR_USAGE,
                              "--metrics-listen: \"%s\" is not an IPv4 address (IPv6 goes in brackets: [::1]:PORT)",
                              host);
        *salen = sizeof *s4;
    }
    return FB_OK;
}

fb_code dmn_metrics_serve(const char *listen_addr, fb_err *err) {
    struct sockaddr_storage sa;
    socklen_t salen = 0;
    fb_code rc = m_parse_listen(listen_addr, &sa, &salen, err);
    if (rc) return rc;
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1, zero = 0;
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        /* "[::]:PORT" means every address, IPv4 too, whatever the host's net.ipv6.bindv6only says. */
        if (sa.ss_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&sa)->sin6_addr))
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    }
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, salen) != 0 || listen(fd, 64) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return fb_err_set(err, FB_ERR_USAGE, "could not listen on %s for metrics: %s", listen_addr, strerror(e));
    }
    pthread_t t;
    if (pthread_create(&t, NULL, dmn_metrics_thread, (void *)(intptr_t)fd) != 0) {
        close(fd);
        return fb_err_set(err, FB_ERR_INTERNAL, "could not start the metrics thread");
    }
    pthread_detach(t);
    return FB_OK;
}
