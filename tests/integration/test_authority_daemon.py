"""Issue 10, the daemon's side, through the real broker and database with running workers: a Kafka message is a
request from an unknown sender, and neither the recorder, the ledger, the decoder nor a failing job may let one
fake, hide or pin what the database records.

Every request here has its matching configuration and record (record.tables = the event's tables, the
configuration's storage_path = the event's) or policy, so the tests stay valid with the workers' authority check."""
from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone

import fusion_events
from attack import (SKEW_MS, YEAR_9999_MS, add_archive_run, add_config, add_policy, add_record, archive_run_row,
                    db_now_ms, free_port, metrics, many_unknown_keys, record_row, request_digest, status)
from conftest import consume, psql, publish, wait_for
from flow import backup_event, now_ms, table_digests


def _events(msgs, job_id: str) -> list[dict]:
    return [e for e in (fusion_events.decode(m.value()) for m in msgs) if e["job_id"] == job_id]


def _finished(conninfo: str, record_id: int, what: str, timeout: float = 90) -> dict:
    return wait_for(lambda: (r := record_row(conninfo, record_id))["status"] in ("SUCCESS", "FAILED") and r,
                    timeout=timeout, what=what)


def _assert_ignored(port: int, forged: list, log: str) -> None:
    """The recorder's metrics count each forged status under its reason, once."""
    m = metrics(port)
    want: dict[str, int] = {}
    for reason, _ in forged:
        want[reason] = want.get(reason, 0) + 1
    for reason, n in want.items():
        got = m.get(f'fusion_backup_recorder_ignored_total{{reason="{reason}"}}')
        assert got == n, f"ignored[{reason}] = {got}, want {n}\n{log}"


def test_forged_statuses_leave_the_record_unchanged(brokers, topic_prefix, fusion_db, workers):
    c1 = add_config(fusion_db, "one", "fusion/one", ["auth_group"])
    c2 = add_config(fusion_db, "two", "fusion/two", ["auth_group"])
    verify_job = str(uuid.uuid4())
    rec_a, job_a = add_record(fusion_db, c1, ["auth_group"], status="RUNNING", verify_job_id=verify_job,
                              file_path="fusion/one/a.fbak")
    rec_b, job_b = add_record(fusion_db, c2, ["auth_group"])
    rec_marker, job_marker = add_record(fusion_db, c1, ["auth_group"])
    before = {rec_a: record_row(fusion_db, rec_a), rec_b: record_row(fusion_db, rec_b)}
    forged = [
        # attempt 1000 would pin the record against every real attempt
        ("attempt_too_high", status(job_a, "SUCCESS", record_id=rec_a, config_id=c1, attempt=1000,
                                    file_path="evil/x.fbak")),
        # job A's id, but record B's id: moves neither
        ("record_mismatch", status(job_a, "FAILED", record_id=rec_b, config_id=c2, error="forged")),
        ("record_mismatch", status(job_b, "SUCCESS", record_id=rec_a, config_id=c1, file_path="evil/y.fbak")),
        # the right job and record, another configuration
        ("config_mismatch", status(job_a, "SUCCESS", record_id=rec_a, config_id=c2, file_path="evil/z.fbak")),
        # a verify result for a job the record never asked for, dated year 9999
        ("verify_job_mismatch", status(str(uuid.uuid4()), "SUCCESS", job_type="verify", record_id=rec_a,
                                       config_id=c1, completed_at=YEAR_9999_MS)),
        # the record's verify job, but another configuration
        ("config_mismatch", status(verify_job, "FAILED", job_type="verify", record_id=rec_a, config_id=c2,
                                   error="forged verify", completed_at=YEAR_9999_MS)),
        # a job no record has
        ("no_record", status(str(uuid.uuid4()), "SUCCESS", record_id=rec_a, config_id=c1)),
        # started in year 9999, for the wrong record: not even the clamp is needed
        ("record_mismatch", status(job_a, "RUNNING", record_id=rec_b, config_id=c1, started_at=YEAR_9999_MS)),
    ]
    topic = topic_prefix + "jobs.completed"
    for _, ev in forged:  # one key: one partition, read in this order, the marker last
        publish(brokers, topic, b"forged", ev)
    publish(brokers, topic, b"forged", status(job_marker, "RUNNING", record_id=rec_marker, config_id=c1))
    port = free_port()
    w = workers.start(fusion_db, role="recorder", extra=("--metrics-listen", f"127.0.0.1:{port}"))
    wait_for(lambda: record_row(fusion_db, rec_marker)["status"] == "RUNNING", timeout=60,
             what="the marker status after the forged ones to be recorded")
    for rid, row in before.items():
        after = record_row(fusion_db, rid)
        changed = {k: (row[k], after[k]) for k in row if row[k] != after[k]}
        assert not changed, f"record {rid} changed by forged statuses: {changed}\n{workers.log(w)}"
    _assert_ignored(port, forged, workers.log(w))
    log = workers.log(w)
    assert "attempt is beyond the record's attempt + 1" in log and "reason verify_job_mismatch" in log, log


