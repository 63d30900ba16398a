/* dmn_metrics: see dmn_metrics.h. Fixed-size tables: a handful of job types, statuses and partitions. */
#include "daemon/dmn_metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define M_TYPES 3
#define M_BUCKETS 10
#define M_CONFIGS 256
#define M_PARTS 256

static const char *const m_type_names[M_TYPES] = {"backup", "archive", "verify"};
/* Why the recorder left a status event unapplied (dmn_recorder.c): a fixed set, so the label cannot grow. */
static const char *const m_ignored_names[DMN_IGNORED_N] = {"no_record", "record_mismatch", "config_mismatch",
                                                           "attempt_too_high", "verify_job_mismatch", "stale"};
static const double m_bucket_s[M_BUCKETS] = {0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400};

static struct {
    pthread_mutex_t mu;
    uint64_t jobs[M_TYPES][2];       /* [type][0 success, 1 failed] */
    uint64_t hist[M_TYPES][M_BUCKETS + 1];
    double dur_sum[M_TYPES];
    int64_t in_flight[M_TYPES];
    uint64_t rows[M_TYPES], bytes[M_TYPES];
    double archive_throttle_s; /* paused by archival throttling (job_archive.c) */
    uint64_t dlq;
    uint64_t ignored[DMN_IGNORED_N];
    uint64_t given_up, ledger_mismatch, minimal_failed;
    uint64_t denied[M_TYPES];
    struct { int64_t config_id, when_ms; } last_ok[M_CONFIGS];
    size_t n_last_ok;
    struct { char topic[200]; int32_t partition; int64_t lag; } lag[M_PARTS];
    size_t n_lag;
} m = {.mu = PTHREAD_MUTEX_INITIALIZER};

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

