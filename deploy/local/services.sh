#!/usr/bin/env bash
# Local services for development and CI: a private PostgreSQL 15 cluster and a single-node KRaft
# Kafka broker, both under $FB_HOME (default ~/.cache/fusion-backup), both on 127.0.0.1 only.
# The broker speaks SASL_SSL only (SCRAM-SHA-512; PLAIN for the C programs; a CA of its own) and authorizes
# with ACLs (README.md, "Kafka security").
#
#   services.sh start [pg|kafka]     start (idempotent), wait until it answers, create the topics
#   services.sh stop  [pg|kafka]     stop (idempotent): Kafka by pid file, PostgreSQL with pg_ctl -m fast
#   services.sh status               print what runs; exit 0 when both run, 3 otherwise
#   services.sh env                  print shell exports (eval "$(deploy/local/services.sh env)")
#   services.sh topics PREFIX        create the four job topics under PREFIX (e.g. t123. -> t123.backup.requested)
#                                    and the ACLs of the principals on them
#   services.sh drop-topics PREFIX   delete them again (for tests that clean up)
#
# The system PostgreSQL cluster is never touched. postgres refuses to run as root, so when this
# script runs as root the cluster runs as the unprivileged user $FB_PG_OS_USER (created if missing).
# Settings that the broker and cluster read are rewritten on each start, so a changed port takes
# effect on restart; changing the Kafka controller port needs a reset (README.md).
set -euo pipefail

FB_SCRIPT="services.sh"
# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

# shellcheck disable=SC2034  # printed by fb_env through ${!v}
FB_TEST_PG="host=127.0.0.1 port=$FB_PG_PORT user=postgres dbname=postgres"
# shellcheck disable=SC2034
FB_TEST_BROKERS="$FB_BROKERS"

# ---------------------------------------------------------------------------------------------
# env

# Single-quotes a value for sh (readable in env.sh, safe for any content).
fb_q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

# shellcheck disable=SC2034  # printed by fb_env through ${!v}
FB_TEST_KAFKA_CA="$FB_KAFKA_CA"
# shellcheck disable=SC2034
FB_TEST_KAFKA_SECRETS="$FB_KAFKA_SECRETS"

fb_env() {
  local v
  for v in FB_HOME FB_TEST_PG FB_TEST_BROKERS FB_TEST_KAFKA_CA FB_TEST_KAFKA_SECRETS FB_PG_BIN FB_PG_PORT \
    FB_KAFKA_PORT FB_KAFKA_LIBS FB_VENV FB_VENV_DJ32 FB_VENV_DJ31; do
    printf 'export %s=%s\n' "$v" "$(fb_q "${!v}")"
  done
  # The C programs' own settings (fb_config.c): the CLI talks as the ops principal; workers and the recorder
  # are given their own with --kafka-username/--kafka-password-file. Paths only: the secrets stay in their files.
  printf 'export FB_BROKERS=%s\n' "$(fb_q "$FB_BROKERS")"
  # PLAIN, not SCRAM: see the listener settings in kafka_write_config (librdkafka 2.0.2's SCRAM bug).
  printf 'export FB_KAFKA_SECURITY_PROTOCOL=SASL_SSL FB_KAFKA_SASL_MECHANISM=PLAIN FB_KAFKA_USERNAME=ops\n'
  printf 'export FB_KAFKA_PASSWORD_FILE=%s FB_KAFKA_CA=%s\n' "$(fb_q "$FB_KAFKA_SECRETS/ops.password")" \
    "$(fb_q "$FB_KAFKA_CA")"
  # Who is speaking (schemas/SPEC.md, "Signed messages"): the CLI signs as ops and trusts what a development
  # deployment trusts; the key files are made by keys.sh once the binaries are built (the demo does it).
  printf 'export FB_SIGN_KEY=%s FB_TRUSTED_REQUESTERS=%s FB_TRUSTED_SIGNERS=%s\n' \
    "$(fb_q "$FB_SIGNING_KEYS/ops.key")" "$(fb_q "$FB_SIGNING_KEYS/django.pub,$FB_SIGNING_KEYS/ops.pub")" \
    "$(fb_q "$FB_SIGNING_KEYS/worker.pub")"
  # PATH: the PostgreSQL 15 client tools first, then the venv (pytest, python with Django).
  local d
  for d in "$FB_VENV/bin" "$FB_PG_BIN"; do
    # shellcheck disable=SC2016  # $PATH is for the shell that reads this
    printf 'case ":$PATH:" in *%s*) ;; *) export PATH=%s:"$PATH" ;; esac\n' "$(fb_q ":$d:")" "$(fb_q "$d")"
  done
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL

# Runs a command as the OS user that owns the cluster (ourselves unless we are root).
pg_as() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u "$FB_PG_OS_USER" -- "$@")
  else
    "$@"
  fi
}

