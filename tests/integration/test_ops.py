"""The operator's tools against the real broker: replay with its loop guard, tail, status, topics create, and the
worker's Prometheus endpoint."""
from __future__ import annotations

import json
import socket
import urllib.request
import uuid

import fusion_events
from conftest import consume, kafka_config, psql, publish, source_signature, wait_for
from flow import add_config_and_record, add_policy, archive_event, backup_event, now_ms, record


def _kafka_args(brokers: str, prefix: str) -> list[str]:
    return ["--brokers", brokers, "--topic-prefix", prefix]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _messages(brokers: str, topic: str, enough: int, timeout: float = 8) -> list:
    """The messages of topic, read until `enough` arrived or timeout (a count below `enough` proves none came)."""
    return consume(brokers, topic, lambda got: len(got) >= enough, timeout=timeout)


def _finished(conninfo: str, record_id: int, attempt: int):
    r = record(conninfo, record_id)
    return r if r["status"] in ("SUCCESS", "FAILED") and r["attempt"] >= attempt else None


def test_replay_reruns_a_failed_job_once_its_cause_is_fixed_and_guards_loops(bin, brokers, topic_prefix, fusion_db,
                                                                            storage_root, keypair, workers):
    pub, _ = keypair
    config_id, record_id, job_id = add_config_and_record(fusion_db, tables=["Late Table"])
    publish(brokers, topic_prefix + "backup.requested", str(config_id),
            backup_event(job_id, config_id, record_id, ["Late Table"]))
    port = _free_port()
    workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="all",
                  extra=("--metrics-listen", f"127.0.0.1:{port}"))
    rec = wait_for(lambda: _finished(fusion_db, record_id, 1), timeout=60, what="the first attempt")
    assert rec["status"] == "FAILED" and "Late Table" in rec["error_message"]

    # status names the failure; a dry run says what it would do and sends nothing.
    st = bin.run("status", *_kafka_args(brokers, topic_prefix), check=True).stdout
    failed_section = st.split("failed (latest status FAILED")[1].split("running:")[0]
    assert job_id in failed_section and "Late Table" in failed_section, st
    assert "none yet" in st.split("failed (latest")[0], "no backup has succeeded yet"
    dry = bin.run("replay", "--dry-run", "--pg", fusion_db, *_kafka_args(brokers, topic_prefix), check=True).stdout
    assert f"would    {job_id}" in dry and "attempt 2" in dry
    # ... after printing the request in full, as it would be sent
    shown = [json.loads(line.split(None, 1)[1]) for line in dry.splitlines() if line.startswith("request  ")]
    assert len(shown) == 1 and shown[0]["job_id"] == job_id and shown[0]["attempt"] == 2, dry
    assert shown[0]["type"] == "backup.requested" and shown[0]["tables"] == ["Late Table"], shown
    assert len(_messages(brokers, topic_prefix + "backup.requested", 2)) == 1, "the dry run sent something"
    # The same facts as one JSON document each (--json).
    sj = json.loads(bin.run("status", "--json", *_kafka_args(brokers, topic_prefix), check=True).stdout)
    assert sj["failed"] >= 1 and sj["last_success"] == [], sj
    [f] = [x for x in sj["failed_jobs"] if x["job_id"] == job_id]
    assert f["job_type"] == "backup" and "Late Table" in f["error"] and f["attempt"] == 1, f
    assert {x["topic"] for x in sj["lag"]} == {topic_prefix + "backup.requested", topic_prefix + "archive.due"}, sj
    rj = json.loads(bin.run("replay", "--dry-run", "--json", "--pg", fusion_db, *_kafka_args(brokers, topic_prefix),
                            check=True).stdout)
    assert rj["ok"] is True and rj["dry_run"] is True and (rj["replayed"], rj["refused"]) == (1, 0), rj
    [req] = [x for x in rj["results"] if x["action"] == "request"]
    assert req["job_id"] == job_id and req["event"]["attempt"] == 2, req
    [would] = [x for x in rj["results"] if x["action"] == "would"]
    assert would["job_id"] == job_id and "attempt 2" in would["detail"], would
    # Without a database to ask, nothing is replayed: the request's authority cannot be checked.
    blind = bin.run("replay", "--dry-run", *_kafka_args(brokers, topic_prefix), check=True).stdout
    assert f"refused  {job_id}" in blind and "--pg" in blind and "0 replayed, 1 refused" in blind, blind

    # Fix the cause, replay: the same job runs again as attempt 2 and the record becomes SUCCESS.
    psql(fusion_db, 'CREATE TABLE "Late Table" (id int primary key, "Note" text); '
                    "INSERT INTO \"Late Table\" VALUES (1, 'tab\there')")
    out = bin.run("replay", "--job-id", job_id, "--pg", fusion_db, *_kafka_args(brokers, topic_prefix),
                  check=True).stdout
    assert f"replayed {job_id}" in out and "1 replayed, 0 refused" in out
    rec = wait_for(lambda: _finished(fusion_db, record_id, 2), timeout=60, what="the replayed attempt")
    assert rec["status"] == "SUCCESS" and rec["attempt"] == 2 and rec["error_message"] == ""
    assert (storage_root / rec["file_path"]).is_file()

    # Nothing is FAILED any more: a second replay finds nothing to do.
    again = bin.run("replay", "--pg", fusion_db, *_kafka_args(brokers, topic_prefix), check=True).stdout
    assert "0 replayed" in again

    # Metrics saw one failure and one success of a backup.
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'fusion_backup_jobs_total{type="backup",status="SUCCESS"} 1' in body
    assert 'fusion_backup_jobs_total{type="backup",status="FAILED"} 1' in body
    assert f'fusion_backup_last_backup_success_timestamp_seconds{{config_id="{config_id}"}}' in body
    assert "fusion_backup_job_duration_seconds_bucket" in body


