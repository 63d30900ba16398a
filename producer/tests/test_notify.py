"""Failure mails (backup_archive/notify.py): each failed backup attempt and each failed verification is mailed
once, to ADMINS or NOTIFY_RECIPIENTS, found in the table because the C recorder writes it with SQL."""
from __future__ import annotations

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

from backup_archive.models import BackupConfiguration, BackupRecord, Status
from backup_archive.notify import notify_failures
from backup_archive.scheduler import Scheduler

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


def _as_recorder(record: BackupRecord, **columns: Any) -> None:
    """Changes the row with SQL, as the C recorder does: no Django signal fires."""
    sets = ", ".join(f"{k} = %s" for k in columns)
    with connection.cursor() as cur:
        cur.execute(f"UPDATE backup_archive_backuprecord SET {sets} WHERE id = %s", [*columns.values(), record.pk])


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
