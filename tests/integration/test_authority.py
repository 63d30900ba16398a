"""The database is the authority (issue 10): through the real broker and a running worker, every attack is a
well-formed request that the contract accepts; the worker refuses each one because the rows of the Django app do
not authorise it, sends it to the dead-letter topic with an error naming the refused field and what the database
holds, publishes no status event under its job id (so the recorder moves no record), and a row-by-row comparison
of every user table (flow.table_digests) shows that nothing changed. The genuine backup and
archive still run in the same database.

Attacks on archive.due: pg_catalog.pg_authid (a real login role with an expired rolvaliduntil, which the old
worker deleted), other catalogs by schema-qualified reference (information_schema, pg_toast), the project's own
backup_archive_archivedrecord, a cutoff in the future, purge_before on a policy without delete_after_days, a
policy id that does not exist, a policy that names another table, an inactive policy, a relation on pg_catalog
and a relation that is no foreign key. Attacks on backup.requested: pg_catalog.pg_authid, another configuration's
storage_path (whose old artifacts must survive), retention_days, tables, record_id and job_id that differ from the
rows, and a decoy job id without a record.
"""
from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

import psycopg2
import psycopg2.extras

import fusion_events
from conftest import consume, psql, publish
from flow import add_config_and_record, add_policy, now_ms, run_event, table_digests

DAY = 86_400_000

USERS = ("INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name, email, is_staff,"
         " is_active, date_joined) VALUES (1, 'x', false, 'u1', '', '', '', false, true, now()),"
         " (2, 'x', false, 'u2', '', '', '', false, true, now());"
         " INSERT INTO django_content_type (id, app_label, model) VALUES (1, 'notifications', 'notification');"
         " INSERT INTO auth_group (name) SELECT 'group ' || g FROM generate_series(1, 50) g;")

LEAVES = ("INSERT INTO leave_leave (id, purpose, status, timestamp, extra_info, applicant_id)"
          " SELECT g, 'purpose ' || g, 'accepted', CASE WHEN g <= 10 THEN timestamptz '2021-03-04 05:06:07+05:30'"
          " ELSE now() END, NULL, 1 FROM generate_series(1, 12) g;"
          " INSERT INTO leave_leavesegment (document, start_date, start_half, end_date, end_half, address, leave_id,"
          " leave_type_id) SELECT 'doc', date '2021-03-01' + g, false, date '2021-03-02' + g, true, NULL, (g + 1) / 2,"
          " NULL FROM generate_series(1, 24) g;"
          " INSERT INTO notifications_notification (level, unread, actor_object_id, verb, description,"
          " target_object_id, action_object_object_id, timestamp, public, action_object_content_type_id,"
          " actor_content_type_id, recipient_id, target_content_type_id, deleted, emailed, data) SELECT 'info', true,"
          " g::text, 'verb', 'd', NULL, NULL, timestamptz '2020-01-01 10:00+05:30', true, NULL, 1, 1, NULL, false,"
          " false, '{}' FROM generate_series(1, 20) g;")

CASCADE = [{"table": "leave_leavesegment", "column": "leave_id", "references": "leave_leave", "on_delete": "CASCADE",
            "to_column": None, "module": "leave", "model_name": "LeaveSegment", "pk_column": None}]


def _relation(**kw) -> dict:
    return {"table": "leave_leavesegment", "column": "leave_id", "references": "leave_leave", "on_delete": "CASCADE",
            "to_column": None, "module": None, "model_name": None, "pk_column": None, **kw}


def archive(job_id: str, **kw) -> dict:
    """The genuine archive.due of policy 7 (leave.Leave on public.leave_leave, 30 days), with kw replacing fields."""
    return {"v": 1, "type": "archive.due", "job_id": job_id, "ts": now_ms(), "requested_by": None, "attempt": 1,
            "policy_id": 7, "module": "leave", "model_name": "Leave", "table": "leave_leave", "pk_column": "id",
            "timestamp_column": "timestamp", "cutoff": now_ms() - 31 * DAY, "batch_size": 100, "max_rows": None,
            "purge_before": None, "archived_by": None, "dry_run": False, "relations": CASCADE, **kw}


def backup(job_id: str, config_id: int, record_id: int, **kw) -> dict:
    return {"v": 1, "type": "backup.requested", "job_id": job_id, "ts": now_ms(), "requested_by": None,
            "attempt": 1, "record_id": record_id, "config_id": config_id, "config_name": "a", "backup_type": "FULL",
            "tables": ["auth_group"], "modules": [], "storage_path": "fusion/a", "retention_days": 7, **kw}