def test_future_times_are_clamped_so_nothing_is_pinned(brokers, topic_prefix, fusion_db, workers):
    c1 = add_config(fusion_db, "one", "fusion/one", ["auth_group"])
    verify_job = str(uuid.uuid4())
    rec, job = add_record(fusion_db, c1, ["auth_group"], status="SUCCESS", verify_job_id=verify_job,
                          file_path="fusion/one/a.fbak")
    rec2, job2 = add_record(fusion_db, c1, ["auth_group"])
    topic = topic_prefix + "jobs.completed"
    # Matching in every other respect, but dated year 9999: a verify result and a start.
    publish(brokers, topic, b"k", status(verify_job, "SUCCESS", job_type="verify", record_id=rec, config_id=c1,
                                         completed_at=YEAR_9999_MS))
    publish(brokers, topic, b"k", status(job2, "RUNNING", record_id=rec2, config_id=c1, started_at=YEAR_9999_MS))
    workers.start(fusion_db, role="recorder")
    row = wait_for(lambda: (r := record_row(fusion_db, rec))["verify_status"] == "SUCCESS" and r, timeout=60,
                   what="the verify result to be recorded")
    row2 = wait_for(lambda: (r := record_row(fusion_db, rec2))["status"] == "RUNNING" and r, timeout=60,
                    what="the RUNNING to be recorded")
    limit = datetime.fromtimestamp((db_now_ms(fusion_db) + SKEW_MS) / 1000, tz=timezone.utc)
    assert row["last_verified_at"] <= limit, f"verify time not clamped: {row['last_verified_at']}"
    assert row2["started_at"] <= limit, f"started_at not clamped: {row2['started_at']}"
    assert row["last_verified_at"].year < 9999 and row2["started_at"].year < 9999
    # Not pinned: a result dated later than the clamped one (a genuine verification 6 minutes on) replaces it.
    publish(brokers, topic, b"k", status(verify_job, "FAILED", job_type="verify", record_id=rec, config_id=c1,
                                         error="later, genuine", completed_at=now_ms() + 6 * 60 * 1000))
    wait_for(lambda: record_row(fusion_db, rec)["verify_status"] == "FAILED", timeout=60,
             what="a later verify result to replace the clamped one")


def test_80k_unknown_keys_go_to_the_dlq_and_the_next_job_runs(brokers, topic_prefix, fusion_db, storage_root,
                                                              keypair, workers):
    pub, _ = keypair
    hostile = many_unknown_keys(80000)
    c1 = add_config(fusion_db, "nightly", "fusion/nightly", ["auth_group"])
    rec, job = add_record(fusion_db, c1, ["auth_group"])
    # Same key: same partition, the hostile message first, the real job right behind it.
    publish(brokers, topic_prefix + "backup.requested", str(c1), hostile)
    publish(brokers, topic_prefix + "backup.requested", str(c1), backup_event(job, c1, rec, ["auth_group"]))
    w = workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="all")
    t0 = time.monotonic()
    row = _finished(fusion_db, rec, "the job behind the hostile message")
    took = time.monotonic() - t0
    assert row["status"] == "SUCCESS", f"{row['error_message']}\n{workers.log(w)}"
    dlq = consume(brokers, topic_prefix + "jobs.dlq", lambda got: len(got) >= 1)
    assert len(dlq) == 1 and dlq[0].value() == hostile
    why = dict((k, v.decode()) for k, v in dlq[0].headers())["fusion.error"]
    assert "limit" in why and "1024" in why, why
    print(f"hostile message dead-lettered and the next backup done {took:.1f} s after the worker started")