void dmn_metrics_render(FILE *out) {
    pthread_mutex_lock(&m.mu);
    fprintf(out, "# HELP fusion_jobs_total Jobs finished, by type and status.\n# TYPE fusion_jobs_total counter\n");
    for (int t = 0; t < M_TYPES; t++) {
        fprintf(out, "fusion_jobs_total{type=\"%s\",status=\"SUCCESS\"} %llu\n", m_type_names[t],
                (unsigned long long)m.jobs[t][0]);
        fprintf(out, "fusion_jobs_total{type=\"%s\",status=\"FAILED\"} %llu\n", m_type_names[t],
                (unsigned long long)m.jobs[t][1]);
    }
    fprintf(out, "# HELP fusion_jobs_in_flight Jobs running now.\n# TYPE fusion_jobs_in_flight gauge\n");
    for (int t = 0; t < M_TYPES; t++)
        fprintf(out, "fusion_jobs_in_flight{type=\"%s\"} %lld\n", m_type_names[t], (long long)m.in_flight[t]);
    fprintf(out, "# HELP fusion_job_duration_seconds Job wall time.\n# TYPE fusion_job_duration_seconds histogram\n");
    for (int t = 0; t < M_TYPES; t++) {
        uint64_t cum = 0;
        for (int b = 0; b < M_BUCKETS; b++) {
            cum += m.hist[t][b];
            fprintf(out, "fusion_job_duration_seconds_bucket{type=\"%s\",le=\"%g\"} %llu\n", m_type_names[t],
                    m_bucket_s[b], (unsigned long long)cum);
        }
        cum += m.hist[t][M_BUCKETS];
        fprintf(out, "fusion_job_duration_seconds_bucket{type=\"%s\",le=\"+Inf\"} %llu\n", m_type_names[t],
                (unsigned long long)cum);
        fprintf(out, "fusion_job_duration_seconds_sum{type=\"%s\"} %.3f\n", m_type_names[t], m.dur_sum[t]);
        fprintf(out, "fusion_job_duration_seconds_count{type=\"%s\"} %llu\n", m_type_names[t], (unsigned long long)cum);
    }
    fprintf(out, "# HELP fusion_rows_total Rows backed up or archived.\n# TYPE fusion_rows_total counter\n");
    for (int t = 0; t < M_TYPES; t++)
        fprintf(out, "fusion_rows_total{type=\"%s\"} %llu\n", m_type_names[t], (unsigned long long)m.rows[t]);
    fprintf(out, "# HELP fusion_archive_throttle_seconds_total Time archival paused for the database's load.\n"
                 "# TYPE fusion_archive_throttle_seconds_total counter\n");
    fprintf(out, "fusion_archive_throttle_seconds_total %.3f\n", m.archive_throttle_s);
    fprintf(out, "# HELP fusion_stored_bytes_total Artifact bytes written.\n# TYPE fusion_stored_bytes_total counter\n");
    fprintf(out, "fusion_stored_bytes_total %llu\n", (unsigned long long)m.bytes[0]);
    fprintf(out, "# HELP fusion_dlq_total Messages sent to the dead-letter topic.\n# TYPE fusion_dlq_total counter\n");
    fprintf(out, "fusion_dlq_total %llu\n", (unsigned long long)m.dlq);
    fprintf(out, "# HELP fusion_backup_recorder_ignored_total Status events the recorder did not apply, by why.\n"
                 "# TYPE fusion_backup_recorder_ignored_total counter\n");
    for (int i = 0; i < DMN_IGNORED_N; i++)
        fprintf(out, "fusion_backup_recorder_ignored_total{reason=\"%s\"} %llu\n", m_ignored_names[i],
                (unsigned long long)m.ignored[i]);
    fprintf(out, "# HELP fusion_jobs_given_up_total Requests not run again after max_deliveries deliveries.\n"
                 "# TYPE fusion_jobs_given_up_total counter\n");
    fprintf(out, "fusion_jobs_given_up_total %llu\n", (unsigned long long)m.given_up);
    fprintf(out, "# HELP fusion_jobs_denied_total Requests the database did not authorise (dead-lettered, not run).\n"
                 "# TYPE fusion_jobs_denied_total counter\n");
    for (int t = 0; t < M_TYPES; t++)
        fprintf(out, "fusion_jobs_denied_total{type=\"%s\"} %llu\n", m_type_names[t], (unsigned long long)m.denied[t]);
    fprintf(out, "# HELP fusion_ledger_mismatch_total Ledger entries whose request digest differs from the request.\n"
                 "# TYPE fusion_ledger_mismatch_total counter\n");
    fprintf(out, "fusion_ledger_mismatch_total %llu\n", (unsigned long long)m.ledger_mismatch);
    fprintf(out, "# HELP fusion_minimal_failed_total FAILED statuses sent in minimal form (the full one was refused).\n"
                 "# TYPE fusion_minimal_failed_total counter\n");
    fprintf(out, "fusion_minimal_failed_total %llu\n", (unsigned long long)m.minimal_failed);
    fprintf(out, "# HELP fusion_last_backup_success_timestamp_seconds Last successful backup per configuration.\n"
                 "# TYPE fusion_last_backup_success_timestamp_seconds gauge\n");
    for (size_t i = 0; i < m.n_last_ok; i++)
        fprintf(out, "fusion_last_backup_success_timestamp_seconds{config_id=\"%lld\"} %.3f\n",
                (long long)m.last_ok[i].config_id, (double)m.last_ok[i].when_ms / 1000.0);
    fprintf(out, "# HELP fusion_consumer_lag Messages not yet consumed, per partition.\n"
                 "# TYPE fusion_consumer_lag gauge\n");
    for (size_t i = 0; i < m.n_lag; i++)
        fprintf(out, "fusion_consumer_lag{topic=\"%s\",partition=\"%d\"} %lld\n", m.lag[i].topic, (int)m.lag[i].partition,
                (long long)m.lag[i].lag);
    pthread_mutex_unlock(&m.mu);
}

static void *dmn_metrics_thread(void *arg) {
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR) continue;
            break;
        }
        char req[2048];
        ssize_t r = recv(c, req, sizeof req - 1, 0); /* one read is enough for a GET from a scraper */
        (void)r;
        char *body = NULL;
        size_t blen = 0;
        FILE *f = open_memstream(&body, &blen);
        if (f) {
            dmn_metrics_render(f);
            fclose(f);
        }
        char head[256];
        int hl = snprintf(head, sizeof head,
                          "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: %zu\r\n"
                          "Connection: close\r\n\r\n", blen);
        if (send(c, head, (size_t)hl, MSG_NOSIGNAL) == hl && body) send(c, body, blen, MSG_NOSIGNAL);
        free(body);
        close(c);
    }
    close(lfd);
    return NULL;
}

fb_code dmn_metrics_serve(const char *listen_addr, fb_err *err) {
    char host[256] = "127.0.0.1";
    const char *colon = strrchr(listen_addr, ':');
    if (!colon) return fb_err_set(err, FB_ERR_USAGE, "--metrics-listen wants host:port, got \"%s\"", listen_addr);
    if (colon != listen_addr) snprintf(host, sizeof host, "%.*s", (int)(colon - listen_addr), listen_addr);
    int port = atoi(colon + 1);
    if (port <= 0 || port > 65535) return fb_err_set(err, FB_ERR_USAGE, "--metrics-listen: bad port in \"%s\"", listen_addr);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return fb_err_set(err, FB_ERR_USAGE, "--metrics-listen: \"%s\" is not an IPv4 address", host);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 16) != 0) {
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
