"""Backups in S3-compatible object storage (issue 15), against a real server: the local SeaweedFS that
deploy/local/s3.sh runs (built once by install-seaweedfs.sh).

Covered: backup to a bucket and restore from it table for table; an incremental whose base is in the bucket; the
verify job, inspect, list, check and rekey on s3://; retention (and the sweep of old unfinished uploads); a checked
--copy-to s3:// from a folder root; the worker daemon with a bucket root; the server killed mid-upload (FAILED,
no object, the leftover upload aborted by the rerun); the server frozen mid-upload (retried, completed); TLS with
and without --s3-ca-file; wrong credentials, a missing bucket and an unreachable endpoint.

Jobs run in-process (`fusion-backup event run --no-publish`); restore, inspect, list and prune read s3:// directly.
The test's own view of the bucket (objects, unfinished multipart uploads) comes from signed requests made with the
curl program, credentials on stdin, so the assertions do not trust the driver under test.

Every backup first needs the database's consent (the authority check of SECURITY.md): a matching active
BackupConfiguration and a QUEUED BackupRecord of the same job, type, tables, storage_path and retention_days; the
tests insert those rows into the source database and leave the app tables out of the digests they compare.
"""
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
from fusion_events import encode

REPO = Path(__file__).resolve().parents[2]
S3_SH = REPO / "deploy/local/s3.sh"
APP_SQL = REPO / "schemas/sql/backup_archive.sql"


# --- the server -----------------------------------------------------------------------------------------------------

def s3_env() -> dict:
    r = subprocess.run([str(S3_SH), "env"], capture_output=True, text=True, check=True)
    env = {}
    for line in r.stdout.splitlines():
        k, _, v = line.removeprefix("export ").partition("=")
        env[k] = v.strip("'")
    return env


