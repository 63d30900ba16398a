"""Failure mails: one mail per failed backup (per attempt) and per failed verification, to settings.ADMINS or
FUSION_BACKUP['NOTIFY_RECIPIENTS'].

Django cannot learn of a failure from a signal: the C recorder writes BackupRecord rows with SQL. So failures
are found in the table instead, by what has not been mailed yet: a FAILED record whose
`failure_notified_attempt` is below its attempt (a replay that fails again is a new failure), and a FAILED
verification whose `verify_notified_job_id` is not its `verify_job_id` (every verification has its own id).
Every scheduler tick runs this (`manage.py backup_notify` does it by hand), so a failure is mailed within one
interval whoever wrote it: the recorder, or this app when Kafka did not take a request.

At least once: the rows are locked (SKIP LOCKED, so two senders never mail one failure twice), mailed, then
marked in the same transaction; a mail server that refuses leaves the rest unmarked for the next run. Migration
0004 marks the failures that existed before it, so upgrading mails nobody about history.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from . import conf
from .models import BackupRecord, Status

log = logging.getLogger("backup_archive.notify")


@dataclass
class Notice:
    """One failure mail: sent, or (dry run) due."""

    record_id: int
    kind: str  # "backup" or "verify"
    subject: str
    body: str


def _failed_backups() -> QuerySet:
    return BackupRecord.objects.filter(status=Status.FAILED).filter(
        Q(failure_notified_attempt__isnull=True) | Q(failure_notified_attempt__lt=F("attempt")))


def _failed_verifications() -> QuerySet:
    return BackupRecord.objects.filter(verify_status=Status.FAILED, verify_job_id__isnull=False).filter(
        Q(verify_notified_job_id__isnull=True) | ~Q(verify_notified_job_id=F("verify_job_id")))


def _when(moment: Optional[object]) -> str:
    if moment is None:
        return "-"
    if timezone.is_aware(moment):  # type: ignore[arg-type]
        moment = timezone.localtime(moment)  # type: ignore[arg-type]
    return f"{moment:%Y-%m-%d %H:%M:%S}"


def _admin_path(record: BackupRecord) -> str:
    try:
        return reverse("admin:backup_archive_backuprecord_change", args=[record.pk])
    except NoReverseMatch:  # a project without the admin
        return ""


def backup_notice(r: BackupRecord) -> Notice:
    config = r.configuration
    lines = [
        f"The {r.backup_type.lower()} backup of configuration {config.name!r} failed.",
        "",
        f"Why: {r.error_message or '(the worker gave no reason)'}",
        "",
        f"record     {r.pk} (attempt {r.attempt})",
        f"job id     {r.job_id}",
        f"requested  {_when(r.requested_at)}",
        f"started    {_when(r.started_at)}",
        f"failed at  {_when(r.completed_at)}",
        f"worker     {r.worker or '-'}",
        f"folder     {config.storage_path}",
    ]
    path = _admin_path(r)
    if path:
        lines += ["", f"In the admin: {path}"]
    lines += ["", "To retry it with the same job id: fusion-backup replay --job-id " + str(r.job_id)
              + " (or \"Back up now\" in the admin for a new backup)."]
    return Notice(r.pk, "backup", f"backup {config.name!r} FAILED (record {r.pk}, attempt {r.attempt})",
                  "\n".join(lines))


def verify_notice(r: BackupRecord) -> Notice:
    config = r.configuration
    lines = [
        f"The verification of a backup of configuration {config.name!r} failed: that backup may not restore.",
        "",
        f"Why: {r.verify_message or '(no reason given)'}",
        "",
        f"record       {r.pk} (backup of {_when(r.completed_at)}, {r.status})",
        f"file         {r.file_path or '-'}",
        f"verified at  {_when(r.last_verified_at)}",
        f"verify job   {r.verify_job_id}",
    ]
    path = _admin_path(r)
    if path:
        lines += ["", f"In the admin: {path}"]
    lines += ["", f"Check it by hand: fusion-backup verify {r.file_path or 'ARTIFACT'} --secret-key backup.key"]
    return Notice(r.pk, "verify", f"verification of {config.name!r} FAILED (record {r.pk})", "\n".join(lines))


def notify_failures(*, limit: Optional[int] = None, dry_run: bool = False) -> List[Notice]:
    """Mails every failure not mailed yet (at most `limit`, default FUSION_BACKUP['NOTIFY_LIMIT']) and marks it.
    Returns the notices sent (or, with dry_run, the ones that would be, marking nothing). Sends nothing when
    there is no recipient (system check W003 says so); the failures then wait, unmarked."""
    recipients = conf.notify_recipients()
    if not recipients:
        return []
    left = int(limit if limit is not None else conf.get("NOTIFY_LIMIT"))
    out: List[Notice] = []
    # (what is due, its mail, what marks it mailed), backups first.
    kinds: List[Tuple[Callable[[], QuerySet], Callable[[BackupRecord], Notice], Callable[[BackupRecord], dict]]] = [
        (_failed_backups, backup_notice, lambda r: {"failure_notified_attempt": r.attempt}),
        (_failed_verifications, verify_notice, lambda r: {"verify_notified_job_id": r.verify_job_id}),
    ]
    with transaction.atomic():
        for pending, make, mark in kinds:
            if left <= 0:
                break
            records = list(pending().select_for_update(skip_locked=True, of=("self",))
                           .select_related("configuration").order_by("completed_at", "id")[:left])
            for r in records:
                notice = make(r)
                if not dry_run:
                    try:
                        send_mail(f"{settings.EMAIL_SUBJECT_PREFIX}{notice.subject}", notice.body,
                                  settings.SERVER_EMAIL, recipients)
                    except Exception as e:  # SMTP down, refused, ...: the rest stays unmarked for the next run
                        log.error("failure mail for record %s (%s) not sent, will retry: %s: %s",
                                  r.pk, notice.kind, type(e).__name__, e)
                        return out
                    BackupRecord.objects.filter(pk=r.pk).update(**mark(r))
                    log.info("failure mail sent: %s (to %s)", notice.subject, ", ".join(recipients))
                out.append(notice)
                left -= 1
    return out