def test_failed_whose_error_was_cut_mid_character_is_published(brokers, topic_prefix, fusion_db, storage_root,
                                                               keypair, workers):
    """The archive planner prefixes a relation's error with its description cut to 300 bytes; with 63-byte names
    of 3-byte characters the cut falls inside a character. Such a FAILED used to be refused by the encoder, so
    the job ran again for ever and blocked its partition."""
    pub, _ = keypair
    euro = "€" * 21  # 63 bytes
    qi = '"' + euro + '"'
    psql(fusion_db, f"CREATE SCHEMA {qi}; CREATE TABLE {qi}.{qi} (id bigint PRIMARY KEY, created timestamptz NOT NULL);"
                    f"INSERT INTO {qi}.{qi} SELECT g, now() - interval '400 days' FROM generate_series(1, 5) g;")
    policy = add_policy(fusion_db, "attack", "Euro", euro, euro, "id", "created", archive_after_days=30)
    c1 = add_config(fusion_db, "after", "fusion/after", ["auth_group"])
    rec, job_after = add_record(fusion_db, c1, ["auth_group"])
    before = table_digests(fusion_db)
    job = str(uuid.uuid4())
    missing = "€" * 20 + "abc"  # 63 bytes, no such table or column
    rel = {"table": [euro, missing], "column": missing, "references": [euro, euro], "on_delete": "SET_DEFAULT",
           "to_column": None, "module": None, "model_name": None, "pk_column": None}
    ev = fusion_events.encode({
        "v": 1, "type": "archive.due", "job_id": job, "ts": now_ms(), "requested_by": None, "attempt": 1,
        "policy_id": policy, "module": "attack", "model_name": "Euro", "table": [euro, euro], "pk_column": "id",
        "timestamp_column": "created", "cutoff": now_ms() - 40 * 86400 * 1000, "batch_size": 100,
        "max_rows": None, "purge_before": None, "archived_by": None, "dry_run": False, "relations": [rel]})
    publish(brokers, topic_prefix + "archive.due", "attack.Euro", ev)
    w = workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="all")
    # The relation is no foreign key, so the database refuses it before the job runs: a dead letter whose reason
    # (with the 63-byte names in it) must still be valid UTF-8; had the job run, its FAILED must be (the planner
    # cuts the relation's description at 300 bytes, inside a character, which becomes '?').
    def outcome(_):
        letters = _events(consume(brokers, topic_prefix + "jobs.dlq", lambda got: False, timeout=2), job)
        failed = [e for e in _events(consume(brokers, topic_prefix + "jobs.completed", lambda got: False,
                                             timeout=2), job) if e["status"] == "FAILED"]
        return letters or failed

    wait_for(lambda: outcome(None), timeout=90, what="a dead letter or FAILED for the job")
    raw = consume(brokers, topic_prefix + "jobs.dlq", lambda got: False, timeout=2)
    mine = [m for m in raw if fusion_events.decode(m.value())["job_id"] == job]
    if mine:
        err = dict(mine[0].headers())["fusion.error"].decode("utf-8")  # strict: invalid UTF-8 raises
        assert "refused" in err and "not a foreign key" in err, err
    else:
        msgs = consume(brokers, topic_prefix + "jobs.completed", lambda got: False, timeout=2)
        err = [e for e in _events(msgs, job) if e["status"] == "FAILED"][0]["error"]
        if "does not exist" in err:
            assert "€€€?: referencing table" in err, err
    msgs = consume(brokers, topic_prefix + "jobs.completed", lambda got: False, timeout=2)
    starts = [e for e in _events(msgs, job) if e["status"] == "RUNNING" and e["stats"] is None]
    assert len(starts) <= 1, f"the job ran {len(starts)} times"
    assert table_digests(fusion_db) == before, "the refused archive job changed data"
    # ... and the worker is free for the next job.
    publish(brokers, topic_prefix + "backup.requested", str(c1), backup_event(job_after, c1, rec, ["auth_group"],
                                                                              storage_path="fusion/after",
                                                                              name="after"))
    assert _finished(fusion_db, rec, "the job after")["status"] == "SUCCESS"


