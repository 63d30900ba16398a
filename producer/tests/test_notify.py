"""Failure mails (backup_archive/notify.py): each failed backup attempt, each failed verification and each failed
archive run is mailed once, to ADMINS or NOTIFY_RECIPIENTS, found in the tables because the C recorder writes
them with SQL."""
from __future__ import annotations

import datetime as dt
import importlib
import uuid
from io import StringIO
from typing import Any

import pytest
from django.apps import apps
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

import fusion_events
from backup_archive import publisher, services
from backup_archive.models import ArchivePolicy, ArchiveRun, BackupConfiguration, BackupRecord, Status
from backup_archive.notify import notify_failures
from backup_archive.scheduler import Scheduler, slot_job_id
from tests.conftest import Topics

pytestmark = pytest.mark.django_db


@pytest.fixture
def config() -> BackupConfiguration:
    return BackupConfiguration.objects.create(name="nightly", modules=["sampleapp"])


def _record(config: BackupConfiguration, **kw: Any) -> BackupRecord:
    now = timezone.now()
    fields = dict(configuration=config, job_id=uuid.uuid4(), backup_type="FULL", status=Status.SUCCESS,
                  started_at=now, completed_at=now, worker="w1")
    fields.update(kw)
    return BackupRecord.objects.create(**fields)


def _as_recorder(record: Any, **columns: Any) -> None:
    """Changes the row (a BackupRecord or an ArchiveRun) with SQL, as the C recorder does: no Django signal fires."""
    sets = ", ".join(f"{k} = %s" for k in columns)
    with connection.cursor() as cur:
        cur.execute(f"UPDATE {record._meta.db_table} SET {sets} WHERE id = %s", [*columns.values(), record.pk])


def test_a_failed_backup_is_mailed_once_to_admins(config) -> None:
    r = _record(config, status=Status.QUEUED)
    _as_recorder(r, status="FAILED", error_message="pg: permission denied for table leave_leave")
    out = StringIO()
    call_command("backup_notify", stdout=out)
    [m] = mail.outbox
    assert m.to == ["backup-admins@example.org"] and m.from_email == "fusion-backup@example.org"
    assert m.subject == f"[Django] backup 'nightly' FAILED (record {r.pk}, attempt 1)"
    assert "Why: pg: permission denied for table leave_leave" in m.body and str(r.job_id) in m.body
    assert f"/admin/backup_archive/backuprecord/{r.pk}/change/" in m.body
    assert "1 failure(s) mailed to backup-admins@example.org" in out.getvalue()
    call_command("backup_notify", stdout=StringIO())
    assert len(mail.outbox) == 1  # once


def test_a_replay_that_fails_again_is_a_new_mail(config) -> None:
    r = _record(config, status=Status.FAILED, error_message="disk full")
    assert len(notify_failures()) == 1
    _as_recorder(r, attempt=2, error_message="disk still full")
    [again] = notify_failures()
    assert "attempt 2" in again.subject and "disk still full" in again.body
    assert len(mail.outbox) == 2 and notify_failures() == []


def test_a_failed_verification_is_mailed_once_per_verify_job(config) -> None:
    r = _record(config, file_path="configs/1/x.fbk", verify_job_id=uuid.uuid4())
    _as_recorder(r, verify_status="FAILED", verify_message="chunk 3: authentication failed",
                 last_verified_at=timezone.now())
    [n] = notify_failures()
    assert n.kind == "verify" and n.subject == f"verification of 'nightly' FAILED (record {r.pk})"
    assert "chunk 3: authentication failed" in n.body and "configs/1/x.fbk" in n.body
    assert notify_failures() == []
    _as_recorder(r, verify_job_id=str(uuid.uuid4()))  # the next verification, failing again
    assert [x.kind for x in notify_failures()] == ["verify"]
    assert len(mail.outbox) == 2


def test_successes_queued_and_running_are_not_mailed(config) -> None:
    _record(config)
    _record(config, status=Status.QUEUED)
    _record(config, status=Status.RUNNING)
    _record(config, verify_status=Status.SUCCESS, verify_job_id=uuid.uuid4())
    assert notify_failures() == [] and mail.outbox == []


