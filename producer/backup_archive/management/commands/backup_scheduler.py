"""manage.py backup_scheduler: the long-running scheduler (see backup_archive/scheduler.py).

Runs until SIGTERM/SIGINT. Only the process holding the PostgreSQL advisory lock schedules; others wait as
standbys and take over within one interval when it stops.
"""
from __future__ import annotations

import logging
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections, connection

from ... import conf
from ...scheduler import Scheduler, iter_ticks

log = logging.getLogger("backup_archive.scheduler")


class Command(BaseCommand):
    help = "Request due backups, verifications and archival runs by their cron schedules, forever."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--interval", type=float, default=None,
                            help="seconds between ticks (default FUSION_BACKUP['SCHEDULER_INTERVAL'])")
        parser.add_argument("--ticks", type=int, default=0, help="stop after this many ticks (0: run forever)")
        parser.add_argument("--once", action="store_true", help="one tick, then exit (same as --ticks 1)")

    def handle(self, *args: Any, **opts: Any) -> None:
        interval = opts["interval"] if opts["interval"] is not None else float(conf.get("SCHEDULER_INTERVAL"))
        max_ticks = 1 if opts["once"] else opts["ticks"]
        stopping = {"flag": False}

        def stop(signum: int, frame: Any) -> None:
            log.info("signal %d: stopping after this tick", signum)
            stopping["flag"] = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        sched = Scheduler()
        ticks, active = 0, False
        try:
            for _ in iter_ticks(interval, lambda: stopping["flag"] or (max_ticks and ticks >= max_ticks)):
                ticks += 1
                try:
                    if not sched.acquire_lock():
                        if active:
                            log.warning("lost the scheduler lock (connection reset?): now a standby")
                        active = False
                        self.stdout.write("standby: another scheduler holds the lock")
                        continue
                    if not active:
                        log.info("scheduler active (lock %s)", conf.get("SCHEDULER_LOCK_ID"))
                    active = True
                    n = sched.tick()
                    if n:
                        self.stdout.write(f"tick {ticks}: {n} request(s)")
                except Exception:
                    # A database restart or a bad configuration must not kill the scheduler: log, reconnect,
                    # try again next tick. The lock is re-checked every tick.
                    log.exception("scheduler tick failed")
                    close_old_connections()
                    if connection.connection is not None and not connection.is_usable():
                        connection.close()
        finally:
            if active:
                try:
                    sched.release_lock()
                except Exception:
                    pass