pg_owner_setup() {
  [ "$(id -u)" -eq 0 ] || return 0
  if ! id -u "$FB_PG_OS_USER" >/dev/null 2>&1; then
    fb_say "creating system user $FB_PG_OS_USER to run the private PostgreSQL cluster"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$FB_PG_OS_USER" ||
      fb_die "could not create OS user $FB_PG_OS_USER" "create it by hand or set FB_PG_OS_USER to an existing unprivileged user"
  fi
  # The cluster user must be able to traverse every folder above its data (e.g. /root is 0700).
  # Grant search (x) only, with an ACL where possible; this lists nothing and reads nothing.
  local d dirs=() p="$FB_HOME"
  while [ "$p" != "/" ]; do dirs=("$p" "${dirs[@]}"); p="$(dirname "$p")"; done
  for d in "${dirs[@]}"; do
    [ -d "$d" ] || break
    if ! runuser -u "$FB_PG_OS_USER" -- test -x "$d" 2>/dev/null; then
      if command -v setfacl >/dev/null 2>&1 && setfacl -m "u:$FB_PG_OS_USER:x" "$d" 2>/dev/null; then
        fb_say "granted $FB_PG_OS_USER traverse (ACL u:$FB_PG_OS_USER:x) on $d"
      else
        chmod o+x "$d" || fb_die "could not make $d traversable for $FB_PG_OS_USER" \
          "set FB_HOME to a folder that user $FB_PG_OS_USER can reach"
        fb_say "made $d traversable (o+x) so that $FB_PG_OS_USER can reach $FB_PG_DATA"
      fi
    fi
  done
}

pg_running() { [ -f "$FB_PG_DATA/PG_VERSION" ] && pg_as "$FB_PG_BIN/pg_ctl" status -D "$FB_PG_DATA" >/dev/null 2>&1; }

pg_init() {
  [ -x "$FB_PG_BIN/initdb" ] || fb_die "no PostgreSQL 15 binaries in $FB_PG_BIN" "run deploy/local/install-deps.sh"
  mkdir -p "$FB_PG_DIR" "$FB_PG_DATA" "$FB_PG_RUN" "$(dirname "$FB_PG_LOG")"
  if [ "$(id -u)" -eq 0 ]; then
    chown "$FB_PG_OS_USER:" "$FB_PG_DIR" "$FB_PG_DATA" "$FB_PG_RUN" "$(dirname "$FB_PG_LOG")"
  fi
  chmod 700 "$FB_PG_DATA"
  if [ ! -f "$FB_PG_DATA/PG_VERSION" ]; then
    fb_say "initdb $FB_PG_DATA"
    pg_as "$FB_PG_BIN/initdb" -D "$FB_PG_DATA" -U postgres --auth-local=trust --auth-host=trust \
      -E UTF8 --locale=C.UTF-8 --data-checksums >"$FB_PG_DIR/initdb.log" 2>&1 ||
      fb_die "initdb failed (see $FB_PG_DIR/initdb.log)" "fix the cause, then: rm -rf $FB_PG_DIR && $0 start"
    printf "\n# Fusion Backup local settings, rewritten by deploy/local/services.sh on each start\ninclude_if_exists = 'fusion-local.conf'\n" |
      pg_as tee -a "$FB_PG_DATA/postgresql.conf" >/dev/null
  fi
  # Rewritten on every start so that FB_PG_PORT and FB_HOME changes take effect.
  pg_as tee "$FB_PG_DATA/fusion-local.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $FB_PG_PORT
unix_socket_directories = '$FB_PG_RUN'
max_connections = 200
shared_buffers = 256MB
work_mem = 8MB
maintenance_work_mem = 128MB
effective_cache_size = 2GB
max_wal_size = 2GB
min_wal_size = 256MB
fsync = on
synchronous_commit = on
full_page_writes = on
max_worker_processes = 4
max_parallel_workers = 2
max_parallel_workers_per_gather = 1
# Logical decoding for change capture (issue 16, worker/src/capture/): wal_level=logical lets a pgoutput slot
# decode the WAL; each capture holds one slot and one walsender, tests create a few of their own, pg_basebackup
# style tools need two more. Changing wal_level needs a restart: pg_start says so when a running server differs.
wal_level = logical
max_replication_slots = 16
max_wal_senders = 16
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
}

