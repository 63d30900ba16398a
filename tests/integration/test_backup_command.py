"""`fusion-backup backup` (issue 13): an ad-hoc backup on the worker's own path (job_backup_run), authorised by
the database. The command creates the BackupRecord itself as Fusion would, records RUNNING and SUCCESS or FAILED
on it, and the artifact is one `list` shows and `restore` brings back, through the real database."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

import flow
from conftest import APP_SQL, psql

FOLDER = "adhoc/before-migration"


@pytest.fixture
def source(fresh_db):
    psql(fresh_db, "CREATE TABLE auth_user (id serial PRIMARY KEY, username text)")  # the app's FKs need it
    psql(fresh_db, file=APP_SQL)
    psql(fresh_db, "CREATE TABLE marks (id serial PRIMARY KEY, student text, mark int);"
                   "INSERT INTO marks (student, mark) SELECT 's' || g, g % 100 FROM generate_series(1, 3000) g;"
                   "CREATE SCHEMA exams; CREATE TABLE exams.sittings (id int PRIMARY KEY, room text);"
                   "INSERT INTO exams.sittings SELECT g, 'room ' || g FROM generate_series(1, 40) g")
    return fresh_db


def add_config(db: str, name: str, tables: list, active: bool = True, modules: list | None = None) -> int:
    with psycopg2.connect(db) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO backup_archive_backupconfiguration (name, backup_type, schedule, modules, tables,"
                    " storage_path, retention_days, verify_schedule, is_active, created_at, updated_at)"
                    " VALUES (%s, 'FULL', '', %s, %s, %s, 0, '', %s, now(), now()) RETURNING id",
                    (name, json.dumps(modules or []), json.dumps(tables), FOLDER, active))
        return cur.fetchone()[0]


def records(db: str, config_id: int) -> list[dict]:
    with psycopg2.connect(db) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, job_id::text, backup_type, status, file_path, file_size, error_message, attempt,"
                    " worker, tables, started_at IS NOT NULL, completed_at IS NOT NULL, stats"
                    " FROM backup_archive_backuprecord WHERE configuration_id = %s ORDER BY id", (config_id,))
        keys = ["id", "job_id", "backup_type", "status", "file_path", "file_size", "error_message", "attempt",
                "worker", "tables", "started", "completed", "stats"]
        return [dict(zip(keys, row)) for row in cur.fetchall()]


def settings(db, storage_root, pub) -> list[str]:
    # the artifact is signed by --sign-key; readers trust the workers' key (conftest), so sign as a worker would
    return ["--pg", db, "--storage-root", str(storage_root), "--public-key", str(pub), "--sign-key",
            flow.worker_sign_key()]


def test_backup_records_itself_and_list_and_restore_see_it(bin, source, storage_root, keypair, new_db):
    pub, secret = keypair
    config_id = add_config(source, "before-migration", ["marks", ["exams", "sittings"]])
    r = bin.run("backup", "before-migration", "--json", *settings(source, storage_root, pub))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)

    [rec] = records(source, config_id)
    assert rec["status"] == "SUCCESS" and rec["error_message"] == "" and rec["started"] and rec["completed"], rec
    assert rec["job_id"] == out["job_id"] and rec["id"] == out["record_id"] and out["config_id"] == config_id
    assert rec["backup_type"] == "FULL" and rec["attempt"] == 1
    assert rec["tables"] == ["marks", ["exams", "sittings"]], "the record carries the configuration's tables"
    assert rec["worker"].startswith("fusion-backup backup@"), rec["worker"]
    assert rec["file_path"] == f"{FOLDER}/{out['job_id']}.fbak" == out["file_path"]
    artifact = storage_root / rec["file_path"]
    assert out["artifact"] == str(artifact) and artifact.stat().st_size == rec["file_size"] == out["size"]
    assert out["rows"] == 3040 and out["tables"] == 2 and out["duration_ms"] >= 0
    assert rec["stats"]["rows"] == 3040

    # list --pg finds it in the configuration's folder, restorable, with the record's state.
    lst = bin.run("list", "--storage-root", str(storage_root), "--public-key", str(pub), "--pg", source, "--json")
    assert lst.returncode == 0, lst.stderr
    [row] = [x for x in json.loads(lst.stdout) if x["job_id"] == out["job_id"]]
    assert row["restorable"] and row["record_status"] == "SUCCESS" and row["folder"] == FOLDER, row

    # restore brings both tables back, row for row.
    target = new_db()
    res = bin.run("restore", str(artifact), "--secret-key", str(secret), "--pg", target, "--create")
    assert res.returncode == 0, res.stderr
    for t in ("marks", "exams.sittings"):
        q = f"SELECT count(*) || ':' || md5(string_agg(x::text, ',' ORDER BY x::text)) FROM {t} x"
        assert psql(target, q) == psql(source, q), t

    # Without --json: what an operator reads.
    r = bin.run("backup", str(config_id), *settings(source, storage_root, pub))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('SUCCESS FULL backup of "before-migration"') and "artifact " in r.stdout, r.stdout
    assert len(records(source, config_id)) == 2


def test_type_and_tables_of_the_command_go_into_the_record(bin, source, storage_root, keypair):
    pub, _ = keypair
    config_id = add_config(source, "nightly", [])
    r = bin.run("backup", "--configuration", str(config_id), "--type", "INCREMENTAL", "--table", "marks", "--json",
                *settings(source, storage_root, pub))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    [rec] = records(source, config_id)
    # Created as an INCREMENTAL; it had no base and ran as a FULL, so the record says FULL once it succeeded (the
    # recorder never lets a record claim a type its artifact is not; the stats say why).
    assert rec["backup_type"] == "FULL" and rec["stats"]["ran_as_full"] == 1, rec
    assert rec["tables"] == ["marks"] and rec["status"] == "SUCCESS", rec
    assert out["type"] == "INCREMENTAL" and out["ran_as_full"] is True and out["tables"] == 1, out
    r = bin.run("backup", "--configuration", str(config_id), "--type", "INCREMENTAL", "--table", "exams.sittings",
                "--json", *settings(source, storage_root, pub))
    assert r.returncode == 0, r.stderr
    assert records(source, config_id)[1]["tables"] == [["exams", "sittings"]]


def test_unknown_inactive_and_module_configurations_are_refused_before_anything_is_created(bin, source, storage_root,
                                                                                           keypair):
    pub, _ = keypair
    s = settings(source, storage_root, pub)
    r = bin.run("backup", "no-such-config", *s)
    assert r.returncode == 9 and 'no backup configuration is named or numbered "no-such-config"' in r.stderr, r.stderr

    off = add_config(source, "retired", ["marks"], active=False)
    r = bin.run("backup", "retired", *s)
    assert r.returncode == 15 and "is not active" in r.stderr and "nothing was created" in r.stderr, r.stderr
    assert records(source, off) == []

    mods = add_config(source, "by-module", [], modules=["leave"])
    r = bin.run("backup", "by-module", *s)
    assert r.returncode == 2 and "--table" in r.stderr and "backup_request" in r.stderr, r.stderr
    assert records(source, mods) == []

    r = bin.run("backup", "by-module", "--type", "WEEKLY", *s)
    assert r.returncode == 2 and "--type must be FULL, INCREMENTAL or DIFFERENTIAL" in r.stderr
    assert not list(storage_root.rglob("*.fbak")), "a refused backup wrote something"


def test_a_failed_backup_is_recorded_failed_with_the_reason(bin, source, storage_root, keypair):
    pub, _ = keypair
    config_id = add_config(source, "typo", ["marks"])
    r = bin.run("backup", "typo", "--table", "no_such_table", *settings(source, storage_root, pub))
    assert r.returncode != 0 and "no_such_table" in r.stderr and "is FAILED" in r.stderr, r.stderr
    [rec] = records(source, config_id)
    assert rec["status"] == "FAILED" and "no_such_table" in rec["error_message"] and rec["completed"], rec
    assert not list(storage_root.rglob("*.fbak"))
    # The record is FAILED the same way a worker's is: `replay` would take it (attempt + 1).
    assert flow.record(source, rec["id"])["attempt"] == 1


def test_backup_into_a_bucket_restores_from_it(bin, source, keypair, new_db):
    """The storage root may be s3://BUCKET/PREFIX (the local S3 server; its settings as deploy/local/s3.sh gives
    them): the artifact goes there and restores from the printed location."""
    pub, secret = keypair
    sh = Path(__file__).resolve().parents[2] / "deploy/local/s3.sh"
    env_lines = subprocess.run([str(sh), "env"], capture_output=True, text=True, check=True).stdout.splitlines()
    s3 = dict(ln.removeprefix("export ").split("=", 1) for ln in env_lines if "=" in ln)
    s3 = {k: v.strip("'") for k, v in s3.items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({k: s3[k] for k in ("FB_S3_ENDPOINT", "FB_S3_REGION", "FB_S3_CREDENTIALS_FILE")})
    root = f"s3://{s3['FB_S3_BUCKET']}/t-{uuid.uuid4().hex[:10]}"
    config_id = add_config(source, "to-bucket", ["marks"])
    r = subprocess.run([bin.cli, "backup", "to-bucket", "--json", "--pg", source, "--storage-root", root,
                        "--public-key", str(pub), "--sign-key", flow.worker_sign_key()], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["artifact"] == f"{root}/{FOLDER}/{out['job_id']}.fbak", out
    [rec] = records(source, config_id)
    assert rec["status"] == "SUCCESS" and rec["file_path"] == out["file_path"], rec
    target = new_db()
    res = subprocess.run([bin.cli, "restore", out["artifact"], "--secret-key", str(secret), "--pg", target, "--create"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert psql(target, "SELECT count(*) FROM marks").strip() == "3000"


def test_ctrl_c_stops_the_backup_and_records_it_failed(bin, source, storage_root, keypair):
    pub, _ = keypair
    psql(source, "CREATE TABLE big (id int PRIMARY KEY, note text); INSERT INTO big SELECT g, md5(g::text) || "
                 "md5((g * 3)::text) FROM generate_series(1, 1500000) g")
    config_id = add_config(source, "big", ["big"])
    p = subprocess.Popen([bin.cli, "backup", "big", *settings(source, storage_root, pub)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(r["status"] == "RUNNING" for r in records(source, config_id)):
        time.sleep(0.05)
    time.sleep(0.3)  # inside the COPY
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 12, err  # FB_ERR_ABORTED
    [rec] = records(source, config_id)
    assert rec["status"] == "FAILED" and "aborted" in rec["error_message"] and rec["completed"], rec
    assert not [f for f in storage_root.rglob("*") if f.is_file()], "an interrupted backup left a file"


def test_a_killed_backup_is_marked_failed_by_the_next_one(bin, source, storage_root, keypair):
    """kill -9 leaves no chance to write FAILED and no broker redelivers the job: the next `backup` finds the
    RUNNING record whose process is gone (its advisory lock died with its connection) and marks it FAILED, saying
    so; a backup that is still running is left alone."""
    pub, _ = keypair
    psql(source, "CREATE TABLE big (id int PRIMARY KEY, note text); INSERT INTO big SELECT g, md5(g::text) || "
                 "md5((g * 3)::text) FROM generate_series(1, 1500000) g")
    big = add_config(source, "big", ["big"])
    small = add_config(source, "small", ["marks"])

    def start_big():
        p = subprocess.Popen([bin.cli, "backup", "big", *settings(source, storage_root, pub)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(r["status"] == "RUNNING" for r in records(source, big)):
            time.sleep(0.05)
        return p

    p = start_big()
    time.sleep(0.3)
    p.kill()
    p.communicate(timeout=30)
    [dead] = records(source, big)
    assert dead["status"] == "RUNNING", "precondition: the killed process left its record RUNNING"

    r = bin.run("backup", "small", *settings(source, storage_root, pub))
    assert r.returncode == 0, r.stderr
    assert f"record {dead['id']} (job {dead['job_id']}) was left RUNNING" in r.stderr, r.stderr
    [swept] = records(source, big)
    assert swept["status"] == "FAILED" and swept["completed"], swept
    assert "ended without recording an outcome" in swept["error_message"], swept

    # A big backup that is alive while the next command sweeps is left alone.
    alive = start_big()
    r = bin.run("backup", "small", *settings(source, storage_root, pub))
    assert r.returncode == 0 and "was left RUNNING" not in r.stderr, r.stderr
    [running] = [x for x in records(source, big) if x["id"] != dead["id"]]
    assert running["status"] == "RUNNING", "a live backup was marked FAILED"
    _, err = alive.communicate(timeout=300)
    assert alive.returncode == 0, err
    assert {x["id"]: x["status"] for x in records(source, big)}[running["id"]] == "SUCCESS"
    assert [x["status"] for x in records(source, small)] == ["SUCCESS", "SUCCESS"]
