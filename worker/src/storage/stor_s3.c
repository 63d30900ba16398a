/* stor_s3: the S3-compatible object storage driver (see stor.h and stor_s3.h), on libcurl.
 *
 * libcurl does the HTTP, the TLS and the request signing (CURLOPT_AWS_SIGV4); this file only says which requests
 * to make. The promises of stor.h map onto S3 like this:
 *   - all-or-nothing writes: every artifact is a multipart upload. Parts are buffered (one part in memory, so an
 *     upload holds part_size bytes whatever the artifact's size), each sent with its SHA-256 (signed as the payload
 *     hash and sent as x-amz-checksum-sha256, which the server checks), retried on 5xx and network errors. The
 *     object exists only once CompleteMultipartUpload succeeds; abort (or any failure) sends
 *     AbortMultipartUpload. A worker killed mid-upload leaves an unfinished upload, which is invisible to GET and
 *     LIST; the next stor_create() of the same key aborts it (as the posix driver reuses its temporary).
 *   - never overwrite: stor_create() refuses a key that exists (HEAD), and the completion is sent with
 *     If-None-Match: * so that a key created meanwhile is not replaced where the server supports it.
 *   - random access: pread is a ranged GET; small reads are served from a 1 MiB read-ahead window, because the
 *     artifact reader reads headers and frames in small pieces and a request per piece costs a round trip.
 *   - rename (prune's trash step) is server-side copy then delete: not atomic, but each step is, and the caller
 *     only needs "the artifact no longer appears under its name before its bytes go" (a crash between copy and
 *     delete leaves both names; the next prune removes the trash copy and retries the artifact).
 * Requests of one target are serialized on its curl handle (connections are reused); targets are independent.
 */
#include "storage/stor_s3.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/fb_config.h"
#include "common/fb_log.h"

#define S3_BODY_MAX (4u << 20)   /* largest response body kept (XML listings, errors) */
#define S3_WINDOW (1u << 20)     /* read-ahead window of small preads */
#define S3_MAX_PARTS 10000       /* S3's limit */

typedef struct s3_stor {
    stor base;
    pthread_mutex_t mu;
    CURL *curl;
    char *endpoint;      /* scheme://host[:port], no trailing slash */
    char *bucket;
    char *prefix;        /* "" or "a/b/" (with its trailing slash) */
    char *display;       /* s3://bucket/prefix, for messages */
    int virtual_host;
    char *sigv4;         /* "aws:amz:REGION:s3" */
    char *userpwd;       /* "KEY:SECRET", wiped on free; never logged */
    char *token_hdr;     /* "x-amz-security-token: ..." or NULL */
    char *ca_file;
    long timeout_s;
    int retries;
    long backoff_ms;
    size_t part_size;
} s3_stor;

typedef struct s3_resp {
    long status;
    char *body;          /* NUL-terminated; kept up to S3_BODY_MAX */
    size_t len, cap;
    unsigned char *sink; /* GET into the caller's buffer instead */
    size_t sink_cap, sink_len;
    char etag[256];
    uint64_t content_length;
    int has_length;
} s3_resp;