def test_replay_refuses_a_job_past_the_attempt_limit(bin, brokers, topic_prefix, fusion_db, storage_root, keypair,
                                                     workers):
    pub, _ = keypair
    config_id, record_id, job_id = add_config_and_record(fusion_db, tables=["never_there"])
    # The record has been through attempt 2 already: the recorder accepts at most the record's attempt + 1.
    psql(fusion_db, f"UPDATE backup_archive_backuprecord SET attempt = 2 WHERE id = {record_id}")
    publish(brokers, topic_prefix + "backup.requested", str(config_id),
            backup_event(job_id, config_id, record_id, ["never_there"], attempt=3))
    workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="all")
    wait_for(lambda: _finished(fusion_db, record_id, 3), timeout=60, what="attempt 3 to fail")
    out = bin.run("replay", "--max-attempts", "3", *_kafka_args(brokers, topic_prefix), check=True).stdout
    assert f"refused  {job_id}" in out and "attempt 4 would exceed --max-attempts 3" in out
    assert "0 replayed, 1 refused" in out


def test_replay_from_the_dlq_and_tail(bin, brokers, topic_prefix, fusion_db, storage_root, keypair, workers):
    pub, _ = keypair
    publish(brokers, topic_prefix + "archive.due", b"x.y", b"\xc1 not msgpack")
    workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="all")
    consume(brokers, topic_prefix + "jobs.dlq", lambda got: len(got) >= 1)
    # A dead letter that does not decode has no type, hence no topic of its own: it is never sent back by its
    # (unauthenticated) source-topic header.
    out = bin.run("replay", "--from", "dlq", "--pg", fusion_db, *_kafka_args(brokers, topic_prefix),
                  check=True).stdout
    assert "refused  undecodable dead letter" in out and "archive.due" in out and "0 replayed, 1 refused" in out, out
    assert len(_messages(brokers, topic_prefix + "archive.due", 2)) == 1, "the undecodable letter was sent back"

    config_id, record_id, job_id = add_config_and_record(fusion_db, tables=["auth_group"])
    publish(brokers, topic_prefix + "backup.requested", str(config_id),
            backup_event(job_id, config_id, record_id, ["auth_group"]))
    wait_for(lambda: _finished(fusion_db, record_id, 1), timeout=60, what="the backup")
    tail = bin.run("tail", "--from-beginning", "--count", "2", "--timeout", "30",
                   *_kafka_args(brokers, topic_prefix), check=True).stdout.splitlines()
    assert len(tail) == 2 and all(job_id[:8] in line and "backup" in line for line in tail)
    assert "RUNNING" in tail[0]
    js = bin.run("tail", "--json", "--from-beginning", "--count", "1", "--timeout", "30",
                 *_kafka_args(brokers, topic_prefix), check=True).stdout
    assert f'"job_id":"{job_id}"' in js and '"type":"job.status"' in js


