#!/usr/bin/env bash
# The local S3-compatible server for the tests and the demo: SeaweedFS (`weed mini`: master, volume, filer and S3
# gateway in one process), built by install-seaweedfs.sh, data under $FB_HOME/s3, on 127.0.0.1 only.
#
#   s3.sh start    start (idempotent), wait until the S3 gateway answers a signed request, create the bucket
#   s3.sh stop     stop (idempotent), by pid file
#   s3.sh status   print whether it runs; exit 0 when it does, 3 otherwise
#   s3.sh env      print shell exports (FB_S3_ENDPOINT, FB_S3_BUCKET, FB_S3_CREDENTIALS_FILE, ...)
#
# Credentials are made once (random) into $FB_HOME/s3/credentials, an AWS-style file the worker reads through
# FB_S3_CREDENTIALS_FILE, and into the server's identity file; they are never passed on a command line (curl
# reads them from stdin). start also writes $FB_HOME/s3/env.sh and makes $FB_HOME/env.sh source it.
set -euo pipefail

FB_SCRIPT="s3.sh"
# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

# The gateway's port is FB_S3_PORT (lib.sh); SeaweedFS's inner services get their own ports next to it, and their
# gRPC ports are those +10000 (so FB_S3_PORT stays below 55530). The extras of `weed mini` (WebDAV, Iceberg and
# Lance catalogs, the admin UI's legacy port) are off.
: "${FB_S3_MASTER_PORT:=$((FB_S3_PORT + 1))}"
: "${FB_S3_VOLUME_PORT:=$((FB_S3_PORT + 2))}"
: "${FB_S3_FILER_PORT:=$((FB_S3_PORT + 3))}"
: "${FB_S3_ADMIN_PORT:=$((FB_S3_PORT + 4))}"
: "${FB_S3_REGION:=us-east-1}"
FB_S3_DIR="$FB_HOME/s3"
FB_S3_PID="$FB_S3_DIR/weed.pid"
FB_S3_LOG="$FB_S3_DIR/weed.log"
FB_S3_CREDENTIALS_FILE="$FB_S3_DIR/credentials"
FB_S3_ENDPOINT="http://127.0.0.1:$FB_S3_PORT"
FB_S3_ENV="$FB_S3_DIR/env.sh"

s3_pid() {
  [ -f "$FB_S3_PID" ] || return 1
  local pid
  pid="$(cat "$FB_S3_PID" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-dir=$FB_S3_DIR/data" || return 1
  echo "$pid"
}

# Reads one key of the credentials file.
s3_cred() { sed -n "s/^$1[[:space:]]*=[[:space:]]*//p" "$FB_S3_CREDENTIALS_FILE" | head -n 1; }

