/* stor_s3: the S3-compatible object storage driver behind the stor vtable (see stor.h, and stor_s3.c for how each
 * promise of stor.h is kept on an object store).
 *
 * A location is s3://BUCKET or s3://BUCKET/PREFIX; where the service is and how to reach it are settings
 * (--s3-endpoint, --s3-region, --s3-url-style, --s3-ca-file, --s3-part-mib, --s3-timeout-s in fb_config).
 * Credentials follow the AWS conventions: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, else
 * the credentials file (--s3-credentials-file, AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile
 * --s3-profile). They never appear in a message.
 */
#ifndef STOR_S3_H
#define STOR_S3_H

#include "storage/stor.h"

struct fb_config;

/* How a location names an object store (stor_open_location picks the driver by it). */
#define STOR_S3_SCHEME "s3://"
#define STOR_S3_SCHEME_LEN 5

/* Opens the target at url (s3://BUCKET[/PREFIX]). Nothing is sent yet: a wrong endpoint, bucket or credential
 * shows on the first request, with a message saying which. The caller frees *out with stor_free(). */
fb_code stor_s3_new(const char *url, const struct fb_config *cfg, stor **out, fb_err *err);

/* Opens one object by its full URL (s3://BUCKET/PATH/NAME) for reading; the file owns its target. */
fb_code stor_s3_open_url(const char *url, const struct fb_config *cfg, stor_rfile **out, fb_err *err);

/* Pure helpers, exported for tests. Splits s3://BUCKET/PREFIX into a bucket and a prefix that is "" or ends in
 * '/' (both malloc'd, the caller frees them); FB_ERR_USAGE names what is wrong. */
fb_code stor_s3_url_parse(const char *url, char **bucket, char **prefix, fb_err *err);
/* Copies the decoded text of the first <tag>..</tag> at or after from into out; returns a pointer past it, or
 * NULL when there is none. */
const char *stor_s3_xml_tag(const char *from, const char *tag, char *out, size_t cap);

#endif
