"""Requests published by Django through the real local Kafka: shape, keys, reliability.

transaction=True everywhere: publishing happens on commit, which the default test transaction never does.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Dict

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.utils import timezone

import fusion_events
from backup_archive import publisher, services
from backup_archive.models import ArchivePolicy, BackupConfiguration, BackupRecord, Status
from tests.conftest import VECTORS, Topics

pytestmark = pytest.mark.django_db(transaction=True)


def vector_keys(event_type: str) -> set:
    """The key set of the golden vectors' decoded form for one type (what Django's events must match)."""
    index = json.loads((VECTORS / "valid" / "INDEX.json").read_text())
    prefix = event_type.replace(".", "_")
    keys = [set(json.loads((VECTORS / "valid" / f"{v['name']}.json").read_text()))
            for v in index if v["name"].startswith(prefix)]
    assert keys and all(k == keys[0] for k in keys)
    return keys[0]


def assert_canonical(value: bytes) -> Dict[str, Any]:
    ev = fusion_events.decode(value)
    assert fusion_events.encode(ev) == value, "Django must publish the canonical encoding"
    assert set(ev) == vector_keys(ev["type"])
    return ev


@pytest.fixture
def user(db):
    return get_user_model().objects.create_superuser("admin", "admin@example.org", "pw")


@pytest.fixture
def config(db) -> BackupConfiguration:
    return BackupConfiguration.objects.create(
        name="sample nightly", modules=["sampleapp"], tables=[["audit", "Log Entry"]], schedule="0 2 * * *",
        retention_days=14)


@pytest.fixture
def policy(db) -> ArchivePolicy:
    return ArchivePolicy.objects.create(module="sampleapp", model_name="Article", timestamp_column="published_at",
                                        archive_after_days=365, delete_after_days=3650, batch_size=200,
                                        max_rows_per_run=10000)


def test_request_backup_publishes_the_contract_event(kafka_topics: Topics, config, user) -> None:
    before = services.to_ms(timezone.now())
    record = services.request_backup(config, user)
    record.refresh_from_db()
    assert record.status == Status.QUEUED and record.error_message == ""
    [(key, value)] = kafka_topics.read("backup.requested", 1)
    assert key == str(config.pk).encode()  # one configuration's jobs stay in order on one partition
    ev = assert_canonical(value)
    assert ev["type"] == "backup.requested" and ev["job_id"] == str(record.job_id)
    assert ev["record_id"] == record.pk and ev["config_id"] == config.pk and ev["config_name"] == "sample nightly"
    assert ev["requested_by"] == user.pk and ev["attempt"] == 1 and ev["backup_type"] == "FULL"
    assert "Blog Article" in ev["tables"] and "Blog Article_tags" in ev["tables"]
    assert ev["tables"][-1] == ["audit", "Log Entry"]
    assert ev["modules"] == ["sampleapp"] and ev["retention_days"] == 14
    assert ev["storage_path"] == f"configs/{config.pk}"
    assert before - 1000 <= ev["ts"] <= services.to_ms(timezone.now()) + 1000


def test_request_archive_publishes_relations(kafka_topics: Topics, policy, user) -> None:
    req = services.request_archive(policy, user, dry_run=True)
    assert req.published is True, req.error
    [(key, value)] = kafka_topics.read("archive.due", 1)
    assert key == b"sampleapp.Article"
    ev = assert_canonical(value)
    assert ev["job_id"] == str(req.job_id) and ev["policy_id"] == policy.pk
    assert ev["table"] == "Blog Article" and ev["pk_column"] == "id" and ev["timestamp_column"] == "published_at"
    assert ev["dry_run"] is True and ev["batch_size"] == 200 and ev["max_rows"] == 10000
    assert ev["requested_by"] == user.pk and ev["archived_by"] == user.pk
    day = 86400 * 1000
    assert abs(ev["ts"] - 365 * day - ev["cutoff"]) < 5000
    assert abs(ev["ts"] - 3650 * day - ev["purge_before"]) < 5000
    on_delete = {(r["table"], r["column"]): r["on_delete"] for r in ev["relations"]}
    assert on_delete[("sampleapp_comment", "article_id")] == "CASCADE"
    assert on_delete[("sampleapp_bookmark", "article_id")] == "SET_NULL"
    assert on_delete[("sampleapp_citation", "article_id")] == "PROTECT"


def test_request_verify(kafka_topics: Topics, config) -> None:
    record = BackupRecord.objects.create(configuration=config, job_id=uuid.uuid4(), backup_type="FULL",
                                         status=Status.SUCCESS, file_path="configs/1/x.fbk")
    job = services.request_verify(record, None, mode="restore")
    [(key, value)] = kafka_topics.read("backup.requested", 1)
    ev = assert_canonical(value)
    assert key == str(config.pk).encode()
    assert ev["type"] == "backup.verify" and ev["job_id"] == str(job) and ev["mode"] == "restore"
    assert ev["record_id"] == record.pk and ev["file_path"] == "configs/1/x.fbk" and ev["requested_by"] is None
    record.refresh_from_db()
    assert record.verify_status == Status.QUEUED


def test_rolled_back_request_emits_nothing(kafka_topics: Topics, config, policy) -> None:
    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        with transaction.atomic():
            services.request_backup(config, None)
            services.request_archive(policy, None)
            raise Abort()
    assert not BackupRecord.objects.exists()
    # Publish something after it, so "nothing arrived" is not just "not arrived yet".
    services.request_backup(config, None)
    assert len(kafka_topics.read("backup.requested", 1)) == 1
    assert kafka_topics.count("backup.requested") == 1
    assert kafka_topics.count("archive.due") == 0


def test_publish_waits_for_the_commit(kafka_topics: Topics, config) -> None:
    with transaction.atomic():
        record = services.request_backup(config, None)
        time.sleep(0.5)
        assert kafka_topics.count("backup.requested") == 0  # a worker must never see an uncommitted record
    assert kafka_topics.count("backup.requested") == 1
    assert BackupRecord.objects.get(pk=record.pk).status == Status.QUEUED


def test_invalid_event_rolls_the_request_back(kafka_topics: Topics, config) -> None:
    config.storage_path = "../escape"
    config.save()
    with pytest.raises(fusion_events.InvalidEvent, match="storage_path"):
        services.request_backup(config, None)
    assert not BackupRecord.objects.exists()


def test_requests_are_signed_by_the_app(kafka_topics: Topics, config, policy) -> None:
    """Both request topics: the message verifies with the app's public key, for its own topic only."""
    from fusion_events import sign

    from tests.conftest import django_signer

    services.request_backup(config, None)
    services.request_archive(policy, None)
    keyring = sign.Keyring([django_signer().public_key])
    for suffix in ("backup.requested", "archive.due"):
        [(key, value, headers)] = kafka_topics.read(suffix, 1, headers=True)
        assert sign.verify(keyring, kafka_topics.name(suffix), key, value, headers) == django_signer().key_id
        with pytest.raises(sign.Untrusted, match="bad signature"):
            sign.verify(keyring, kafka_topics.name("jobs.completed"), key, value, headers)


