"""manage.py archive_run POLICY [--dry-run] [--user NAME]: request an archival run now."""
from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...authority import Refused
from ...services import request_archive
from ._common import find_policy, find_user


class Command(BaseCommand):
    help = "Request archival for one policy (by id or module.Model) now."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("policy", help="policy id or module.Model, e.g. leave.Leave")
        parser.add_argument("--dry-run", action="store_true", help="the worker only counts, changes nothing")
        parser.add_argument("--user", help="username recorded as archived_by (default: none, the system)")
        parser.add_argument("--show", action="store_true", help="print the event (JSON) before sending it")

    def handle(self, *args: Any, **opts: Any) -> None:
        policy = find_policy(opts["policy"])
        try:
            req = request_archive(policy, find_user(opts["user"]), dry_run=opts["dry_run"])
        except (LookupError, Refused) as e:
            raise CommandError(f"policy {policy}: {e}") from None
        if opts["show"]:
            self.stdout.write(json.dumps(req.event, indent=1, ensure_ascii=False))
        if not req.published:
            raise CommandError(f"archival of {policy} (job {req.job_id}) not sent: {req.error}")
        kind = "dry run" if opts["dry_run"] else "archival"
        self.stdout.write(f"{kind} of {policy} requested: job {req.job_id}, {len(req.relations)} relation(s)")