def test_archive_statuses_reach_their_run_and_forged_ones_change_nothing(brokers, topic_prefix, fusion_db, workers):
    """The recorder applies an archive job's statuses to its ArchiveRun (job id and policy must name the same run,
    forward only, times clamped), as it does a backup's to its record."""
    p1 = add_policy(fusion_db, "notifications", "Notification", "public", "notifications_notification", "id",
                    "timestamp", 30)
    p2 = add_policy(fusion_db, "leave", "Leave", "public", "leave_leave", "id", "timestamp", 30)
    run_a, job_a = add_archive_run(fusion_db, p1)
    run_b, job_b = add_archive_run(fusion_db, p2)
    before = {run_a: archive_run_row(fusion_db, run_a), run_b: archive_run_row(fusion_db, run_b)}
    forged = [
        ("config_mismatch", status(job_a, "SUCCESS", job_type="archive", policy_id=p2)),  # A's job, B's policy
        ("attempt_too_high", status(job_b, "FAILED", job_type="archive", policy_id=p2, attempt=1000, error="x")),
        ("no_record", status(str(uuid.uuid4()), "FAILED", job_type="archive", policy_id=p1, error="decoy")),
        ("no_record", status(job_a, "FAILED", job_type="archive", error="no policy named")),
    ]
    topic = topic_prefix + "jobs.completed"
    for _, ev in forged:
        publish(brokers, topic, b"forged", ev)
    # then A's own outcome, started in year 9999 (clamped), failed: the marker
    publish(brokers, topic, b"forged", status(job_a, "FAILED", job_type="archive", policy_id=p1,
                                              started_at=YEAR_9999_MS, error="trigger refused the DELETE"))
    port = free_port()
    w = workers.start(fusion_db, role="recorder", extra=("--metrics-listen", f"127.0.0.1:{port}"))
    row = wait_for(lambda: (r := archive_run_row(fusion_db, run_a))["status"] == "FAILED" and r, timeout=60,
                   what="run A's FAILED to be recorded")
    assert row["error_message"] == "trigger refused the DELETE" and row["worker"] == "forger", row
    assert row["started_at"].timestamp() * 1000 <= db_now_ms(fusion_db) + SKEW_MS + 1000, "year 9999 not clamped"
    after_b = archive_run_row(fusion_db, run_b)
    assert after_b == before[run_b], f"run B changed by forged statuses: {after_b}"
    _assert_ignored(port, forged, workers.log(w))
    # a later RUNNING (a stale progress event) does not move a FAILED run back
    publish(brokers, topic, b"forged", status(job_a, "RUNNING", job_type="archive", policy_id=p1))
    publish(brokers, topic, b"forged", status(job_b, "RUNNING", job_type="archive", policy_id=p2))
    wait_for(lambda: archive_run_row(fusion_db, run_b)["status"] == "RUNNING", timeout=60, what="run B's RUNNING")
    assert archive_run_row(fusion_db, run_a)["status"] == "FAILED"


def test_decoy_ledger_entry_does_not_make_the_real_request_a_no_op(brokers, topic_prefix, fusion_db, storage_root,
                                                                   keypair, workers):
    pub, _ = keypair
    # A real, small job B succeeds and leaves its ledger entry.
    cb = add_config(fusion_db, "decoy", "fusion/decoy", ["auth_group"])
    rec_b, job_b = add_record(fusion_db, cb, ["auth_group"])
    value_b = backup_event(job_b, cb, rec_b, ["auth_group"], storage_path="fusion/decoy", name="decoy")
    publish(brokers, topic_prefix + "backup.requested", str(cb), value_b)
    w = workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="all")
    assert _finished(fusion_db, rec_b, "the decoy job")["status"] == "SUCCESS", workers.log(w)
    # The decoy: B's entry under the id of the real job A (what pre-running a decoy under a predicted id left).
    ca = add_config(fusion_db, "real", "fusion/real", ["auth_group", "django_content_type"])
    rec_a, job_a = add_record(fusion_db, ca, ["auth_group", "django_content_type"])
    ledger = storage_root / ".ledger"
    shutil.copy(ledger / f"{job_b}.success", ledger / f"{job_a}.success")
    publish(brokers, topic_prefix + "backup.requested", str(ca),
            backup_event(job_a, ca, rec_a, ["auth_group", "django_content_type"], storage_path="fusion/real",
                         name="real"))
    row = _finished(fusion_db, rec_a, "the real job")
    assert row["status"] == "SUCCESS", row["error_message"]
    assert row["file_path"] == f"fusion/real/{job_a}.fbak" and (storage_root / row["file_path"]).is_file()
    assert row["stats"]["tables"] == 2, row["stats"]
    assert "for a different request" in workers.log(w)

    # A stored SUCCESS whose artifact is gone is not republished. The request then goes to the authority check,
    # which refuses it (its record is already SUCCESS): a dead letter, and still only the one SUCCESS.
    (storage_root / f"fusion/decoy/{job_b}.fbak").unlink()
    publish(brokers, topic_prefix + "backup.requested", str(cb), value_b)
    wait_for(lambda: "does not hold up" in workers.log(w), timeout=60, what="the ledger entry to be distrusted")
    letters = consume(brokers, topic_prefix + "jobs.dlq", lambda got: bool(_events(got, job_b)), timeout=60)
    assert _events(letters, job_b), "the redelivered request was neither run nor refused"
    error = dict(letters[-1].headers())["fusion.error"].decode()
    assert "refused" in error and "SUCCESS" in error, error
    msgs = consume(brokers, topic_prefix + "jobs.completed", lambda got: False, timeout=3)
    successes = [e for e in _events(msgs, job_b) if e["status"] == "SUCCESS"]
    assert len(successes) == 1, "the redelivered request was answered from the ledger despite the missing artifact"


