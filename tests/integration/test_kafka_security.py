"""Kafka security through the real local broker (deploy/local/services.sh): SASL_SSL only, SCRAM-SHA-512 for the
Python clients and PLAIN over TLS for the C ones, and ACLs per principal. Each refusal comes with the allowed
neighbour of the same call, so a refusal for an unrelated reason (a missing topic, a broker that is down) cannot
pass for the ACL at work.

    django    writes backup.requested, archive.due
    worker    reads those, writes jobs.completed, jobs.dlq
    recorder  reads jobs.completed, writes nothing
    ops       reads everything, writes the request topics (replay), creates topics
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

import fusion_events
from conftest import consume, kafka_config, publish, wait_for
from flow import add_config_and_record, backup_event, record

TOPICS = ("backup.requested", "archive.due", "jobs.completed", "jobs.dlq")


@pytest.fixture(scope="module", autouse=True)
def secured_broker() -> None:
    if not os.environ.get("FB_TEST_KAFKA_SECRETS") or not os.environ.get("FB_TEST_KAFKA_CA"):
        pytest.fail("FB_TEST_KAFKA_SECRETS / FB_TEST_KAFKA_CA are not set: the tests must run on the secured broker "
                    "of deploy/local/services.sh (source $FB_HOME/env.sh)")


def _produce(cfg: dict, topic: str) -> KafkaError | None:
    """Produces one message without idempotence (so that a missing WRITE shows as the topic's error, not as the
    producer id's) and returns the delivery error, None when the broker took it."""
    p = Producer({**cfg, "enable.idempotence": False, "acks": "all", "message.timeout.ms": 15000,
                  "retries": 0})
    got: list = []
    p.produce(topic, key=b"k", value=b"security test", on_delivery=lambda err, msg: got.append(err))
    p.flush(30)
    assert got, f"no delivery report for {topic}"
    return got[0]


def _refused(err: KafkaError | None) -> bool:
    return err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def _connect_errors(cfg: dict) -> tuple[list[KafkaError], Exception | None]:
    """Asks for metadata with cfg; returns the client errors seen and the exception (None: it was answered)."""
    errors: list[KafkaError] = []
    a = AdminClient({**cfg, "error_cb": errors.append, "socket.timeout.ms": 3000, "log_level": 0})
    try:
        a.list_topics(timeout=6)
        return errors, None
    except KafkaException as e:
        a.poll(1)  # serves the error callbacks
        return errors, e


def test_a_client_without_credentials_is_refused(brokers):
    # The control: with credentials, metadata is answered.
    _, exc = _connect_errors(kafka_config(brokers, "ops"))
    assert exc is None, f"the ops principal could not read metadata: {exc}"
    # Plaintext: the listener speaks TLS, nothing answers.
    _, exc = _connect_errors({"bootstrap.servers": brokers})
    assert exc is not None, "a PLAINTEXT client without credentials got metadata"
    # TLS without SASL: refused too.
    _, exc = _connect_errors({"bootstrap.servers": brokers, "security.protocol": "SSL",
                              "ssl.ca.location": os.environ["FB_TEST_KAFKA_CA"]})
    assert exc is not None, "a TLS client without SASL credentials got metadata"


def test_the_c_cli_without_credentials_is_refused(bin, brokers, topic_prefix):
    args = ("status", "--brokers", brokers, "--topic-prefix", topic_prefix)
    ok = bin.run(*args, timeout=120)
    assert ok.returncode == 0, f"the CLI as ops failed: {ok.stderr}"
    bare = bin.run(*args, timeout=120, env={"FB_KAFKA_USERNAME": "", "FB_KAFKA_PASSWORD_FILE": "",
                                            "FB_KAFKA_SECURITY_PROTOCOL": "SSL"})
    assert bare.returncode != 0, f"the CLI without SASL credentials read the topics:\n{bare.stdout}"


def test_a_wrong_password_is_refused_and_not_echoed(bin, brokers, topic_prefix, tmp_path: Path):
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password-7f3a\n")
    # Python, SCRAM-SHA-512
    cfg = {**kafka_config(brokers, "django"), "sasl.password": "not-the-password-7f3a"}
    errors, exc = _connect_errors(cfg)
    assert exc is not None, "a wrong SCRAM password got metadata"
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), f"not an authentication error: {errors}"
    # The C CLI, PLAIN over TLS: refused, and the password is in no message.
    r = bin.run("status", "--brokers", brokers, "--topic-prefix", topic_prefix, "--kafka-password-file", str(wrong),
                timeout=120)
    assert r.returncode != 0, f"the CLI with a wrong password read the topics:\n{r.stdout}"
    assert "Authentication" in r.stderr or "authentication" in r.stderr, r.stderr
    assert "not-the-password-7f3a" not in r.stderr + r.stdout


