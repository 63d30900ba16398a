"""The Celery task backup_archive.scheduler_tick (backup_archive/tasks.py): one scheduler tick under the
scheduler lock, run eagerly here against the real database and broker."""
from __future__ import annotations

import datetime as dt
import importlib
import sys
from typing import Iterator

import psycopg2
import pytest
from celery import Celery
from django.db import connection
from django.utils import timezone

import fusion_events
from backup_archive import conf
from backup_archive.models import BackupConfiguration, BackupRecord
from backup_archive.scheduler import slot_job_id
from tests.conftest import Topics

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def celery_app() -> Iterator[Celery]:
    app = Celery("fusion-test", set_as_current=True)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield app
    app.close()


@pytest.fixture
def due_config() -> BackupConfiguration:
    """A yearly configuration whose Jan 1 slot of this year is due and was not requested yet."""
    config = BackupConfiguration.objects.create(name="yearly", modules=["sampleapp"], schedule="0 0 1 1 *")
    BackupConfiguration.objects.filter(pk=config.pk).update(
        last_scheduled_at=dt.datetime(timezone.now().year - 1, 12, 31))
    return config


def _other_session() -> "psycopg2.extensions.connection":
    s = connection.settings_dict
    return psycopg2.connect(host=s["HOST"], port=s["PORT"], user=s["USER"], password=s["PASSWORD"] or None,
                            dbname=s["NAME"])


def test_the_task_publishes_the_due_backup_and_releases_the_lock(
        celery_app: Celery, kafka_topics: Topics, due_config: BackupConfiguration) -> None:
    from backup_archive.tasks import scheduler_tick

    assert scheduler_tick.name == "backup_archive.scheduler_tick"
    assert scheduler_tick.delay().get() == 1
    [record] = BackupRecord.objects.all()
    slot = timezone.make_aware(dt.datetime(timezone.now().year, 1, 1), timezone.get_default_timezone())
    assert record.job_id == slot_job_id("backup", due_config.pk, slot)
    [(_, value)] = kafka_topics.read("backup.requested", 1)
    assert fusion_events.decode(value)["job_id"] == str(record.job_id)
    # The lock is this tick's only: another session (a backup_scheduler elsewhere) can take it now.
    other = _other_session()
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", [int(conf.get("SCHEDULER_LOCK_ID"))])
            assert cur.fetchone()[0] is True
            cur.execute("SELECT pg_advisory_unlock(%s)", [int(conf.get("SCHEDULER_LOCK_ID"))])
    finally:
        other.close()
    assert scheduler_tick.delay().get() == 0  # the slot was spent


def test_the_task_does_nothing_while_another_scheduler_holds_the_lock(
        celery_app: Celery, kafka_topics: Topics, due_config: BackupConfiguration) -> None:
    from backup_archive.tasks import scheduler_tick

    other = _other_session()
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", [int(conf.get("SCHEDULER_LOCK_ID"))])
        assert scheduler_tick.delay().get() is None
        assert BackupRecord.objects.count() == 0 and kafka_topics.count("backup.requested") == 0
        with other.cursor() as cur:  # the other scheduler stops (closing alone ends its session a moment later)
            cur.execute("SELECT pg_advisory_unlock(%s)", [int(conf.get("SCHEDULER_LOCK_ID"))])
    finally:
        other.close()
    assert scheduler_tick.delay().get() == 1


def test_the_module_imports_without_celery(monkeypatch) -> None:
    import backup_archive.tasks as tasks

    monkeypatch.setitem(sys.modules, "celery", None)  # `import celery` now raises ImportError
    monkeypatch.delattr(tasks, "scheduler_tick")  # reload() keeps a module's old names
    try:
        reloaded = importlib.reload(tasks)
        assert not hasattr(reloaded, "scheduler_tick") and callable(reloaded.scheduler_tick_body)
    finally:
        monkeypatch.undo()
        importlib.reload(tasks)
    assert hasattr(tasks, "scheduler_tick")
