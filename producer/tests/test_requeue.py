"""The republish sweep (records left QUEUED are sent again with their job id), the verify mode setting, and the
admin's views of verification and archived rows. Real Kafka; the worker side is in test_end_to_end.py."""
from __future__ import annotations

import datetime as dt
import json
import uuid
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

import fusion_events
from backup_archive import publisher, services
from backup_archive.models import ArchivedRecord, BackupConfiguration, BackupRecord, Status
from backup_archive.scheduler import Scheduler
from tests.conftest import Topics

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def config(db) -> BackupConfiguration:
    return BackupConfiguration.objects.create(name="nightly", modules=["sampleapp"])


def _record(config: BackupConfiguration, status: str = Status.QUEUED, minutes_ago: float = 0,
            published_minutes_ago: "float | None" = None, **kw) -> BackupRecord:
    now = timezone.now()
    published = now - dt.timedelta(minutes=published_minutes_ago) if published_minutes_ago is not None else None
    return BackupRecord.objects.create(configuration=config, job_id=uuid.uuid4(), backup_type="FULL", status=status,
                                       requested_at=now - dt.timedelta(minutes=minutes_ago), published_at=published,
                                       **kw)


def test_requeue_sends_stuck_records_again_with_their_job_id(kafka_topics: Topics, config) -> None:
    crashed = _record(config, minutes_ago=30)  # committed, then the process died before publishing
    unanswered = _record(config, minutes_ago=90, published_minutes_ago=60, attempt=2)  # sent, nobody took it
    _record(config, minutes_ago=1)  # just requested: its publish may be under way
    _record(config, minutes_ago=30, published_minutes_ago=2)  # published recently: give the workers time
    _record(config, Status.RUNNING, minutes_ago=30, published_minutes_ago=30)  # a worker has it
    _record(config, Status.FAILED, minutes_ago=30)
    out = StringIO()
    call_command("backup_requeue", "--older-than", "10", "--dry-run", stdout=out)
    assert out.getvalue().count("would send again") == 2 and kafka_topics.count("backup.requested") == 0

    before = timezone.now()
    call_command("backup_requeue", "--older-than", "10", stdout=out)
    events = [fusion_events.decode(v) for _, v in kafka_topics.read("backup.requested", 2)]
    by_job = {e["job_id"]: e for e in events}
    assert set(by_job) == {str(crashed.job_id), str(unanswered.job_id)}
    ev = by_job[str(unanswered.job_id)]
    assert ev["record_id"] == unanswered.pk and ev["attempt"] == 2 and ev["config_id"] == config.pk
    assert "Blog Article" in ev["tables"]  # the full event, rebuilt from the configuration
    for r in (crashed, unanswered):
        r.refresh_from_db()
        assert r.status == Status.QUEUED and r.published_at >= before - dt.timedelta(seconds=1)
    # Sent once per interval: right away again, nothing is due.
    out = StringIO()
    call_command("backup_requeue", "--older-than", "10", stdout=out)
    assert "no QUEUED record older than 10 min" in out.getvalue()
    assert kafka_topics.count("backup.requested") == 2


def test_scheduler_tick_runs_the_sweep(kafka_topics: Topics, settings, config) -> None:
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "REQUEUE_AFTER_MINUTES": 10}
    stuck = _record(config, minutes_ago=20)
    assert Scheduler().tick() == 1
    [(key, value)] = kafka_topics.read("backup.requested", 1)
    assert key == str(config.pk).encode() and fusion_events.decode(value)["job_id"] == str(stuck.job_id)
    assert Scheduler().tick() == 0
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "REQUEUE_AFTER_MINUTES": 0}  # off
    _record(config, minutes_ago=20)
    assert Scheduler().tick() == 0 and kafka_topics.count("backup.requested") == 1


def test_requeue_with_kafka_down_keeps_the_record_queued_and_says_why(settings, config) -> None:
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "BROKERS": "127.0.0.1:1", "PUBLISH_TIMEOUT": 1.0,
                              "TOPIC_PREFIX": "down."}
    stuck = _record(config, minutes_ago=20)
    with pytest.raises(CommandError, match="1 of 1 record"):
        call_command("backup_requeue", "--older-than", "10", stdout=StringIO())
    stuck.refresh_from_db()
    # A broker outage is not the job's failure: still QUEUED, the reason visible, retried after the interval.
    assert stuck.status == Status.QUEUED and "sending it again failed" in stuck.error_message
    assert "down.backup.requested" in stuck.error_message
    assert services.republish_queued(10) == []
    publisher.reset()


