"""manage.py backup_request CONFIG [--user NAME]: request a backup now and wait for Kafka to take it."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...authority import Refused
from ...models import Status
from ...services import request_backup
from ._common import find_config, find_user


class Command(BaseCommand):
    help = "Request a backup of one configuration (by name or id) now."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("config", help="configuration name or id")
        parser.add_argument("--user", help="username to record as the requester (default: none, the system)")

    def handle(self, *args: Any, **opts: Any) -> None:
        config = find_config(opts["config"])
        try:
            record = request_backup(config, find_user(opts["user"]))
        except (LookupError, Refused) as e:
            raise CommandError(f"configuration {config.name!r}: {e}") from None
        record.refresh_from_db()
        if record.status == Status.FAILED:
            raise CommandError(f"backup of {config.name!r} (record {record.pk}, job {record.job_id}) "
                               f"failed: {record.error_message}")
        note = f" ({record.error_message})" if record.error_message else ""  # e.g. a console publisher's "not sent"
        self.stdout.write(f"backup of {config.name!r} requested: record {record.pk}, job {record.job_id}, "
                          f"status {record.status}{note}")