# Replication connections (capture's walsender, `replication=database`) from loopback for every role, as the
# local and host lines allow normal ones. initdb writes these lines itself; a data directory whose pg_hba.conf
# lost them gets them back (appended; a running server reloads, which is not a restart).
pg_hba_replication() {
  local hba="$FB_PG_DATA/pg_hba.conf" changed=0 addr
  for addr in 127.0.0.1/32 ::1/128; do
    if ! pg_as grep -Eq "^host[[:space:]]+replication[[:space:]]+all[[:space:]]+${addr//./[.]}[[:space:]]" "$hba"; then
      printf 'host    replication     all             %-23s trust\n' "$addr" | pg_as tee -a "$hba" >/dev/null
      changed=1
    fi
  done
  if [ "$changed" -eq 1 ]; then
    fb_say "added loopback replication lines to $hba"
    if pg_running; then pg_as "$FB_PG_BIN/pg_ctl" reload -D "$FB_PG_DATA" >/dev/null || true; fi
  fi
}

# A server started by an older version of this script runs wal_level=replica: the new setting is written but only
# a restart applies it, and set-up never restarts a running server behind the caller's back. It says so, and
# restarts only when asked to with FB_PG_RESTART_FOR_SETTINGS=1 (CI, or a machine nobody else is using).
pg_wal_level_check() {
  local level
  level="$("$FB_PG_BIN/psql" -X -At -h 127.0.0.1 -p "$FB_PG_PORT" -U postgres -d postgres -c 'SHOW wal_level' 2>/dev/null || true)"
  if [ -z "$level" ] || [ "$level" = "logical" ]; then return 0; fi
  if [ "${FB_PG_RESTART_FOR_SETTINGS:-0}" = "1" ]; then
    fb_say "restarting PostgreSQL (FB_PG_RESTART_FOR_SETTINGS=1): it runs wal_level=$level, change capture needs logical"
    pg_as "$FB_PG_BIN/pg_ctl" restart -D "$FB_PG_DATA" -m fast -w -t 60 -l "$FB_PG_LOG" >/dev/null 9>&- ||
      fb_die "pg_ctl restart failed (see $FB_PG_LOG)" "fix the cause in the log, then run $0 start again"
    return 0
  fi
  fb_say "WARNING: the running PostgreSQL has wal_level=$level; fusion-local.conf now says logical (change capture" \
    "needs it). It applies on the next start: $0 stop pg && $0 start pg, or FB_PG_RESTART_FOR_SETTINGS=1 $0 start pg" \
    "(when no one else uses the server)"
}

pg_start() {
  pg_owner_setup
  pg_init
  pg_hba_replication
  if pg_running; then
    fb_say "PostgreSQL already running on 127.0.0.1:$FB_PG_PORT (data $FB_PG_DATA)"
    pg_wal_level_check
  else
    if "$FB_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$FB_PG_PORT" -t 1; then
      fb_die "another PostgreSQL already answers on 127.0.0.1:$FB_PG_PORT" \
        "stop it, or choose another port: FB_PG_PORT=NNNN $0 start"
    fi
    fb_say "starting PostgreSQL on 127.0.0.1:$FB_PG_PORT (log $FB_PG_LOG)"
    pg_as "$FB_PG_BIN/pg_ctl" start -W -D "$FB_PG_DATA" -l "$FB_PG_LOG" >/dev/null 9>&- ||
      fb_die "pg_ctl start failed (see $FB_PG_LOG)" "fix the cause in the log, then run $0 start again"
  fi
  local started=$SECONDS deadline=$((SECONDS + FB_START_TIMEOUT))
  until "$FB_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$FB_PG_PORT" -d postgres -U postgres -t 1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$FB_PG_LOG" >&2 || true
      fb_die "PostgreSQL did not answer on 127.0.0.1:$FB_PG_PORT within ${FB_START_TIMEOUT}s (log: $FB_PG_LOG)" \
        "read the log above; to start over: $0 stop && rm -rf $FB_PG_DIR"
    fi
    # pg_ctl -W returns before postmaster.pid exists: only a server gone after a few seconds has died.
    if [ $((SECONDS - started)) -ge 3 ] && ! pg_running; then
      tail -n 20 "$FB_PG_LOG" >&2 || true
      fb_die "PostgreSQL exited during startup (log: $FB_PG_LOG)" "read the log above, fix the cause, run $0 start"
    fi
    sleep 0.2
  done
}