def test_configured_recipients_none_and_dry_run(settings, config) -> None:
    _record(config, status=Status.FAILED, error_message="x")
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "NOTIFY_RECIPIENTS": []}
    out = StringIO()
    call_command("backup_notify", stdout=out)
    assert mail.outbox == [] and "nothing mailed" in out.getvalue()
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "NOTIFY_RECIPIENTS": ["dba@example.org", "ops@example.org"]}
    call_command("backup_notify", "--dry-run", stdout=out)
    assert mail.outbox == [] and "would mail: backup 'nightly' FAILED" in out.getvalue()
    call_command("backup_notify", stdout=StringIO())
    [m] = mail.outbox
    assert m.to == ["dba@example.org", "ops@example.org"]


class _Refusing(BaseEmailBackend):
    def send_messages(self, messages: Any) -> int:
        raise ConnectionRefusedError(111, "Connection refused")


def test_a_mail_server_that_refuses_leaves_the_failure_for_the_next_run(settings, config) -> None:
    r = _record(config, status=Status.FAILED, error_message="x")
    settings.EMAIL_BACKEND = f"{__name__}._Refusing"
    assert notify_failures() == []
    r.refresh_from_db()
    assert r.failure_notified_attempt is None
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert len(notify_failures()) == 1 and len(mail.outbox) == 1


def test_limit_per_run(settings, config) -> None:
    for _ in range(3):
        _record(config, status=Status.FAILED, error_message="x")
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "NOTIFY_LIMIT": 2}
    assert len(notify_failures()) == 2 and len(notify_failures()) == 1 and notify_failures() == []


def test_every_scheduler_tick_mails_new_failures(settings, config) -> None:
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "REQUEUE_AFTER_MINUTES": None}
    r = _record(config, status=Status.QUEUED)
    _as_recorder(r, status="FAILED", error_message="worker crashed")
    Scheduler().tick()
    assert [m.subject for m in mail.outbox] == [f"[Django] backup 'nightly' FAILED (record {r.pk}, attempt 1)"]


def test_migration_0004_marks_the_failures_that_already_exist(config) -> None:
    old = _record(config, status=Status.FAILED, attempt=3)
    old_verify = _record(config, verify_status=Status.FAILED, verify_job_id=uuid.uuid4())
    BackupRecord.objects.update(failure_notified_attempt=None, verify_notified_job_id=None)  # as before 0004
    migration = importlib.import_module("backup_archive.migrations.0004_failure_notifications")

    class Editor:
        connection = connection

    migration.mark_existing(apps, Editor())
    assert BackupRecord.objects.get(pk=old.pk).failure_notified_attempt == 3
    assert BackupRecord.objects.get(pk=old_verify.pk).verify_notified_job_id == old_verify.verify_job_id
    assert notify_failures() == []


def test_a_name_with_a_line_break_cannot_stop_the_mails(config) -> None:
    # Django refuses a subject with a line break (BadHeaderError): one such name would hold back every failure
    # mail behind it, run after run, or (if it went through) add headers. Names are quoted or folded instead.
    BackupConfiguration.objects.filter(pk=config.pk).update(name="nightly\nBcc: evil@example.org")
    _record(config, status=Status.FAILED, error_message="x")
    policy = ArchivePolicy.objects.create(module="sampleapp", model_name="Comment", timestamp_column="created")
    ArchivePolicy.objects.filter(pk=policy.pk).update(model_name="Comment\r\nBcc: evil@example.org")
    _run(ArchivePolicy.objects.get(pk=policy.pk), status=Status.FAILED, error_message="y")
    assert [n.kind for n in notify_failures()] == ["backup", "archive"] and len(mail.outbox) == 2
    assert "backup 'nightly\\nBcc: evil@example.org' FAILED" in mail.outbox[0].subject
    assert "archival of sampleapp.Comment Bcc: evil@example.org FAILED" in mail.outbox[1].subject
    for m in mail.outbox:
        assert m.bcc == [] and m.to == ["backup-admins@example.org"]
        headers = m.message().as_string().split("\n\n", 1)[0]
        assert m.message()["Bcc"] is None and "\nBcc:" not in headers and "\rBcc:" not in headers


