#!/usr/bin/env bash
# The main job (README, command 1): from a fresh machine to a checked restore, for real.
#   1. install what is missing, start the local PostgreSQL and Kafka (deploy/local), build the C workers
#   2. make a Fusion database: the real schema (463 tables), the backup_archive app migrated by Django, demo rows
#   3. start a worker (jobs + recorder) and ask Django for a backup: event in, artifact out, BackupRecord SUCCESS
#   4. restore the artifact into an empty database and compare every table with the source
#   5. ask Django for archival of old notifications and leave applications (CASCADE children included) and
#      check that every row is either still in its table or in ArchivedRecord
# Everything it makes lives in $FB_HOME/demo and the databases fusion_demo / fusion_demo_restore.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
FB_HOME="${FB_HOME:-$HOME/.cache/fusion-backup}"
export FB_HOME
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

say "1. dependencies, services, build"
deploy/local/install-deps.sh
deploy/local/services.sh start
# shellcheck disable=SC1091
. "$FB_HOME/env.sh"
cmake -S "$REPO" -B "$REPO/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$REPO/build" -j "$(nproc)" >/dev/null || die "build failed: run cmake --build build to see why"
BIN="$REPO/build"
deploy/local/keys.sh "$BIN"   # signing keys of Django, ops and the worker, in $FB_HOME/keys (env.sh names them)
DEMO="$FB_HOME/demo"
rm -rf "$DEMO"
mkdir -p "$DEMO/storage"
PREFIX="demo$(date +%s)."   # fresh topics: a demo never sees an older run's messages
deploy/local/services.sh topics "$PREFIX" >/dev/null
export FB_TOPIC_PREFIX="$PREFIX" FB_DEMO_DB=fusion_demo
PG_DEMO="$FB_TEST_PG dbname=fusion_demo"
PG_RESTORE="$FB_TEST_PG dbname=fusion_demo_restore"
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
django() { (cd "$REPO/producer" && PYTHONPATH="$REPO/producer:$REPO/schemas/python" \
  "$FB_VENV/bin/python" -m django "$@" --settings=demo.settings); }

say "2. a Fusion database with demo rows"
q "$FB_TEST_PG" "DROP DATABASE IF EXISTS fusion_demo_restore WITH (FORCE)"
deploy/demo/data.sh fusion_demo
# The worker connects as the least-privilege role (SECURITY.md), not as the database owner.
psql -X -q -v ON_ERROR_STOP=1 -v worker_role=fusion_backup_worker -d "$PG_DEMO" -f deploy/sql/roles.sql >/dev/null
PG_WORKER="$PG_DEMO user=fusion_backup_worker"
q "$PG_DEMO" "SELECT 'rows: ' || (SELECT count(*) FROM notifications_notification) || ' notifications, ' ||
  (SELECT count(*) FROM leave_leave) || ' leaves, ' || (SELECT count(*) FROM leave_leavesegment) || ' segments, ' ||
  (SELECT count(*) FROM \"Cpda Application\") || ' \"Cpda Application\", ' || (SELECT count(*) FROM auth_user) || ' users'"

say "3. worker up; Django requests a backup"
"$BIN/fusion-backup" keygen --out "$DEMO/backup"
# The worker signs its status events and artifacts with its own key (keys.sh's worker.key); whoever reads them
# trusts its public key: env.sh's FB_TRUSTED_SIGNERS (FORMAT.md and schemas/SPEC.md, "Signatures").
OFFSITE="s3://$FB_S3_BUCKET/demo-$(date +%s)"   # the offsite copy, in the local S3 server (deploy/local/s3.sh)
# The worker speaks as the `worker` principal (env.sh's FB_KAFKA_* make the CLI `ops`; Django is `django`).
"$BIN/fusion-backup-worker" --role all --pg "$PG_WORKER" --storage-root "$DEMO/storage" --copy-to "$OFFSITE" \
  --kafka-username worker --kafka-password-file "$FB_TEST_KAFKA_SECRETS/worker.password" \
  --public-key "$DEMO/backup.pub" --sign-key "$FB_HOME/keys/worker.key" --brokers "$FB_TEST_BROKERS" --topic-prefix "$PREFIX" \
  --group-id "demo-workers" --concurrency 2 --worker-name demo-worker-1 >"$DEMO/worker.log" 2>&1 &
WORKER=$!
trap 'kill -TERM $WORKER 2>/dev/null; wait $WORKER 2>/dev/null || true' EXIT
django shell -c "
from backup_archive.models import BackupConfiguration, ArchivePolicy
BackupConfiguration.objects.create(name='fusion-nightly', backup_type='FULL', schedule='0 2 * * *',
    modules=['leave', 'notifications'], tables=['Cpda Application', 'auth_user', 'globals_extrainfo',
    'globals_departmentinfo', 'django_content_type'], storage_path='fusion/nightly', retention_days=30)
ArchivePolicy.objects.create(module='notifications', model_name='Notification', timestamp_column='timestamp',
    archive_after_days=180, delete_after_days=None, batch_size=2000)
ArchivePolicy.objects.create(module='leave', model_name='Leave', timestamp_column='timestamp',
    archive_after_days=365, delete_after_days=None, batch_size=200)
"
django backup_request fusion-nightly
wait_record() { # waits for the newest BackupRecord to finish; prints its status
  local s=""
  for _ in $(seq 1 240); do
    s="$(q "$PG_DEMO" "SELECT status FROM backup_archive_backuprecord ORDER BY id DESC LIMIT 1")"
    case "$s" in SUCCESS|FAILED) echo "$s"; return;; esac
    sleep 0.5
  done
  echo "$s"
}
status="$(wait_record)"
django backup_status
[ "$status" = SUCCESS ] || { tail -n 30 "$DEMO/worker.log"; die "the backup did not succeed (status $status)"; }
ARTIFACT="$DEMO/storage/$(q "$PG_DEMO" "SELECT file_path FROM backup_archive_backuprecord ORDER BY id DESC LIMIT 1")"
"$BIN/fusion-backup" inspect "$ARTIFACT" --secret-key "$DEMO/backup.key" | head -n 20
echo "offsite copy (read back and compared by the worker): $OFFSITE/${ARTIFACT#"$DEMO/storage/"}"
"$BIN/fusion-backup" verify "$OFFSITE/${ARTIFACT#"$DEMO/storage/"}" --secret-key "$DEMO/backup.key"