def test_no_signing_key_publishes_nothing(settings, kafka_topics: Topics, config, tmp_path) -> None:
    """Without SIGNING_KEY_FILE (or with an unusable one) nothing is sent; the record says what to set."""
    fb = dict(settings.FUSION_BACKUP)
    fb.pop("SIGNING_KEY_FILE")
    settings.FUSION_BACKUP = fb
    record = services.request_backup(config, None)
    record.refresh_from_db()
    assert record.status == Status.FAILED
    assert "SIGNING_KEY_FILE" in record.error_message and "keygen --sign" in record.error_message
    loose = tmp_path / "loose.key"
    loose.write_text("ed25519-seed " + "11" * 32 + "\n")
    loose.chmod(0o644)
    settings.FUSION_BACKUP = {**fb, "SIGNING_KEY_FILE": str(loose)}
    record = services.request_backup(config, None)
    record.refresh_from_db()
    assert record.status == Status.FAILED and "readable by others" in record.error_message
    assert kafka_topics.count("backup.requested") == 0


def test_broker_down_marks_the_record_failed(settings, config, policy) -> None:
    # Port 1 on loopback: nothing listens, every connection is refused at once.
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "BROKERS": "127.0.0.1:1", "PUBLISH_TIMEOUT": 2.0,
                              "TOPIC_PREFIX": "down."}
    t0 = time.monotonic()
    record = services.request_backup(config, None)
    record.refresh_from_db()
    assert record.status == Status.FAILED
    assert "Kafka" in record.error_message and "down.backup.requested" in record.error_message
    assert "127.0.0.1:1" in record.error_message  # the hint names the brokers to check
    assert record.completed_at is not None
    req = services.request_archive(policy, None)
    assert req.published is False and "down.archive.due" in req.error
    assert time.monotonic() - t0 < 15
    with pytest.raises(CommandError, match="failed"):
        call_command("backup_request", config.name)
    publisher.reset()


def test_admin_actions_publish(kafka_topics: Topics, client, user, config, policy) -> None:
    client.force_login(user)
    r = client.post("/admin/backup_archive/backupconfiguration/",
                    {"action": "backup_now", "_selected_action": [config.pk]}, follow=True)
    assert r.status_code == 200
    assert "1 request(s) sent" in r.content.decode()
    assert BackupRecord.objects.filter(configuration=config, requested_by=user).count() == 1
    r = client.post("/admin/backup_archive/archivepolicy/",
                    {"action": "archive_dry_run", "_selected_action": [policy.pk]}, follow=True)
    assert "1 request(s) sent" in r.content.decode()
    assert_canonical(kafka_topics.read("backup.requested", 1)[0][1])
    [(_, value)] = kafka_topics.read("archive.due", 1)
    assert fusion_events.decode(value)["dry_run"] is True
    # The record list renders with its computed columns.
    assert client.get("/admin/backup_archive/backuprecord/").status_code == 200
    assert client.get("/admin/backup_archive/archivedrecord/?q=x").status_code == 200


def test_management_commands(kafka_topics: Topics, config, policy, user, capsys) -> None:
    call_command("backup_request", config.name, "--user", "admin")
    call_command("archive_run", "sampleapp.Article", "--dry-run")
    call_command("archive_run", str(policy.pk))
    out = capsys.readouterr().out
    assert "backup of 'sample nightly' requested" in out and "dry run of sampleapp.Article requested" in out
    assert kafka_topics.count("backup.requested") == 1 and kafka_topics.count("archive.due") == 2
    rec = BackupRecord.objects.get()
    BackupRecord.objects.filter(pk=rec.pk).update(
        status=Status.SUCCESS, started_at=rec.requested_at, completed_at=rec.requested_at + timezone.timedelta(
            seconds=75), file_size=123456789)
    call_command("backup_status")
    out = capsys.readouterr().out
    assert "sample nightly" in out and "SUCCESS" in out and "117.7 MB" in out and "75s" in out
    with pytest.raises(CommandError, match="no backup configuration named or numbered 'nope'"):
        call_command("backup_request", "nope")
    with pytest.raises(CommandError, match="no archive policy"):
        call_command("archive_run", "x.Y")
