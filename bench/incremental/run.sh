#!/usr/bin/env bash
# Incremental backup benchmark (issue 7): a database of 10 equal tables, a FULL backup, one table changed
# (1% of its rows updated), then an INCREMENTAL and a DIFFERENTIAL. Prints stored bytes and wall time of each
# relative to the FULL. Needs the local services (deploy/local/services.sh start) and a build
# (FB_BUILD_DIR, default build/). ROWS per table (default 300000, about 30 MB of COPY text each).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
. "${FB_HOME:-$HOME/.cache/fusion-backup}/env.sh"
BUILD="${FB_BUILD_DIR:-$REPO/build}"
CLI="$BUILD/fusion-backup"
PSQL=/usr/lib/postgresql/15/bin/psql
ROWS="${ROWS:-300000}"
# Artifacts are signed as a worker (the development keys deploy/local/keys.sh made): only a trusted signer's
# backups serve as bases, so signing with env.sh's operator key would make every INCREMENTAL run as a FULL.
KEYS="${FB_BENCH_KEYS:-${FB_HOME:-$HOME/.cache/fusion-backup}/keys}"
WORK="$(mktemp -d /tmp/fb-bench-inc.XXXXXX)"
DB="fb_bench_inc_$$"
trap '"$PSQL" -X -q -d "$FB_TEST_PG" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "DROP DATABASE IF EXISTS ${DB}_auth WITH (FORCE)" >/dev/null 2>&1; rm -rf "$WORK"' EXIT
CI="$FB_TEST_PG dbname=$DB"
AUTH="$FB_TEST_PG dbname=${DB}_auth"  # its backup_archive rows authorise each request (--authority-pg)

"$PSQL" -X -q -d "$FB_TEST_PG" -c "CREATE DATABASE $DB" -c "CREATE DATABASE ${DB}_auth" >/dev/null
"$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$AUTH" -c "CREATE TABLE auth_user (id serial PRIMARY KEY)" \
  -f "$REPO/schemas/sql/backup_archive.sql" \
  -c "INSERT INTO backup_archive_backupconfiguration VALUES (1, 'bench', 'FULL', '', '[]', '[]', 'bench', 0, '',
      true, now(), now(), NULL, NULL)" >/dev/null
for i in $(seq 1 10); do
  "$PSQL" -X -q -d "$CI" -c "CREATE TABLE t$i (id int PRIMARY KEY, a text, b int, c jsonb);
    INSERT INTO t$i SELECT g, md5(g::text) || repeat(' x', g % 17), g * 7 % 1000, jsonb_build_object('k', g, 's', md5((g*3)::text))
    FROM generate_series(1, $ROWS) g;" >/dev/null
done
"$PSQL" -X -q -d "$CI" -c "VACUUM ANALYZE" >/dev/null
"$CLI" keygen --out "$WORK/key" >/dev/null
mkdir -p "$WORK/root"

event() { # TYPE FILE
  PYTHONPATH="$REPO/schemas/python" "$FB_VENV/bin/python" - "$1" "$2" <<'PY'
import sys, time, uuid
from fusion_events import encode
job = str(uuid.uuid4())
print(job)
open(sys.argv[2], "wb").write(encode({
    "v": 1, "type": "backup.requested", "job_id": job, "ts": int(time.time() * 1000),
    "requested_by": None, "attempt": 1, "record_id": 1, "config_id": 1, "config_name": "bench",
    "backup_type": sys.argv[1], "tables": [], "modules": [], "storage_path": "bench", "retention_days": 0}))
PY
}

declare -A BYTES MS STATS
run() { # TYPE
  local job
  job=$(event "$1" "$WORK/$1.msgpack")
  # the QUEUED record Django would write for this job
  "$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$AUTH" -c "DELETE FROM backup_archive_backuprecord" \
    -c "INSERT INTO backup_archive_backuprecord (id, job_id, backup_type, status, requested_at, file_path,
        error_message, attempt, worker, verify_status, verify_message, configuration_id, tables)
        VALUES (1, '$job', '$1', 'QUEUED', now(), '', '', 1, '', '', '', 1, '[]')" >/dev/null
  local t0 t1 out
  t0=$(date +%s%N)
  out=$("$CLI" event run "$WORK/$1.msgpack" --no-publish --pg "$CI" --storage-root "$WORK/root" \
        --public-key "$WORK/key.pub" --authority-pg "$AUTH" --sign-key "$KEYS/worker.key" \
        --trusted-signer "$KEYS/worker.pub" 2>"$WORK/$1.log" | grep '^{')
  t1=$(date +%s%N)
  BYTES[$1]=$(echo "$out" | "$FB_VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["file_size"])')
  STATS[$1]=$(echo "$out" | "$FB_VENV/bin/python" -c '
import json, sys
s = json.load(sys.stdin)["stats"]
n = s.get("chunks_reused", 0) + s.get("chunks_stored", 0)
if n:
    print("%d of %d chunks of the changed table stored (%.1f%%), average chunk %.0f bytes" % (
        s["chunks_stored"], n, 100.0 * s["chunks_stored"] / n, s["raw_bytes"] / 10 / n))')
  MS[$1]=$(( (t1 - t0) / 1000000 ))
  if [ "$1" != FULL ] && echo "$out" | grep -q '"ran_as_full": *1'; then
    echo "run.sh: the $1 ran as a FULL (no trusted base): the figures would compare two FULLs; its log:" >&2
    cat "$WORK/$1.log" >&2
    exit 1
  fi
}

run FULL
"$PSQL" -X -q -d "$CI" -c "UPDATE t5 SET b = b + 1 WHERE id % 100 = 0" >/dev/null
run INCREMENTAL
run DIFFERENTIAL

RAW=$("$PSQL" -X -At -d "$CI" -c "SELECT sum(pg_relation_size(c.oid)) FROM pg_class c WHERE relname ~ '^t[0-9]+$'")
printf '\n10 tables x %d rows (%s MB on disk), 1 table changed (1%% of its rows updated)\n\n' "$ROWS" $((RAW / 1048576))
printf '| %-12s | %14s | %10s | %9s | %9s |\n' backup "stored bytes" "vs FULL" "time ms" "vs FULL"
printf '|%s|%s|%s|%s|%s|\n' -------------- ---------------- ------------ ----------- -----------
for t in FULL INCREMENTAL DIFFERENTIAL; do
  printf '| %-12s | %14d | %9.1f%% | %9d | %8.2fx |\n' "$t" "${BYTES[$t]}" \
    "$(echo "100 * ${BYTES[$t]} / ${BYTES[FULL]}" | bc -l)" "${MS[$t]}" "$(echo "${MS[$t]} / ${MS[FULL]}" | bc -l)"
done
printf '\nINCREMENTAL: %s\n' "${STATS[INCREMENTAL]}"
