"""manage.py backup_requeue [--older-than MINUTES] [--dry-run]: send stuck QUEUED backup requests again.

The same sweep the scheduler runs every tick (services.republish_queued), for installations that run no
scheduler or want it now. Same job ids: a worker that already ran a job does not run it again.
"""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import conf
from ...services import republish_queued


class Command(BaseCommand):
    help = "Republish backup requests still QUEUED long after they were sent (same job id: idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=float, default=None, metavar="MINUTES",
                            help="minutes since the last publish (default FUSION_BACKUP['REQUEUE_AFTER_MINUTES'], "
                                 "or 15 when that is off)")
        parser.add_argument("--limit", type=int, default=100, help="at most this many records per run")
        parser.add_argument("--dry-run", action="store_true", help="list what would be sent, send nothing")

    def handle(self, *args: Any, **opts: Any) -> None:
        minutes = opts["older_than"]
        if minutes is None:
            minutes = conf.get("REQUEUE_AFTER_MINUTES") or 15
        if minutes < 0:
            raise CommandError("--older-than must be >= 0 minutes")
        results = republish_queued(minutes, dry_run=opts["dry_run"], limit=opts["limit"])
        if not results:
            self.stdout.write(f"no QUEUED record older than {minutes:g} min")
            return
        verb = "would send again" if opts["dry_run"] else "sent again"
        failed = [r for r in results if r.error]
        for r in results:
            what = f"not sent: {r.error}" if r.error else verb
            self.stdout.write(f"record {r.record_id} job {r.job_id}: {what}")
        if failed:
            raise CommandError(f"{len(failed)} of {len(results)} record(s) not sent (see above)")
