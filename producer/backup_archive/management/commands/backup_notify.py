"""manage.py backup_notify [--dry-run] [--limit N]: mail the failed backups, verifications and archive runs not
mailed yet.

Every scheduler tick does the same (backup_archive/notify.py); this is for installations without the scheduler,
or to see what is due (--dry-run).
"""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ... import conf
from ...notify import notify_failures


class Command(BaseCommand):
    help = ("Mail each failed backup, verification and archive run not mailed yet (to ADMINS or "
            "FUSION_BACKUP['NOTIFY_RECIPIENTS']).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--limit", type=int, default=None,
                            help="at most this many mails (default FUSION_BACKUP['NOTIFY_LIMIT'])")
        parser.add_argument("--dry-run", action="store_true", help="list what would be mailed, mail nothing")

    def handle(self, *args: Any, **opts: Any) -> None:
        recipients = conf.notify_recipients()
        if not recipients:
            self.stdout.write("no recipients (settings.ADMINS is empty, or FUSION_BACKUP['NOTIFY_RECIPIENTS'] is "
                              "[]): nothing mailed")
            return
        notices = notify_failures(limit=opts["limit"], dry_run=opts["dry_run"])
        verb = "would mail" if opts["dry_run"] else "mailed"
        for n in notices:
            self.stdout.write(f"{verb}: {n.subject}")
        self.stdout.write(f"{len(notices)} failure(s) {verb} to {', '.join(recipients)}")
