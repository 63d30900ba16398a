/* test_stor_s3: the S3 driver's pure parts: location URLs (bucket rules, prefixes normalised to "" or "a/b/", paths
 * that would leave the prefix refused), the XML reader of S3's answers (entities decoded, absent tags), the
 * location factory's choice of driver, and the configuration errors that need no server (no endpoint, no
 * credentials). Requests against a real server are tests/integration/test_s3.py. */
#include <stdlib.h>
#include <string.h>

#include "common/fb_config.h"
#include "storage/stor_s3.h"
#include "tap.h"

static void url_ok(const char *url, const char *bucket, const char *prefix) {
    char *b = NULL, *p = NULL;
    fb_err err;
    fb_code rc = stor_s3_url_parse(url, &b, &p, &err);
    CHECKF(rc == FB_OK, "%s: %s", url, rc ? err.msg : "");
    if (rc == FB_OK) {
        CHECK_EQ_STR(b, bucket);
        CHECK_EQ_STR(p, prefix);
    }
    free(b);
    free(p);
}

static void url_refused(const char *url, const char *fragment) {
    char *b = NULL, *p = NULL;
    fb_err err;
    fb_code rc = stor_s3_url_parse(url, &b, &p, &err);
    CHECKF(rc == FB_ERR_USAGE && strstr(err.msg, fragment), "%s gave %d: %s (wanted \"%s\")", url, (int)rc,
           rc ? err.msg : "", fragment);
    CHECK(b == NULL && p == NULL);
}

int main(void) {
    url_ok("s3://fusion-backups", "fusion-backups", "");
    url_ok("s3://fusion-backups/", "fusion-backups", "");
    url_ok("s3://b.example-1/site/a", "b.example-1", "site/a/");
    url_ok("s3://abc/site/a//", "abc", "site/a/");
    url_refused("/var/backups", "not an s3:// location");
    url_refused("s3://ab", "3 to 63");
    url_refused("s3://Upper", "lower-case");
    url_refused("s3://abc/x/../y", "\"..\"");
    url_refused("s3://abc/x//y", "empty component");

    char out[64];
    const char *xml = "<R><Key>a&amp;b &lt;c&gt;</Key><Size>12</Size><Key>second</Key></R>";
    const char *next = stor_s3_xml_tag(xml, "Key", out, sizeof out);
    CHECK(next != NULL);
    CHECK_EQ_STR(out, "a&b <c>");
    CHECK(stor_s3_xml_tag(next, "Key", out, sizeof out) != NULL);
    CHECK_EQ_STR(out, "second");
    CHECK(stor_s3_xml_tag(xml, "UploadId", out, sizeof out) == NULL);
    CHECK(stor_s3_xml_tag(NULL, "Key", out, sizeof out) == NULL);
    char tiny[4];
    stor_s3_xml_tag(xml, "Key", tiny, sizeof tiny);
    CHECK_EQ_STR(tiny, "a&b");

    CHECK(stor_is_url("s3://b/p"));
    CHECK(!stor_is_url("/srv/backups"));
    CHECK(!stor_is_url(NULL));

    /* Configuration mistakes are reported before any request, saying what to set. */
    fb_config cfg;
    fb_err err;
    stor *st = NULL;
    memset(&cfg, 0, sizeof cfg);
    unsetenv("FB_S3_ENDPOINT");
    CHECK_EQ_INT(fb_config_init(&cfg, &err), FB_OK);
    fb_code rc = stor_open_location("s3://fusion-backups/x", &cfg, &st, &err);
    CHECKF(rc == FB_ERR_USAGE && strstr(err.msg, "--s3-endpoint"), "%s", err.msg);
    free(cfg.s3_endpoint);
    cfg.s3_endpoint = strdup("http://127.0.0.1:1");
    unsetenv("AWS_ACCESS_KEY_ID");
    free(cfg.s3_credentials_file); /* the environment of a developer may name one (env.sh) */
    cfg.s3_credentials_file = NULL;
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
    rc = stor_open_location("s3://fusion-backups/x", &cfg, &st, &err);
    if (rc == FB_OK) stor_free(st);
    CHECKF(rc == FB_ERR_USAGE && strstr(err.msg, "AWS_ACCESS_KEY_ID") && strstr(err.msg, "/nonexistent/credentials"),
           "%s", err.msg);
    setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret-1234", 1);
    cfg.retry_max = 0;
    rc = stor_open_location("s3://fusion-backups/x", &cfg, &st, &err);
    CHECKF(rc == FB_OK, "%s", rc ? err.msg : "");
    if (rc == FB_OK) {
        /* Nothing listens on port 1: a clear "unreachable" error, which names the setting and not the secret. */
        stor_rfile *f = NULL;
        rc = stor_open(st, "a.fb", &f, &err);
        CHECKF(rc == FB_ERR_TRANSIENT && strstr(err.msg, "--s3-endpoint") && !strstr(err.msg, "not-a-real-secret"),
               "%d %s", (int)rc, err.msg);
        stor_free(st);
    }
    fb_config_free(&cfg);
    return tap_done();
}