def test_requeue_fails_a_record_whose_event_cannot_be_built(kafka_topics: Topics, config) -> None:
    BackupConfiguration.objects.filter(pk=config.pk).update(modules=["uninstalled_app"])
    stuck = _record(config, minutes_ago=20)
    [r] = services.republish_queued(10)
    assert r.error and "uninstalled_app" in r.error
    stuck.refresh_from_db()
    assert stuck.status == Status.FAILED and "cannot be sent again" in stuck.error_message
    assert kafka_topics.count("backup.requested") == 0


def test_verify_mode_comes_from_the_setting(kafka_topics: Topics, settings, config) -> None:
    record = _record(config, Status.SUCCESS, file_path="configs/1/a.fbak")
    services.request_verify(record)
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "VERIFY_MODE": "restore"}
    services.request_verify(record)
    modes = [fusion_events.decode(v)["mode"] for _, v in kafka_topics.read("backup.requested", 2)]
    assert sorted(modes) == ["integrity", "restore"]  # default integrity, then the setting
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "VERIFY_MODE": "thorough"}
    with pytest.raises(ImproperlyConfigured, match="VERIFY_MODE"):
        services.request_verify(record)


def test_verify_slot_without_a_successful_backup_requests_nothing(kafka_topics: Topics, config) -> None:
    BackupConfiguration.objects.filter(pk=config.pk).update(verify_schedule="0 3 * * *",
                                                            last_verify_scheduled_at=dt.datetime(2026, 5, 1, 4))
    _record(config, Status.FAILED)
    _record(config, Status.SUCCESS, file_path="")  # no artifact to check
    assert Scheduler(now=dt.datetime(2026, 5, 2, 4)).tick() == 0
    config.refresh_from_db()
    assert config.last_verify_scheduled_at == dt.datetime(2026, 5, 2, 3)  # the slot is spent, not retried forever
    assert kafka_topics.count("backup.requested") == 0


def test_admin_shows_verification_and_archived_rows(client, config) -> None:
    admin = get_user_model().objects.create_superuser("admin", "admin@example.org", "pw")
    client.force_login(admin)
    ok = _record(config, Status.SUCCESS, file_path="a/ok.fbak", verify_status=Status.SUCCESS,
                 last_verified_at=timezone.now())
    _record(config, Status.SUCCESS, file_path="a/bad.fbak", verify_status=Status.FAILED,
            verify_message="manifest: authentication failed at offset 1031", last_verified_at=timezone.now())
    _record(config, Status.SUCCESS, file_path="a/new.fbak")
    page = client.get("/admin/backup_archive/backuprecord/?verified=failed").content.decode()
    assert "FAILED: manifest: authentication failed" in page and "1 backup record" in page
    assert "1 backup record" in client.get("/admin/backup_archive/backuprecord/?verified=never").content.decode()
    assert "last verification" in page  # the filter's title
    assert client.get(f"/admin/backup_archive/backuprecord/{ok.pk}/change/").status_code == 200

    env = {"v": 1, "table": ["public", "leave_leave"], "pk": "id",
           "row": {"id": 7, "applicant": "ravi <b>", "days": None}}
    a = ArchivedRecord.objects.create(module="leave", model_name="Leave", original_id="7", data=json.dumps(env))
    page = client.get(f"/admin/backup_archive/archivedrecord/{a.pk}/change/").content.decode()
    assert "public.leave_leave" in page
    assert "applicant  &quot;ravi &lt;b&gt;&quot;" in page and "days       null" in page  # escaped, aligned
    # A row that is not an envelope (hand-made) still shows, raw.
    b = ArchivedRecord.objects.create(module="leave", model_name="Leave", original_id="8", data="not json")
    assert b.row is None and b.table_name == ""
    page = client.get(f"/admin/backup_archive/archivedrecord/{b.pk}/change/").content.decode()
    assert "not a version-1 envelope" in page
    assert ArchivedRecord(data=json.dumps({**env, "table": ["HR", "Leave Log"]})).table_name == '"HR"."Leave Log"'