def outcomes(brokers: str, prefix: str, job_ids, timeout: float = 120) -> dict:
    """How every job in job_ids ended: its final (SUCCESS or FAILED) status event, or, for a request the database
    refused, its dead letter ({"status": "DEAD_LETTER", "error": the fusion.error header, "statuses": every
    status event published under its job id})."""
    want = set(job_ids)

    def final(statuses, letters):
        out = {}
        for m in letters:
            e = fusion_events.decode(m.value())
            if e["job_id"] in want:
                error = dict(m.headers() or [])["fusion.error"].decode()
                out[e["job_id"]] = {"status": "DEAD_LETTER", "error": error, "statuses": []}
        for m in statuses:
            e = fusion_events.decode(m.value())
            if e["job_id"] in want:
                if e["job_id"] in out and out[e["job_id"]]["status"] == "DEAD_LETTER":
                    out[e["job_id"]]["statuses"].append(e)
                elif e["status"] != "RUNNING":
                    out[e["job_id"]] = e
        return out

    deadline = time.monotonic() + timeout
    while True:
        letters = consume(brokers, prefix + "jobs.dlq", lambda got: False, timeout=2)
        statuses = consume(brokers, prefix + "jobs.completed", lambda got: False, timeout=2)
        got = final(statuses, letters)
        if want <= set(got) or time.monotonic() > deadline:
            break
    assert want <= set(got), f"no outcome for {want - set(got)} within {timeout} s"
    return got


def assert_refused(got: dict, expected: dict) -> None:
    """Every job was dead-lettered, never run, with no status event under its job id (so no record moved), and an
    error that names the refusal: all fragments of expected[job] appear."""
    problems = []
    for job, fragments in expected.items():
        e = got[job]
        err = e["error"] or ""
        if e["status"] != "DEAD_LETTER" or e["statuses"] or "refused" not in err or not all(f in err for f in fragments):
            problems.append(f"{fragments}: {e['status']} {err!r} statuses={e.get('statuses')}")
    assert not problems, "\n".join(problems)


def _authid(conninfo: str, role: str):
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT oid, rolname, rolvaliduntil FROM pg_authid WHERE rolname = %s", (role,))
        return cur.fetchall()


def test_archive_attacks_are_refused_and_change_nothing(brokers, topic_prefix, fusion_db, workers):
    psql(fusion_db, USERS)
    psql(fusion_db, LEAVES)
    # A login role whose validity ended long ago: what the old worker deleted from pg_authid.
    victim = f"fbt_victim_{uuid.uuid4().hex[:8]}"
    psql(fusion_db, f"CREATE ROLE {victim} LOGIN VALID UNTIL '2001-01-01'")
    try:
        genuine = archive(str(uuid.uuid4()))
        add_policy(fusion_db, genuine, archive_after_days=30)  # policy 7: leave.Leave, no delete_after_days
        notif = {**archive(str(uuid.uuid4())), "policy_id": 8, "module": "notifications", "model_name": "Notification",
                 "table": "notifications_notification", "relations": None}
        add_policy(fusion_db, notif, active=False, archive_after_days=1)  # policy 8, inactive
        before, role_before = table_digests(fusion_db), _authid(fusion_db, victim)
        assert role_before, "the victim role was not created"

        now = now_ms()
        attacks = {
            ("pg_catalog.pg_authid", "system schema"):
                archive("", table=["pg_catalog", "pg_authid"], pk_column="oid", timestamp_column="rolvaliduntil",
                        cutoff=now, relations=None),
            ("information_schema.sql_parts", "system schema"):
                archive("", table=["information_schema", "sql_parts"], pk_column="feature_id",
                        timestamp_column="feature_id", relations=None),
            ("pg_toast.pg_toast_1260", "system schema"):
                archive("", table=["pg_toast", "pg_toast_1260"], pk_column="chunk_id", timestamp_column="chunk_id",
                        relations=None),
            ("backup_archive_archivedrecord", "own tables"):
                archive("", table="backup_archive_archivedrecord", timestamp_column="archived_at", relations=None),
            ("cutoff", "archive_after_days 30"): archive("", cutoff=now + DAY),
            ("purge_before", "no delete_after_days"): archive("", purge_before=now - 400 * DAY),
            ("policy_id 999", "names no ArchivePolicy"): archive("", policy_id=999),
            ("policy 7 is leave.Leave on public.leave_leave", "public.notifications_notification"):
                archive("", table="notifications_notification", relations=None),
            ("policy 8", "not active"): {**notif, "cutoff": now - 2 * DAY},
            ("relations[0].table pg_catalog.pg_authid", "system schema"):
                archive("", relations=[_relation(table=["pg_catalog", "pg_authid"], column="oid")]),
            ("relations[0]", "not a foreign key"):
                archive("", relations=[_relation(table="notifications_notification", column="recipient_id")]),
        }
        expected = {}
        for fragments, ev in attacks.items():
            ev = {**ev, "job_id": str(uuid.uuid4())}
            expected[ev["job_id"]] = fragments
            publish(brokers, topic_prefix + "archive.due", f"{ev['module']}.{ev['model_name']}",
                    fusion_events.encode(ev))
        w = workers.start(fusion_db, role="all")
        got = outcomes(brokers, topic_prefix, expected)
        assert_refused(got, expected)
        assert all("nothing was changed" in got[j]["error"] for j in expected)
        assert _authid(fusion_db, victim) == role_before, "pg_authid changed"
        assert table_digests(fusion_db) == before, "an attack changed rows"

        # The genuine request of policy 7 still runs: 10 old leaves and their 20 segments move.
        publish(brokers, topic_prefix + "archive.due", "leave.Leave", fusion_events.encode(genuine))
        final = outcomes(brokers, topic_prefix, [genuine["job_id"]])[genuine["job_id"]]
        assert final["status"] == "SUCCESS", f"{final['error']}\n{workers.log(w)}"
        assert (final["stats"]["archived"], final["stats"]["cascaded"]) == (10, 20), final["stats"]
        assert psql(fusion_db, "SELECT count(*) FROM leave_leave").strip() == "2"
    finally:
        psql(fusion_db, f"DROP ROLE IF EXISTS {victim}")