static pthread_once_t s3_once = PTHREAD_ONCE_INIT;
static CURLcode s3_global_rc;
static void s3_global_init(void) { s3_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* ---------------------------------------------------------------------------------------------------------------
 * Pure helpers (exported for tests/c/test_stor_s3.c) */

fb_code stor_s3_url_parse(const char *url, char **bucket, char **prefix, fb_err *err) {
    *bucket = *prefix = NULL;
    if (!url || strncmp(url, STOR_S3_SCHEME, STOR_S3_SCHEME_LEN) != 0)
        return fb_err_set(err, FB_ERR_USAGE, "\"%s\" is not an s3:// location (s3://BUCKET or s3://BUCKET/PREFIX)",
                          url ? url : "");
    const char *b = url + STOR_S3_SCHEME_LEN, *slash = strchr(b, '/');
    size_t bl = slash ? (size_t)(slash - b) : strlen(b);
    if (bl < 3 || bl > 63)
        return fb_err_set(err, FB_ERR_USAGE, "\"%s\": a bucket name has 3 to 63 characters", url);
    for (size_t i = 0; i < bl; i++) {
        char c = b[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
            return fb_err_set(err, FB_ERR_USAGE,
                              "\"%s\": a bucket name has only lower-case letters, digits, '-' and '.'", url);
    }
    const char *p = slash ? slash + 1 : "";
    size_t pl = strlen(p);
    while (pl && p[pl - 1] == '/') pl--;
    if (pl) {
        char *tmp = strndup(p, pl);
        fb_code rc = tmp ? stor_path_check(tmp, err) : fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        free(tmp);
        if (rc) {
            if (err) err->code = FB_ERR_USAGE; /* a bad setting, not a bad request */
            fb_err_prefix(err, "prefix of \"%s\": ", url);
            return FB_ERR_USAGE;
        }
    }
    *bucket = strndup(b, bl);
    *prefix = malloc(pl + 2);
    if (!*bucket || !*prefix) {
        free(*bucket);
        free(*prefix);
        *bucket = *prefix = NULL;
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    memcpy(*prefix, p, pl);
    if (pl) (*prefix)[pl++] = '/';
    (*prefix)[pl] = '\0';
    return FB_OK;
}

/* Percent-encodes everything but RFC 3986's unreserved characters (and '/' when keep_slash): the form SigV4's
 * canonical request wants, so the URL we send is already canonical. */
static char *s3_escape(const char *s, int keep_slash) {
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *o = malloc(3 * n + 1), *q = o;
    if (!o) return NULL;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if ((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' ||
            *c == '_' || *c == '.' || *c == '~' || (keep_slash && *c == '/')) {
            *q++ = (char)*c;
        } else {
            *q++ = '%';
            *q++ = hex[*c >> 4];
            *q++ = hex[*c & 15];
        }
    }
    *q = '\0';
    return o;
}

/* Copies the text of the first <tag>...</tag> at or after `from` into out (XML entities decoded). Returns a pointer
 * past the closing tag, or NULL when there is none. */
const char *stor_s3_xml_tag(const char *from, const char *tag, char *out, size_t cap) {
    char open[80], close[80];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    const char *a = from ? strstr(from, open) : NULL;
    if (!a) return NULL;
    a += strlen(open);
    const char *e = strstr(a, close);
    if (!e) return NULL;
    size_t o = 0;
    static const struct { const char *ent; char c; } ents[] = {
        {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}, {"&#34;", '"'}, {"&#39;", '\''}};
    for (const char *c = a; c < e && o + 1 < cap;) {
        int done = 0;
        if (*c == '&')
            for (size_t i = 0; i < sizeof ents / sizeof ents[0]; i++) {
                size_t el = strlen(ents[i].ent);
                if ((size_t)(e - c) >= el && strncmp(c, ents[i].ent, el) == 0) {
                    out[o++] = ents[i].c;
                    c += el;
                    done = 1;
                    break;
                }
            }
        if (!done) out[o++] = *c++;
    }
    if (cap) out[o] = '\0';
    return e + strlen(close);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Credentials: the AWS conventions, so that the operator's existing set-up works and no secret is a setting. */

static char *s3_trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r')) s[--n] = '\0';
    return s;
}

/* Reads aws_access_key_id, aws_secret_access_key and aws_session_token of [profile] from an AWS credentials file. */
static fb_code s3_creds_file(const char *path, const char *profile, char **key, char **secret, char **token,
                             fb_err *err) {
    FILE *f = fopen(path, "r");
    if (!f)
        return fb_err_set(err, FB_ERR_USAGE,
                          "no S3 credentials: AWS_ACCESS_KEY_ID is unset and the credentials file \"%s\" cannot be "
                          "read (%s); export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or set "
                          "--s3-credentials-file / FB_S3_CREDENTIALS_FILE",
                          path, strerror(errno));
    char line[4096];
    int in = 0;
    while (fgets(line, sizeof line, f)) {
        char *s = s3_trim(line);
        if (*s == '#' || *s == ';' || !*s) continue;
        if (*s == '[') {
            char *e = strchr(s, ']');
            if (e) *e = '\0';
            in = strcmp(s3_trim(s + 1), profile) == 0;
            continue;
        }
        char *eq = strchr(s, '=');
        if (!in || !eq) continue;
        *eq = '\0';
        char *k = s3_trim(s), *v = s3_trim(eq + 1);
        char **slot = strcmp(k, "aws_access_key_id") == 0       ? key
                      : strcmp(k, "aws_secret_access_key") == 0 ? secret
                      : strcmp(k, "aws_session_token") == 0     ? token
                                                                : NULL;
        if (slot) {
            free(*slot);
            *slot = strdup(v);
        }
    }
    sodium_memzero(line, sizeof line);
    fclose(f);
    if (!*key || !*secret)
        return fb_err_set(err, FB_ERR_USAGE,
                          "the credentials file \"%s\" has no aws_access_key_id and aws_secret_access_key in profile "
                          "[%s]; add them, or choose the profile with --s3-profile",
                          path, profile);
    return FB_OK;
}

static fb_code s3_creds(const fb_config *cfg, char **userpwd, char **token_hdr, fb_err *err) {
    char *key = NULL, *secret = NULL, *token = NULL;
    fb_code rc = FB_OK;
    const char *ek = getenv("AWS_ACCESS_KEY_ID"), *es = getenv("AWS_SECRET_ACCESS_KEY");
    if (ek && *ek) {
        if (!es || !*es)
            return fb_err_set(err, FB_ERR_USAGE, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: export both");
        key = strdup(ek);
        secret = strdup(es);
        const char *et = getenv("AWS_SESSION_TOKEN");
        if (et && *et) token = strdup(et);
    } else {
        char path[4096];
        const char *file = cfg && cfg->s3_credentials_file && *cfg->s3_credentials_file ? cfg->s3_credentials_file
                                                                                         : getenv("AWS_SHARED_CREDENTIALS_FILE");
        if (!file || !*file) {
            snprintf(path, sizeof path, "%s/.aws/credentials", getenv("HOME") ? getenv("HOME") : "");
            file = path;
        }
        rc = s3_creds_file(file, cfg && cfg->s3_profile && *cfg->s3_profile ? cfg->s3_profile : "default", &key,
                           &secret, &token, err);
    }
    if (rc == FB_OK && (!key || !secret)) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    if (rc == FB_OK && strchr(key, ':'))
        rc = fb_err_set(err, FB_ERR_USAGE, "the S3 access key id contains ':'; check AWS_ACCESS_KEY_ID");
    if (rc == FB_OK) {
        size_t n = strlen(key) + strlen(secret) + 2;
        if ((*userpwd = malloc(n))) snprintf(*userpwd, n, "%s:%s", key, secret);
        if (token && (*token_hdr = malloc(strlen(token) + 32)))
            sprintf(*token_hdr, "x-amz-security-token: %s", token);
        if (!*userpwd || (token && !*token_hdr)) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    if (secret) sodium_memzero(secret, strlen(secret));
    if (token) sodium_memzero(token, strlen(token));
    free(key);
    free(secret);
    free(token);
    return rc;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Requests */

static size_t s3_on_body(char *data, size_t size, size_t nmemb, void *opaque) {
    s3_resp *r = opaque;
    size_t n = size * nmemb;
    if (r->sink && r->status / 100 == 2) {
        if (n > r->sink_cap - r->sink_len) return 0; /* more than asked for: fail the transfer */
        memcpy(r->sink + r->sink_len, data, n);
        r->sink_len += n;
        return n;
    }
    if (r->len + n + 1 > r->cap) {
        if (r->len + n + 1 > S3_BODY_MAX) return n; /* keep the head only; errors and listings are small */
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n + 1) cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b) return 0;
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

static size_t s3_on_header(char *data, size_t size, size_t nmemb, void *opaque) {
    s3_resp *r = opaque;
    size_t n = size * nmemb;
    if (n > 9 && strncmp(data, "HTTP/", 5) == 0) {
        /* a new response (after a redirect or 100 Continue): its status decides where the body goes */
        r->status = strtol(strchr(data, ' ') ? strchr(data, ' ') + 1 : "0", NULL, 10);
        r->has_length = 0;
    } else if (n > 5 && strncasecmp(data, "etag:", 5) == 0) {
        size_t l = n - 5;
        const char *v = data + 5;
        while (l && (*v == ' ')) v++, l--;
        while (l && (v[l - 1] == '\r' || v[l - 1] == '\n' || v[l - 1] == ' ')) l--;
        if (l < sizeof r->etag) {
            memcpy(r->etag, v, l);
            r->etag[l] = '\0';
        }
    } else if (n > 15 && strncasecmp(data, "content-length:", 15) == 0) {
        r->content_length = strtoull(data + 15, NULL, 10);
        r->has_length = 1;
    }
    return n;
}

static void s3_resp_reset(s3_resp *r) {
    r->status = 0;
    r->len = 0;
    if (r->body) r->body[0] = '\0';
    r->sink_len = 0;
    r->etag[0] = '\0';
    r->has_length = 0;
}

static void s3_resp_free(s3_resp *r) { free(r->body); }

/* The URL of key (relative to the bucket, unescaped) with an already canonical query (sorted, "k=v" pairs). */
static char *s3_url(const s3_stor *s, const char *key, const char *query) {
    char *ek = s3_escape(key, 1);
    if (!ek) return NULL;
    size_t n = strlen(s->endpoint) + strlen(s->bucket) + strlen(ek) + (query ? strlen(query) : 0) + 8;
    char *u = malloc(n);
    if (u && s->virtual_host) {
        const char *host = strstr(s->endpoint, "://") + 3;
        snprintf(u, n, "%.*s%s.%s/%s%s%s", (int)(host - s->endpoint), s->endpoint, s->bucket, host, ek,
                 query ? "?" : "", query ? query : "");
    } else if (u) {
        snprintf(u, n, "%s/%s/%s%s%s", s->endpoint, s->bucket, ek, query ? "?" : "", query ? query : "");
    }
    free(ek);
    return u;
}

static int s3_retryable(CURLcode cc, long status) {
    if (cc != CURLE_OK)
        return cc == CURLE_COULDNT_CONNECT || cc == CURLE_OPERATION_TIMEDOUT || cc == CURLE_SEND_ERROR ||
               cc == CURLE_RECV_ERROR || cc == CURLE_GOT_NOTHING || cc == CURLE_PARTIAL_FILE ||
               cc == CURLE_COULDNT_RESOLVE_HOST || cc == CURLE_SSL_CONNECT_ERROR;
    return status >= 500 || status == 429 || status == 408;
}

/* Turns a final non-2xx answer into an error an operator can act on. what: "reading \"x\"" etc. */
static fb_code s3_http_error(const s3_stor *s, const s3_resp *r, const char *what, fb_err *err) {
    char code[128] = "", msg[512] = "";
    stor_s3_xml_tag(r->body, "Code", code, sizeof code);
    stor_s3_xml_tag(r->body, "Message", msg, sizeof msg);
    if (!*code && r->status == 404) snprintf(code, sizeof code, "NotFound");
    if (strcmp(code, "NoSuchBucket") == 0)
        return fb_err_set(err, FB_ERR_USAGE,
                          "%s in %s: the bucket \"%s\" does not exist at %s; create it or fix the storage location",
                          what, s->display, s->bucket, s->endpoint);
    if (strcmp(code, "InvalidAccessKeyId") == 0 || strcmp(code, "SignatureDoesNotMatch") == 0 ||
        strcmp(code, "InvalidToken") == 0 || strcmp(code, "ExpiredToken") == 0 ||
        strcmp(code, "AuthorizationHeaderMalformed") == 0 || (r->status == 403 && strcmp(code, "AccessDenied") != 0))
        return fb_err_set(err, FB_ERR_USAGE,
                          "%s in %s: %s refused the credentials (%s%s%s); check AWS_ACCESS_KEY_ID / "
                          "AWS_SECRET_ACCESS_KEY (or the credentials file) and --s3-region",
                          what, s->display, s->endpoint, *code ? code : "HTTP 403", *msg ? ": " : "", msg);
    if (strcmp(code, "AccessDenied") == 0)
        return fb_err_set(err, FB_ERR_USAGE,
                          "%s in %s: access denied (%s); give these credentials read, write, list and delete on "
                          "the bucket and prefix",
                          what, s->display, msg);
    if (r->status == 404) return fb_err_set(err, FB_ERR_NOTFOUND, "%s in %s: not found", what, s->display);
    if (r->status == 412) return fb_err_set(err, FB_ERR_CONFLICT, "%s in %s: it already exists", what, s->display);
    return fb_err_set(err, r->status >= 500 ? FB_ERR_TRANSIENT : FB_ERR_IO, "%s in %s: HTTP %ld %s%s%s", what,
                      s->display, r->status, code, *msg ? ": " : "", msg);
}

/* One request, retried with doubling back-off on network errors, timeouts and 5xx. A final answer (any status) is
 * FB_OK with r->status set; the caller decides what a 404 means. Only a transport failure is an error here. */
static fb_code s3_do(s3_stor *s, const char *method, const char *key, const char *query, const void *body,
                     size_t body_len, const char *const *hdrs, s3_resp *r, const char *what, fb_err *err) {
    char *url = s3_url(s, key, query);
    char errbuf[CURL_ERROR_SIZE];
    unsigned char sha[crypto_hash_sha256_BYTES];
    char sha_hex[2 * crypto_hash_sha256_BYTES + 1], line[256];
    struct curl_slist *h = NULL;
    fb_code rc = FB_OK;
    if (!url) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    /* The payload hash is signed (so the server checks the body against it) and sent for curl to use. */
    crypto_hash_sha256(sha, body ? body : (const void *)"", body ? body_len : 0);
    sodium_bin2hex(sha_hex, sizeof sha_hex, sha, sizeof sha);
    snprintf(line, sizeof line, "x-amz-content-sha256: %s", sha_hex);
    h = curl_slist_append(h, line);
    /* No "Expect:" to suppress 100-continue: curl 7.88 signs the empty header it then does not send. */
    if (body) h = curl_slist_append(h, "Content-Type: application/octet-stream");
    if (s->token_hdr) h = curl_slist_append(h, s->token_hdr);
    for (size_t i = 0; hdrs && hdrs[i]; i++) h = curl_slist_append(h, hdrs[i]);

    pthread_mutex_lock(&s->mu);
    CURL *c = s->curl;
    long delay = s->backoff_ms;
    for (int attempt = 0;; attempt++) {
        curl_easy_reset(c);
        s3_resp_reset(r);
        errbuf[0] = '\0';
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_AWS_SIGV4, s->sigv4);
        curl_easy_setopt(c, CURLOPT_USERPWD, s->userpwd);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, s->timeout_s < 10 ? s->timeout_s : 10L);
        /* A stall limit rather than a total one: a large ranged read on a slow link may take long, a request
         * that moves nothing for timeout_s is dead. */
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, s->timeout_s);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s3_on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, s3_on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        if (s->ca_file) curl_easy_setopt(c, CURLOPT_CAINFO, s->ca_file);
        if (strcmp(method, "HEAD") == 0) {
            curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        } else if (body) {
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        } else if (strcmp(method, "GET") != 0) {
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        }
        CURLcode cc = curl_easy_perform(c);
        long status = 0;
        if (cc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        r->status = status;
        if (!s3_retryable(cc, status) || attempt >= s->retries) {
            if (cc != CURLE_OK) {
                int unreachable = cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
                                  cc == CURLE_OPERATION_TIMEDOUT;
                char hint[1200] = "";
                if (unreachable)
                    snprintf(hint, sizeof hint,
                             "; check --s3-endpoint / FB_S3_ENDPOINT (now %s) and that the S3 service is running "
                             "and reachable from here",
                             s->endpoint);
                else if (cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_SSL_CACERT_BADFILE ||
                         cc == CURLE_SSL_CERTPROBLEM)
                    snprintf(hint, sizeof hint,
                             "; set --s3-ca-file to the CA that signs the certificate of %s", s->endpoint);
                rc = fb_err_set(err, unreachable || s3_retryable(cc, 0) ? FB_ERR_TRANSIENT : FB_ERR_IO,
                                "%s in %s: %s after %d attempt(s)%s", what, s->display,
                                *errbuf ? errbuf : curl_easy_strerror(cc), attempt + 1, hint);
            }
            break;
        }
        pthread_mutex_unlock(&s->mu);
        if (cc != CURLE_OK)
            FB_WARN("%s in %s: %s; retry %d of %d in %ld ms", what, s->display, *errbuf ? errbuf : curl_easy_strerror(cc),
                    attempt + 1, s->retries, delay);
        else
            FB_WARN("%s in %s: HTTP %ld; retry %d of %d in %ld ms", what, s->display, status, attempt + 1, s->retries,
                    delay);
        struct timespec ts = {delay / 1000, (delay % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        delay *= 2;
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    curl_slist_free_all(h);
    free(url);
    return rc;
}

static char *s3_key(const s3_stor *s, const char *rel) {
    size_t n = strlen(s->prefix) + strlen(rel) + 1;
    char *k = malloc(n);
    if (k) snprintf(k, n, "%s%s", s->prefix, rel);
    return k;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Unfinished uploads: listed (ListMultipartUploads) so a crashed writer's leftover is aborted. */

static fb_code s3_abort_upload(s3_stor *s, const char *key, const char *upload_id, fb_err *err) {
    char *eid = s3_escape(upload_id, 0), *q = eid ? malloc(strlen(eid) + 16) : NULL;
    s3_resp r = {0};
    fb_code rc = FB_OK;
    if (!q) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    if (!rc) {
        sprintf(q, "uploadId=%s", eid);
        rc = s3_do(s, "DELETE", key, q, NULL, 0, NULL, &r, "aborting an unfinished upload", err);
    }
    if (!rc && r.status / 100 != 2 && r.status != 404) rc = s3_http_error(s, &r, "aborting an unfinished upload", err);
    free(eid);
    free(q);
    s3_resp_free(&r);
    return rc;
}

/* Aborts every unfinished upload of exactly `key`. */
static fb_code s3_abort_leftovers(s3_stor *s, const char *key, fb_err *err) {
    char *ek = s3_escape(key, 0), *q = ek ? malloc(strlen(ek) + 32) : NULL;
    s3_resp r = {0};
    fb_code rc = FB_OK;
    if (!q) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    if (!rc) {
        sprintf(q, "prefix=%s&uploads=", ek);
        rc = s3_do(s, "GET", "", q, NULL, 0, NULL, &r, "listing unfinished uploads", err);
    }
    if (!rc && r.status / 100 != 2) rc = s3_http_error(s, &r, "listing unfinished uploads", err);
    for (const char *p = r.body; !rc && p && (p = strstr(p, "<Upload>"));) {
        char k[2048], id[1024];
        const char *end = strstr(p, "</Upload>");
        if (!end) break;
        if (stor_s3_xml_tag(p, "Key", k, sizeof k) && stor_s3_xml_tag(p, "UploadId", id, sizeof id) &&
            strcmp(k, key) == 0)
            rc = s3_abort_upload(s, key, id, err);
        p = end;
    }
    free(ek);
    free(q);
    s3_resp_free(&r);
    return rc;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Writing */

typedef struct s3_wfile {
    stor_wfile base;
    s3_stor *s;
    char *key, *rel;
    char *upload_id;
    unsigned char *buf;  /* one part */
    size_t used;
    char **etags;
    char **sums;         /* base64 SHA-256 of each part, repeated in the completion */
    int n_parts;
} s3_wfile;

static void s3_w_free(s3_wfile *f) {
    for (int i = 0; i < f->n_parts; i++) {
        free(f->etags[i]);
        free(f->sums[i]);
    }
    free(f->etags);
    free(f->sums);
    free(f->buf);
    free(f->key);
    free(f->rel);
    free(f->upload_id);
    free(f);
}

static fb_code s3_w_begin(s3_wfile *f, fb_err *err) {
    s3_resp r = {0};
    char id[1024] = "";
    /* Declaring the algorithm up front is what lets the server check each part's x-amz-checksum-sha256. */
    const char *hdrs[] = {"x-amz-checksum-algorithm: SHA256", NULL};
    fb_code rc = s3_do(f->s, "POST", f->key, "uploads=", "", 0, hdrs, &r, "starting the upload", err);
    if (!rc && r.status / 100 != 2) rc = s3_http_error(f->s, &r, "starting the upload", err);
    if (!rc && !stor_s3_xml_tag(r.body, "UploadId", id, sizeof id))
        rc = fb_err_set(err, FB_ERR_IO, "starting the upload of \"%s\" in %s: the answer has no UploadId", f->rel,
                        f->s->display);
    if (!rc && !(f->upload_id = strdup(id))) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    s3_resp_free(&r);
    if (rc) fb_err_prefix(err, "writing \"%s\": ", f->rel);
    return rc;
}

/* Sends the buffered bytes as the next part. */
static fb_code s3_w_flush(s3_wfile *f, fb_err *err) {
    fb_code rc = FB_OK;
    if (!f->upload_id && (rc = s3_w_begin(f, err))) return rc;
    if (f->n_parts >= S3_MAX_PARTS)
        return fb_err_set(err, FB_ERR_IO, "writing \"%s\": more than %d parts; raise --s3-part-mib", f->rel,
                          S3_MAX_PARTS);
    char **v = realloc(f->etags, (size_t)(f->n_parts + 1) * sizeof *v);
    if (!v) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    f->etags = v;
    v = realloc(f->sums, (size_t)(f->n_parts + 1) * sizeof *v);
    if (!v) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    f->sums = v;
    unsigned char sha[crypto_hash_sha256_BYTES];
    char b64[64], hdr[128], what[160];
    crypto_hash_sha256(sha, f->buf, f->used);
    sodium_bin2base64(b64, sizeof b64, sha, sizeof sha, sodium_base64_VARIANT_ORIGINAL);
    snprintf(hdr, sizeof hdr, "x-amz-checksum-sha256: %s", b64);
    const char *hdrs[] = {hdr, NULL};
    char *eid = s3_escape(f->upload_id, 0), *q = eid ? malloc(strlen(eid) + 40) : NULL;
    if (!q) {
        free(eid);
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    sprintf(q, "partNumber=%d&uploadId=%s", f->n_parts + 1, eid);
    snprintf(what, sizeof what, "uploading part %d of \"%s\"", f->n_parts + 1, f->rel);
    s3_resp r = {0};
    /* an empty part is sent with a non-NULL body so it is a PUT with Content-Length: 0 */
    rc = s3_do(f->s, "PUT", f->key, q, f->used ? (const void *)f->buf : "", f->used, hdrs, &r, what, err);
    if (!rc && r.status / 100 != 2) rc = s3_http_error(f->s, &r, what, err);
    if (!rc && !*r.etag) rc = fb_err_set(err, FB_ERR_IO, "%s in %s: the answer has no ETag", what, f->s->display);
    if (!rc) {
        f->etags[f->n_parts] = strdup(r.etag);
        f->sums[f->n_parts] = strdup(b64);
        if (!f->etags[f->n_parts] || !f->sums[f->n_parts]) {
            free(f->etags[f->n_parts]);
            free(f->sums[f->n_parts]);
            rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        }
    }
    if (!rc) {
        f->n_parts++;
        f->used = 0;
    }
    s3_resp_free(&r);
    free(eid);
    free(q);
    return rc;
}

static fb_code s3_w_write(stor_wfile *wf, const void *buf, size_t len, fb_err *err) {
    s3_wfile *f = (s3_wfile *)wf;
    const unsigned char *p = buf;
    while (len) {
        size_t n = f->s->part_size - f->used < len ? f->s->part_size - f->used : len;
        memcpy(f->buf + f->used, p, n);
        f->used += n;
        p += n;
        len -= n;
        if (f->used == f->s->part_size) {
            fb_code rc = s3_w_flush(f, err);
            if (rc) return rc;
        }
    }
    return FB_OK;
}

static void s3_w_abort(stor_wfile *wf) {
    s3_wfile *f = (s3_wfile *)wf;
    if (!f) return;
    if (f->upload_id) {
        fb_err e;
        s3_abort_upload(f->s, f->key, f->upload_id, &e); /* best effort: the next create or prune retries */
    }
    s3_w_free(f);
}

static fb_code s3_w_commit(stor_wfile *wf, fb_err *err) {
    s3_wfile *f = (s3_wfile *)wf;
    fb_code rc = FB_OK;
    char *xml = NULL, *eid = NULL, *q = NULL;
    s3_resp r = {0};
    /* The last part (S3 allows it to be smaller than the others; a part 1 may even be empty). */
    if (f->used || f->n_parts == 0) rc = s3_w_flush(f, err);
    if (!rc) {
        size_t cap = 128 + (size_t)f->n_parts * 420, o = 0;
        if (!(xml = malloc(cap))) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        else {
            o += (size_t)snprintf(xml + o, cap - o, "<CompleteMultipartUpload>");
            for (int i = 0; i < f->n_parts; i++)
                o += (size_t)snprintf(xml + o, cap - o,
                                      "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag><ChecksumSHA256>%s"
                                      "</ChecksumSHA256></Part>",
                                      i + 1, f->etags[i], f->sums[i]);
            o += (size_t)snprintf(xml + o, cap - o, "</CompleteMultipartUpload>");
            eid = s3_escape(f->upload_id, 0);
            if (eid && (q = malloc(strlen(eid) + 16))) sprintf(q, "uploadId=%s", eid);
            if (!q) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
            if (!rc) {
                /* Never replace an artifact that appeared meanwhile (servers without conditional writes ignore
                 * the header; stor_create's check covers them). */
                const char *hdrs[] = {"If-None-Match: *", NULL};
                char what[160];
                snprintf(what, sizeof what, "completing the upload of \"%s\"", f->rel);
                rc = s3_do(f->s, "POST", f->key, q, xml, o, hdrs, &r, what, err);
                /* A 200 may still carry an <Error> (S3 reports late failures in the body). */
                if (!rc && (r.status / 100 != 2 || (r.body && strstr(r.body, "<Error>")))) {
                    if (r.status / 100 == 2) r.status = 500;
                    rc = s3_http_error(f->s, &r, what, err);
                }
            }
        }
    }
    free(xml);
    free(eid);
    free(q);
    s3_resp_free(&r);
    if (rc) {
        s3_w_abort(wf);
        return rc;
    }
    s3_w_free(f);
    return FB_OK;
}

static const stor_wfile_vt s3_wfile_vt = {s3_w_write, s3_w_commit, s3_w_abort};

/* HEAD: FB_OK with *size when the key exists, FB_ERR_NOTFOUND when not, another error otherwise. */
static fb_code s3_head(s3_stor *s, const char *key, const char *rel, uint64_t *size, fb_err *err) {
    s3_resp r = {0};
    char what[1200];
    snprintf(what, sizeof what, "looking up \"%s\"", rel);
    fb_code rc = s3_do(s, "HEAD", key, NULL, NULL, 0, NULL, &r, what, err);
    if (!rc && r.status == 404) {
        /* HEAD has no body to tell a missing key from a missing bucket: ask the bucket. */
        s3_resp b = {0};
        rc = s3_do(s, "GET", "", "list-type=2&max-keys=0", NULL, 0, NULL, &b, what, err);
        if (!rc && b.status / 100 != 2) rc = s3_http_error(s, &b, what, err);
        if (!rc) rc = fb_err_set(err, FB_ERR_NOTFOUND, "artifact \"%s\" does not exist in %s", rel, s->display);
        s3_resp_free(&b);
    } else if (!rc && r.status / 100 != 2) {
        /* HEAD errors carry no body either; a GET of the same key says why. */
        s3_resp g = {0};
        rc = s3_do(s, "GET", key, NULL, NULL, 0, (const char *const[]){"Range: bytes=0-0", NULL}, &g, what, err);
        if (!rc) rc = s3_http_error(s, g.status / 100 == 2 ? &r : &g, what, err);
        s3_resp_free(&g);
    } else if (!rc) {
        *size = r.content_length;
    }
    s3_resp_free(&r);
    return rc;
}

static fb_code s3_create(stor *st, const char *rel, stor_wfile **out, fb_err *err) {
    s3_stor *s = (s3_stor *)st;
    s3_wfile *f = calloc(1, sizeof *f);
    fb_code rc = FB_OK;
    uint64_t size = 0;
    if (!f) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    f->base.vt = &s3_wfile_vt;
    f->s = s;
    f->key = s3_key(s, rel);
    f->rel = strdup(rel);
    f->buf = malloc(s->part_size);
    if (!f->key || !f->rel || !f->buf) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    if (!rc) {
        rc = s3_head(s, f->key, rel, &size, err);
        if (rc == FB_OK)
            rc = fb_err_set(err, FB_ERR_CONFLICT,
                            "\"%s\" already exists in %s (%llu bytes); artifacts are never overwritten: remove it "
                            "first if it is a leftover",
                            rel, s->display, (unsigned long long)size);
        else if (rc == FB_ERR_NOTFOUND)
            rc = FB_OK;
    }
    /* A crashed writer of the same key left an unfinished upload: it is ours to abort (as posix reuses .tmp). */
    if (!rc) rc = s3_abort_leftovers(s, f->key, err);
    if (rc) {
        s3_w_free(f);
        return rc;
    }
    *out = &f->base;
    return FB_OK;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Reading */

typedef struct s3_rfile {
    stor_rfile base;
    s3_stor *s;
    stor *owned;         /* a target opened only for this file (stor_open_file), freed with it */
    char *key, *name_buf;
    unsigned char *win;  /* read-ahead window */
    uint64_t win_off;
    size_t win_len;
} s3_rfile;

static fb_code s3_get_range(s3_rfile *f, void *buf, size_t len, uint64_t off, fb_err *err) {
    char range[80], what[1200];
    snprintf(range, sizeof range, "Range: bytes=%llu-%llu", (unsigned long long)off,
             (unsigned long long)(off + len - 1));
    snprintf(what, sizeof what, "reading \"%s\"", f->base.name);
    const char *hdrs[] = {range, NULL};
    s3_resp r = {0};
    r.sink = buf;
    r.sink_cap = len;
    fb_code rc = s3_do(f->s, "GET", f->key, NULL, NULL, 0, hdrs, &r, what, err);
    if (!rc && r.status / 100 != 2) rc = s3_http_error(f->s, &r, what, err);
    if (!rc && (r.status != 206 && !(r.status == 200 && off == 0 && len == f->base.size)))
        rc = fb_err_set(err, FB_ERR_IO, "%s in %s: the server ignored the byte range (HTTP %ld)", what,
                        f->s->display, r.status);
    if (!rc && r.sink_len != len)
        rc = fb_err_set(err, FB_ERR_FORMAT, "\"%s\" is truncated: asked %zu bytes at %llu, got %zu", f->base.name, len,
                        (unsigned long long)off, r.sink_len);
    s3_resp_free(&r);
    return rc;
}

static fb_code s3_r_pread(stor_rfile *rf, void *buf, size_t len, uint64_t off, fb_err *err) {
    s3_rfile *f = (s3_rfile *)rf;
    if (len == 0) return FB_OK;
    if (len >= S3_WINDOW / 2) return s3_get_range(f, buf, len, off, err);
    if (!(f->win && off >= f->win_off && off + len <= f->win_off + f->win_len)) {
        if (!f->win && !(f->win = malloc(S3_WINDOW))) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
        uint64_t left = f->base.size - off;
        size_t n = left < S3_WINDOW ? (size_t)left : S3_WINDOW;
        f->win_len = 0;
        fb_code rc = s3_get_range(f, f->win, n, off, err);
        if (rc) return rc;
        f->win_off = off;
        f->win_len = n;
    }
    memcpy(buf, f->win + (off - f->win_off), len);
    return FB_OK;
}

static void s3_r_close(stor_rfile *rf) {
    s3_rfile *f = (s3_rfile *)rf;
    if (!f) return;
    free(f->key);
    free(f->name_buf);
    free(f->win);
    stor_free(f->owned);
    free(f);
}

static const stor_rfile_vt s3_rfile_vt = {s3_r_pread, s3_r_close};

static fb_code s3_open(stor *st, const char *rel, stor_rfile **out, fb_err *err) {
    s3_stor *s = (s3_stor *)st;
    s3_rfile *f = calloc(1, sizeof *f);
    if (!f) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    f->base.vt = &s3_rfile_vt;
    f->s = s;
    f->key = s3_key(s, rel);
    f->name_buf = malloc(strlen(s->display) + strlen(rel) + 2);
    if (!f->key || !f->name_buf) {
        s3_r_close(&f->base);
        return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    sprintf(f->name_buf, "%s%s%s", s->display, s->display[strlen(s->display) - 1] == '/' ? "" : "/", rel);
    f->base.name = f->name_buf;
    fb_code rc = s3_head(s, f->key, rel, &f->base.size, err);
    if (rc) {
        s3_r_close(&f->base);
        return rc;
    }
    *out = &f->base;
    return FB_OK;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Remove, list, rename */

static fb_code s3_delete_key(s3_stor *s, const char *key, const char *rel, fb_err *err) {
    s3_resp r = {0};
    char what[1200];
    snprintf(what, sizeof what, "removing \"%s\"", rel);
    fb_code rc = s3_do(s, "DELETE", key, NULL, NULL, 0, NULL, &r, what, err);
    if (!rc && r.status / 100 != 2 && r.status != 404) rc = s3_http_error(s, &r, what, err);
    s3_resp_free(&r);
    return rc;
}

static fb_code s3_remove(stor *st, const char *rel, fb_err *err) {
    s3_stor *s = (s3_stor *)st;
    char *key = s3_key(s, rel);
    if (!key) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    fb_code rc = s3_delete_key(s, key, rel, err);
    free(key);
    return rc;
}

/* Parses an ISO time of a listing ("2026-12-01T13:05:04.123Z") into ms since the epoch. */
static int64_t s3_time_ms(const char *t) {
    struct tm tm = {0};
    int ms = 0;
    if (sscanf(t, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
        return 0;
    const char *dot = strchr(t, '.');
    if (dot) ms = atoi(dot + 1) % 1000;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000 + ms;
}

static fb_code s3_list(stor *st, const char *rel_dir, stor_list_fn fn, void *opaque, fb_err *err) {
    s3_stor *s = (s3_stor *)st;
    fb_code rc = FB_OK;
    char *dir_key = NULL, *edir = NULL, *q = NULL, *etok = NULL;
    char token[2048] = "", what[1200];
    size_t dl = strlen(s->prefix) + strlen(rel_dir) + 2;
    snprintf(what, sizeof what, "listing \"%s\"", rel_dir);
    if (!(dir_key = malloc(dl))) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    snprintf(dir_key, dl, "%s%s/", s->prefix, rel_dir);
    edir = s3_escape(dir_key, 0);
    if (!edir) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    while (!rc) {
        s3_resp r = {0};
        free(etok);
        etok = *token ? s3_escape(token, 0) : NULL;
        free(q);
        q = malloc(strlen(edir) + (etok ? strlen(etok) : 0) + 80);
        if (!q) {
            rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
            break;
        }
        /* canonical order: parameters sorted by name */
        sprintf(q, "%s%s%sdelimiter=%%2F&list-type=2&prefix=%s", etok ? "continuation-token=" : "", etok ? etok : "",
                etok ? "&" : "", edir);
        rc = s3_do(s, "GET", "", q, NULL, 0, NULL, &r, what, err);
        if (!rc && r.status / 100 != 2) rc = s3_http_error(s, &r, what, err);
        for (const char *p = r.body; !rc && p && (p = strstr(p, "<Contents>"));) {
            char key[2048], size[32] = "0", mod[64] = "";
            const char *end = strstr(p, "</Contents>");
            if (!end) break;
            if (stor_s3_xml_tag(p, "Key", key, sizeof key) && strncmp(key, dir_key, strlen(dir_key)) == 0) {
                const char *name = key + strlen(dir_key);
                stor_s3_xml_tag(p, "Size", size, sizeof size);
                stor_s3_xml_tag(p, "LastModified", mod, sizeof mod);
                /* only objects directly in the folder (the delimiter folds deeper ones into CommonPrefixes) */
                if (*name && !strchr(name, '/')) {
                    stor_entry e = {name, strtoull(size, NULL, 10), s3_time_ms(mod)};
                    rc = fn(opaque, &e, err);
                }
            }
            p = end;
        }
        char trunc[16] = "";
        stor_s3_xml_tag(r.body, "IsTruncated", trunc, sizeof trunc);
        token[0] = '\0';
        if (!rc && strcmp(trunc, "true") == 0) stor_s3_xml_tag(r.body, "NextContinuationToken", token, sizeof token);
        s3_resp_free(&r);
        if (!*token) break;
    }
    free(dir_key);
    free(edir);
    free(etok);
    free(q);
    return rc;
}

static fb_code s3_rename(stor *st, const char *rel_dir, const char *from, const char *to, fb_err *err) {
    s3_stor *s = (s3_stor *)st;
    size_t n = strlen(s->prefix) + strlen(rel_dir) + strlen(from) + strlen(to) + 4;
    char *src = malloc(n), *dst = malloc(n), *esrc = NULL, *hdr = NULL, what[1200];
    fb_code rc = FB_OK;
    s3_resp r = {0};
    uint64_t size = 0;
    if (!src || !dst) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    if (!rc) {
        snprintf(src, n, "%s%s/%s", s->prefix, rel_dir, from);
        snprintf(dst, n, "%s%s/%s", s->prefix, rel_dir, to);
        snprintf(what, sizeof what, "renaming \"%s/%s\" to \"%s\" (copy, then delete)", rel_dir, from, to);
        rc = s3_head(s, src, from, &size, err); /* FB_ERR_NOTFOUND as the posix rename gives */
    }
    if (!rc) {
        char *full = malloc(strlen(s->bucket) + strlen(src) + 2);
        if (full) sprintf(full, "%s/%s", s->bucket, src);
        esrc = full ? s3_escape(full, 1) : NULL;
        free(full);
        if (esrc && (hdr = malloc(strlen(esrc) + 32))) sprintf(hdr, "x-amz-copy-source: /%s", esrc);
        if (!hdr) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    if (!rc) {
        /* Server-side copy handles objects up to 5 GiB; artifacts larger than that would need UploadPartCopy. */
        if (size > (5ull << 30))
            rc = fb_err_set(err, FB_ERR_IO, "%s in %s: objects over 5 GiB cannot be copied in one request", what,
                            s->display);
        const char *hdrs[] = {hdr, NULL};
        if (!rc) rc = s3_do(s, "PUT", dst, NULL, "", 0, hdrs, &r, what, err);
        if (!rc && (r.status / 100 != 2 || (r.body && strstr(r.body, "<Error>")))) {
            if (r.status / 100 == 2) r.status = 500;
            rc = s3_http_error(s, &r, what, err);
        }
    }
    if (!rc) rc = s3_delete_key(s, src, from, err);
    s3_resp_free(&r);
    free(src);
    free(dst);
    free(esrc);
    free(hdr);
    return rc;
}

static void s3_free(stor *st) {
    s3_stor *s = (s3_stor *)st;
    if (!s) return;
    if (s->curl) curl_easy_cleanup(s->curl);
    if (s->userpwd) sodium_memzero(s->userpwd, strlen(s->userpwd));
    if (s->token_hdr) sodium_memzero(s->token_hdr, strlen(s->token_hdr));
    free(s->userpwd);
    free(s->token_hdr);
    free(s->endpoint);
    free(s->bucket);
    free(s->prefix);
    free(s->display);
    free(s->sigv4);
    free(s->ca_file);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Aborts the unfinished uploads of objects directly in rel_dir that were initiated before before_ms. */
static fb_code s3_sweep(stor *st, const char *rel_dir, int64_t before_ms, stor_list_fn fn, void *opaque,
                        fb_err *err) {
    s3_stor *s = (s3_stor *)st;
    size_t dl = strlen(s->prefix) + strlen(rel_dir) + 2;
    char *dir_key = malloc(dl), *edir = NULL, *q = NULL, what[1200];
    s3_resp r = {0};
    fb_code rc = FB_OK;
    snprintf(what, sizeof what, "listing unfinished uploads in \"%s\"", rel_dir);
    if (dir_key) snprintf(dir_key, dl, "%s%s/", s->prefix, rel_dir);
    if (dir_key) edir = s3_escape(dir_key, 0);
    if (edir && (q = malloc(strlen(edir) + 40))) sprintf(q, "prefix=%s&uploads=", edir);
    if (!q) rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    /* One page (up to 1000 uploads) per sweep is enough: the next prune takes the next page. */
    if (!rc) rc = s3_do(s, "GET", "", q, NULL, 0, NULL, &r, what, err);
    if (!rc && r.status / 100 != 2) rc = s3_http_error(s, &r, what, err);
    for (const char *p = r.body; !rc && p && (p = strstr(p, "<Upload>"));) {
        char k[2048], id[1024], when[64] = "";
        const char *end = strstr(p, "</Upload>");
        if (!end) break;
        if (stor_s3_xml_tag(p, "Key", k, sizeof k) && stor_s3_xml_tag(p, "UploadId", id, sizeof id) &&
            strncmp(k, dir_key, strlen(dir_key)) == 0 && !strchr(k + strlen(dir_key), '/')) {
            stor_s3_xml_tag(p, "Initiated", when, sizeof when);
            int64_t t = s3_time_ms(when);
            if (t > 0 && t < before_ms) {
                rc = s3_abort_upload(s, k, id, err);
                stor_entry e = {k + strlen(dir_key), 0, t};
                if (!rc && fn) rc = fn(opaque, &e, err);
            }
        }
        p = end;
    }
    s3_resp_free(&r);
    free(dir_key);
    free(edir);
    free(q);
    return rc;
}

static const stor_vt s3_vt = {"s3", s3_create, s3_open, s3_remove, s3_list, s3_rename, s3_free, s3_sweep};

fb_code stor_s3_new(const char *url, const fb_config *cfg, stor **out, fb_err *err) {
    *out = NULL;
    pthread_once(&s3_once, s3_global_init);
    if (s3_global_rc != CURLE_OK)
        return fb_err_set(err, FB_ERR_INTERNAL, "libcurl did not initialize: %s", curl_easy_strerror(s3_global_rc));
    const char *endpoint = cfg && cfg->s3_endpoint ? cfg->s3_endpoint : "";
    if (!*endpoint)
        return fb_err_set(err, FB_ERR_USAGE,
                          "%s needs an S3 endpoint: set --s3-endpoint URL or FB_S3_ENDPOINT (e.g. "
                          "https://s3.eu-west-1.amazonaws.com)",
                          url);
    if (strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0)
        return fb_err_set(err, FB_ERR_USAGE, "--s3-endpoint \"%s\" must start with http:// or https://", endpoint);
    const char *style = cfg->s3_url_style ? cfg->s3_url_style : "path";
    if (strcmp(style, "path") != 0 && strcmp(style, "virtual") != 0)
        return fb_err_set(err, FB_ERR_USAGE, "--s3-url-style must be path or virtual, got \"%s\"", style);
    s3_stor *s = calloc(1, sizeof *s);
    if (!s) return fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&s->mu, NULL);
    s->base.vt = &s3_vt;
    fb_code rc = stor_s3_url_parse(url, &s->bucket, &s->prefix, err);
    if (!rc) rc = s3_creds(cfg, &s->userpwd, &s->token_hdr, err);
    if (!rc) {
        size_t el = strlen(endpoint);
        while (el && endpoint[el - 1] == '/') el--;
        s->endpoint = strndup(endpoint, el);
        const char *region = cfg->s3_region && *cfg->s3_region ? cfg->s3_region : "us-east-1";
        s->sigv4 = malloc(strlen(region) + 16);
        if (s->sigv4) sprintf(s->sigv4, "aws:amz:%s:s3", region);
        s->display = malloc(strlen(s->bucket) + strlen(s->prefix) + 8);
        if (s->display) sprintf(s->display, STOR_S3_SCHEME "%s/%s", s->bucket, s->prefix);
        if (cfg->s3_ca_file && *cfg->s3_ca_file) s->ca_file = strdup(cfg->s3_ca_file);
        s->virtual_host = strcmp(style, "virtual") == 0;
        s->timeout_s = (long)cfg->s3_timeout_s > 0 ? (long)cfg->s3_timeout_s : 60;
        s->retries = cfg->retry_max >= 0 ? (int)cfg->retry_max : 3;
        s->backoff_ms = cfg->retry_backoff_ms > 0 ? (long)cfg->retry_backoff_ms : 200;
        s->part_size = (size_t)(cfg->s3_part_mib >= 5 ? cfg->s3_part_mib : 8) << 20;
        s->curl = curl_easy_init();
        if (!s->endpoint || !s->sigv4 || !s->display || !s->curl || (cfg->s3_ca_file && *cfg->s3_ca_file && !s->ca_file))
            rc = fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    }
    if (!rc && s->ca_file && access(s->ca_file, R_OK) != 0)
        rc = fb_err_set(err, FB_ERR_USAGE, "--s3-ca-file \"%s\" cannot be read: %s", s->ca_file, strerror(errno));
    if (rc) {
        s3_free(&s->base);
        return rc;
    }
    *out = &s->base;
    return FB_OK;
}

fb_code stor_s3_open_url(const char *url, const fb_config *cfg, stor_rfile **out, fb_err *err) {
    *out = NULL;
    const char *slash = strrchr(url, '/');
    if (!slash || slash < url + STOR_S3_SCHEME_LEN || !slash[1] || !strchr(url + STOR_S3_SCHEME_LEN, '/'))
        return fb_err_set(err, FB_ERR_USAGE, "\"%s\" does not name an object (s3://BUCKET/PATH/NAME)", url);
    char *dir = strndup(url, (size_t)(slash - url));
    stor *st = NULL;
    fb_code rc = dir ? stor_s3_new(dir, cfg, &st, err) : fb_err_set(err, FB_ERR_NOMEM, "out of memory");
    free(dir);
    if (!rc) rc = stor_open(st, slash + 1, out, err);
    if (rc) {
        stor_free(st);
        return rc;
    }
    ((s3_rfile *)*out)->owned = st;
    return FB_OK;
}