def test_topics_create_is_idempotent(bin, brokers):
    prefix = f"ops{uuid.uuid4().hex[:8]}."
    for _ in range(2):
        out = bin.run("topics", "create", "--partitions", "5", *_kafka_args(brokers, prefix), check=True).stdout
        assert f"topic {prefix}backup.requested: ready" in out and f"topic {prefix}jobs.dlq: ready" in out
    from confluent_kafka.admin import AdminClient
    md = AdminClient(kafka_config(brokers, "ops")).list_topics(timeout=10)
    assert len(md.topics[prefix + "archive.due"].partitions) == 5
    assert len(md.topics[prefix + "jobs.completed"].partitions) == 6
    bad = bin.run("topics", "create", "--partitions", "0", *_kafka_args(brokers, prefix))
    assert bad.returncode == 2 and "--partitions must be 1..10000" in bad.stderr
    bad = bin.run("topics", "create", "--replication-factor", "0", *_kafka_args(brokers, prefix))
    assert bad.returncode == 2 and "--replication-factor must be 1..32" in bad.stderr
    # The factor reaches the broker: this one-node broker cannot hold 3 replicas, and says so.
    other = f"ops{uuid.uuid4().hex[:8]}."
    bad = bin.run("topics", "create", "--replication-factor", "3", *_kafka_args(brokers, other))
    assert bad.returncode != 0 and "replication" in bad.stderr.lower(), bad.stderr


def test_a_database_that_is_down_is_retried_with_backoff_then_failed(brokers, topic_prefix, workers):
    from flow import archive_event, now_ms
    job_id = str(uuid.uuid4())
    publish(brokers, topic_prefix + "archive.due", "down.T",
            archive_event(job_id, 1, "t", "id", "created", now_ms(), module="down", model="T"))
    # Nothing listens on port 1: every connection attempt is refused, a transient failure.
    w = workers.start("host=127.0.0.1 port=1 dbname=nowhere connect_timeout=2", role="worker",
                      extra=("--retry-max", "2", "--retry-backoff-ms", "300"))
    msgs = consume(brokers, topic_prefix + "jobs.completed",
                   lambda got: any(fusion_events.decode(m.value())["status"] == "FAILED" for m in got), timeout=60)
    failed = [fusion_events.decode(m.value()) for m in msgs if fusion_events.decode(m.value())["status"] == "FAILED"]
    assert len(failed) == 1 and failed[0]["job_id"] == job_id
    assert "could not connect to PostgreSQL" in failed[0]["error"]
    log = workers.log(w)
    assert "retry 1 of 2 in 300 ms" in log and "retry 2 of 2 in 600 ms" in log, log
    # Exactly one RUNNING and one FAILED: the retries happen inside one attempt, not as new deliveries.
    assert [fusion_events.decode(m.value())["status"] for m in msgs].count("RUNNING") == 1