pg_stop() {
  if [ -f "$FB_PG_DATA/PG_VERSION" ] && pg_running; then
    # FB_PG_STOP_MODE=immediate simulates a crash (tests of what must survive one: recovery, lost statistics).
    local mode="${FB_PG_STOP_MODE:-fast}"
    fb_say "stopping PostgreSQL (pg_ctl stop -m $mode)"
    pg_as "$FB_PG_BIN/pg_ctl" stop -D "$FB_PG_DATA" -m "$mode" -w -t 60 >/dev/null ||
      fb_die "pg_ctl stop failed (see $FB_PG_LOG)" "try: $FB_PG_BIN/pg_ctl stop -D $FB_PG_DATA -m immediate"
  else
    fb_say "PostgreSQL not running"
  fi
}

pg_status() {
  if pg_running; then
    local pid
    pid="$(head -n 1 "$FB_PG_DATA/postmaster.pid" 2>/dev/null || echo '?')"
    echo "postgresql: running  pid $pid  127.0.0.1:$FB_PG_PORT  data $FB_PG_DATA  log $FB_PG_LOG"
    return 0
  fi
  echo "postgresql: stopped  (data $FB_PG_DATA)"
  return 3
}

# ---------------------------------------------------------------------------------------------
# Kafka

# Prints the pid of our broker if it runs: the pid file must name a live JVM running kafka.Kafka
# with this FB_HOME's config, so a reused pid never gets signalled.
kafka_pid() {
  [ -f "$FB_KAFKA_PID" ] || return 1
  local pid
  pid="$(cat "$FB_KAFKA_PID" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "kafka.Kafka $FB_KAFKA_DIR/config/server.properties" || return 1
  echo "$pid"
}

kafka_classpath() {
  if ! compgen -G "$FB_KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null ||
    ! compgen -G "$FB_KAFKA_LIBS/kafka-tools-*.jar" >/dev/null; then
    fb_die "no Kafka jars in $FB_KAFKA_LIBS" "run deploy/local/install-deps.sh (it fetches them with Maven)"
  fi
  echo "$FB_KAFKA_LIBS/*"
}

# The SCRAM users; each gets a password generated once into $FB_KAFKA_SECRETS/<name>.password.
FB_KAFKA_USERS="admin django worker recorder ops"
# The ones the C programs are (worker, recorder, CLI; admin for the C tests): they may also use PLAIN over TLS.
FB_KAFKA_PLAIN_USERS="admin worker recorder ops"

