#!/usr/bin/env bash
# Archive benchmark (not a timed test): the worker's archival against the seed design's Django loop and against
# one SQL statement, on 1,000,000 rows of Fusion's notifications_notification. Prints a Markdown table.
#
#   bench/archive/run.sh [--pg CONNINFO] [--build DIR]
#
# CONNINFO is the server's maintenance database (default: FB_TEST_PG from deploy/local/services.sh env); a
# database fbbench_archive is (re)created on it with the Fusion schema and the backup_archive tables, and dropped
# at the end. DIR is a build directory with libfbcore.a (default: FB_BUILD_DIR or ./build). Environment knobs:
# FB_BENCH_ROWS (1000000; 10000000 for the large run), FB_BENCH_DJANGO_ROWS (20000; 0: no Django loop),
# FB_BENCH_BATCHES (10000,1000), FB_BENCH_REPEAT (1: rounds of (b) and (c), each (c) against its own round's (b)),
# FB_BENCH_DB (fbbench_archive), FB_BENCH_KEEP_SEED (0; 1: reuse and keep the seed database ${FB_BENCH_DB}_seed),
# FB_BENCH_AUTOVACUUM (on; off: autovacuum disabled on the two tables while each method runs, see bench.py).
# FB_BENCH_MODE=oltp runs oltp.py instead: pgbench's latency on Fusion's tables with and without archival beside
# it (FB_BENCH_OLTP_SECONDS, FB_BENCH_OLTP_TPS, FB_BENCH_OLTP_CLIENTS, FB_BENCH_OLTP_SETTINGS; see oltp.py).
# FB_BENCH_MODE=explain runs explain.py: buffers and WAL of one worker batch against (b) on the same number of rows
# (FB_BENCH_EXPLAIN_ROWS, 10000), and of the whole job against the whole (b) with FB_BENCH_EXPLAIN_FULL=1.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO/bench/archive"
PG="${FB_TEST_PG:-}"
BUILD="${FB_BUILD_DIR:-$REPO/build}"
while [ $# -gt 0 ]; do
  case "$1" in
    --pg) PG="$2"; shift 2 ;;
    --build) BUILD="$2"; shift 2 ;;
    *) echo "run.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done
if [ -z "$PG" ]; then
  eval "$("$REPO/deploy/local/services.sh" env)"
  PG="$FB_TEST_PG"
fi
PG_BIN="${FB_PG_BIN:-/usr/lib/postgresql/15/bin}"
PY="${FB_VENV:-$HOME/.cache/fusion-backup/venv}/bin/python"
[ -f "$BUILD/libfbcore.a" ] || { echo "run.sh: $BUILD/libfbcore.a not found: build first (cmake -S . -B build && cmake --build build)" >&2; exit 1; }
[ -x "$PY" ] || { echo "run.sh: no Python venv at $PY: run deploy/local/install-deps.sh" >&2; exit 1; }

DRIVER="$(mktemp -d)/bench_archive"
# shellcheck disable=SC2046
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -I "$REPO/worker/src" $(pkg-config --cflags libpq) \
  "$HERE/bench_archive.c" \
  "$BUILD/libfbcore.a" $(ls "$BUILD"/libfbcodec.a 2>/dev/null) $(pkg-config --libs libpq rdkafka libzstd libsodium) \
  $(pkg-config --libs msgpack-c 2>/dev/null || pkg-config --libs msgpack) -lpthread -lm -o "$DRIVER"

DB="${FB_BENCH_DB:-fbbench_archive}"  # another name lets two runs share a server
"$PG_BIN/psql" -X -q -d "$PG" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
BENCH_PG="$PG dbname=$DB"
"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$BENCH_PG" -f "$REPO/tests/fixtures/fusion/fusion_prod_schema_pg15.sql" >/dev/null
"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$BENCH_PG" -f "$REPO/schemas/sql/backup_archive.sql"
"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$BENCH_PG" -c "
  INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name, email, is_staff, is_active,
                         date_joined)
  VALUES (1, 'x', false, 'u1', '', '', '', false, true, now()), (2, 'x', false, 'u2', '', '', '', false, true, now());
  INSERT INTO django_content_type (id, app_label, model) VALUES (1, 'notifications', 'notification');"

echo "server: $("$PG_BIN/psql" -X -At -d "$BENCH_PG" -c "SELECT version()" | cut -d' ' -f1-2)," \
  "$("$PG_BIN/psql" -X -At -d "$BENCH_PG" -c "SELECT 'fsync=' || current_setting('fsync') || ' synchronous_commit=' || current_setting('synchronous_commit') || ' shared_buffers=' || current_setting('shared_buffers')")," \
  "$(nproc) cores"
case "${FB_BENCH_MODE:-throughput}" in
  throughput) FB_BENCH_PG="$BENCH_PG" FB_BENCH_ADMIN_PG="$PG" FB_BENCH_DBNAME="$DB" FB_BENCH_DRIVER="$DRIVER" "$PY" "$HERE/bench.py" ;;
  explain) FB_BENCH_PG="$BENCH_PG" FB_BENCH_ADMIN_PG="$PG" FB_BENCH_DBNAME="$DB" FB_BENCH_DRIVER="$DRIVER" "$PY" "$HERE/explain.py" ;;
  oltp) FB_BENCH_PG="$BENCH_PG" FB_BENCH_ADMIN_PG="$PG" FB_BENCH_DBNAME="$DB" FB_BENCH_DRIVER="$DRIVER" FB_PG_BIN="$PG_BIN" "$PY" "$HERE/oltp.py" ;;
  *) echo "run.sh: FB_BENCH_MODE is throughput, oltp or explain, not $FB_BENCH_MODE" >&2; exit 2 ;;
esac
if [ "${FB_BENCH_KEEP_SEED:-0}" = 1 ]; then  # the seed stays for the next invocation: drop it by hand when done
  "$PG_BIN/psql" -X -q -d "$PG" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
else
  "$PG_BIN/psql" -X -q -d "$PG" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "DROP DATABASE IF EXISTS ${DB}_seed"
fi
rm -rf "$(dirname "$DRIVER")"