def test_a_ledger_success_whose_artifact_signature_fails_is_not_republished(brokers, topic_prefix, fusion_db,
                                                                             storage_root, keypair, workers):
    """The ledger's short cut (republish a stored SUCCESS) checks the artifact's signature like every reader: an
    artifact whose signature block was altered (its chain index still authenticates: the index key is not the
    signing key) does not get its SUCCESS published again."""
    pub, _ = keypair
    cfg = add_config(fusion_db, "resign", "fusion/resign", ["auth_group"])
    rec, job = add_record(fusion_db, cfg, ["auth_group"])
    value = backup_event(job, cfg, rec, ["auth_group"], storage_path="fusion/resign", name="resign")
    publish(brokers, topic_prefix + "backup.requested", str(cfg), value)
    w = workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="all")
    assert _finished(fusion_db, rec, "the job")["status"] == "SUCCESS", workers.log(w)
    artifact = storage_root / f"fusion/resign/{job}.fbak"
    data = bytearray(artifact.read_bytes())
    data[-40 - 298 + 200] ^= 0x01  # inside the signature block (FORMAT.md: 298 bytes before the 40-byte trailer)
    artifact.write_bytes(bytes(data))
    publish(brokers, topic_prefix + "backup.requested", str(cfg), value)
    wait_for(lambda: "does not hold up (the signature of" in workers.log(w), timeout=60,
             what="the ledger entry to be distrusted for its signature")
    msgs = consume(brokers, topic_prefix + "jobs.completed", lambda got: False, timeout=3)
    successes = [e for e in _events(msgs, job) if e["status"] == "SUCCESS"]
    assert len(successes) == 1, "a SUCCESS was republished for an artifact whose signature does not verify"


def test_a_request_delivered_too_often_is_not_run_again(brokers, topic_prefix, fusion_db, storage_root, keypair,
                                                        workers):
    """A job that OOM-kills the worker (or whose outcome never gets out) leaves its delivery count behind; at
    max_deliveries the worker answers with a minimal FAILED instead of running it yet again."""
    pub, _ = keypair
    c1 = add_config(fusion_db, "heavy", "fusion/heavy", ["auth_group"])
    rec, job = add_record(fusion_db, c1, ["auth_group"])
    value = backup_event(job, c1, rec, ["auth_group"], storage_path="fusion/heavy", name="heavy")
    ledger = storage_root / ".ledger"
    ledger.mkdir()
    # Five deliveries that never finished (the default max_deliveries is 5).
    (ledger / f"{job}.1.{request_digest(value)[:8].hex()}.deliveries").write_text("5\n")
    publish(brokers, topic_prefix + "backup.requested", str(c1), value)
    w = workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="all")
    row = _finished(fusion_db, rec, "the given-up job")
    assert row["status"] == "FAILED", workers.log(w)
    assert "not run again" in row["error_message"] and "delivered 6 times" in row["error_message"], row
    msgs = consume(brokers, topic_prefix + "jobs.completed",
                   lambda got: any(e["status"] == "FAILED" for e in _events(got, job)))
    failed = [e for e in _events(msgs, job) if e["status"] == "FAILED"][0]
    assert failed["request"] is None, "a given-up FAILED must not carry the request (replay is a person's call)"
    assert not [e for e in _events(msgs, job) if e["status"] == "RUNNING"], "the given-up job was started"
    assert not list(storage_root.rglob("*.fbak")), "the given-up job ran"
    assert "not run again" in workers.log(w)


def test_worker_name_is_validated_at_start_up(bin, brokers, fusion_db):
    for bad, why in [("bad\nname", "printable"), ("x" * 256, "1..255"), ("", None)]:
        r = subprocess.run([bin.worker, "--brokers", brokers, "--pg", fusion_db, "--worker-name", bad,
                            "--role", "bogus"], capture_output=True, text=True, timeout=30)
        if why is None:  # empty: the default host:pid is used; the bogus role is what stops it
            assert r.returncode == 2 and "--role" in r.stderr, r.stderr
            continue
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert "--worker-name" in r.stderr and why in r.stderr, r.stderr
