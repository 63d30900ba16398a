"""End to end through the real broker and database: events in, the worker daemon, completion events out, the
recorder updating BackupRecord; dead letters; the recorder's monotonic updates."""
from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import psycopg2

import fusion_events
from conftest import consume, psql, publish, wait_for
from flow import add_config_and_record, backup_event, now_ms, record, status_event


def _statuses(msgs) -> list[dict]:
    return [fusion_events.decode(m.value()) for m in msgs]


def test_backup_event_ends_as_successful_backuprecord_and_restores(bin, brokers, topic_prefix, fusion_db, new_db,
                                                                     storage_root, keypair, workers):
    pub, sec = keypair
    psql(fusion_db, "INSERT INTO auth_group (name) SELECT 'group ' || g FROM generate_series(1, 500) g;"
                    "INSERT INTO django_content_type (app_label, model) VALUES ('leave', 'leave'), ('Cpda', 'x y');")
    config_id, record_id, job_id = add_config_and_record(fusion_db, tables=["auth_group", "django_content_type"])
    publish(brokers, topic_prefix + "backup.requested", str(config_id),
            backup_event(job_id, config_id, record_id, ["auth_group", "django_content_type"]))
    w = workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="all")

    rec = wait_for(lambda: (r := record(fusion_db, record_id))["status"] in ("SUCCESS", "FAILED") and r,
                   timeout=90, what="BackupRecord to finish")
    assert rec["status"] == "SUCCESS", f"record failed: {rec['error_message']}\n{workers.log(w)}"
    artifact = storage_root / rec["file_path"]
    assert artifact.is_file(), f"{artifact} missing"
    assert artifact.stat().st_size == rec["file_size"]
    assert rec["file_path"].startswith("fusion/nightly/")
    assert rec["started_at"] is not None and rec["completed_at"] >= rec["started_at"]
    assert rec["stats"]["tables"] == 2 and rec["stats"]["rows"] == 502

    # The completion topic says RUNNING then SUCCESS for this job, with the same path and size.
    msgs = consume(brokers, topic_prefix + "jobs.completed",
                   lambda got: any(fusion_events.decode(m.value())["status"] == "SUCCESS" for m in got))
    events = [e for e in _statuses(msgs) if e["job_id"] == job_id]
    assert [e["status"] for e in events][0] == "RUNNING" and events[-1]["status"] == "SUCCESS"
    assert events[-1]["file_path"] == rec["file_path"] and events[-1]["file_size"] == rec["file_size"]

    # A backup is only a backup once it restores: into an empty database, tables created from the artifact.
    target = new_db()
    bin.run("restore", str(artifact), "--pg", target, "--create", "--secret-key", str(sec), check=True)
    assert psql(target, "SELECT count(*), min(name), max(name) FROM auth_group") == \
        psql(fusion_db, "SELECT count(*), min(name), max(name) FROM auth_group")
    assert psql(target, "SELECT app_label, model FROM django_content_type ORDER BY 1, 2") == \
        psql(fusion_db, "SELECT app_label, model FROM django_content_type ORDER BY 1, 2")


def test_redelivered_backup_is_not_run_twice(bin, brokers, topic_prefix, fusion_db, storage_root, keypair, workers):
    pub, _ = keypair
    config_id, record_id, job_id = add_config_and_record(fusion_db, tables=["auth_group"])
    value = backup_event(job_id, config_id, record_id, ["auth_group"])
    publish(brokers, topic_prefix + "backup.requested", str(config_id), value)
    publish(brokers, topic_prefix + "backup.requested", str(config_id), value)  # a redelivery / duplicate
    workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="all")
    msgs = consume(brokers, topic_prefix + "jobs.completed",
                   lambda got: sum(fusion_events.decode(m.value())["status"] == "SUCCESS" for m in got) >= 2)
    events = [e for e in _statuses(msgs) if e["job_id"] == job_id]
    successes = [e for e in events if e["status"] == "SUCCESS"]
    assert len(successes) == 2, events
    starts = [e for e in events if e["status"] == "RUNNING" and e["stats"] is None]  # progress events carry stats
    assert len(starts) == 1, f"the duplicate ran the job again: {events}"
    assert successes[0]["file_path"] == successes[1]["file_path"]
    files = [p for p in storage_root.rglob("*") if p.is_file() and ".ledger" not in p.parts]
    assert len(files) == 1, files
    assert record(fusion_db, record_id)["status"] == "SUCCESS"