# --- archive runs ------------------------------------------------------------------------------------------------

@pytest.fixture
def policy() -> ArchivePolicy:
    return ArchivePolicy.objects.create(module="sampleapp", model_name="Comment", timestamp_column="created",
                                        archive_after_days=30, schedule="0 3 * * *")


@pytest.fixture
def broker_down(settings) -> Any:
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "BROKERS": "127.0.0.1:1", "PUBLISH_TIMEOUT": 1.0,
                              "TOPIC_PREFIX": "down.", "REQUEUE_AFTER_MINUTES": None}
    yield settings
    publisher.reset()


def _run(policy: ArchivePolicy, **kw: Any) -> ArchiveRun:
    fields = dict(policy=policy, job_id=uuid.uuid4(), published_at=timezone.now())
    fields.update(kw)
    return ArchiveRun.objects.create(**fields)


def test_a_failed_archive_run_is_mailed_once(policy) -> None:
    run = _run(policy)
    _as_recorder(run, status="RUNNING", worker="w1", started_at=timezone.now())
    assert notify_failures() == []
    _as_recorder(run, status="FAILED", completed_at=timezone.now(),
                 error_message="lock timeout on sampleapp_comment after 3 tries: the job will be retried later")
    [n] = notify_failures()
    assert n.kind == "archive" and n.record_id == run.pk
    [m] = mail.outbox
    assert m.subject == f"[Django] archival of sampleapp.Comment FAILED (run {run.pk}, attempt 1)"
    assert m.to == ["backup-admins@example.org"]
    assert "Why: lock timeout on sampleapp_comment" in m.body and "table sampleapp_comment" in m.body
    assert str(run.job_id) in m.body and "worker     w1" in m.body
    assert f"/admin/backup_archive/archiverun/{run.pk}/change/" in m.body
    assert notify_failures() == [] and len(mail.outbox) == 1
    _as_recorder(run, attempt=2, error_message="still locked")  # a replay that fails again: a new failure
    [again] = notify_failures()
    assert "attempt 2" in again.subject and "still locked" in again.body and len(mail.outbox) == 2


def test_archive_successes_queued_running_and_dry_runs_that_succeed_are_not_mailed(policy) -> None:
    _run(policy)
    _run(policy, status=Status.RUNNING)
    _run(policy, status=Status.SUCCESS, stats={"archived": 10})
    _run(policy, status=Status.SUCCESS, dry_run=True)
    assert notify_failures() == [] and mail.outbox == []
    dry = _run(policy, dry_run=True, status=Status.FAILED, error_message="no such column created")
    [n] = notify_failures()
    assert n.subject == f"dry run of sampleapp.Comment FAILED (run {dry.pk}, attempt 1)"


def test_archive_failures_share_the_limit_and_come_after_backups(settings, config, policy) -> None:
    _run(policy, status=Status.FAILED, error_message="a")
    _record(config, status=Status.FAILED, error_message="b")
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "NOTIFY_LIMIT": 1}
    assert [n.kind for n in notify_failures()] == ["backup"]
    assert [n.kind for n in notify_failures()] == ["archive"]
    assert notify_failures() == []


def test_archive_failure_dry_run_and_no_recipients(settings, policy) -> None:
    _run(policy, status=Status.FAILED, error_message="x")
    out = StringIO()
    call_command("backup_notify", "--dry-run", stdout=out)
    assert mail.outbox == [] and "would mail: archival of sampleapp.Comment FAILED" in out.getvalue()
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "NOTIFY_RECIPIENTS": []}
    assert notify_failures() == [] and mail.outbox == []
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "NOTIFY_RECIPIENTS": ["dba@example.org"]}
    [m] = [notify_failures(), mail.outbox][1]
    assert m.to == ["dba@example.org"]


