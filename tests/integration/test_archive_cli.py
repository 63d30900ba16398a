"""Archival and unarchive end to end on the Fusion schema, through the built binaries (issue 4).

Jobs run through `fusion-backup event run FILE --no-publish` (the worker's job code in a process of its own, no
broker), rows come back through `fusion-backup unarchive`. What these prove:
- a SIGKILL of the process running a large archival, then a re-run: rows in the table + ArchivedRecords = rows
  before, never a row in both, no duplicates, and the re-run finishes the job;
- leave_leave with its CASCADE children leave_leavesegment and leave_replacementsegment: counters, one
  ArchivedRecord per row with the child's own model, and unarchive (parents, then children) gives back rows whose
  text form equals the original; unarchive --dry-run changes nothing; a re-created key is reported (exit 13);
- a dry run of the event changes nothing; relations = nil leaves referenced rows in place.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2

from conftest import psql
from flow import archive_event, authorise

CUTOFF_MS = 1704067200000  # 2024-01-01

USERS = ("INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name, email, is_staff,"
         " is_active, date_joined) VALUES (1, 'x', false, 'u1', '', '', '', false, true, now()),"
         " (2, 'x', false, 'u2', '', '', '', false, true, now());"
         " INSERT INTO django_content_type (id, app_label, model) VALUES (1, 'notifications', 'notification');")

LEAVES = ("INSERT INTO leave_leave (id, purpose, status, timestamp, extra_info, applicant_id)"
          " SELECT g, 'purpose ' || g, 'accepted', CASE WHEN g <= 10 THEN timestamptz '2021-03-04 05:06:07.5+05:30'"
          " ELSE now() END, CASE WHEN g % 2 = 0 THEN E'tab\\there \"q\" ü' END, 1 FROM generate_series(1, 12) g;"
          " INSERT INTO leave_leavesegment (document, start_date, start_half, end_date, end_half, address, leave_id,"
          " leave_type_id) SELECT 'doc', date '2021-03-01' + g, false, date '2021-03-02' + g, true, NULL, (g + 1) / 2,"
          " NULL FROM generate_series(1, 24) g;"
          " INSERT INTO leave_replacementsegment (replacement_type, start_date, end_date, status, remark, leave_id,"
          " replacer_id) SELECT 'academic', '2021-03-01', '2021-03-05', 'pending', NULL, g, 2"
          " FROM generate_series(1, 12) g;")

LEAVE_RELATIONS = [
    {"table": "leave_leavesegment", "column": "leave_id", "references": "leave_leave", "on_delete": "CASCADE",
     "to_column": None, "module": "leave", "model_name": "LeaveSegment", "pk_column": None},
    {"table": "leave_replacementsegment", "column": "leave_id", "references": "leave_leave", "on_delete": "CASCADE",
     "to_column": None, "module": "leave", "model_name": "ReplacementSegment", "pk_column": None},
]


def one(conninfo: str, sql: str):
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def write_event(tmp_path: Path, data: bytes) -> Path:
    f = tmp_path / f"{uuid.uuid4().hex}.msgpack"
    f.write_bytes(data)
    return f


def run_event(bin, conninfo: str, f: Path) -> dict:
    authorise(conninfo, f.read_bytes())  # the policy Django would hold for this request
    r = bin.run("event", "run", str(f), "--no-publish", "--pg", conninfo)
    assert r.returncode == 0, f"event run exited {r.returncode}: {r.stderr}"
    return json.loads(r.stdout)


def seed_notifications(conninfo: str, n: int) -> None:
    psql(conninfo, USERS)
    psql(conninfo,
         "INSERT INTO notifications_notification (level, unread, actor_object_id, verb, description, target_object_id,"
         " action_object_object_id, timestamp, public, action_object_content_type_id, actor_content_type_id,"
         " recipient_id, target_content_type_id, deleted, emailed, data) SELECT 'info', g % 2 = 0, g::text,"
         " 'verb ' || g, 'description ' || g, NULL, NULL, timestamptz '2020-01-01 10:00+05:30' + g * interval '1 s',"
         f" true, NULL, 1, 1 + g % 2, NULL, false, false, '{{}}' FROM generate_series(1, {n}) g")


def leave_text(conninfo: str) -> str:
    return one(conninfo, "SELECT (SELECT string_agg(t::text, ',' ORDER BY id) FROM leave_leave t) || '|' ||"
                         " (SELECT string_agg(t::text, ',' ORDER BY id) FROM leave_leavesegment t) || '|' ||"
                         " (SELECT string_agg(t::text, ',' ORDER BY id) FROM leave_replacementsegment t)")


def test_sigkill_mid_archival_then_rerun_keeps_every_row_exactly_once(bin, fusion_db, tmp_path):
    n = 300_000
    seed_notifications(fusion_db, n)
    ev = write_event(tmp_path, archive_event(str(uuid.uuid4()), 1, "notifications_notification", "id", "timestamp",
                                             CUTOFF_MS, batch_size=1000))
    authorise(fusion_db, ev.read_bytes())
    p = subprocess.Popen([bin.cli, "event", "run", str(ev), "--no-publish", "--pg", fusion_db],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and one(fusion_db, "SELECT count(*) FROM backup_archive_archivedrecord") < n // 5:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the archival finished before it could be killed: raise n"
    # The server rolls back the dead client's open batch once it notices; wait for its backend to go.
    while one(fusion_db, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                         " AND application_name LIKE 'fusion-backup archive%'") and time.time() < deadline:
        time.sleep(0.1)
    live = one(fusion_db, "SELECT count(*) FROM notifications_notification")
    archived = one(fusion_db, "SELECT count(*) FROM backup_archive_archivedrecord")
    assert live + archived == n and 0 < archived < n, (live, archived)
    assert one(fusion_db, "SELECT count(*) FROM notifications_notification t JOIN backup_archive_archivedrecord a"
                          " ON a.original_id = t.id::text") == 0

    out = run_event(bin, fusion_db, ev)
    assert out["status"] == "SUCCESS", out
    assert out["stats"]["archived"] == live
    assert one(fusion_db, "SELECT count(*) FROM notifications_notification") == 0
    assert one(fusion_db, "SELECT count(*) FROM backup_archive_archivedrecord") == n
    assert one(fusion_db, "SELECT count(DISTINCT original_id) FROM backup_archive_archivedrecord") == n


def test_leave_cascade_and_unarchive_give_back_the_same_rows(bin, fusion_db, tmp_path):
    psql(fusion_db, USERS)
    psql(fusion_db, LEAVES)
    before = leave_text(fusion_db)
    ev = write_event(tmp_path, archive_event(str(uuid.uuid4()), 7, "leave_leave", "id", "timestamp", CUTOFF_MS,
                                             batch_size=3, module="leave", model="Leave",
                                             relations=LEAVE_RELATIONS))
    out = run_event(bin, fusion_db, ev)
    assert out["status"] == "SUCCESS", out
    s = out["stats"]
    assert (s["archived"], s["cascaded"], s["skipped_protected"], s["skipped_referenced"]) == (10, 30, 0, 0), s
    assert s["batches"] == 4
    counts = dict(psql(fusion_db, "SELECT model_name, count(*) FROM backup_archive_archivedrecord"
                                  " WHERE module = 'leave' GROUP BY 1").split("\n")[i].split("|")
                  for i in range(3))
    assert counts == {"Leave": "10", "LeaveSegment": "20", "ReplacementSegment": "10"}
    assert one(fusion_db, "SELECT count(*) FROM leave_leave") == 2

    # Redelivery moves nothing.
    again = run_event(bin, fusion_db, ev)
    assert again["stats"]["archived"] == 0 and again["stats"]["cascaded"] == 0

    # Dry-run unarchive: reports, changes nothing.
    r = bin.run("unarchive", "--module", "leave", "--model", "Leave", "--archived-before", "infinity", "--dry-run",
                "--pg", fusion_db)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["restored"] == 10
    assert one(fusion_db, "SELECT count(*) FROM leave_leave") == 2

    for model in ("Leave", "LeaveSegment", "ReplacementSegment"):
        r = bin.run("unarchive", "--module", "leave", "--model", model, "--archived-before", "infinity",
                    "--pg", fusion_db)
        assert r.returncode == 0, f"unarchive {model}: {r.stderr}"
    assert leave_text(fusion_db) == before
    assert one(fusion_db, "SELECT count(*) FROM backup_archive_archivedrecord") == 0

    # Archive again, re-create leave 4 by hand: unarchive reports it (exit 13) and overwrites nothing.
    run_event(bin, fusion_db, ev)
    psql(fusion_db, "INSERT INTO leave_leave (id, purpose, status, timestamp, applicant_id)"
                    " VALUES (4, 'new', 'x', now(), 1)")
    r = bin.run("unarchive", "--module", "leave", "--model", "Leave", "--id", "4", "--id", "5", "--pg", fusion_db)
    assert r.returncode == 13, r.stderr
    assert json.loads(r.stdout) == {"restored": 1, "not_found": 0, "dry_run": False, "conflicts": ["4"]}
    assert "stay archived" in r.stderr
    assert one(fusion_db, "SELECT purpose FROM leave_leave WHERE id = 4") == "new"


def test_dry_run_changes_nothing(bin, fusion_db, tmp_path):
    seed_notifications(fusion_db, 5000)
    digest = "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM notifications_notification t"
    before = one(fusion_db, digest)
    ev = write_event(tmp_path, archive_event(str(uuid.uuid4()), 1, "notifications_notification", "id", "timestamp",
                                             CUTOFF_MS, batch_size=700, dry_run=True))
    out = run_event(bin, fusion_db, ev)
    assert out["status"] == "SUCCESS", out
    assert out["stats"]["archived"] == 5000 and out["stats"]["batches"] == 8
    assert one(fusion_db, digest) == before
    assert one(fusion_db, "SELECT count(*) FROM backup_archive_archivedrecord") == 0


def test_without_relations_referenced_rows_are_skipped_not_deleted(bin, fusion_db, tmp_path):
    psql(fusion_db, USERS)
    psql(fusion_db, LEAVES)
    psql(fusion_db, "DELETE FROM leave_leavesegment WHERE leave_id = 1; DELETE FROM leave_replacementsegment"
                    " WHERE leave_id = 1")
    ev = write_event(tmp_path, archive_event(str(uuid.uuid4()), 7, "leave_leave", "id", "timestamp", CUTOFF_MS,
                                             module="leave", model="Leave", relations=None))
    out = run_event(bin, fusion_db, ev)
    assert out["status"] == "SUCCESS", out
    assert out["stats"]["archived"] == 1 and out["stats"]["skipped_referenced"] == 9, out["stats"]
    assert one(fusion_db, "SELECT count(*) FROM leave_leave") == 11
    assert one(fusion_db, "SELECT count(*) FROM leave_leavesegment") == 22


def test_missing_column_fails_with_a_clear_message(bin, fusion_db, tmp_path):
    ev = write_event(tmp_path, archive_event(str(uuid.uuid4()), 1, "Tracking", "id", "received", CUTOFF_MS,
                                             module="filetracking", model="Tracking"))
    authorise(fusion_db, ev.read_bytes())
    r = bin.run("event", "run", str(ev), "--no-publish", "--pg", fusion_db)
    assert r.returncode != 0
    out = json.loads(r.stdout)
    assert out["status"] == "FAILED" and out["error_code"] == "notfound"
    assert '"received"' in out["error"] and '"Tracking"' in out["error"]