# Makes what is missing: the passwords (0600), a local CA and the broker's certificate for 127.0.0.1 and
# localhost (EC P-256, openssl), the PKCS12 keystore the broker reads. Kept under $FB_HOME, never in the repo.
kafka_security_material() {
  command -v openssl >/dev/null || fb_die "openssl not found" "apt-get install openssl (install-deps.sh does)"
  (umask 077 && mkdir -p "$FB_KAFKA_SECRETS" "$FB_KAFKA_TLS")
  local u
  for u in $FB_KAFKA_USERS keystore; do
    if [ ! -s "$FB_KAFKA_SECRETS/$u.password" ]; then
      (umask 077 && openssl rand -hex 24 >"$FB_KAFKA_SECRETS/$u.password")
    fi
  done
  local t="$FB_KAFKA_TLS"
  [ -s "$t/broker.p12" ] && [ -s "$FB_KAFKA_CA" ] && return 0
  fb_say "making a local CA and the broker's certificate in $t"
  (
    umask 077
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -keyout "$t/ca.key" \
      -out "$t/ca.pem" -days 3650 -subj "/CN=Fusion Backup local CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
      openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -keyout "$t/broker.key" \
        -out "$t/broker.csr" -subj "/CN=localhost" &&
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' >"$t/broker.ext" &&
      openssl x509 -req -in "$t/broker.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
        -out "$t/broker.pem" -days 825 -extfile "$t/broker.ext" &&
      openssl pkcs12 -export -in "$t/broker.pem" -inkey "$t/broker.key" -certfile "$t/ca.pem" -name broker \
        -out "$t/broker.p12" -passout "file:$FB_KAFKA_SECRETS/keystore.password"
  ) >"$t/openssl.log" 2>&1 || fb_die "making the broker's certificate failed (see $t/openssl.log)" \
    "to start over: rm -rf $t"
  chmod 644 "$t/ca.pem"
}

kafka_password() { cat "$FB_KAFKA_SECRETS/$1.password"; }

# What the formatted storage depends on (the security scheme and the SCRAM users' passwords): when it changes,
# e.g. storage formatted in the PLAINTEXT era or a deleted password file, the dev data is formatted again.
kafka_security_stamp() {
  local u
  {
    echo "sasl_ssl scram-sha-512 standard-authorizer v1"
    for u in $FB_KAFKA_USERS; do echo "$u $(kafka_password "$u")"; done
  } | sha256sum | cut -d' ' -f1
}

kafka_write_config() {
  mkdir -p "$FB_KAFKA_DIR/config" "$FB_KAFKA_DIR/data" "$FB_KAFKA_LOGDIR"
  chmod 700 "$FB_KAFKA_DIR/config"
  local admin_pw ks_pw
  admin_pw="$(kafka_password admin)"
  ks_pw="$(kafka_password keystore)"
  local plain_users="" u
  for u in $FB_KAFKA_PLAIN_USERS; do plain_users+="user_$u=\"$(kafka_password "$u")\" "; done
  # The admin principal's client settings, for Kafka's own tools (--command-config).
  (umask 077 && cat >"$FB_KAFKA_DIR/config/admin-client.properties") <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_pw";
ssl.truststore.type=PEM
ssl.truststore.location=$FB_KAFKA_CA
PROPS
  (umask 077 && cat >"$FB_KAFKA_DIR/config/server.properties") <<PROPS
# Single-node KRaft broker+controller for local development; rewritten by deploy/local/services.sh.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$FB_KAFKA_CONTROLLER_PORT
# Clients, and the broker itself, on SASL_SSL with SCRAM-SHA-512 (users in the metadata log, made at format
# time). The controller listener cannot use SCRAM (the controller reads SCRAM users from the log it serves), so
# it takes SASL PLAIN over TLS with one static user, admin; nothing listens in plaintext.
listeners=SASL_SSL://127.0.0.1:$FB_KAFKA_PORT,CONTROLLER://127.0.0.1:$FB_KAFKA_CONTROLLER_PORT
advertised.listeners=SASL_SSL://127.0.0.1:$FB_KAFKA_PORT,CONTROLLER://127.0.0.1:$FB_KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=CONTROLLER:SASL_SSL,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
# PLAIN (over TLS) as well, for the C programs: Debian bookworm's librdkafka 2.0.2 sends a SCRAM nonce that Kafka
# 4.x rejects (librdkafka#4895, fixed in 2.6.1). Same principals, same ACLs; Python clients use SCRAM.
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_pw";
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required $plain_users;
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin_pw" user_admin="$admin_pw";
ssl.keystore.type=PKCS12
ssl.keystore.location=$FB_KAFKA_TLS/broker.p12
ssl.keystore.password=$ks_pw
ssl.key.password=$ks_pw
ssl.truststore.type=PEM
ssl.truststore.location=$FB_KAFKA_CA
ssl.client.auth=none
# ACLs: nothing is allowed unless granted (services.sh grants per principal); admin is the broker itself.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false
log.dirs=$FB_KAFKA_DIR/data

num.partitions=1
auto.create.topics.enable=false
delete.topic.enable=true
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=12
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

# A 2-core box: fewer threads than the defaults.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
log.retention.hours=168
log.segment.bytes=134217728
PROPS
  cat >"$FB_KAFKA_DIR/config/log4j2.properties" <<EOF
# Broker logs go to a file only; rewritten by deploy/local/services.sh.
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = $FB_KAFKA_LOG
appender.file.filePattern = $FB_KAFKA_LOGDIR/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = info
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = warn
EOF
}

