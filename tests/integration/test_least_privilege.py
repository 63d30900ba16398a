"""The worker's least-privilege role (deploy/sql/roles.sql): what it can do is what the worker needs, and
nothing more; the catalogs and the app's own policies and configurations are out of its reach whatever a
message asks."""
from __future__ import annotations

import subprocess

import psycopg2
import pytest

from conftest import PG_BIN, REPO, psql

ROLE = "fb_test_worker"


@pytest.fixture
def worker_db(fusion_db: str) -> tuple[str, str]:
    """(owner conninfo, worker-role conninfo) of a Fusion database with the role's grants applied."""
    r = subprocess.run([str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"worker_role={ROLE}",
                        "-d", fusion_db, "-f", str(REPO / "deploy/sql/roles.sql")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return fusion_db, f"{fusion_db} user={ROLE}"


def _try(conninfo: str, sql: str) -> str:
    """'ok' or the SQLSTATE class of the error."""
    conn = psycopg2.connect(conninfo)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
        return "ok"
    except psycopg2.Error as e:
        return e.pgcode or "error"
    finally:
        conn.close()


def test_role_is_not_privileged(worker_db):
    owner, _ = worker_db
    flags = psql(owner, f"SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
                        f"FROM pg_roles WHERE rolname = '{ROLE}'").strip()
    assert flags == "f|f|f|f|f"


def test_role_can_do_what_the_worker_needs(worker_db):
    owner, worker = worker_db
    psql(owner, "INSERT INTO backup_archive_backupconfiguration (name, backup_type, schedule, modules, tables,"
                " storage_path, retention_days, verify_schedule, is_active, created_at, updated_at) VALUES"
                " ('c', 'FULL', '', '[]', '[]', 'c', 1, '', true, now(), now())")
    assert _try(worker, "SELECT count(*) FROM notifications_notification") == "ok"
    assert _try(worker, 'SELECT count(*) FROM "Cpda Application"') == "ok"
    assert _try(worker, "BEGIN; SELECT pg_export_snapshot(); LOCK TABLE leave_leave IN ACCESS SHARE MODE") == "ok"
    assert _try(worker, "DELETE FROM leave_leave WHERE false") == "ok"
    assert _try(worker, "UPDATE leave_leave SET purpose = purpose WHERE false") == "ok"
    assert _try(worker, "INSERT INTO backup_archive_archivedrecord (module, model_name, original_id, data, archived_at)"
                        " VALUES ('m', 'M', '1', '{}', now())") == "ok"
    assert _try(worker, "DELETE FROM backup_archive_archivedrecord WHERE original_id = '1'") == "ok"
    assert _try(worker, "UPDATE backup_archive_backuprecord SET status = status WHERE false") == "ok"
    assert _try(worker, "UPDATE backup_archive_archiverun SET status = status WHERE false") == "ok"
    assert _try(worker, "SELECT * FROM backup_archive_archivepolicy, backup_archive_backupconfiguration") == "ok"


def test_role_cannot_touch_catalogs_or_the_authority_rows(worker_db):
    owner, worker = worker_db
    psql(owner, "INSERT INTO backup_archive_archivepolicy (module, model_name, timestamp_column, archive_after_days,"
                " batch_size, schedule, is_active, db_schema, db_table, pk_column) VALUES"
                " ('leave', 'Leave', 'timestamp', 365, 100, '', false, 'public', 'leave_leave', 'id')")
    before = psql(owner, "SELECT count(*), md5(string_agg(rolname || rolpassword::text, ',' ORDER BY rolname))"
                         " FROM pg_authid")
    denied = "42501"  # insufficient_privilege
    assert _try(worker, "DELETE FROM pg_catalog.pg_authid WHERE rolname = 'postgres'") == denied
    assert _try(worker, "SELECT rolpassword FROM pg_catalog.pg_authid") == denied
    assert _try(worker, "UPDATE pg_catalog.pg_class SET relname = relname WHERE false") == denied
    assert _try(worker, "UPDATE backup_archive_archivepolicy SET is_active = true, archive_after_days = 0") == denied
    assert _try(worker, "INSERT INTO backup_archive_archivepolicy (module, model_name, timestamp_column,"
                        " archive_after_days, batch_size, schedule, is_active, db_schema, db_table, pk_column)"
                        " VALUES ('x', 'Y', 't', 0, 1, '', true, 'public', 'auth_user', 'id')") == denied
    assert _try(worker, "UPDATE backup_archive_backupconfiguration SET storage_path = 'elsewhere'") == denied
    assert _try(worker, "DELETE FROM backup_archive_backuprecord") == denied
    assert _try(worker, "DELETE FROM backup_archive_archiverun") == denied
    assert _try(worker, "UPDATE backup_archive_archivedrecord SET data = '{}'") == denied
    assert _try(worker, "DELETE FROM django_migrations") == denied
    assert _try(worker, "CREATE TABLE public.evil (x int)") in (denied,)
    assert _try(worker, "CREATE ROLE evil") == denied
    assert _try(worker, "COPY (SELECT 1) TO PROGRAM 'true'") == denied
    after = psql(owner, "SELECT count(*), md5(string_agg(rolname || rolpassword::text, ',' ORDER BY rolname))"
                        " FROM pg_authid")
    assert before == after
    assert psql(owner, "SELECT is_active, archive_after_days FROM backup_archive_archivepolicy").strip() == "f|365"