def test_replay_refuses_what_the_database_does_not_authorise_and_headers_that_lie(bin, brokers, topic_prefix,
                                                                                 fusion_db):
    """A forged FAILED status and forged dead letters: each request is printed, checked and refused or routed by
    its own type; nothing unauthorised reaches a request topic."""
    k = _kafka_args(brokers, topic_prefix)
    # A FAILED status whose request asks for a backup of pg_authid into a record that does not exist.
    forged_job = str(uuid.uuid4())
    forged_req = backup_event(forged_job, 1, 999999, [["pg_catalog", "pg_authid"]])
    forged = fusion_events.decode(forged_req)
    status = fusion_events.encode({
        "v": 1, "type": "job.status", "job_id": forged_job, "ts": now_ms(), "requested_by": None, "attempt": 1,
        "job_type": "backup", "status": "FAILED", "worker": "w9", "started_at": now_ms(), "completed_at": now_ms(),
        "record_id": forged["record_id"], "config_id": 1, "policy_id": None, "file_path": None, "file_size": None,
        "error": "please replay me", "stats": None, "request": forged_req})
    publish(brokers, topic_prefix + "jobs.completed", forged_job, status)
    out = bin.run("replay", "--pg", fusion_db, *k, check=True).stdout
    assert f"refused  {forged_job}" in out and "pg_catalog.pg_authid" in out and "0 replayed, 1 refused" in out, out
    shown = [json.loads(line.split(None, 1)[1]) for line in out.splitlines() if line.startswith("request  ")]
    assert shown and shown[0]["tables"] == [["pg_catalog", "pg_authid"]], out

    # Two dead letters carrying the same authorised archive.due: one header tells the truth, one claims the
    # backup topic. Only the truthful one is replayed, to the archive topic (by its type).
    policy_ev = archive_event(str(uuid.uuid4()), 7, "leave_leave", "id", "timestamp", now_ms() - 86_400_000,
                              module="leave", model="Leave")
    add_policy(fusion_db, policy_ev)
    lying, truthful = (archive_event(str(uuid.uuid4()), 7, "leave_leave", "id", "timestamp", now_ms() - 86_400_000,
                                     module="leave", model="Leave") for _ in range(2))
    lying_id, truthful_id = (fusion_events.decode(v)["job_id"] for v in (lying, truthful))
    for value, src in ((lying, "backup.requested"), (truthful, "archive.due")):
        # Both letters are the worker's and both originals were signed by Django (for the topic their type
        # belongs on): what is refused here is the lying header alone.
        publish(brokers, topic_prefix + "jobs.dlq", b"leave.Leave", value,
                headers=[("fusion.error", b"test"), ("fusion.source.topic", (topic_prefix + src).encode()),
                         ("fusion.time", str(now_ms()).encode())] +
                source_signature(topic_prefix + "archive.due", b"leave.Leave", value))
    dry = bin.run("replay", "--from", "dlq", "--dry-run", "--pg", fusion_db, *k, check=True).stdout
    assert f"would    {truthful_id}" in dry and f"refused  {lying_id}" in dry, dry
    assert len([line for line in dry.splitlines() if line.startswith("request  ")]) == 2, dry
    assert _messages(brokers, topic_prefix + "archive.due", 1) == [], "the dry run sent something"
    out = bin.run("replay", "--from", "dlq", "--pg", fusion_db, *k, check=True).stdout
    assert f"replayed {truthful_id}" in out and f"-> {topic_prefix}archive.due" in out, out
    assert f"refused  {lying_id}" in out and "header says it came from" in out, out
    assert "1 replayed, 1 refused" in out, out
    sent = _messages(brokers, topic_prefix + "archive.due", 2)
    assert [fusion_events.decode(m.value())["job_id"] for m in sent] == [truthful_id]
    assert fusion_events.decode(sent[0].value())["attempt"] == 2
    assert _messages(brokers, topic_prefix + "backup.requested", 1) == [], "a dead letter went to the backup topic"