def test_unknown_table_fails_with_clear_error_and_request_for_replay(brokers, topic_prefix, fusion_db, storage_root,
                                                                     keypair, workers):
    pub, _ = keypair
    config_id, record_id, job_id = add_config_and_record(fusion_db, tables=["no_such_table"])
    value = backup_event(job_id, config_id, record_id, ["no_such_table"])
    publish(brokers, topic_prefix + "backup.requested", str(config_id), value)
    workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="all")
    rec = wait_for(lambda: (r := record(fusion_db, record_id))["status"] in ("SUCCESS", "FAILED") and r,
                   timeout=60, what="BackupRecord to finish")
    assert rec["status"] == "FAILED"
    assert "no_such_table" in rec["error_message"]
    msgs = consume(brokers, topic_prefix + "jobs.completed",
                   lambda got: any(fusion_events.decode(m.value())["status"] == "FAILED" for m in got))
    failed = [e for e in _statuses(msgs) if e["status"] == "FAILED"][0]
    assert failed["request"] == value, "FAILED must carry the original request bytes for replay"
    assert not [p for p in storage_root.rglob("*") if p.is_file()], "a failed job left files behind"


def test_poison_message_goes_to_dlq_and_the_worker_keeps_consuming(brokers, topic_prefix, fusion_db, storage_root,
                                                                    keypair, workers):
    pub, _ = keypair
    poison = b"\x93\x01\x02\x03"  # a msgpack array, not a map
    publish(brokers, topic_prefix + "archive.due", b"leave.Leave", poison)
    bad_type = status_event(str(uuid.uuid4()), "SUCCESS", 1, 1)  # a status event on a job topic
    publish(brokers, topic_prefix + "backup.requested", b"1", bad_type)
    config_id, record_id, job_id = add_config_and_record(fusion_db, tables=["auth_group"])
    publish(brokers, topic_prefix + "backup.requested", str(config_id),
            backup_event(job_id, config_id, record_id, ["auth_group"]))
    workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="all")

    dlq = consume(brokers, topic_prefix + "jobs.dlq", lambda got: len(got) >= 2)
    assert len(dlq) == 2
    by_value = {m.value(): dict((k, v.decode()) for k, v in m.headers()) for m in dlq}
    h = by_value[poison]
    assert "not a map" in h["fusion.error"]
    assert h["fusion.source.topic"] == topic_prefix + "archive.due"
    assert int(h["fusion.source.offset"]) >= 0 and h["fusion.source.partition"].isdigit()
    assert h["fusion.worker"] == "w0" and int(h["fusion.time"]) > 0
    assert "does not belong" in by_value[bad_type]["fusion.error"]
    # ... and the good job behind them still ran.
    rec = wait_for(lambda: (r := record(fusion_db, record_id))["status"] in ("SUCCESS", "FAILED") and r,
                   timeout=60, what="the job after the poison message")
    assert rec["status"] == "SUCCESS", rec["error_message"]


def test_recorder_never_moves_a_record_backwards(brokers, topic_prefix, fusion_db, workers):
    config_id, record_id, job_id = add_config_and_record(fusion_db)
    topic = topic_prefix + "jobs.completed"
    t0 = now_ms()
    # Out of order and duplicated: SUCCESS arrives before RUNNING, then a stale FAILED of attempt 1 after a
    # SUCCESS of attempt 2, then the RUNNING again.
    for ev in [status_event(job_id, "RUNNING", record_id, config_id, attempt=1, started_at=t0),
               status_event(job_id, "FAILED", record_id, config_id, attempt=1, error="disk full", started_at=t0),
               status_event(job_id, "SUCCESS", record_id, config_id, attempt=2, file_path="a/b.fbk",
                            file_size=123, started_at=t0),
               status_event(job_id, "FAILED", record_id, config_id, attempt=1, error="late", started_at=t0),
               status_event(job_id, "RUNNING", record_id, config_id, attempt=2, started_at=t0),
               status_event(job_id, "SUCCESS", record_id, config_id, attempt=2, file_path="a/b.fbk",
                            file_size=123, started_at=t0)]:
        publish(brokers, topic, job_id, ev)
    # A marker job after them tells us when the recorder has read everything before it (one key, one partition
    # is not guaranteed across keys, so wait on the marker and then on the record's final state).
    workers.start(fusion_db, role="recorder")
    rec = wait_for(lambda: (r := record(fusion_db, record_id))["status"] == "SUCCESS" and r, timeout=60,
                   what="SUCCESS to be recorded")
    import time
    time.sleep(2)  # the remaining stale events are on the same partition (key = job_id) and come right after
    rec = record(fusion_db, record_id)
    assert rec["status"] == "SUCCESS" and rec["attempt"] == 2
    assert rec["file_path"] == "a/b.fbk" and rec["file_size"] == 123 and rec["error_message"] == ""
    assert rec["completed_at"] is not None


def test_sigterm_leaves_the_group_and_exits_cleanly(brokers, topic_prefix, fusion_db, storage_root, keypair, workers):
    pub, _ = keypair
    w = workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="all")
    wait_for(lambda: "assigned" in workers.log(w), timeout=60, what="the worker to join the group")
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=60) == 0, workers.log(w)
    assert "leaving the group" in workers.log(w)
