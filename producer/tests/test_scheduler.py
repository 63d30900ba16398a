"""The scheduler: cron slots, keyed deterministic job ids, catch-up, and one slot once across two processes."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from typing import Dict

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.utils import timezone

import fusion_events
from backup_archive.checks import job_id_secret
from backup_archive.models import ArchivePolicy, BackupConfiguration, BackupRecord
from backup_archive.scheduler import Scheduler, due_slots, slot_job_id
from tests.conftest import PRODUCER, Topics

UTC = dt.timezone.utc


def test_due_slots_bounded_catch_up(settings) -> None:
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "SCHEDULER_TIMEZONE": "UTC"}
    after = dt.datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    now = dt.datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    slots, skipped = due_slots("0 * * * *", after, now, 3)
    # slots 01:00 .. 10:00 are due (10 of them); only the newest 3 are kept
    assert skipped == 7 and len(slots) == 3
    assert [s.astimezone(UTC).hour for s in slots] == [8, 9, 10]
    assert due_slots("0 * * * *", now, now, 3) == ([], 0)  # the slot at `after` itself was already handled


def test_cron_is_read_in_the_project_time_zone() -> None:
    # TIME_ZONE is Asia/Kolkata (+05:30): "0 2 * * *" is 02:00 India time, 20:30 UTC the day before.
    slots, _ = due_slots("0 2 * * *", dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2026, 1, 2, tzinfo=UTC), 5)
    assert [s.astimezone(UTC) for s in slots] == [dt.datetime(2026, 1, 1, 20, 30, tzinfo=UTC)]


def test_slot_job_id_is_deterministic() -> None:
    slot = dt.datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    same = slot.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30)))  # same instant, India time
    assert slot_job_id("backup", 3, slot) == slot_job_id("backup", 3, same)
    assert slot_job_id("backup", 3, slot) != slot_job_id("backup", 4, slot)
    assert slot_job_id("backup", 3, slot) != slot_job_id("archive", 3, slot)
    assert str(slot_job_id("backup", 3, slot)) == str(slot_job_id("backup", 3, slot)).lower()


def test_slot_job_id_is_keyed_not_a_public_uuid5(settings) -> None:
    """Anyone can compute a uuid5 of public values, and pre-run a decoy under a future slot's id; nobody without
    the secret can compute these."""
    slot = dt.datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    keyed = slot_job_id("backup", 3, slot)
    old_scheme = uuid.uuid5(uuid.UUID("6f1c2b7e-4d1a-5e2f-9b3c-8a7d6e5f4c3b"), "backup:3:2026-03-01T02:00:00Z")
    assert keyed != old_scheme and keyed.version == 8 and keyed.variant == uuid.RFC_4122
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "JOB_ID_SECRET": "another-secret-of-enough-length"}
    rekeyed = slot_job_id("backup", 3, slot)
    assert rekeyed != keyed and rekeyed == slot_job_id("backup", 3, slot)
    # Unset: a key derived from SECRET_KEY (not SECRET_KEY itself), different for a different SECRET_KEY.
    settings.FUSION_BACKUP = {k: v for k, v in settings.FUSION_BACKUP.items() if k != "JOB_ID_SECRET"}
    derived = slot_job_id("backup", 3, slot)
    assert derived not in (keyed, rekeyed) and derived == slot_job_id("backup", 3, slot)
    settings.SECRET_KEY = "another-django-secret-key"
    assert slot_job_id("backup", 3, slot) != derived
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "JOB_ID_SECRET": "short"}
    with pytest.raises(ImproperlyConfigured, match="at least 16"):
        slot_job_id("backup", 3, slot)


def test_system_check_warns_without_an_explicit_job_id_secret(settings) -> None:
    assert [m.id for m in job_id_secret()] == []  # the test settings set one
    settings.FUSION_BACKUP = {k: v for k, v in settings.FUSION_BACKUP.items() if k != "JOB_ID_SECRET"}
    [warning] = job_id_secret()
    assert warning.id == "backup_archive.W001" and "JOB_ID_SECRET" in warning.msg and warning.hint
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "JOB_ID_SECRET": "short"}
    [error] = job_id_secret()
    assert error.id == "backup_archive.E001" and "at least 16" in error.msg
    settings.FUSION_BACKUP = {k: v for k, v in settings.FUSION_BACKUP.items() if k != "JOB_ID_SECRET"}
    assert "backup_archive.W001" in {m.id for m in run_checks()}


def _local(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> dt.datetime:
    """A datetime as the test project stores it (USE_TZ=False: naive, Asia/Kolkata)."""
    return dt.datetime(y, mo, d, h, mi)


@pytest.mark.django_db(transaction=True)
def test_missed_slots_catch_up_once(kafka_topics: Topics, settings) -> None:
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "CATCHUP_SLOTS": 2}
    config = BackupConfiguration.objects.create(name="hourly", modules=["sampleapp"], schedule="0 * * * *")
    BackupConfiguration.objects.filter(pk=config.pk).update(last_scheduled_at=_local(2026, 5, 1, 9, 0))
    now = _local(2026, 5, 1, 12, 30)  # 10:00, 11:00 and 12:00 were missed; the bound keeps 11:00 and 12:00
    assert Scheduler(now=now).tick() == 2
    records = list(BackupRecord.objects.order_by("requested_at"))
    assert [r.requested_at for r in records] == [_local(2026, 5, 1, 11), _local(2026, 5, 1, 12)]
    slot = timezone.make_aware(_local(2026, 5, 1, 12), timezone.get_default_timezone())
    assert records[-1].job_id == slot_job_id("backup", config.pk, slot)
    config.refresh_from_db()
    assert config.last_scheduled_at == _local(2026, 5, 1, 12)
    assert Scheduler(now=now).tick() == 0  # nothing twice
    assert Scheduler(now=_local(2026, 5, 1, 13, 0)).tick() == 1  # and the next slot on time
    got = sorted(fusion_events.decode(v)["job_id"] for _, v in kafka_topics.read("backup.requested", 3))
    assert got == sorted(str(r.job_id) for r in BackupRecord.objects.all())
    assert kafka_topics.count("backup.requested") == 3


@pytest.mark.django_db(transaction=True)
def test_replayed_slot_is_not_requested_twice(kafka_topics: Topics) -> None:
    """A scheduler that requested a slot but lost its state update must not request it again."""
    config = BackupConfiguration.objects.create(name="daily", schedule="0 2 * * *")
    BackupConfiguration.objects.filter(pk=config.pk).update(last_scheduled_at=_local(2026, 5, 1, 3))
    assert Scheduler(now=_local(2026, 5, 2, 3)).tick() == 1
    BackupConfiguration.objects.filter(pk=config.pk).update(last_scheduled_at=_local(2026, 5, 1, 3))  # lost
    assert Scheduler(now=_local(2026, 5, 2, 3)).tick() == 0
    assert BackupRecord.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_archive_policy_scheduled_daily(kafka_topics: Topics) -> None:
    policy = ArchivePolicy.objects.create(module="sampleapp", model_name="Comment", timestamp_column="created",
                                          archive_after_days=30, schedule="0 3 * * *")
    assert Scheduler(now=_local(2026, 5, 1, 12)).tick() == 0  # first sight: start counting from now
    policy.refresh_from_db()
    assert policy.last_scheduled_at == _local(2026, 5, 1, 12)
    assert Scheduler(now=_local(2026, 5, 4, 12)).tick() == 1  # three slots missed: one run covers them
    assert Scheduler(now=_local(2026, 5, 4, 12)).tick() == 0
    [(key, value)] = kafka_topics.read("archive.due", 1)
    ev = fusion_events.decode(value)
    slot = timezone.make_aware(_local(2026, 5, 4, 3), timezone.get_default_timezone())
    assert key == b"sampleapp.Comment" and ev["job_id"] == str(slot_job_id("archive", policy.pk, slot))
    assert ev["cutoff"] == int(slot.timestamp() * 1000) - 30 * 86400 * 1000  # from the slot, not the clock
    assert ev["requested_by"] is None and ev["archived_by"] is None


def _scheduler(env: Dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "django", "backup_scheduler", *args], cwd=str(PRODUCER),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.django_db(transaction=True)
def test_two_scheduler_processes_fire_a_slot_once(kafka_topics: Topics, subprocess_env) -> None:
    # A yearly slot (Jan 1, 00:00) that is due now and stays the only due one while the test runs.
    now = timezone.now()
    config = BackupConfiguration.objects.create(name="yearly", modules=["sampleapp"], schedule="0 0 1 1 *")
    BackupConfiguration.objects.filter(pk=config.pk).update(last_scheduled_at=_local(now.year - 1, 12, 31))
    procs = [_scheduler(subprocess_env, "--ticks", "4", "--interval", "0.3") for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    [record] = BackupRecord.objects.all()
    slot = timezone.make_aware(_local(now.year, 1, 1), timezone.get_default_timezone())
    assert record.job_id == slot_job_id("backup", config.pk, slot)
    [(_, value)] = kafka_topics.read("backup.requested", 1)
    assert fusion_events.decode(value)["job_id"] == str(record.job_id)
    assert kafka_topics.count("backup.requested") == 1


@pytest.mark.django_db(transaction=True)
def test_scheduler_waits_while_another_holds_the_lock(kafka_topics: Topics, subprocess_env) -> None:
    config = BackupConfiguration.objects.create(name="yearly", schedule="0 0 1 1 *")
    BackupConfiguration.objects.filter(pk=config.pk).update(
        last_scheduled_at=_local(timezone.now().year - 1, 12, 31))
    me = Scheduler()
    assert me.acquire_lock()  # this test's connection plays the active scheduler
    try:
        assert me.acquire_lock()  # re-checking does not stack the lock
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
            assert cur.fetchone()[0] == 1
        out = _scheduler(subprocess_env, "--once").communicate(timeout=60)[0]
        assert "standby" in out, out
        assert not BackupRecord.objects.exists()
    finally:
        me.release_lock()
    out = _scheduler(subprocess_env, "--once").communicate(timeout=60)[0]
    assert "1 request(s)" in out, out
    assert BackupRecord.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_broker_down_keeps_the_archive_slot_for_the_next_tick(settings) -> None:
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "BROKERS": "127.0.0.1:1", "PUBLISH_TIMEOUT": 1.0}
    policy = ArchivePolicy.objects.create(module="sampleapp", model_name="Comment", timestamp_column="created",
                                          schedule="0 3 * * *")
    ArchivePolicy.objects.filter(pk=policy.pk).update(last_scheduled_at=_local(2026, 5, 1, 12))
    assert Scheduler(now=_local(2026, 5, 2, 12)).tick() == 0
    policy.refresh_from_db()
    assert policy.last_scheduled_at == _local(2026, 5, 1, 12)  # not advanced: retried next tick
    # A scheduled backup that cannot be sent is a FAILED record saying why, not a lost slot.
    config = BackupConfiguration.objects.create(name="daily", schedule="0 2 * * *")
    BackupConfiguration.objects.filter(pk=config.pk).update(last_scheduled_at=_local(2026, 5, 1, 12))
    Scheduler(now=_local(2026, 5, 2, 12)).tick()
    [record] = BackupRecord.objects.all()
    assert record.status == "FAILED" and "Kafka" in record.error_message