say "4. restore into an empty database, compare every table"
q "$FB_TEST_PG" "CREATE DATABASE fusion_demo_restore"
"$BIN/fusion-backup" verify "$ARTIFACT" --secret-key "$DEMO/backup.key"
"$BIN/fusion-backup" restore "$ARTIFACT" --pg "$PG_RESTORE" --create --secret-key "$DEMO/backup.key"
tables="$(q "$PG_RESTORE" "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")"
mismatch=0
printf '%-32s %10s %10s  %s\n' table source restored same
while IFS= read -r t; do
  sum="SELECT count(*) || ' ' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '-') FROM $t x"
  a="$(q "$PG_DEMO" "$sum")"; b="$(q "$PG_RESTORE" "$sum")"
  same=yes; [ "$a" = "$b" ] || { same=NO; mismatch=1; }
  printf '%-32s %10s %10s  %s\n' "$t" "${a%% *}" "${b%% *}" "$same"
done <<<"$tables"
[ "$mismatch" = 0 ] || die "restored data differs from the source"
nextval="$(q "$PG_RESTORE" "INSERT INTO leave_leave (purpose, status, applicant_id) VALUES ('after restore', 'processing', 1) RETURNING id")"
echo "a new leave_leave row after restore got id $nextval (the restored sequence does not collide)"

say "5. Django requests archival; the worker moves old rows into ArchivedRecord"
before="$(q "$PG_DEMO" "SELECT (SELECT count(*) FROM notifications_notification) + (SELECT count(*) FROM leave_leave) + (SELECT count(*) FROM leave_leavesegment) + (SELECT count(*) FROM leave_replacementsegment)")"
for p in $(q "$PG_DEMO" "SELECT id FROM backup_archive_archivepolicy ORDER BY id"); do django archive_run "$p"; done
for _ in $(seq 1 240); do
  due="$(q "$PG_DEMO" "SELECT (SELECT count(*) FROM notifications_notification WHERE \"timestamp\" < now() - interval '180 days') + (SELECT count(*) FROM leave_leave WHERE \"timestamp\" < now() - interval '365 days')")"
  [ "$due" = 0 ] && break
  sleep 0.5
done
[ "$due" = 0 ] || { tail -n 30 "$DEMO/worker.log"; die "archival did not finish: $due rows still due"; }
sleep 1
q "$PG_DEMO" "SELECT module || '.' || model_name || ': ' || count(*) || ' archived' FROM backup_archive_archivedrecord GROUP BY module, model_name ORDER BY 1"
after="$(q "$PG_DEMO" "SELECT (SELECT count(*) FROM notifications_notification) + (SELECT count(*) FROM leave_leave) + (SELECT count(*) FROM leave_leavesegment) + (SELECT count(*) FROM leave_replacementsegment)")"
archived="$(q "$PG_DEMO" "SELECT count(*) FROM backup_archive_archivedrecord")"
echo "rows before: $before = rows still live: $after + rows archived: $archived"
[ "$before" -eq $((after + archived)) ] || die "rows lost or duplicated: $before != $after + $archived"
dups="$(q "$PG_DEMO" "SELECT count(*) FROM (SELECT 1 FROM backup_archive_archivedrecord GROUP BY module, model_name, original_id HAVING count(*) > 1) d")"
[ "$dups" = 0 ] || die "$dups duplicate ArchivedRecords"

say "6. what an operator sees"
"$BIN/fusion-backup" status --brokers "$FB_TEST_BROKERS" --topic-prefix "$PREFIX" --group-id demo-workers
"$BIN/fusion-backup" tail --from-beginning --timeout 3 --brokers "$FB_TEST_BROKERS" --topic-prefix "$PREFIX" | grep -v RUNNING

say "demo complete"
echo "artifact: $ARTIFACT ($(stat -c %s "$ARTIFACT") bytes); worker log: $DEMO/worker.log"