def test_the_django_principal_writes_requests_only(brokers, topic_prefix):
    django = kafka_config(brokers, "django")
    assert _produce(django, topic_prefix + "backup.requested") is None
    assert _produce(django, topic_prefix + "archive.due") is None
    for suffix in ("jobs.completed", "jobs.dlq"):
        err = _produce(django, topic_prefix + suffix)
        assert _refused(err), f"django wrote {suffix}: {err}"


def test_the_worker_principal_writes_statuses_and_dead_letters_only(brokers, topic_prefix):
    worker = kafka_config(brokers, "worker")
    assert _produce(worker, topic_prefix + "jobs.completed") is None
    assert _produce(worker, topic_prefix + "jobs.dlq") is None
    for suffix in ("backup.requested", "archive.due"):
        err = _produce(worker, topic_prefix + suffix)
        assert _refused(err), f"the worker wrote {suffix}: {err}"


def test_the_recorder_principal_writes_nothing(brokers, topic_prefix):
    recorder = kafka_config(brokers, "recorder")
    for suffix in TOPICS:
        err = _produce(recorder, topic_prefix + suffix)
        assert _refused(err), f"the recorder wrote {suffix}: {err}"
    # It still reads what it needs: the status the worker wrote above is there for it.
    publish(brokers, topic_prefix + "jobs.completed", b"k", b"x")
    c_cfg = kafka_config(brokers, "recorder")
    from confluent_kafka import Consumer

    c = Consumer({**c_cfg, "group.id": f"g-{topic_prefix}-recorder", "auto.offset.reset": "earliest"})
    c.subscribe([topic_prefix + "jobs.completed"])
    try:
        got = wait_for(lambda: (m := c.poll(0.5)) is not None and not m.error() and m, timeout=60,
                       what="the recorder to read jobs.completed")
        assert got.value() == b"x"
    finally:
        c.close()


def test_the_ops_principal_replays_but_cannot_forge_statuses(brokers, topic_prefix):
    ops = kafka_config(brokers, "ops")
    assert _produce(ops, topic_prefix + "backup.requested") is None
    err = _produce(ops, topic_prefix + "jobs.completed")
    assert _refused(err), f"ops wrote jobs.completed: {err}"


def test_a_request_reaches_success_with_each_role_under_its_own_principal(brokers, topic_prefix, fusion_db,
                                                                        storage_root, keypair, workers):
    """The whole path on SASL_SSL: django publishes, a worker (principal worker) runs the backup, a separate
    recorder (principal recorder) writes the outcome to BackupRecord."""
    pub, _ = keypair
    config_id, record_id, job_id = add_config_and_record(fusion_db, tables=["auth_group"])
    publish(brokers, topic_prefix + "backup.requested", str(config_id),
            backup_event(job_id, config_id, record_id, ["auth_group"]))
    w = workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="worker")
    r = workers.start(fusion_db, role="recorder")
    rec = wait_for(lambda: (x := record(fusion_db, record_id))["status"] in ("SUCCESS", "FAILED") and x,
                   timeout=120, what="BackupRecord to finish")
    assert rec["status"] == "SUCCESS", f"{rec['error_message']}\n{workers.log(w)}\n{workers.log(r)}"
    msgs = consume(brokers, topic_prefix + "jobs.completed",
                   lambda got: any(fusion_events.decode(m.value())["status"] == "SUCCESS" for m in got))
    assert any(fusion_events.decode(m.value())["job_id"] == job_id for m in msgs)
    assert "SASL authentication error" not in workers.log(w) + workers.log(r)
