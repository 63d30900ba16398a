"""A DBA's commands (issue 13): `list` (what can be restored, from the chain indexes: no secret key, no broker),
`--version` and `help COMMAND`. Backups are made by the worker's own job code (`event run --no-publish`) for
requests the database authorises (a configuration and a QUEUED record each)."""
from __future__ import annotations

import json
import re
import subprocess
import time
import uuid

import psycopg2
import pytest

import flow
from conftest import APP_SQL, psql
from fusion_events import encode

STORAGE_PATH = "dba/nightly"


@pytest.fixture
def source(fresh_db):
    psql(fresh_db, "CREATE TABLE auth_user (id serial PRIMARY KEY, username text)")  # the app's FKs need it
    psql(fresh_db, file=APP_SQL)
    psql(fresh_db, "CREATE TABLE marks (id serial PRIMARY KEY, student text, mark int);"
                   "INSERT INTO marks (student, mark) SELECT 's' || g, g % 100 FROM generate_series(1, 2000) g")
    with psycopg2.connect(fresh_db) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO backup_archive_backupconfiguration (name, backup_type, schedule, modules, tables,"
                    " storage_path, retention_days, verify_schedule, is_active, created_at, updated_at)"
                    " VALUES ('dba', 'INCREMENTAL', '', '[]', '[]', %s, 0, '', true, now(), now()) RETURNING id",
                    (STORAGE_PATH,))
        config_id = cur.fetchone()[0]
    return fresh_db, config_id


def backup(bin, db: str, config_id: int, backup_type: str, settings: list, tmp) -> dict:
    job_id = str(uuid.uuid4())
    with psycopg2.connect(db) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO backup_archive_backuprecord (configuration_id, job_id, backup_type, status,"
                    " requested_at, file_path, error_message, attempt, worker, verify_status, verify_message, tables)"
                    " VALUES (%s, %s, %s, 'QUEUED', now(), '', '', 1, '', '', '', '[]') RETURNING id",
                    (config_id, job_id, backup_type))
        record_id = cur.fetchone()[0]
    ev = encode({"v": 1, "type": "backup.requested", "job_id": job_id, "ts": int(time.time() * 1000),
                 "requested_by": None, "attempt": 1, "record_id": record_id, "config_id": config_id,
                 "config_name": "dba", "backup_type": backup_type, "tables": [], "modules": [],
                 "storage_path": STORAGE_PATH, "retention_days": 0})
    r, out = flow.run_event(bin, ev, tmp, "--pg", db, *settings)
    assert out is not None and out["status"] == "SUCCESS", (r.stderr, out)
    return {"job_id": job_id, **out}