kafka_java() {
  # Arguments: main class and its arguments. Tools log to stderr at WARN, not to the broker's file.
  local cp
  cp="$(kafka_classpath)"
  java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
    -Dlog4j2.configurationFile="file:$FB_LOCAL_DIR/kafka/log4j2-tools.properties" \
    -cp "$cp" "$@"
}

kafka_format() {
  local stamp
  stamp="$(kafka_security_stamp)"
  if [ -f "$FB_KAFKA_DIR/data/meta.properties" ]; then
    [ "$(cat "$FB_KAFKA_DIR/security.stamp" 2>/dev/null)" = "$stamp" ] && return 0
    # Storage from the PLAINTEXT era, or users whose passwords changed: it is dev data, start it over.
    fb_say "Kafka storage in $FB_KAFKA_DIR/data predates the current security settings: formatting it again"
    rm -rf "${FB_KAFKA_DIR:?}/data"
    mkdir -p "$FB_KAFKA_DIR/data"
  fi
  local scram=() u
  for u in $FB_KAFKA_USERS; do scram+=(--add-scram "SCRAM-SHA-512=[name=$u,password=$(kafka_password "$u")]"); done
  local id
  if [ -s "$FB_KAFKA_DIR/cluster.id" ]; then
    id="$(cat "$FB_KAFKA_DIR/cluster.id")"
  else
    id="$(kafka_java kafka.tools.StorageTool random-uuid)" ||
      fb_die "kafka StorageTool random-uuid failed" "check java -version (needs 17+) and the jars in $FB_KAFKA_LIBS"
    echo "$id" >"$FB_KAFKA_DIR/cluster.id"
  fi
  fb_say "formatting Kafka storage in $FB_KAFKA_DIR/data (cluster id $id)"
  kafka_java kafka.tools.StorageTool format --standalone -t "$id" \
    -c "$FB_KAFKA_DIR/config/server.properties" --ignore-formatted "${scram[@]}" >"$FB_KAFKA_LOGDIR/format.log" 2>&1 ||
    fb_die "formatting Kafka storage failed (see $FB_KAFKA_LOGDIR/format.log)" \
      "to start over: $0 stop kafka && rm -rf $FB_KAFKA_DIR"
  echo "$stamp" >"$FB_KAFKA_DIR/security.stamp"
}

# admin.py as the admin principal (the super user: creates topics and ACLs).
kafka_admin() {
  "$FB_VENV/bin/python" "$FB_LOCAL_DIR/kafka/admin.py" --bootstrap "$FB_BROKERS" --ca "$FB_KAFKA_CA" \
    --user admin --password-file "$FB_KAFKA_SECRETS/admin.password" "$@"
}

# The ACLs of the principals on PREFIX's topics (and, with --base, the cluster-wide ones).
kafka_grant() {
  kafka_admin_py || fb_die "creating ACLs needs confluent_kafka in $FB_VENV" "run deploy/local/install-deps.sh"
  kafka_admin grant "$@" || fb_die "creating the ACLs ($*) failed" "see the message above and $FB_KAFKA_LOG"
}

# The Python admin helper (confluent_kafka in the venv) answers in ~0.3 s; TopicCommand needs a
# JVM per call (~2-3 s), so it is only the fallback when the venv is missing.
kafka_admin_py() {
  [ -x "$FB_VENV/bin/python" ] && "$FB_VENV/bin/python" -c 'import confluent_kafka' 2>/dev/null
}