def _tree(root: Path) -> dict:
    """Every file under root except the ledger, with the BLAKE2b of its bytes."""
    return {str(p.relative_to(root)): hashlib.blake2b(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".ledger" not in p.parts}


def test_backup_attacks_are_refused_and_change_nothing(brokers, topic_prefix, fusion_db, storage_root, keypair,
                                                       workers):
    pub, _ = keypair
    psql(fusion_db, USERS)
    a_cfg, _, _ = add_config_and_record(fusion_db, name="a", storage_path="fusion/a", tables=["auth_group"],
                                        retention_days=7)
    b_cfg, b_rec, _ = add_config_and_record(fusion_db, name="b", storage_path="fusion/b", tables=["auth_group"],
                                            retention_days=1)
    # Configuration b's folder holds an old backup: retention run there by a forged request would reach it.
    old = storage_root / "fusion" / "b" / f"{uuid.uuid4()}.fbak"
    old.parent.mkdir(parents=True)
    old.write_bytes(os.urandom(4096))
    os.utime(old, (1_000_000_000, 1_000_000_000))
    files_before = _tree(storage_root)

    def record_of_a(tables=("auth_group",)) -> tuple[int, str]:
        """A fresh QUEUED record of configuration a for a new job (what Django writes when it asks)."""
        job = str(uuid.uuid4())
        with psycopg2.connect(fusion_db) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO backup_archive_backuprecord (configuration_id, job_id, backup_type, status,"
                        " requested_at, file_path, error_message, attempt, worker, verify_status, verify_message,"
                        " tables) VALUES (%s, %s, 'FULL', 'QUEUED', now(), '', '', 1, '', '', '', %s) RETURNING id",
                        (a_cfg, job, psycopg2.extras.Json(list(tables))))
            return cur.fetchone()[0], job

    attacks = []
    rec, job = record_of_a([["pg_catalog", "pg_authid"]])
    attacks.append((("tables[0] pg_catalog.pg_authid", "system schema"),
                    backup(job, a_cfg, rec, tables=[["pg_catalog", "pg_authid"]])))
    rec, job = record_of_a()
    attacks.append((("storage_path", '"fusion/a"', '"fusion/b"'),
                    backup(job, a_cfg, rec, storage_path="fusion/b", retention_days=1)))
    rec, job = record_of_a()
    attacks.append((("retention_days 7", "says 0"), backup(job, a_cfg, rec, retention_days=0)))
    rec, job = record_of_a()
    attacks.append((("tables differ", "public.auth_user"), backup(job, a_cfg, rec, tables=["auth_group", "auth_user"])))
    rec, job = record_of_a()
    attacks.append(((f"record {b_rec} belongs to configuration {b_cfg}",), backup(job, a_cfg, b_rec)))
    rec, job = record_of_a()
    decoy = str(uuid.uuid4())
    attacks.append(((f"record {rec} is job {job}", f"job_id {decoy}"), backup(decoy, a_cfg, rec)))
    attacks.append((("record_id 999999 names no BackupRecord",), backup(str(uuid.uuid4()), a_cfg, 999999)))
    before = table_digests(fusion_db)
    expected = {}
    for fragments, ev in attacks:
        expected[ev["job_id"]] = fragments
        publish(brokers, topic_prefix + "backup.requested", str(ev["config_id"]), fusion_events.encode(ev))
    w = workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="all")
    got = outcomes(brokers, topic_prefix, expected)
    assert_refused(got, expected)
    assert _tree(storage_root) == files_before, "a refused backup wrote or removed files"
    assert old.is_file(), "configuration b's old artifact was removed"
    # No status was published for a refused request, so the recorder moved no record: every row is as it was.
    assert table_digests(fusion_db) == before, "a refused backup changed rows"

    # The genuine request still runs, into configuration a's own folder; its table list is the record's in another
    # order and spelling ("x" is ["public", "x"]).
    rec, job = record_of_a(["django_content_type", "auth_group"])
    publish(brokers, topic_prefix + "backup.requested", str(a_cfg), fusion_events.encode(
        backup(job, a_cfg, rec, tables=[["public", "auth_group"], "django_content_type"])))
    final = outcomes(brokers, topic_prefix, [job])[job]
    assert final["status"] == "SUCCESS", f"{final['error']}\n{workers.log(w)}"
    assert final["file_path"] == f"fusion/a/{job}.fbak" and (storage_root / final["file_path"]).is_file()
    assert old.is_file()