def test_list_shows_chain_and_what_is_restorable_without_secret_key_or_broker(bin, source, storage_root, keypair,
                                                                             tmp_path):
    db, config_id = source
    pub, _secret = keypair
    settings = ["--storage-root", str(storage_root), "--public-key", str(pub)]
    full = backup(bin, db, config_id, "FULL", settings, tmp_path)
    psql(db, "UPDATE marks SET mark = mark + 1 WHERE id % 10 = 0")
    incr = backup(bin, db, config_id, "INCREMENTAL", settings, tmp_path)

    # No --secret-key, and a broker address where nothing listens: list must not need either.
    no_broker = ["--brokers", "127.0.0.1:9"]
    r = bin.run("list", *settings, *no_broker, "--storage-path", STORAGE_PATH, "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    by_job = {x["job_id"]: x for x in rows}
    assert set(by_job) == {full["job_id"], incr["job_id"]}
    assert by_job[full["job_id"]]["type"] == "FULL" and by_job[full["job_id"]]["base_job"] is None
    assert by_job[incr["job_id"]]["type"] == "INCREMENTAL"
    assert by_job[incr["job_id"]]["base_job"] == full["job_id"]
    assert all(x["restorable"] and x["problem"] is None for x in rows), rows
    assert all(x["config_id"] == config_id for x in rows)
    assert by_job[full["job_id"]]["size"] == (storage_root / full["file_path"]).stat().st_size
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", by_job[full["job_id"]]["snapshot"])

    # --pg: the folders come from the configurations, and the records' state is shown.
    r = bin.run("list", *settings, *no_broker, "--pg", db, "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert {x["job_id"] for x in rows} == {full["job_id"], incr["job_id"]}
    assert all(x["folder"] == STORAGE_PATH and x["record_status"] == "QUEUED" for x in rows), rows

    # The base goes missing: the incremental is no longer restorable, and the line says why.
    (storage_root / full["file_path"]).unlink()
    r = bin.run("list", *settings, "--storage-path", STORAGE_PATH)
    assert r.returncode == 0, r.stderr
    assert "NOT RESTORABLE" in r.stdout and f"needs backup {full['job_id']}" in r.stdout, r.stdout
    rows = json.loads(bin.run("list", *settings, "--storage-path", STORAGE_PATH, "--json").stdout)
    assert len(rows) == 1 and rows[0]["restorable"] is False and full["job_id"] in rows[0]["problem"]


def test_list_refuses_without_a_location_or_key(bin, storage_root):
    r = bin.run("list", "--storage-root", str(storage_root))
    assert r.returncode == 2 and "--storage-path" in r.stderr
    r = bin.run("list", "--storage-root", str(storage_root), "--storage-path", "x")
    assert r.returncode == 2 and "--index-key" in r.stderr


def test_version_and_help_command(bin):
    r = bin.run("--version")
    assert r.returncode == 0 and re.match(r"fusion-backup \d+\.\d+\.\d+ \(librdkafka ", r.stdout), r.stdout
    w = subprocess.run([bin.worker, "--version"], capture_output=True, text=True, timeout=30)
    assert w.returncode == 0 and w.stdout.split()[:2] == ["fusion-backup-worker", r.stdout.split()[1]], w.stdout
    r = bin.run("help", "restore")
    assert r.returncode == 0 and r.stdout.startswith("usage: fusion-backup restore"), r.stdout
    r = bin.run("help", "no-such-command")
    assert r.returncode == 2 and "unknown command" in r.stderr


def test_check_says_which_signing_keys_load_and_whom_they_sign_for(bin, signing_keys, tmp_path):
    """The signing check: the environment's trust (tests' conftest: ops signs, workers are trusted signers) is ok;
    a worker's key is named a trusted signer; a public key given as --sign-key, a key file readable by others and
    a missing trusted key each fail with what to do, and the other checks still run."""
    r = bin.run("check", "--no-broker", "--json")
    checks = {c["check"]: c for c in json.loads(r.stdout)}
    assert r.returncode == 0 and checks["signing"]["ok"], checks["signing"]
    assert "a trusted requester here" in checks["signing"]["detail"]
    worker_pub, worker_key = signing_keys["worker"]
    r = bin.run("check", "--no-broker", "--json", "--sign-key", str(worker_key))
    signing = {c["check"]: c for c in json.loads(r.stdout)}["signing"]
    assert r.returncode == 0 and "a trusted signer here" in signing["detail"], signing

    loose = tmp_path / "loose.key"
    loose.write_bytes(worker_key.read_bytes())
    loose.chmod(0o644)
    for args, expect in ((["--sign-key", str(worker_pub)], "give the .key file"),
                         (["--sign-key", str(loose)], "chmod 600"),
                         (["--trusted-signer", str(tmp_path / "gone.pub")], "gone.pub")):
        r = bin.run("check", "--no-broker", "--json", *args)
        checks = {c["check"]: c for c in json.loads(r.stdout)}
        assert r.returncode != 0, (args, r.stdout)
        assert not checks["signing"]["ok"] and expect in checks["signing"]["detail"], (args, checks["signing"])
        assert checks["storage"]["ok"] and checks["keys"]["ok"], "one failing check hid the others"


def test_check_says_ok_or_what_to_fix(bin, brokers, topic_prefix, source, storage_root, keypair, tmp_path):
    db, _ = source
    pub, secret = keypair
    base = ["--pg", db, "--brokers", brokers, "--topic-prefix", topic_prefix, "--storage-root", str(storage_root),
            "--public-key", str(pub), "--secret-key", str(secret), "--json"]
    r = bin.run("check", *base)
    checks = {c["check"]: c for c in json.loads(r.stdout)}
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert set(checks) == {"settings", "database", "broker", "storage", "keys", "signing"}
    assert all(c["ok"] for c in checks.values()), checks
    assert "jobs.dlq ok" in checks["broker"]["detail"] and "matches" in checks["keys"]["detail"]

    # Each thing broken in its own way: every check still runs and says what to fix.
    other = tmp_path / "other"
    other.mkdir()
    bin.run("keygen", "--out", str(other / "k"), check=True)
    r = bin.run("check", "--pg", db, "--brokers", brokers, "--topic-prefix", "nosuchprefix.",
                "--storage-root", str(tmp_path / "missing"), "--public-key", str(pub),
                "--secret-key", str(other / "k.key"), "--json")
    assert r.returncode != 0
    checks = {c["check"]: c for c in json.loads(r.stdout)}
    assert checks["database"]["ok"]
    assert not checks["broker"]["ok"] and "MISSING" in checks["broker"]["detail"]
    assert "topics create" in checks["broker"]["detail"]
    assert not checks["storage"]["ok"] and "not a folder" in checks["storage"]["detail"]
    assert not checks["keys"]["ok"] and "does not belong to public key" in checks["keys"]["detail"]

    # A database whose app is not migrated.
    psql(db, "ALTER TABLE backup_archive_backuprecord DROP COLUMN verify_job_id")
    r = bin.run("check", "--pg", db, "--no-broker")
    assert r.returncode != 0 and "FAIL database" in r.stdout and "migrate backup_archive" in r.stdout, r.stdout


def test_verify_restore_and_prune_answer_in_json(bin, source, storage_root, keypair, new_db, tmp_path):
    """--json on the commands a DBA scripts after `list`: one JSON document on stdout whether the command
    succeeds or fails, with the same facts as the readable line."""
    db, config_id = source
    pub, secret = keypair
    settings = ["--storage-root", str(storage_root), "--public-key", str(pub)]
    full = backup(bin, db, config_id, "FULL", settings, tmp_path)
    artifact = str(storage_root / full["file_path"])

    r = bin.run("verify", artifact, "--secret-key", str(secret), "--json")
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    assert v["ok"] is True and v["artifact"] == artifact and v["restored_and_compared"] is False
    assert v["rows"] >= 2000 and v["tables"] >= 1 and v["seconds"] >= 0, v

    target = new_db()
    r = bin.run("restore", artifact, "--pg", target, "--secret-key", str(secret), "--table", "marks", "--create",
                "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] is True and out["tables"] == 1 and out["rows"] == 2000 and out["raw_bytes"] > 0, out
    assert out["database"] == psycopg2.connect(target).info.dbname

    # a failure is one JSON document too, with the code the exit status carries
    r = bin.run("restore", artifact, "--pg", target, "--secret-key", str(secret), "--table", "marks", "--create",
                "--json")
    assert r.returncode != 0
    bad = json.loads(r.stdout)
    assert bad["ok"] is False and bad["code"] == r.returncode and "marks" in bad["error"], bad

    # three days on, the FULL is past a 1-day retention but the last restorable one: kept, and said why
    later = str(int(time.time() * 1000) + 3 * 86400 * 1000)
    r = bin.run("prune", *settings, "--storage-path", STORAGE_PATH, "--retention-days", "1", "--dry-run",
                "--now-ms", later, "--json")
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert p["ok"] is True and p["dry_run"] is True and p["removed"] == 0, p
    [d] = p["decisions"]
    assert d["job_id"] == full["job_id"] and d["decision"] == "keep" and d["reason"], d


def test_keygen_and_rekey_answer_in_json(bin, source, storage_root, keypair, tmp_path):
    db, config_id = source
    pub, secret = keypair
    r = bin.run("keygen", "--json", "--out", str(tmp_path / "new"))
    assert r.returncode == 0, r.stderr
    k = json.loads(r.stdout)
    assert k == {"ok": True, "kind": "x25519-backup", "public": str(tmp_path / "new.pub"),
                 "secret": str(tmp_path / "new.key")}, k
    s = json.loads(bin.run("keygen", "--sign", "--json", "--out", str(tmp_path / "signer")).stdout)
    assert s["kind"] == "ed25519-signing" and re.fullmatch(r"[0-9a-f]{16}", s["key_id"]), s
    again = bin.run("keygen", "--json", "--out", str(tmp_path / "new"))
    assert again.returncode != 0 and json.loads(again.stdout)["code_name"] == "conflict", again.stdout

    settings = ["--storage-root", str(storage_root), "--public-key", str(pub)]
    full = backup(bin, db, config_id, "FULL", settings, tmp_path)
    artifact = str(storage_root / full["file_path"])
    r = bin.run("rekey", artifact, "--secret-key", str(secret), "--new-public-key", str(tmp_path / "new.pub"),
                "--sign-key", flow.worker_sign_key(), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"rekeyed": [artifact], "of": 1, "ok": True}, r.stdout
    r = bin.run("rekey", artifact, "--secret-key", str(secret), "--new-public-key", str(tmp_path / "new.pub"),
                "--sign-key", flow.worker_sign_key(), "--json")
    bad = json.loads(r.stdout)
    assert r.returncode != 0 and bad["ok"] is False and bad["rekeyed"] == [] and bad["error"], bad
