"""Helpers for the end-to-end tests: rows of the Django app's tables and contract events, written the way the
Django producer writes them (producer/backup_archive), without needing Django in these tests."""
from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2

import fusion_events


def now_ms() -> int:
    return int(time.time() * 1000)


def add_config_and_record(conninfo: str, name: str = "nightly", storage_path: str = "fusion/nightly",
                          tables: list | None = None) -> tuple[int, int, str]:
    """Inserts a BackupConfiguration and a QUEUED BackupRecord; returns (config_id, record_id, job_id)."""
    job_id = str(uuid.uuid4())
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO backup_archive_backupconfiguration (name, backup_type, schedule, modules, tables, storage_path,"
            " retention_days, verify_schedule, is_active, created_at, updated_at)"
            " VALUES (%s, 'FULL', '0 2 * * *', '[]', %s, %s, 30, '', true, now(), now()) RETURNING id",
            (name, json.dumps(tables or []), storage_path))
        config_id = cur.fetchone()[0]
        cur.execute(
            "INSERT INTO backup_archive_backuprecord (configuration_id, job_id, backup_type, status, requested_at,"
            " file_path, error_message, attempt, worker, verify_status, verify_message)"
            " VALUES (%s, %s, 'FULL', 'QUEUED', now(), '', '', 1, '', '', '') RETURNING id", (config_id, job_id))
        record_id = cur.fetchone()[0]
    return config_id, record_id, job_id


def backup_event(job_id: str, config_id: int, record_id: int, tables: list, storage_path: str = "fusion/nightly",
                 name: str = "nightly", attempt: int = 1) -> bytes:
    return fusion_events.encode({
        "v": 1, "type": "backup.requested", "job_id": job_id, "ts": now_ms(), "requested_by": None,
        "attempt": attempt, "record_id": record_id, "config_id": config_id, "config_name": name,
        "backup_type": "FULL", "tables": tables, "modules": [], "storage_path": storage_path,
        "retention_days": 30})


def archive_event(job_id: str, policy_id: int, table, pk: str, ts_col: str, cutoff_ms: int, batch_size: int = 500,
                  module: str = "notifications", model: str = "Notification", relations=None,
                  dry_run: bool = False) -> bytes:
    return fusion_events.encode({
        "v": 1, "type": "archive.due", "job_id": job_id, "ts": now_ms(), "requested_by": None, "attempt": 1,
        "policy_id": policy_id, "module": module, "model_name": model, "table": table, "pk_column": pk,
        "timestamp_column": ts_col, "cutoff": cutoff_ms, "batch_size": batch_size, "max_rows": None,
        "purge_before": None, "archived_by": None, "dry_run": dry_run, "relations": relations})


def status_event(job_id: str, status: str, record_id: int, config_id: int, attempt: int = 1,
                 file_path: str | None = None, file_size: int | None = None, error: str | None = None,
                 started_at: int | None = None) -> bytes:
    return fusion_events.encode({
        "v": 1, "type": "job.status", "job_id": job_id, "ts": now_ms(), "requested_by": None, "attempt": attempt,
        "job_type": "backup", "status": status, "worker": "test", "started_at": started_at or now_ms(),
        "completed_at": None if status == "RUNNING" else now_ms(), "record_id": record_id, "config_id": config_id,
        "policy_id": None, "file_path": file_path, "file_size": file_size, "error": error, "stats": None,
        "request": None})


def record(conninfo: str, record_id: int) -> dict:
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT status, file_path, file_size, error_message, attempt, started_at, completed_at, stats"
                    " FROM backup_archive_backuprecord WHERE id = %s", (record_id,))
        row = cur.fetchone()
    keys = ["status", "file_path", "file_size", "error_message", "attempt", "started_at", "completed_at", "stats"]
    return dict(zip(keys, row))


def table_digests(conninfo: str) -> dict[str, str]:
    """Per user table: row count and md5 of its sorted row texts."""
    conn = psycopg2.connect(conninfo)
    cur = conn.cursor()
    cur.execute("SET TIME ZONE 'UTC'")
    cur.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg\\_%%' ORDER BY 1, 2")
    out = {}
    for schema, name in cur.fetchall():
        q = '"' + schema.replace('"', '""') + '"."' + name.replace('"', '""') + '"'
        cur.execute(f"SELECT count(*) || ':' || md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) "
                    f"FROM {q} x")
        out[f"{schema}.{name}"] = cur.fetchone()[0]
    conn.close()
    return out


def run_event(bin, event: bytes, tmp: Path, *settings: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    """Runs one event in-process (`event run --no-publish`); returns the process and the parsed JSON outcome."""
    f = tmp / f"ev-{uuid.uuid4().hex[:8]}.msgpack"
    f.write_bytes(event)
    r = bin.run("event", "run", str(f), "--no-publish", *settings)
    out = None
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            out = json.loads(line)
    return r, out
