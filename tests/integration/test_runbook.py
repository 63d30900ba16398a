"""README.md's disaster-recovery runbook ("From an empty machine") is run as written: the test takes the block out
of the README, puts its own paths into the five assignment lines at its top, and runs the rest unchanged with bash
against backups made by `fusion-backup backup` (a FULL, then an INCREMENTAL after a change). Every table of the
database it recreates must equal the source's. If the README or the CLI drift apart, this fails."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg2
import pytest

import flow
from conftest import APP_SQL, PG_BIN, _admin, psql

README = Path(__file__).resolve().parents[2] / "README.md"
SETTINGS = ("KEYS", "ROOT", "FOLDER", "SERVER", "DB")
FOLDER = "fusion/nightly"


def runbook() -> str:
    text = README.read_text()
    at = text.find("### From an empty machine")
    assert at >= 0, "README.md has no '### From an empty machine' section"
    m = re.compile(r"```sh\n(.*?)```", re.S).search(text, at)
    assert m, "the runbook section has no ```sh block"
    return m.group(1)


def with_paths(block: str, values: dict[str, str]) -> str:
    for name in SETTINGS:
        pattern = re.compile(rf"^{name}=.*$", re.M)
        assert len(pattern.findall(block)) == 1, f"the runbook sets {name} once at its top"
        block = pattern.sub(lambda _: f"{name}={shlex.quote(values[name])}", block)
    return block


def test_the_runbook_block_names_the_recovery_steps():
    block = runbook()
    commands = [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    joined = "\n".join(commands)
    for step in ("fusion-backup list", "fusion-backup restore", "--create", "fusion-backup verify", "--secret-key"):
        assert step in joined, f"the runbook no longer runs {step!r}"
    assert joined.index("fusion-backup list") < joined.index("fusion-backup restore")


@pytest.fixture
def source(fresh_db):
    psql(fresh_db, "CREATE TABLE auth_user (id serial PRIMARY KEY, username text)")  # the app's FKs need it
    psql(fresh_db, file=APP_SQL)
    psql(fresh_db, """
        CREATE SCHEMA exams;
        CREATE TABLE students (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
        CREATE TABLE exams.marks (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                  student_id int NOT NULL REFERENCES students (id), mark int CHECK (mark >= 0));
        CREATE INDEX marks_by_student ON exams.marks (student_id);
        CREATE VIEW exams.passed AS SELECT student_id FROM exams.marks WHERE mark >= 40;
        INSERT INTO students (name) SELECT 'student ' || g FROM generate_series(1, 500) g;
        INSERT INTO exams.marks (student_id, mark) SELECT 1 + g % 500, g % 100 FROM generate_series(1, 5000) g;
    """)
    with psycopg2.connect(fresh_db) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO backup_archive_backupconfiguration (name, backup_type, schedule, modules, tables,"
                    " storage_path, retention_days, verify_schedule, is_active, created_at, updated_at)"
                    " VALUES ('nightly', 'INCREMENTAL', '', '[]', '[]', %s, 0, '', true, now(), now())", (FOLDER,))
    return fresh_db


def test_from_an_empty_machine_as_the_readme_says(bin, pg, source, storage_root, keypair, tmp_path):
    pub, secret = keypair
    made = []
    for backup_type in ("FULL", "INCREMENTAL"):
        r = bin.run("backup", "nightly", "--type", backup_type, "--json", "--pg", source,
                    "--storage-root", str(storage_root), "--public-key", str(pub))
        assert r.returncode == 0, r.stderr
        made.append(json.loads(r.stdout))
        if backup_type == "FULL":  # the newest backup, which the runbook must pick, has this change
            psql(source, "UPDATE exams.marks SET mark = mark + 1 WHERE id % 7 = 0; INSERT INTO students (name) VALUES ('late')")
    want = {t: d for t, d in flow.table_digests(source).items() if t != "public.backup_archive_backuprecord"}

    keys = tmp_path / "offline-keys"
    keys.mkdir()
    shutil.copy(secret, keys / "backup.key")
    shutil.copy(pub, keys / "backup.pub")
    os.chmod(keys / "backup.key", 0o644)  # step 1 of the runbook tightens it
    db = f"rb_{uuid.uuid4().hex[:10]}"
    block = with_paths(runbook(), {"KEYS": str(keys), "ROOT": str(storage_root), "FOLDER": FOLDER, "SERVER": pg,
                                   "DB": db})
    env = {**os.environ, "PATH": f"{bin.dir}{os.pathsep}{PG_BIN}{os.pathsep}{os.environ['PATH']}"}
    try:
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, f"the runbook failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        assert (keys / "backup.key").stat().st_mode & 0o777 == 0o600
        newest = made[-1]["job_id"]
        assert f"OK {storage_root}/{FOLDER}/{newest}.fbak" in r.stdout, r.stdout
        assert "restored and compared, then rolled back" in r.stdout, r.stdout
        got = {t: d for t, d in flow.table_digests(f"{pg} dbname={db}").items()
               if t != "public.backup_archive_backuprecord"}
        assert got == want, "the recreated database differs from the source"
        assert psql(f"{pg} dbname={db}", "SELECT count(*) FROM exams.passed").strip() == \
            psql(source, "SELECT count(*) FROM exams.passed").strip()
    finally:
        conn = _admin(pg)
        try:
            for name in (db, f"{db}_check"):
                conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()