@pytest.fixture(scope="module")
def s3():
    r = subprocess.run([str(S3_SH), "start"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"deploy/local/s3.sh start failed (build SeaweedFS with deploy/local/install-seaweedfs.sh): "
                    f"{r.stderr}")
    return s3_env()


@pytest.fixture(autouse=True)
def s3_settings(s3, monkeypatch):
    """The worker and CLI find the server through the environment, as an operator's env.sh sets it."""
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("FB_S3_ENDPOINT", s3["FB_S3_ENDPOINT"])
    monkeypatch.setenv("FB_S3_REGION", s3["FB_S3_REGION"])
    monkeypatch.setenv("FB_S3_CREDENTIALS_FILE", s3["FB_S3_CREDENTIALS_FILE"])
    monkeypatch.setenv("FB_S3_PART_MIB", "5")  # the smallest S3 allows: several parts even for test-sized data
    return s3


def creds(s3) -> tuple[str, str]:
    text = Path(s3["FB_S3_CREDENTIALS_FILE"]).read_text()
    kv = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    kv = {k.strip(): v.strip() for k, v in kv.items()}
    return kv["aws_access_key_id"], kv["aws_secret_access_key"]


def s3_request(s3, method: str, path: str, query: str = "", timeout: float = 10) -> tuple[int, str]:
    """A signed request by the curl program (query already canonical: sorted k=v). Returns (status, body)."""
    key, secret = creds(s3)
    url = f"{s3['FB_S3_ENDPOINT']}{path}" + (f"?{query}" if query else "")
    r = subprocess.run(["curl", "-s", "-K", "-", "--max-time", str(timeout), "--aws-sigv4",
                        f"aws:amz:{s3['FB_S3_REGION']}:s3", "-X", method, "-w", "\n%{http_code}", url],
                       input=f'user = "{key}:{secret}"\n', capture_output=True, text=True)
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


def esc(s: str) -> str:
    from urllib.parse import quote
    return quote(s, safe="")


def objects(s3, prefix: str) -> dict[str, int]:
    """Every object under prefix (no delimiter): key -> size."""
    import re
    code, body = s3_request(s3, "GET", f"/{s3['FB_S3_BUCKET']}", f"list-type=2&max-keys=1000&prefix={esc(prefix)}")
    assert code == 200, body
    return {k: int(n) for k, n in re.findall(r"<Key>([^<]*)</Key>.*?<Size>(\d+)</Size>", body, re.S)}


def artifacts(s3, prefix: str) -> dict[str, int]:
    """The objects under prefix but the job ledger's (.ledger/JOB.success, written after each success)."""
    return {k: n for k, n in objects(s3, prefix).items() if "/.ledger/" not in k}


def unfinished_uploads(s3, prefix: str) -> list[str]:
    import re
    code, body = s3_request(s3, "GET", f"/{s3['FB_S3_BUCKET']}", f"prefix={esc(prefix)}&uploads=")
    assert code == 200, body
    return re.findall(r"<Upload>.*?<Key>([^<]*)</Key>", body, re.S)


def get_object(s3, key: str) -> bytes:
    k, secret = creds(s3)
    r = subprocess.run(["curl", "-sf", "-K", "-", "--aws-sigv4", f"aws:amz:{s3['FB_S3_REGION']}:s3",
                        f"{s3['FB_S3_ENDPOINT']}/{s3['FB_S3_BUCKET']}/{key}"],
                       input=f'user = "{k}:{secret}"\n'.encode(), capture_output=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


# --- the database's consent and the source data -----------------------------------------------------------------------

def sql(conninfo: str, text: str, args=None):
    conn = psycopg2.connect(conninfo)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(text, args)
    v = cur.fetchall() if cur.description else None
    conn.close()
    return v


SCHEMA = """
CREATE TABLE "Student Marks" (id serial PRIMARY KEY, student text NOT NULL, mark int, note text);
CREATE TABLE courses (code varchar(12) PRIMARY KEY, title text);
CREATE TABLE untouched (k int PRIMARY KEY, v text);
INSERT INTO "Student Marks" (student, mark, note) SELECT 's' || g, g % 100, repeat('x', g % 7) FROM generate_series(1, 3000) g;
INSERT INTO courses SELECT 'C' || g, 'Course ' || g FROM generate_series(1, 50) g;
INSERT INTO untouched SELECT g, md5(g::text) FROM generate_series(1, 5000) g;
"""


def prepare_source(db: str, schema: str = SCHEMA) -> None:
    # The app tables (where the authority check looks), with the one table of Django's they reference.
    sql(db, "CREATE TABLE auth_user (id integer PRIMARY KEY)")
    sql(db, APP_SQL.read_text())
    sql(db, schema)


def digests(db: str) -> dict:
    """The user data only: the app tables change as jobs are recorded."""
    return {k: v for k, v in flow.table_digests(db).items()
            if not k.startswith("public.backup_archive_") and k != "public.auth_user"}


class Source:
    """One configuration of the source database and the events of its jobs, each with its QUEUED record."""

    def __init__(self, db: str, storage_path: str, retention_days: int = 0, name: str | None = None):
        self.db, self.storage_path, self.retention_days = db, storage_path, retention_days
        self.name = name or f"s3-{uuid.uuid4().hex[:8]}"
        self.config_id = sql(db, "INSERT INTO backup_archive_backupconfiguration (name, backup_type, schedule, modules,"
                                 " tables, storage_path, retention_days, verify_schedule, is_active, created_at,"
                                 " updated_at) VALUES (%s, 'FULL', '0 2 * * *', '[]', '[]', %s, %s, '', true, now(),"
                                 " now()) RETURNING id", (self.name, storage_path, retention_days))[0][0]

    def event(self, backup_type: str = "FULL", job_id: str | None = None) -> tuple[str, bytes]:
        job_id = job_id or str(uuid.uuid4())
        record_id = sql(self.db, "INSERT INTO backup_archive_backuprecord (configuration_id, job_id, backup_type,"
                                 " status, requested_at, file_path, error_message, attempt, worker, verify_status,"
                                 " verify_message, tables) VALUES (%s, %s, %s, 'QUEUED', now(), '', '', 1, '', '', '',"
                                 " '[]') RETURNING id", (self.config_id, job_id, backup_type))[0][0]
        return job_id, encode({
            "v": 1, "type": "backup.requested", "job_id": job_id, "ts": flow.now_ms(), "requested_by": None,
            "attempt": 1, "record_id": record_id, "config_id": self.config_id, "config_name": self.name,
            "backup_type": backup_type, "tables": [], "modules": [], "storage_path": self.storage_path,
            "retention_days": self.retention_days})


def run_event(bin, event: bytes, tmp: Path, *settings: str) -> dict:
    r, out = flow.run_event(bin, event, tmp, *settings)
    assert out is not None, f"no outcome printed (exit {r.returncode}): {r.stderr}"
    out["_stderr"] = r.stderr
    return out


@pytest.fixture
def prefix(s3):
    """A fresh prefix of the bucket per test: s3://BUCKET/t-XXXX."""
    p = f"t-{uuid.uuid4().hex[:10]}"
    yield p


def root_url(s3, prefix: str) -> str:
    return f"s3://{s3['FB_S3_BUCKET']}/{prefix}"


def restore(bin, source: str, key: Path, target: str, *extra: str):
    return bin.run("restore", source, "--pg", target, "--secret-key", str(key), "--create", *extra)


# --- tests ----------------------------------------------------------------------------------------------------------

def test_backup_to_s3_restores_table_for_table_and_incremental_base_in_s3(bin, pg, fresh_db, new_db, keypair, s3,
                                                                          prefix, tmp_path):
    pub, key = keypair
    prepare_source(fresh_db)
    src = Source(fresh_db, "cfg/daily")
    root = root_url(s3, prefix)
    settings = ("--pg", fresh_db, "--storage-root", root, "--public-key", str(pub))

    _, full_ev = src.event("FULL")
    full = run_event(bin, full_ev, tmp_path, *settings)
    assert full["status"] == "SUCCESS", (full.get("error"), full["_stderr"][-2000:])
    state_full = digests(fresh_db)
    listed = artifacts(s3, f"{prefix}/")
    assert listed == {f"{prefix}/{full['file_path']}": full["file_size"]}, listed
    assert unfinished_uploads(s3, f"{prefix}/") == []

    sql(fresh_db, "UPDATE courses SET title = 'Renamed' WHERE code = 'C7'; DELETE FROM \"Student Marks\" WHERE id < 50")
    _, ev = src.event("INCREMENTAL")
    inc = run_event(bin, ev, tmp_path, *settings)
    assert inc["status"] == "SUCCESS", inc
    # its base was found in the bucket: only the changed tables are stored, the rest referenced
    assert inc["stats"]["ran_as_full"] == 0, inc["stats"]
    assert inc["stats"]["tables_referenced"] >= 1 and inc["stats"]["tables_stored"] >= 2, inc["stats"]
    state_inc = digests(fresh_db)
    assert state_inc != state_full

    # restore straight from s3:// (ranged reads), the incremental with its chain resolved in the bucket
    for out, state in ((full, state_full), (inc, state_inc)):
        target = new_db()
        r = restore(bin, f"{root}/{out['file_path']}", key, target)
        assert r.returncode == 0, r.stderr
        assert digests(target) == state, f"restore of {out['file_path']} from S3 differs from the source"

    # the verify job on the bucket (restore mode: the incremental with its base, into a scratch database)
    verify_id = str(uuid.uuid4())
    # What the recorder and Django would have written (event run --no-publish records nothing): the record is a
    # SUCCESS with its file, and this verification is the one it asked for.
    record_id = sql(fresh_db, "UPDATE backup_archive_backuprecord SET verify_job_id = %s, status = 'SUCCESS',"
                              " file_path = %s WHERE job_id = %s RETURNING id",
                    (verify_id, inc["file_path"], inc["job_id"]))[0][0]
    vev = encode({"v": 1, "type": "backup.verify", "job_id": verify_id, "ts": flow.now_ms(), "requested_by": None,
                  "attempt": 1, "config_id": src.config_id, "record_id": record_id, "mode": "restore",
                  "file_path": inc["file_path"]})
    out = run_event(bin, vev, tmp_path, *settings, "--secret-key", str(key), "--scratch-pg", pg)
    assert out["status"] == "SUCCESS", (out.get("error"), out["_stderr"][-2000:])
    assert out["stats"]["tables"] >= 3, out["stats"]

    r = bin.run("inspect", f"{root}/{inc['file_path']}", "--secret-key", str(key), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["base_job"] == full["job_id"]

    # list on s3://
    r = bin.run("list", "--storage-root", root, "--storage-path", "cfg/daily", "--public-key", str(pub), "--json")
    assert r.returncode == 0, r.stderr
    jobs = {e["job_id"] for e in json.loads(r.stdout)}
    assert jobs == {full["job_id"], inc["job_id"]}, r.stdout

    # the same job redelivered is answered from the ledger in the bucket, without running again
    again = run_event(bin, full_ev, tmp_path, *settings)
    assert again["status"] == "SUCCESS" and again["from_ledger"] is True, again
    # never overwrite: with its ledger entry gone (and its record queued again) the job finds its signed, complete
    # artifact and records its success from it, the object unchanged
    before = get_object(s3, f"{prefix}/{full['file_path']}")
    code, body = s3_request(s3, "DELETE", f"/{s3['FB_S3_BUCKET']}/{prefix}/.ledger/{full['job_id']}.success")
    assert code == 204, body
    sql(fresh_db, "UPDATE backup_archive_backuprecord SET status = 'QUEUED' WHERE job_id = %s", (full["job_id"],))
    again = run_event(bin, full_ev, tmp_path, *settings)
    assert again["status"] == "SUCCESS" and again["stats"].get("artifact_reused") == 1, again
    assert get_object(s3, f"{prefix}/{full['file_path']}") == before


def test_retention_in_a_bucket(bin, fresh_db, keypair, s3, prefix, tmp_path):
    pub, key = keypair
    prepare_source(fresh_db)
    src = Source(fresh_db, "cfg/weekly")
    root = root_url(s3, prefix)
    settings = ("--pg", fresh_db, "--storage-root", root, "--public-key", str(pub))
    outs = []
    for _ in range(3):
        _, ev = src.event("FULL")
        out = run_event(bin, ev, tmp_path, *settings)
        assert out["status"] == "SUCCESS", out
        outs.append(out)
    assert len(artifacts(s3, f"{prefix}/cfg/weekly/")) == 3

    # an unfinished upload left by a crashed writer: prune aborts it once it is over a day old
    code, body = s3_request(s3, "POST", f"/{s3['FB_S3_BUCKET']}/{prefix}/cfg/weekly/{uuid.uuid4()}.fbak", "uploads=")
    assert code == 200 and "<UploadId>" in body, body
    assert len(unfinished_uploads(s3, f"{prefix}/")) == 1
    r = bin.run("prune", "--storage-root", root, "--storage-path", "cfg/weekly", "--retention-days", "1",
                "--public-key", str(pub))
    assert r.returncode == 0, r.stderr
    assert len(unfinished_uploads(s3, f"{prefix}/")) == 1  # begun just now: it may be a backup still running

    later = flow.now_ms() + 10 * 86400000
    r = bin.run("prune", "--storage-root", root, "--storage-path", "cfg/weekly", "--retention-days", "1",
                "--public-key", str(pub), "--now-ms", str(later))
    assert r.returncode == 0, r.stderr
    assert "took away 2 backup(s)" in r.stdout, r.stdout
    assert "unfinished write" in r.stdout, r.stdout
    assert unfinished_uploads(s3, f"{prefix}/") == []
    left = artifacts(s3, f"{prefix}/")
    # the newest restorable FULL stays; nothing else, no trash left behind
    assert left == {f"{prefix}/{outs[-1]['file_path']}": outs[-1]["file_size"]}, left


def test_copy_to_s3_from_a_local_root(bin, fresh_db, new_db, keypair, storage_root, s3, prefix, tmp_path,
                                      monkeypatch):
    pub, key = keypair
    prepare_source(fresh_db)
    src = Source(fresh_db, "cfg/daily")
    root = root_url(s3, prefix)
    # credentials from the environment this time (they win over a credentials file, here one that does not exist)
    access, secret = creds(s3)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("FB_S3_CREDENTIALS_FILE", str(tmp_path / "no-such-credentials"))
    _, ev = src.event("FULL")
    out = run_event(bin, ev, tmp_path, "--pg", fresh_db, "--storage-root", str(storage_root), "--public-key", str(pub),
                    "--copy-to", root)
    assert out["status"] == "SUCCESS", out
    assert out["stats"].get("copies") == 1, out["stats"]
    assert secret not in out["_stderr"] and secret not in json.dumps(out)
    local = (storage_root / out["file_path"]).read_bytes()
    assert get_object(s3, f"{prefix}/{out['file_path']}") == local
    target = new_db()
    r = restore(bin, f"{root}/{out['file_path']}", key, target)
    assert r.returncode == 0, r.stderr
    assert digests(target) == digests(fresh_db)


# Big enough that the upload lasts well beyond the 50 ms poll that sees it start (the stall test freezes the server
# once it does): at 700,000 rows the faster backup of session 7 sometimes finished its upload before the freeze.
BIG = """
CREATE TABLE big (id int PRIMARY KEY, a text, b text);
INSERT INTO big SELECT g, md5(g::text) || md5((g * 7)::text), md5((g * 13)::text) || md5((g * 17)::text)
  FROM generate_series(1, 2100000) g;
"""


def test_server_killed_mid_upload_leaves_nothing_that_looks_complete(bin, fresh_db, keypair, s3, prefix, tmp_path):
    pub, key = keypair
    prepare_source(fresh_db, BIG)
    src = Source(fresh_db, "cfg/big")
    root = root_url(s3, prefix)
    job_id, ev = src.event("FULL")
    f = tmp_path / "big.msgpack"
    f.write_bytes(ev)
    cmd = [bin.cli, "event", "run", str(f), "--no-publish", "--sign-key", flow.worker_sign_key(), "--pg", fresh_db,
           "--storage-root", root,
           "--public-key", str(pub), "--retry-max", "1", "--retry-backoff-ms", "200", "--s3-timeout-s", "5"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = int((Path(s3["FB_S3_CREDENTIALS_FILE"]).parent / "weed.pid").read_text())
    try:
        deadline = time.time() + 120
        while not unfinished_uploads(s3, f"{prefix}/"):
            assert p.poll() is None, f"the backup ended before its upload was seen: {p.communicate()}"
            assert time.time() < deadline, "no multipart upload started within 120 s"
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)  # the server dies with parts uploaded and the upload unfinished
        stdout, stderr = p.communicate(timeout=180)
    finally:
        if p.poll() is None:
            p.kill()
        subprocess.run([str(S3_SH), "start"], check=True, capture_output=True)
    out = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert out and out[-1]["status"] == "FAILED", (stdout, stderr)
    assert "S3" in out[-1]["error"] or "s3://" in out[-1]["error"], out[-1]
    # no object at all: the upload never completed; what is left is an unfinished upload (its abort could not
    # reach the dead server), invisible to GET and LIST
    assert artifacts(s3, f"{prefix}/") == {}
    key = f"{prefix}/cfg/big/{job_id}.fbak"
    assert unfinished_uploads(s3, f"{prefix}/") == [key], (stderr[-3000:], out[-1]["error"])
    code, _ = s3_request(s3, "HEAD", f"/{s3['FB_S3_BUCKET']}/{key}")
    assert code == 404
    # the same job redelivered: the leftover upload is aborted, the backup completes, nothing unfinished remains
    out2 = run_event(bin, ev, tmp_path, "--pg", fresh_db, "--storage-root", root, "--public-key", str(pub))
    if out2["status"] != "SUCCESS":
        # the record left the QUEUED state with the failure: queue it again, as Django's retry does
        sql(fresh_db, "UPDATE backup_archive_backuprecord SET status = 'QUEUED' WHERE job_id = %s", (job_id,))
        out2 = run_event(bin, ev, tmp_path, "--pg", fresh_db, "--storage-root", root, "--public-key", str(pub))
    assert out2["status"] == "SUCCESS", out2
    assert list(artifacts(s3, f"{prefix}/")) == [f"{prefix}/{out2['file_path']}"]
    assert unfinished_uploads(s3, f"{prefix}/") == []


def test_a_stalled_server_is_retried_and_the_backup_completes(bin, fresh_db, new_db, keypair, s3, prefix, tmp_path):
    """The server frozen (SIGSTOP) for a few seconds mid-upload: requests stall, time out, are retried with
    back-off, and once it thaws the same backup completes: one object, nothing unfinished, restorable."""
    pub, key = keypair
    prepare_source(fresh_db, BIG)
    src = Source(fresh_db, "cfg/big")
    root = root_url(s3, prefix)
    _, ev = src.event("FULL")
    f = tmp_path / "big.msgpack"
    f.write_bytes(ev)
    cmd = [bin.cli, "event", "run", str(f), "--no-publish", "--sign-key", flow.worker_sign_key(), "--pg", fresh_db,
           "--storage-root", root,
           "--public-key", str(pub), "--retry-max", "4", "--retry-backoff-ms", "300", "--s3-timeout-s", "2"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = int((Path(s3["FB_S3_CREDENTIALS_FILE"]).parent / "weed.pid").read_text())
    try:
        deadline = time.time() + 120
        while not unfinished_uploads(s3, f"{prefix}/"):
            assert p.poll() is None, f"the backup ended before its upload was seen: {p.communicate()}"
            assert time.time() < deadline, "no multipart upload started within 120 s"
            time.sleep(0.05)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(10)  # curl judges a stall on its ~5 s moving speed average, then --s3-timeout-s
    finally:
        os.kill(pid, signal.SIGCONT)
    stdout, stderr = p.communicate(timeout=300)
    out = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert out and out[-1]["status"] == "SUCCESS", (stdout, stderr[-3000:])
    assert "; retry 1 of 4 in 300 ms" in stderr, stderr[-3000:]  # it did stall, and was retried
    assert list(artifacts(s3, f"{prefix}/")) == [f"{prefix}/{out[-1]['file_path']}"]
    assert unfinished_uploads(s3, f"{prefix}/") == []
    r = bin.run("verify", f"{root}/{out[-1]['file_path']}", "--secret-key", str(key))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("case", ["wrong-credentials", "missing-bucket", "unreachable"])
def test_configuration_errors_say_what_to_fix(bin, fresh_db, keypair, s3, prefix, tmp_path, monkeypatch, case):
    pub, key = keypair
    prepare_source(fresh_db)
    src = Source(fresh_db, "cfg/daily")
    root = root_url(s3, prefix)
    want = {"wrong-credentials": ["refused the credentials", "AWS_ACCESS_KEY_ID"],
            "missing-bucket": ["bucket \"no-such-bucket-fb\" does not exist", "create it"],
            "unreachable": ["check --s3-endpoint", "127.0.0.1:1"]}[case]
    if case == "wrong-credentials":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "FBWRONGKEY0000")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-not-logged")
    elif case == "missing-bucket":
        root = f"s3://no-such-bucket-fb/{prefix}"
    else:
        monkeypatch.setenv("FB_S3_ENDPOINT", "http://127.0.0.1:1")
    _, ev = src.event("FULL")
    out = run_event(bin, ev, tmp_path, "--pg", fresh_db, "--storage-root", root, "--public-key", str(pub),
                    "--retry-max", "0")
    assert out["status"] == "FAILED", out
    for w in want:
        assert w in out["error"], out["error"]
    assert "wrong-secret-not-logged" not in out["error"] + out["_stderr"]
    assert artifacts(s3, f"{prefix}/") == {}


def test_worker_daemon_with_a_bucket_as_storage_root(bin, brokers, topic_prefix, fresh_db, new_db, keypair, s3,
                                                     prefix, workers):
    """The daemon through the broker: the event in, the artifact in the bucket, the record SUCCESS (recorder)."""
    from conftest import publish, wait_for
    pub, key = keypair
    prepare_source(fresh_db)
    src = Source(fresh_db, "cfg/nightly")
    job_id, ev = src.event("FULL")
    record_id = sql(fresh_db, "SELECT id FROM backup_archive_backuprecord WHERE job_id = %s", (job_id,))[0][0]
    root = root_url(s3, prefix)
    publish(brokers, topic_prefix + "backup.requested", str(src.config_id), ev)
    w = workers.start(fresh_db, storage_root=root, public_key=pub, role="all", extra=("--log-level", "debug"))
    rec = wait_for(lambda: (r := flow.record(fresh_db, record_id))["status"] in ("SUCCESS", "FAILED") and r,
                   timeout=90, what="BackupRecord to finish")
    assert rec["status"] == "SUCCESS", f"record failed: {rec['error_message']}\n{workers.log(w)}"
    assert artifacts(s3, f"{prefix}/") == {f"{prefix}/{rec['file_path']}": rec["file_size"]}
    target = new_db()
    r = restore(bin, f"{root}/{rec['file_path']}", key, target)
    assert r.returncode == 0, r.stderr
    assert digests(target) == digests(fresh_db)
    assert creds(s3)[1] not in workers.log(w)


def test_check_probes_a_bucket_root(bin, s3, prefix):
    root = root_url(s3, prefix)
    r = bin.run("check", "--storage-root", root, "--json")
    storage = next(c for c in json.loads(r.stdout) if c["check"] == "storage")
    assert storage["ok"] is True and "writable" in storage["detail"], storage
    assert objects(s3, f"{prefix}/") == {}  # the probe is gone
    r = bin.run("check", "--storage-root", "s3://no-such-bucket-fb/x", "--json")
    storage = next(c for c in json.loads(r.stdout) if c["check"] == "storage")
    assert storage["ok"] is False and "does not exist" in storage["detail"] and "create it" in storage["detail"]


@pytest.fixture
def tls_proxy(s3, tmp_path):
    """https://127.0.0.1:PORT in front of the S3 server: a TLS-terminating byte forwarder with a self-signed
    certificate (its own CA), so the driver's TLS and --s3-ca-file are exercised end to end."""
    import socket
    import ssl
    import threading
    cert, keyf = tmp_path / "ca.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(keyf), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(keyf))
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    upstream = int(s3["FB_S3_ENDPOINT"].rsplit(":", 1)[1])
    stop = threading.Event()

    def pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve():
        lsock.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = lsock.accept()
            except (socket.timeout, OSError):
                continue
            try:
                c.settimeout(None)
                tc = ctx.wrap_socket(c, server_side=True)
            except (ssl.SSLError, OSError):
                c.close()  # a client that refused our certificate
                continue
            u = socket.create_connection(("127.0.0.1", upstream))
            threading.Thread(target=pipe, args=(tc, u), daemon=True).start()
            threading.Thread(target=pipe, args=(u, tc), daemon=True).start()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield f"https://127.0.0.1:{lsock.getsockname()[1]}", cert
    stop.set()
    t.join()
    lsock.close()


def test_tls_endpoint_needs_and_takes_a_ca_file(bin, fresh_db, new_db, keypair, s3, prefix, tmp_path, tls_proxy,
                                               monkeypatch):
    pub, key = keypair
    url, ca = tls_proxy
    prepare_source(fresh_db)
    src = Source(fresh_db, "cfg/daily")
    root = root_url(s3, prefix)
    monkeypatch.setenv("FB_S3_ENDPOINT", url)
    _, ev = src.event("FULL")
    out = run_event(bin, ev, tmp_path, "--pg", fresh_db, "--storage-root", root, "--public-key", str(pub),
                    "--retry-max", "0")
    assert out["status"] == "FAILED" and "--s3-ca-file" in out["error"], out
    monkeypatch.setenv("FB_S3_CA_FILE", str(ca))
    _, ev = src.event("FULL")
    out = run_event(bin, ev, tmp_path, "--pg", fresh_db, "--storage-root", root, "--public-key", str(pub))
    assert out["status"] == "SUCCESS", (out.get("error"), out["_stderr"][-2000:])
    target = new_db()
    r = restore(bin, f"{root}/{out['file_path']}", key, target)
    assert r.returncode == 0, r.stderr
    assert digests(target) == digests(fresh_db)


def test_rekey_in_a_bucket(bin, fresh_db, new_db, keypair, s3, prefix, tmp_path, signing_keys, monkeypatch):
    pub, key = keypair
    # the chain index is re-MACed and re-signed with the operators' key (FB_SIGN_KEY), which readers trust
    monkeypatch.setenv("FB_TRUSTED_SIGNERS", f"{signing_keys['worker'][0]},{signing_keys['ops'][0]}")
    prepare_source(fresh_db)
    src = Source(fresh_db, "cfg/daily")
    root = root_url(s3, prefix)
    _, ev = src.event("FULL")
    out = run_event(bin, ev, tmp_path, "--pg", fresh_db, "--storage-root", root, "--public-key", str(pub))
    assert out["status"] == "SUCCESS", out
    bin.run("keygen", "--out", str(tmp_path / "new"), check=True)
    url = f"{root}/{out['file_path']}"
    before = get_object(s3, f"{prefix}/{out['file_path']}")
    r = bin.run("rekey", url, "--secret-key", str(key), "--new-public-key", str(tmp_path / "new.pub"))
    assert r.returncode == 0, r.stderr
    after = get_object(s3, f"{prefix}/{out['file_path']}")
    # only the sealed key (bytes 16..96) and the re-MACed index with its signature changed; no temporary left
    index_at = int.from_bytes(before[-16:-8], "little")
    assert len(after) == len(before) and after[:16] == before[:16] and after[96:index_at] == before[96:index_at]
    assert after[16:96] != before[16:96]
    assert list(artifacts(s3, f"{prefix}/")) == [f"{prefix}/{out['file_path']}"]
    target = new_db()
    r = restore(bin, url, tmp_path / "new.key", target)
    assert r.returncode == 0, r.stderr
    assert digests(target) == digests(fresh_db)
    r = restore(bin, url, key, new_db())
    assert r.returncode != 0 and "secret key does not open" in r.stderr, r.stderr
