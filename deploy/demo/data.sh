#!/usr/bin/env bash
# The demo's data step (deploy/demo/run.sh step 2), on its own: a Fusion database with demo rows, made only from
# files inside this repository (the Fusion schema fixture in tests/fixtures/fusion, the backup_archive app's
# migrations, deploy/demo/seed.sql), so a user's clone needs nothing beside it.
#   deploy/demo/data.sh DBNAME      (FB_TEST_PG: conninfo of the server; FB_VENV: the Python with Django)
# Drops and re-creates DBNAME. tests/deploy/test_self_contained.py runs it from a bare copy of the repository.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DB="${1:?usage: data.sh DBNAME}"
: "${FB_TEST_PG:?FB_TEST_PG is not set: . \$FB_HOME/env.sh first (deploy/local/services.sh start writes it)}"
: "${FB_VENV:?FB_VENV is not set: . \$FB_HOME/env.sh first}"
PG_DB="$FB_TEST_PG dbname=$DB"
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
django() { (cd "$REPO/producer" && FB_DEMO_DB="$DB" PYTHONPATH="$REPO/producer:$REPO/schemas/python" \
  "$FB_VENV/bin/python" -m django "$@" --settings=demo.settings); }

q "$FB_TEST_PG" "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)"
q "$FB_TEST_PG" "CREATE DATABASE \"$DB\""
psql -X -q -v ON_ERROR_STOP=1 -d "$PG_DB" -f "$REPO/tests/fixtures/fusion/fusion_prod_schema_pg15.sql" >/dev/null
echo "Fusion schema: $(q "$PG_DB" "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") tables"
# Fusion's own Django apps created auth/contenttypes already; the backup_archive app migrates for real.
django migrate --fake contenttypes >/dev/null
django migrate --fake auth >/dev/null
django migrate backup_archive
psql -X -q -v ON_ERROR_STOP=1 -d "$PG_DB" -f "$REPO/deploy/demo/seed.sql" >/dev/null