kafka_wait() {
  local pid="$1" deadline=$((SECONDS + FB_START_TIMEOUT))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$FB_KAFKA_LOG" "$FB_KAFKA_LOGDIR/kafka.out" >&2 2>/dev/null || true
      fb_die "the Kafka broker exited during startup (log: $FB_KAFKA_LOG, JVM output: $FB_KAFKA_LOGDIR/kafka.out)" \
        "read the log above; to start over: $0 stop kafka && rm -rf $FB_KAFKA_DIR"
    fi
    local left=$((deadline - SECONDS))
    if [ "$left" -le 0 ]; then
      tail -n 30 "$FB_KAFKA_LOG" >&2 2>/dev/null || true
      fb_die "Kafka did not answer on $FB_BROKERS within ${FB_START_TIMEOUT}s (log: $FB_KAFKA_LOG)" \
        "read the log above; raise FB_START_TIMEOUT on a slow machine, or reset: $0 stop kafka && rm -rf $FB_KAFKA_DIR"
    fi
    if kafka_admin_py; then
      # One process polls metadata until it answers or its time is up (then we re-check the pid).
      kafka_admin wait --timeout "$((left < 10 ? left : 10))" && return 0
    else
      kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$FB_BROKERS" --list \
        --command-config "$FB_KAFKA_DIR/config/admin-client.properties" >/dev/null 2>&1 && return 0
      sleep 0.5
    fi
  done
}

kafka_start() {
  local pid
  if pid="$(kafka_pid)"; then
    fb_say "Kafka already running (pid $pid) on $FB_BROKERS"
  else
    command -v java >/dev/null || fb_die "java not found" "run deploy/local/install-deps.sh (installs openjdk-17-jre-headless)"
    kafka_classpath >/dev/null
    kafka_security_material
    kafka_write_config
    local port
    for port in "$FB_KAFKA_PORT" "$FB_KAFKA_CONTROLLER_PORT"; do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        fb_die "something already listens on 127.0.0.1:$port but it is not this FB_HOME's broker" \
          "stop it, or choose other ports: FB_KAFKA_PORT=NNNN (the controller takes NNNN+1) $0 start"
      fi
    done
    kafka_format
    fb_say "starting Kafka on $FB_BROKERS (controller 127.0.0.1:$FB_KAFKA_CONTROLLER_PORT, log $FB_KAFKA_LOG)"
    # setsid: the broker outlives this script and a Ctrl-C in the calling terminal.
    setsid java -Xms256m -Xmx"$FB_KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -Djava.awt.headless=true -Dkafka.logs.dir="$FB_KAFKA_LOGDIR" \
      -Dlog4j2.configurationFile="file:$FB_KAFKA_DIR/config/log4j2.properties" \
      -cp "$(kafka_classpath)" kafka.Kafka "$FB_KAFKA_DIR/config/server.properties" \
      </dev/null >"$FB_KAFKA_LOGDIR/kafka.out" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$FB_KAFKA_PID"
  fi
  kafka_wait "$pid"
}

kafka_stop() {
  local pid
  if ! pid="$(kafka_pid)"; then
    rm -f "$FB_KAFKA_PID"
    fb_say "Kafka not running"
    return 0
  fi
  fb_say "stopping Kafka (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + ${FB_KAFKA_STOP_TIMEOUT:-60}))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      fb_say "Kafka did not stop within ${FB_KAFKA_STOP_TIMEOUT:-60}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$FB_KAFKA_PID"
}

kafka_status() {
  local pid
  if pid="$(kafka_pid)"; then
    echo "kafka:      running  pid $pid  $FB_BROKERS (controller 127.0.0.1:$FB_KAFKA_CONTROLLER_PORT)  data $FB_KAFKA_DIR/data  log $FB_KAFKA_LOG"
    return 0
  fi
  echo "kafka:      stopped  (data $FB_KAFKA_DIR/data)"
  return 3
}

# Topic suffixes and partition counts; PREFIX + suffix is the topic name.
kafka_topic_specs() {
  echo "backup.requested:$FB_JOB_PARTITIONS"
  echo "archive.due:$FB_JOB_PARTITIONS"
  echo "jobs.completed:$FB_COMPLETED_PARTITIONS"
  echo "jobs.dlq:$FB_DLQ_PARTITIONS"
}

