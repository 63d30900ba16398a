"""Helpers for the attack tests of issue 10 (the database is the authority): rows as Django writes them from
migration 0003 on (records carry their table list and verify job id; policies their resolved table and key),
hostile messages, and the worker's metrics. Kept apart from flow.py, which other tests own."""
from __future__ import annotations

import hashlib
import json
import socket
import struct
import urllib.request
import uuid

import psycopg2

import fusion_events
from flow import now_ms

YEAR_9999_MS = 253402300799000  # 9999-12-31T23:59:59Z
SKEW_MS = 5 * 60 * 1000  # the recorder's clamp: now() + 5 min


def add_config(conninfo: str, name: str, storage_path: str, tables: list, retention_days: int = 30) -> int:
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO backup_archive_backupconfiguration (name, backup_type, schedule, modules, tables, storage_path,"
            " retention_days, verify_schedule, is_active, created_at, updated_at)"
            " VALUES (%s, 'FULL', '0 2 * * *', '[]', %s, %s, %s, '', true, now(), now()) RETURNING id",
            (name, json.dumps(tables), storage_path, retention_days))
        return cur.fetchone()[0]


def add_record(conninfo: str, config_id: int, tables: list, status: str = "QUEUED", attempt: int = 1,
               verify_job_id: str | None = None, file_path: str = "") -> tuple[int, str]:
    """A BackupRecord of config_id whose backup.requested would carry `tables`; returns (record_id, job_id)."""
    job_id = str(uuid.uuid4())
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO backup_archive_backuprecord (configuration_id, job_id, backup_type, status, requested_at,"
            " file_path, error_message, attempt, worker, verify_status, verify_message, tables, verify_job_id)"
            " VALUES (%s, %s, 'FULL', %s, now(), %s, '', %s, '', '', '', %s, %s) RETURNING id",
            (config_id, job_id, status, file_path, attempt, json.dumps(tables), verify_job_id))
        return cur.fetchone()[0], job_id


def add_policy(conninfo: str, module: str, model: str, schema: str, table: str, pk: str, ts_col: str,
               archive_after_days: int = 0) -> int:
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO backup_archive_archivepolicy (module, model_name, timestamp_column, archive_after_days,"
            " delete_after_days, batch_size, max_rows_per_run, schedule, is_active, db_schema, db_table, pk_column)"
            " VALUES (%s, %s, %s, %s, NULL, 100, NULL, '', true, %s, %s, %s) RETURNING id",
            (module, model, ts_col, archive_after_days, schema, table, pk))
        return cur.fetchone()[0]


def record_row(conninfo: str, record_id: int) -> dict:
    """Every column of a BackupRecord, for before/after comparisons."""
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM backup_archive_backuprecord WHERE id = %s", (record_id,))
        names = [d[0] for d in cur.description]
        return dict(zip(names, cur.fetchone()))


def add_archive_run(conninfo: str, policy_id: int) -> tuple[int, str]:
    """A QUEUED ArchiveRun (as services.request_archive makes it): (id, job_id)."""
    job = str(uuid.uuid4())
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO backup_archive_archiverun (job_id, dry_run, status, requested_at, error_message,"
                    " attempt, worker, policy_id) VALUES (%s, false, 'QUEUED', now(), '', 1, '', %s) RETURNING id",
                    (job, policy_id))
        return cur.fetchone()[0], job


def archive_run_row(conninfo: str, run_id: int) -> dict:
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM backup_archive_archiverun WHERE id = %s", (run_id,))
        names = [d[0] for d in cur.description]
        return dict(zip(names, cur.fetchone()))


def db_now_ms(conninfo: str) -> int:
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT (extract(epoch FROM now()) * 1000)::bigint")
        return cur.fetchone()[0]


def status(job_id: str, st: str, *, job_type: str = "backup", record_id: int | None = None,
           config_id: int | None = None, attempt: int = 1, started_at: int | None = None,
           completed_at: int | None = None, error: str | None = None, file_path: str | None = None,
           policy_id: int | None = None) -> bytes:
    t = now_ms()
    return fusion_events.encode({
        "v": 1, "type": "job.status", "job_id": job_id, "ts": t, "requested_by": None, "attempt": attempt,
        "job_type": job_type, "status": st, "worker": "forger", "started_at": started_at or t,
        "completed_at": None if st == "RUNNING" else (completed_at or t), "record_id": record_id,
        "config_id": config_id, "policy_id": policy_id, "file_path": file_path, "file_size": None, "error": error,
        "stats": None, "request": None})


def many_unknown_keys(n: int) -> bytes:
    """One msgpack map32 of n tiny unknown keys (each "k<i>" -> nil): what made the old decoder quadratic."""
    out = [b"\xdf", struct.pack(">I", n)]
    for i in range(n):
        k = f"k{i}".encode()
        out.append(bytes([0xA0 | len(k)]) + k + b"\xc0")
    return b"".join(out)


def request_digest(value: bytes) -> bytes:
    """The worker's ledger digest of a request (dmn_ledger.h): keyed BLAKE2b-256 of the event re-encoded with ts,
    attempt and requested_by neutralised. The two encoders write the same bytes, so Python can compute it."""
    ev = fusion_events.decode(value)
    ev.update(ts=0, attempt=1, requested_by=None)
    return hashlib.blake2b(fusion_events.encode(ev), digest_size=32, key=b"fusion ledger v2").digest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(port: int) -> dict[str, float]:
    """The worker's Prometheus text as {"name{labels}": value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out
