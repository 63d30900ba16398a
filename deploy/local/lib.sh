# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this
# Shared settings and helpers for install-deps.sh and services.sh (sourced, never run).
#
# Every path is derived from FB_HOME (a cache folder outside the repo) or from this file's
# own location, so the scripts work from any clone, as root or not, with no stdin (CI=true).

FB_LOCAL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

: "${FB_HOME:=${HOME:-/root}/.cache/fusion-backup}"
: "${FB_PG_BIN:=/usr/lib/postgresql/15/bin}"
: "${FB_PG_PORT:=55432}"
: "${FB_PG_OS_USER:=fbpg}"              # unprivileged OS user that runs postgres when we are root
: "${FB_KAFKA_PORT:=59092}"
: "${FB_KAFKA_CONTROLLER_PORT:=$((FB_KAFKA_PORT + 1))}"  # next to the broker's, so moving one moves both
: "${FB_KAFKA_LIBS:=$FB_HOME/kafka-libs}"
: "${FB_KAFKA_HEAP:=512m}"
: "${FB_START_TIMEOUT:=90}"             # seconds to wait for a service to answer
: "${FB_JOB_PARTITIONS:=12}"           # backup.requested and archive.due
: "${FB_COMPLETED_PARTITIONS:=6}"
: "${FB_DLQ_PARTITIONS:=3}"
: "${FB_TOPIC_PREFIX:=fusion.}"
export FB_HOME

FB_PG_DIR="$FB_HOME/pg"
FB_PG_DATA="$FB_PG_DIR/data"
FB_PG_RUN="$FB_PG_DIR/run"               # unix socket directory
FB_PG_LOG="$FB_PG_DIR/log/postgresql.log"
FB_KAFKA_DIR="$FB_HOME/kafka"
FB_KAFKA_LOGDIR="$FB_KAFKA_DIR/logs"
FB_KAFKA_LOG="$FB_KAFKA_LOGDIR/server.log"
FB_KAFKA_PID="$FB_KAFKA_DIR/kafka.pid"
FB_KAFKA_TLS="$FB_KAFKA_DIR/tls"           # the local CA and the broker's certificate (made by services.sh)
FB_KAFKA_SECRETS="$FB_KAFKA_DIR/secrets"   # one <principal>.password per SCRAM user, 0600
FB_KAFKA_CA="$FB_KAFKA_TLS/ca.pem"
FB_SIGNING_KEYS="$FB_HOME/keys"            # development signing keys (keys.sh): django, ops, worker
: "${FB_VENV:=$FB_HOME/venv}"
: "${FB_VENV_DJ32:=$FB_HOME/venv-dj32}"
: "${FB_VENV_DJ31:=$FB_HOME/venv-dj31}"
FB_BROKERS="127.0.0.1:$FB_KAFKA_PORT"

fb_say() { printf '%s: %s\n' "${FB_SCRIPT:-fusion-local}" "$*" >&2; }
fb_die() {
  printf '%s: error: %s\n' "${FB_SCRIPT:-fusion-local}" "$1" >&2
  [ $# -ge 2 ] && printf '%s: hint: %s\n' "${FB_SCRIPT:-fusion-local}" "$2" >&2
  exit 1
}

# Milliseconds since the epoch, for the timings the scripts print.
fb_now_ms() { date +%s%3N; }

# SeaweedFS, the local S3-compatible server (install-seaweedfs.sh builds it, s3.sh runs it).
: "${FB_SEAWEEDFS_MODULE:=github.com/seaweedfs/seaweedfs}"
: "${FB_SEAWEEDFS_VERSION:=v0.0.0-20261109003541-7506e5f91cd6}"
FB_SEAWEEDFS_BIN="$FB_HOME/seaweedfs/weed-$FB_SEAWEEDFS_VERSION"
: "${FB_S3_PORT:=48333}"
: "${FB_S3_BUCKET:=fusion-backups}"