@pytest.mark.django_db(transaction=True)
def test_an_archive_request_kafka_did_not_take_is_a_failed_run_mailed_once(broker_down) -> None:
    policy = ArchivePolicy.objects.create(module="sampleapp", model_name="Comment", timestamp_column="created")
    req = services.request_archive(policy, None)
    assert req.published is False
    run = ArchiveRun.objects.get(pk=req.run_id)
    assert run.job_id == req.job_id and run.status == Status.FAILED and run.published_at is None
    assert run.error_message.startswith("not sent to the workers: ") and "down.archive.due" in run.error_message
    [m] = [notify_failures(), mail.outbox][1]
    assert "archival of sampleapp.Comment FAILED" in m.subject and "down.archive.due" in m.body
    assert notify_failures() == [] and len(mail.outbox) == 1


@pytest.mark.django_db(transaction=True)
def test_a_scheduled_slot_retried_while_kafka_is_down_is_mailed_once(broker_down) -> None:
    policy = ArchivePolicy.objects.create(module="sampleapp", model_name="Comment", timestamp_column="created",
                                          schedule="0 3 * * *")
    ArchivePolicy.objects.filter(pk=policy.pk).update(last_scheduled_at=dt.datetime(2026, 5, 1, 12))
    for hour in (12, 13, 14):  # three ticks, each sending the slot of 2 May 03:00 again under its job id
        assert Scheduler(now=dt.datetime(2026, 5, 2, hour)).tick() == 0
    [run] = ArchiveRun.objects.all()
    assert run.job_id == slot_job_id("archive", policy.pk, dt.datetime(2026, 5, 2, 3))
    assert run.status == Status.FAILED and run.attempt == 1
    assert len(mail.outbox) == 1 and "archival of sampleapp.Comment FAILED" in mail.outbox[0].subject


@pytest.mark.django_db(transaction=True)
def test_once_the_retried_slot_is_sent_the_workers_failure_is_mailed_too(kafka_topics: Topics, settings) -> None:
    up = settings.FUSION_BACKUP
    settings.FUSION_BACKUP = {**up, "BROKERS": "127.0.0.1:1", "PUBLISH_TIMEOUT": 1.0, "REQUEUE_AFTER_MINUTES": None}
    policy = ArchivePolicy.objects.create(module="sampleapp", model_name="Comment", timestamp_column="created",
                                          schedule="0 3 * * *")
    ArchivePolicy.objects.filter(pk=policy.pk).update(last_scheduled_at=dt.datetime(2026, 5, 1, 12))
    Scheduler(now=dt.datetime(2026, 5, 2, 12)).tick()
    assert len(mail.outbox) == 1  # Kafka did not take it
    publisher.reset()
    settings.FUSION_BACKUP = {**up, "REQUEUE_AFTER_MINUTES": None}
    assert Scheduler(now=dt.datetime(2026, 5, 2, 13)).tick() == 1
    [run] = ArchiveRun.objects.all()
    assert run.status == Status.QUEUED and run.published_at is not None and run.error_message == ""
    [(_, value)] = kafka_topics.read("archive.due", 1)
    ev = fusion_events.decode(value)
    assert ev["job_id"] == str(run.job_id) and ev["attempt"] == run.attempt == 1
    assert len(mail.outbox) == 1  # a run on its way is no failure
    _as_recorder(run, status="FAILED", completed_at=timezone.now(), error_message="worker: permission denied")
    [n] = notify_failures()
    assert n.kind == "archive" and "worker: permission denied" in n.body and len(mail.outbox) == 2


def test_a_job_id_of_another_policy_is_refused(policy) -> None:
    other = ArchivePolicy.objects.create(module="sampleapp", model_name="Article", timestamp_column="published_at")
    run = _run(other)
    with pytest.raises(services.Refused, match="already archive run"):
        services.request_archive(policy, None, job_id=run.job_id)
    assert ArchiveRun.objects.count() == 1
