"""Helpers for the end-to-end tests: rows of the Django app's tables and contract events, written the way the
Django producer writes them (producer/backup_archive), without needing Django in these tests."""
from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2

import fusion_events


def now_ms() -> int:
    return int(time.time() * 1000)


def add_config_and_record(conninfo: str, name: str = "nightly", storage_path: str = "fusion/nightly",
                          tables: list | None = None, retention_days: int = 30) -> tuple[int, int, str]:
    """Inserts a BackupConfiguration and a QUEUED BackupRecord that authorise a backup of `tables` (the list the
    backup.requested will carry) into storage_path; returns (config_id, record_id, job_id)."""
    job_id = str(uuid.uuid4())
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO backup_archive_backupconfiguration (name, backup_type, schedule, modules, tables, storage_path,"
            " retention_days, verify_schedule, is_active, created_at, updated_at)"
            " VALUES (%s, 'FULL', '0 2 * * *', '[]', %s, %s, %s, '', true, now(), now()) RETURNING id",
            (name, json.dumps(tables or []), storage_path, retention_days))
        config_id = cur.fetchone()[0]
        cur.execute(
            "INSERT INTO backup_archive_backuprecord (configuration_id, job_id, backup_type, status, requested_at,"
            " file_path, error_message, attempt, worker, verify_status, verify_message, tables)"
            " VALUES (%s, %s, 'FULL', 'QUEUED', now(), '', '', 1, '', '', '', %s) RETURNING id",
            (config_id, job_id, json.dumps(tables or [])))
        record_id = cur.fetchone()[0]
    return config_id, record_id, job_id


def authorise(conninfo: str, event: bytes) -> None:
    """Writes the rows that make the database authorise `event` (a backup.requested, backup.verify or archive.due),
    the way Django writes them before it publishes such a request: the configuration and a QUEUED record with the
    event's ids, job id, tables, folder and retention; a SUCCESS record whose verify_job_id is the verify job; an
    active policy naming the event's model, table and keys, old enough for its cutoff and purge_before. Rows with
    the event's ids are replaced, so a test may reuse them for job after job."""
    ev = fusion_events.decode(event)
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        if ev["type"] in ("backup.requested", "backup.verify"):
            cfg = ev["config_id"]
            path = ev.get("storage_path") or "fusion/verify"
            keep = ev.get("retention_days") or 0
            cur.execute(
                "INSERT INTO backup_archive_backupconfiguration (id, name, backup_type, schedule, modules, tables,"
                " storage_path, retention_days, verify_schedule, is_active, created_at, updated_at)"
                " VALUES (%s, %s, 'FULL', '', '[]', %s, %s, %s, '', true, now(), now())"
                " ON CONFLICT (id) DO UPDATE SET is_active = true" +
                (", storage_path = EXCLUDED.storage_path, retention_days = EXCLUDED.retention_days, "
                 "tables = EXCLUDED.tables" if ev["type"] == "backup.requested" else ""),
                (cfg, f"config-{cfg}", json.dumps(ev.get("tables") or []), path, keep))
        if ev["type"] == "backup.requested":
            cur.execute(
                "INSERT INTO backup_archive_backuprecord (id, configuration_id, job_id, backup_type, status,"
                " requested_at, file_path, error_message, attempt, worker, verify_status, verify_message, tables)"
                " VALUES (%s, %s, %s, %s, 'QUEUED', now(), '', '', %s, '', '', '', %s)"
                " ON CONFLICT (id) DO UPDATE SET configuration_id = EXCLUDED.configuration_id,"
                " job_id = EXCLUDED.job_id, backup_type = EXCLUDED.backup_type, status = 'QUEUED',"
                " attempt = EXCLUDED.attempt, tables = EXCLUDED.tables",
                (ev["record_id"], ev["config_id"], ev["job_id"], ev["backup_type"], ev["attempt"],
                 json.dumps(ev["tables"])))
        elif ev["type"] == "backup.verify":
            cur.execute(
                "INSERT INTO backup_archive_backuprecord (id, configuration_id, job_id, backup_type, status,"
                " requested_at, file_path, error_message, attempt, worker, verify_status, verify_message, tables,"
                " verify_job_id)"
                " VALUES (%s, %s, %s, 'FULL', 'SUCCESS', now(), %s, '', 1, '', '', '', '[]', %s)"
                " ON CONFLICT (id) DO UPDATE SET configuration_id = EXCLUDED.configuration_id, status = 'SUCCESS',"
                " file_path = EXCLUDED.file_path, verify_job_id = EXCLUDED.verify_job_id",
                (ev["record_id"], ev["config_id"], str(uuid.uuid4()), ev["file_path"] or "", ev["job_id"]))
        elif ev["type"] == "archive.due":
            add_policy(conninfo, ev, cur=cur)
        else:
            raise ValueError(f"{ev['type']} is not a request")