kafka_topics() { # PREFIX [--base]: also the cluster-wide ACLs
  local prefix="$1" base="${2:-}" specs=() spec
  while read -r spec; do specs+=("$prefix$spec"); done < <(kafka_topic_specs)
  kafka_pid >/dev/null || fb_die "Kafka is not running (no live broker for $FB_KAFKA_PID)" "run $0 start first"
  if kafka_admin_py; then
    # One process: the topics, then their ACLs.
    kafka_admin create --grant "$prefix" ${base:+"$base"} "${specs[@]}" ||
      fb_die "creating topics ${prefix}* or their ACLs failed" "see the message above and $FB_KAFKA_LOG"
    return 0
  else
    for spec in "${specs[@]}"; do
      kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$FB_BROKERS" --create \
        --command-config "$FB_KAFKA_DIR/config/admin-client.properties" \
        --if-not-exists --topic "${spec%:*}" --partitions "${spec##*:}" --replication-factor 1 >/dev/null ||
        fb_die "creating topic ${spec%:*} failed" "see the message above and $FB_KAFKA_LOG"
    done
  fi
  kafka_grant "$prefix" ${base:+"$base"}
}

kafka_drop_topics() {
  local prefix="$1" names=() spec
  while read -r spec; do names+=("$prefix${spec%:*}"); done < <(kafka_topic_specs)
  kafka_pid >/dev/null || fb_die "Kafka is not running" "run $0 start first"
  if kafka_admin_py; then
    kafka_admin delete "${names[@]}"
  else
    local n
    for n in "${names[@]}"; do
      kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$FB_BROKERS" --delete \
        --command-config "$FB_KAFKA_DIR/config/admin-client.properties" \
        --if-exists --topic "$n" >/dev/null
    done
  fi
}

# ---------------------------------------------------------------------------------------------
# main

fb_lock() {
  # start/stop of one FB_HOME are serialized; fd 9 is closed for the daemons (9>&- above).
  mkdir -p "$FB_HOME"
  exec 9>"$FB_HOME/.services.lock"
  flock -w 300 9 || fb_die "another services.sh start/stop holds $FB_HOME/.services.lock" "wait for it, then retry"
}

fb_components() {
  if [ $# -eq 0 ]; then echo "pg kafka"; return; fi
  local c
  for c in "$@"; do
    case "$c" in pg | kafka) ;; *) fb_die "unknown service '$c'" "use pg, kafka, or nothing for both" ;; esac
  done
  echo "$*"
}

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  start)
    comps="$(fb_components "$@")"
    fb_lock
    t0="$(fb_now_ms)"
    for c in $comps; do
      case "$c" in
        pg) pg_start ;;
        kafka)
          kafka_start
          t1="$(fb_now_ms)"
          kafka_topics "$FB_TOPIC_PREFIX" --base
          fb_say "topics ${FB_TOPIC_PREFIX}{backup.requested,archive.due,jobs.completed,jobs.dlq} ready ($(($(fb_now_ms) - t1)) ms)"
          ;;
      esac
    done
    fb_env >"$FB_HOME/env.sh"
    if [ $# -eq 0 ] && [ -x "$FB_SEAWEEDFS_BIN" ]; then "$FB_LOCAL_DIR/s3.sh" start; fi  # S3 server (s3.sh adds to env.sh)
    fb_say "ready in $(($(fb_now_ms) - t0)) ms; environment in $FB_HOME/env.sh (. $FB_HOME/env.sh)"
    ;;
  stop)
    comps="$(fb_components "$@")"
    fb_lock
    for c in $comps; do
      case "$c" in pg) pg_stop ;; kafka) kafka_stop ;; esac
    done
    if [ $# -eq 0 ]; then "$FB_LOCAL_DIR/s3.sh" stop; fi  # the S3 server (deploy/local/s3.sh)
    ;;
  status)
    rc=0
    pg_status || rc=3
    kafka_status || rc=3
    exit "$rc"
    ;;
  env) fb_env ;;
  topics)
    if [ $# -ne 1 ] || [ -z "$1" ]; then fb_die "usage: $0 topics PREFIX" "e.g. $0 topics t123."; fi
    kafka_topics "$1"
    ;;
  drop-topics)
    if [ $# -ne 1 ] || [ -z "$1" ]; then fb_die "usage: $0 drop-topics PREFIX" "e.g. $0 drop-topics t123."; fi
    kafka_drop_topics "$1"
    ;;
  *) usage ;;
esac