def test_a_forged_request_under_a_real_job_id_cannot_fail_the_genuine_one(brokers, topic_prefix, fusion_db,
                                                                          storage_root, keypair, workers):
    """The forger copies a queued record's real job id (they are visible on the topic) into a request for another
    folder. It is refused without a status event, so the record stays QUEUED and the genuine request, arriving
    after it, still runs."""
    pub, _ = keypair
    psql(fusion_db, USERS)
    cfg, rec, job = add_config_and_record(fusion_db, name="a", storage_path="fusion/a", tables=["auth_group"],
                                          retention_days=7)
    forged = backup(job, cfg, rec, storage_path="fusion/elsewhere")
    publish(brokers, topic_prefix + "backup.requested", str(cfg), fusion_events.encode(forged))
    w = workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="all")
    got = outcomes(brokers, topic_prefix, [job])
    assert_refused(got, {job: ("storage_path", '"fusion/elsewhere"')})
    assert psql(fusion_db, f"SELECT status, attempt FROM backup_archive_backuprecord WHERE id = {rec}").strip() == \
        "QUEUED|1"
    publish(brokers, topic_prefix + "backup.requested", str(cfg), fusion_events.encode(backup(job, cfg, rec)))

    def done():
        return psql(fusion_db, f"SELECT status FROM backup_archive_backuprecord WHERE id = {rec}").strip() == "SUCCESS"

    deadline = time.monotonic() + 120
    while not done() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert done(), workers.log(w)
    assert (storage_root / "fusion" / "a" / f"{job}.fbak").is_file()
    assert not (storage_root / "fusion" / "elsewhere").exists()


def test_event_run_is_checked_too(bin, fusion_db, storage_root, keypair, tmp_path):
    """`fusion-backup event run` runs the same job functions, so the same refusals hold without a broker."""
    pub, _ = keypair
    psql(fusion_db, USERS)
    before = table_digests(fusion_db)
    ev = archive(str(uuid.uuid4()), table=["pg_catalog", "pg_authid"], pk_column="oid",
                 timestamp_column="rolvaliduntil", cutoff=now_ms(), relations=None)
    r, out = run_event(bin, fusion_events.encode(ev), tmp_path, "--pg", fusion_db)
    assert r.returncode == 15 and out["status"] == "FAILED" and out["error_code"] == "denied", (r.stderr, out)
    assert "pg_catalog.pg_authid" in out["error"], out["error"]
    ev = backup(str(uuid.uuid4()), 1, 1)
    r, out = run_event(bin, fusion_events.encode(ev), tmp_path, "--pg", fusion_db, "--storage-root",
                       str(storage_root), "--public-key", str(pub))
    assert r.returncode == 15 and out["error_code"] == "denied" and "record_id 1 names no BackupRecord" in out["error"]
    assert table_digests(fusion_db) == before
    assert _tree(storage_root) == {}
