"""manage.py backup_status [--config NAME] [--limit N]: the most recent backup records, readable, with the last
verification of each (status, when, and why it failed)."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.template.defaultfilters import filesizeformat

from ...models import BackupRecord
from ._common import find_config


class Command(BaseCommand):
    help = "Show recent backup records: when, which configuration, status, size, duration, errors, verification."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--config", help="only this configuration (name or id)")
        parser.add_argument("--limit", type=int, default=20)

    def handle(self, *args: Any, **opts: Any) -> None:
        qs = BackupRecord.objects.select_related("configuration")
        if opts["config"]:
            qs = qs.filter(configuration=find_config(opts["config"]))
        records = list(qs[: opts["limit"]])
        if not records:
            self.stdout.write("no backup records yet")
            return
        rows = [("requested", "configuration", "type", "status", "size", "duration", "job", "error", "verified")]
        for r in records:
            d = r.duration
            rows.append((
                f"{r.requested_at:%Y-%m-%d %H:%M:%S}",
                r.configuration.name,
                r.backup_type,
                r.status + (f" (attempt {r.attempt})" if r.attempt > 1 else ""),
                filesizeformat(r.file_size).replace("\xa0", " ") if r.file_size is not None else "-",
                f"{d.total_seconds():.0f}s" if d is not None else "-",
                str(r.job_id)[:8],
                (r.error_message[:60] + "...") if len(r.error_message) > 60 else r.error_message,
                r.verification(),
            ))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
