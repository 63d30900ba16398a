"""Celery task: one scheduler tick (scheduler.run_tick), for projects that already run Celery beat, as Fusion
does, instead of a `manage.py backup_scheduler` process:

    CELERY_BEAT_SCHEDULE = {
        "fusion-backup-scheduler": {"task": "backup_archive.scheduler_tick", "schedule": 30.0,
                                    "options": {"expires": 25}},
    }

Celery's autodiscover_tasks() imports this module. Celery is optional: without it the module still imports
(run_tick stays callable, e.g. from cron via `manage.py backup_scheduler --once`), it just defines no task.
Each tick takes the scheduler's advisory lock for its own duration, so overlapping ticks, several Celery workers
and a long-running backup_scheduler elsewhere never schedule twice; a tick that finds the lock taken does nothing.
"""
from __future__ import annotations

from typing import Optional

from .scheduler import run_tick

try:
    from celery import shared_task
except ImportError:  # no Celery in this project: nothing to register
    shared_task = None


def scheduler_tick_body() -> Optional[int]:
    """What the task runs: the requests one tick sent, None when another scheduler holds the lock."""
    return run_tick()


if shared_task is not None:
    # ignore_result: the outcome is in the records and the logs; expires (beat's options) drops ticks that
    # waited in the queue longer than an interval instead of running them all at once.
    scheduler_tick = shared_task(name="backup_archive.scheduler_tick", ignore_result=True)(scheduler_tick_body)
