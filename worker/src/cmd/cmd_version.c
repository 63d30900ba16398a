/* cmd_version: `fusion-backup --version` and `fusion-backup-worker --version`: the project's version and the
 * versions of the libraries the binary runs with (what a bug report needs). */
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <sodium.h>
#include <stdio.h>
#include <zstd.h>

#include "cmd/cmd.h"
#include "common/fb_err.h"
#include "common/fb_version.h"

int cmd_version(const char *program) {
    int pq = PQlibVersion();
    printf("%s %s (librdkafka %s, libpq %d.%d, zstd %s, libsodium %s)\n", program, fb_version(),
           rd_kafka_version_str(), pq / 10000, pq % 10000, ZSTD_versionString(), sodium_version_string());
    return FB_OK;
}