s3_make_credentials() {
  mkdir -p "$FB_S3_DIR"
  if [ ! -s "$FB_S3_CREDENTIALS_FILE" ]; then
    local key secret
    key="FB$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr 'a-f' 'A-F')"
    secret="$(head -c 30 /dev/urandom | base64 | tr -d '/+=\n')"
    (umask 077 && printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$key" "$secret" \
      >"$FB_S3_CREDENTIALS_FILE")
    fb_say "made S3 credentials in $FB_S3_CREDENTIALS_FILE"
  fi
  # The server's identities (rewritten each start from the credentials file: one fact, one place).
  (umask 077 && cat >"$FB_S3_DIR/identities.json" <<EOF
{"identities": [{"name": "fusion", "credentials": [{"accessKey": "$(s3_cred aws_access_key_id)",
  "secretKey": "$(s3_cred aws_secret_access_key)"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
  )
}

# A signed request with curl, the credentials read from stdin (never argv). Prints the HTTP status.
s3_curl() {
  local method="$1" path="$2"
  printf 'user = "%s:%s"\n' "$(s3_cred aws_access_key_id)" "$(s3_cred aws_secret_access_key)" |
    curl -s -o /dev/null -w '%{http_code}' -K - --max-time 5 --aws-sigv4 "aws:amz:$FB_S3_REGION:s3" \
      -X "$method" "$FB_S3_ENDPOINT$path" 2>/dev/null || echo 000
}

s3_wait() {
  local pid="$1" deadline=$((SECONDS + FB_START_TIMEOUT)) code
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$FB_S3_LOG" >&2 || true
      fb_die "SeaweedFS exited during startup (log: $FB_S3_LOG)" \
        "read the log above; to start over: $0 stop && rm -rf $FB_S3_DIR/data"
    fi
    # Ready when a signed ListBuckets is answered 200 (the gateway is up and knows our identity).
    code="$(s3_curl GET /)"
    [ "$code" = 200 ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$FB_S3_LOG" >&2 || true
      fb_die "the S3 gateway did not answer on $FB_S3_ENDPOINT within ${FB_START_TIMEOUT}s (last HTTP $code; log $FB_S3_LOG)" \
        "read the log; raise FB_START_TIMEOUT on a slow machine"
    fi
    sleep 0.3
  done
}

s3_env() {
  local v
  for v in FB_S3_ENDPOINT FB_S3_BUCKET FB_S3_REGION FB_S3_CREDENTIALS_FILE FB_S3_PORT; do
    printf "export %s='%s'\n" "$v" "${!v}"
  done
}

s3_start() {
  local pid t0
  t0="$(fb_now_ms)"
  [ -x "$FB_SEAWEEDFS_BIN" ] || fb_die "SeaweedFS is not built ($FB_SEAWEEDFS_BIN)" "run deploy/local/install-seaweedfs.sh"
  command -v curl >/dev/null || fb_die "curl not found (used to check the S3 gateway)" "apt-get install curl"
  s3_make_credentials
  if pid="$(s3_pid)"; then
    fb_say "SeaweedFS already running (pid $pid) on $FB_S3_ENDPOINT"
  else
    local p
    for p in "$FB_S3_PORT" "$FB_S3_MASTER_PORT" "$FB_S3_VOLUME_PORT" "$FB_S3_FILER_PORT" "$FB_S3_ADMIN_PORT"; do
      if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        fb_die "something already listens on 127.0.0.1:$p but it is not this FB_HOME's SeaweedFS" \
          "stop it, or move the ports: FB_S3_PORT=NNNN $0 start (it uses NNNN..NNNN+4 and those +10000)"
      fi
    done
    mkdir -p "$FB_S3_DIR/data"
    fb_say "starting SeaweedFS S3 on $FB_S3_ENDPOINT (log $FB_S3_LOG)"
    # setsid: the server outlives this script; fd 9 (services.sh's lock) is not inherited.
    setsid "$FB_SEAWEEDFS_BIN" mini -dir="$FB_S3_DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -s3.port="$FB_S3_PORT" -master.port="$FB_S3_MASTER_PORT" -volume.port="$FB_S3_VOLUME_PORT" \
      -filer.port="$FB_S3_FILER_PORT" -s3.config="$FB_S3_DIR/identities.json" \
      -admin.port="$FB_S3_ADMIN_PORT" -admin.ui=false -admin.port.legacy=0 -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
      </dev/null >"$FB_S3_LOG" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$FB_S3_PID"
  fi
  s3_wait "$pid"
  local code
  code="$(s3_curl HEAD "/$FB_S3_BUCKET")"
  if [ "$code" != 200 ]; then
    code="$(s3_curl PUT "/$FB_S3_BUCKET")"
    [ "$code" = 200 ] || fb_die "could not create bucket $FB_S3_BUCKET (HTTP $code)" "see $FB_S3_LOG"
    fb_say "created bucket $FB_S3_BUCKET"
  fi
  s3_env >"$FB_S3_ENV"
  # env.sh is rewritten by services.sh start; the line that sources ours is put back each time.
  local line=". '$FB_S3_ENV'  # S3 settings, from deploy/local/s3.sh"
  touch "$FB_HOME/env.sh"
  grep -qF "$line" "$FB_HOME/env.sh" || echo "$line" >>"$FB_HOME/env.sh"
  fb_say "S3 ready on $FB_S3_ENDPOINT, bucket $FB_S3_BUCKET, in $(($(fb_now_ms) - t0)) ms; settings in $FB_S3_ENV"
}

s3_stop() {
  local pid
  if ! pid="$(s3_pid)"; then
    rm -f "$FB_S3_PID"
    fb_say "SeaweedFS not running"
    return 0
  fi
  fb_say "stopping SeaweedFS (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    sleep 0.2
  done
  rm -f "$FB_S3_PID"
}

s3_status() {
  local pid
  if pid="$(s3_pid)"; then
    echo "s3:         running  pid $pid  $FB_S3_ENDPOINT  bucket $FB_S3_BUCKET  data $FB_S3_DIR/data  log $FB_S3_LOG"
    return 0
  fi
  echo "s3:         stopped  (data $FB_S3_DIR/data)"
  return 3
}

case "${1:-}" in
  start) s3_start ;;
  stop) s3_stop ;;
  status) s3_status ;;
  env) s3_env ;;
  *)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
