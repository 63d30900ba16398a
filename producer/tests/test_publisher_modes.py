"""FUSION_BACKUP['PUBLISHER'] = 'console' / 'disabled': a runserver without Kafka. The event is logged, nothing is
sent, and nothing claims it was: the record stays QUEUED and says why."""
from __future__ import annotations

import json
import logging

import pytest

from backup_archive.models import ArchivePolicy, BackupConfiguration, BackupRecord, Status
from backup_archive.services import request_archive, request_backup, request_verify
from tests.conftest import Topics

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def offline(settings, kafka_topics: Topics) -> Topics:
    """PUBLISHER=console, with the test's own topics on the real broker: "nothing was sent" is read off them."""
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "PUBLISHER": "console"}
    return kafka_topics


def test_console_logs_the_event_and_leaves_the_record_queued(offline: Topics, settings, caplog) -> None:
    caplog.set_level(logging.INFO, logger="backup_archive")
    config = BackupConfiguration.objects.create(name="dev", modules=["sampleapp"])
    record = request_backup(config)
    record.refresh_from_db()
    assert record.status == Status.QUEUED and record.published_at is None
    assert "not sent: FUSION_BACKUP['PUBLISHER'] is 'console'" in record.error_message
    [line] = [r.getMessage() for r in caplog.records if "PUBLISHER=console" in r.getMessage()]
    event = json.loads(line.split("event=", 1)[1])
    assert event["job_id"] == str(record.job_id) and event["type"] == "backup.requested"
    assert offline.count("backup.requested") == 0


def test_disabled_logs_one_line_only(offline: Topics, settings, caplog) -> None:
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "PUBLISHER": "disabled"}
    caplog.set_level(logging.INFO, logger="backup_archive")
    record = request_backup(BackupConfiguration.objects.create(name="dev", modules=["sampleapp"]))
    record.refresh_from_db()
    assert record.status == Status.QUEUED and "'disabled'" in record.error_message
    lines = [r.getMessage() for r in caplog.records if "PUBLISHER=disabled" in r.getMessage()]
    assert len(lines) == 1 and "event=" not in lines[0] and offline.prefix in lines[0]
    assert offline.count("backup.requested") == 0


def test_console_verify_and_archive_say_not_sent(offline: Topics) -> None:
    config = BackupConfiguration.objects.create(name="dev", modules=["sampleapp"])
    done = BackupRecord.objects.create(configuration=config, job_id="00000000-0000-4000-8000-000000000001",
                                       backup_type="FULL", status=Status.SUCCESS, file_path="configs/1/a.fbk")
    request_verify(done)
    done.refresh_from_db()
    assert done.verify_status == Status.QUEUED and "not sent" in done.verify_message
    policy = ArchivePolicy.objects.create(module="sampleapp", model_name="Article", timestamp_column="published_at")
    req = request_archive(policy)
    assert req.published is False and "not sent: FUSION_BACKUP['PUBLISHER'] is 'console'" in req.error
    assert offline.count("backup.requested") == 0 and offline.count("archive.due") == 0


def test_switching_to_kafka_lets_the_sweep_send_them(offline: Topics, settings) -> None:
    record = request_backup(BackupConfiguration.objects.create(name="dev", modules=["sampleapp"]))
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "PUBLISHER": "kafka"}
    from backup_archive.services import republish_queued

    [sent] = republish_queued(0)
    assert sent.record_id == record.pk and sent.error == ""
    record.refresh_from_db()
    assert record.status == Status.QUEUED and record.error_message == ""
    assert offline.count("backup.requested") == 1


def test_backup_request_command_says_it_was_only_logged(offline: Topics) -> None:
    from io import StringIO

    from django.core.management import call_command

    BackupConfiguration.objects.create(name="dev", modules=["sampleapp"])
    out = StringIO()
    call_command("backup_request", "dev", stdout=out)
    assert "status QUEUED (not sent: FUSION_BACKUP['PUBLISHER'] is 'console'" in out.getvalue()