def add_policy(conninfo: str, ev: dict, cur=None, active: bool = True, archive_after_days: int | None = None,
               delete_after_days: int | None = None) -> int:
    """An ArchivePolicy that authorises the archive.due `ev` (a decoded event): same id, module, model, table and
    keys; archive_after_days (default: as many whole days as the cutoff lies in the past) and, when the event
    purges, delete_after_days likewise. Replaces a policy with the same id or the same module and model."""
    if isinstance(ev, (bytes, bytearray)):
        ev = fusion_events.decode(ev)

    def days_before(ms):
        return max(0, (now_ms() - ms) // 86_400_000)

    table = ev["table"]
    schema, name = (table[0], table[1]) if isinstance(table, list) else ("public", table)
    after = days_before(ev["cutoff"]) if archive_after_days is None else archive_after_days
    if delete_after_days is None and ev.get("purge_before") is not None:
        delete_after_days = days_before(ev["purge_before"])
    args = (ev["policy_id"], ev["module"], ev["model_name"], ev["timestamp_column"], after, delete_after_days,
            ev["batch_size"], active, schema, name, ev["pk_column"])
    sql = ("DELETE FROM backup_archive_archivepolicy WHERE id = %s OR (module = %s AND model_name = %s);"
           "INSERT INTO backup_archive_archivepolicy (id, module, model_name, timestamp_column, archive_after_days,"
           " delete_after_days, batch_size, max_rows_per_run, schedule, is_active, db_schema, db_table, pk_column)"
           " VALUES (%s, %s, %s, %s, %s, %s, %s, NULL, '', %s, %s, %s, %s)")
    params = (ev["policy_id"], ev["module"], ev["model_name"], *args)
    if cur is not None:
        cur.execute(sql, params)
    else:
        with psycopg2.connect(conninfo) as conn, conn.cursor() as c2:
            c2.execute(sql, params)
    return ev["policy_id"]


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


def worker_sign_key() -> str:
    """The workers' secret signing key of the session (conftest's signing_keys, next to the trusted worker.pub):
    what `event run` signs the artifacts of backups with, as a worker would."""
    return str(Path(os.environ["FB_TRUSTED_SIGNERS"].split(",")[0]).parent / "worker.key")


def run_event(bin, event: bytes, tmp: Path, *settings: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    """Runs one event in-process (`event run --no-publish`), signing artifacts as the workers do (settings may
    give another --sign-key); returns the process and the parsed JSON outcome."""
    f = tmp / f"ev-{uuid.uuid4().hex[:8]}.msgpack"
    f.write_bytes(event)
    r = bin.run("event", "run", str(f), "--no-publish", "--sign-key", worker_sign_key(), *settings)
    out = None
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            out = json.loads(line)
    return r, out


def run_authorised(bin, event: bytes, tmp: Path, *settings: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    """run_event after authorise(): the rows go into the database the worker checks (--authority-pg, else --pg,
    as given in settings), as Django writes them before it publishes the request."""
    args = list(settings)
    key = "--authority-pg" if "--authority-pg" in args and not fusion_events.decode(event)["type"] == "archive.due" \
        else "--pg"
    authorise(args[args.index(key) + 1], event)
    return run_event(bin, event, tmp, *settings)
