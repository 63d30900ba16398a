"""Failure mails: one mail per failed backup (per attempt), per failed verification and per failed archive run (per
attempt), to settings.ADMINS or FUSION_BACKUP['NOTIFY_RECIPIENTS'].

Django cannot learn of a failure from a signal: the C recorder writes the rows with SQL. So failures are found
in the tables instead, by what has not been mailed yet: a FAILED record (or ArchiveRun) whose
`failure_notified_attempt` is below its attempt (a replay that fails again is a new failure), and a FAILED
verification whose `verify_notified_job_id` is not its `verify_job_id` (every verification has its own id).
Every scheduler tick runs this (`manage.py backup_notify` does it by hand), so a failure is mailed within one
interval whoever wrote it: the recorder, or this app when Kafka did not take a request. Archive runs reach
FAILED both ways too: the recorder applies the worker's archive statuses to ArchiveRun (dmn_recorder.c).

At least once: the rows are locked (SKIP LOCKED, so two senders never mail one failure twice), mailed, then
marked in the same transaction; a mail server that refuses leaves the rest unmarked for the next run. Migration
0004 marks the failures that existed before it, so upgrading mails nobody about history (migration 0005 creates
ArchiveRun empty).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

from django.conf import settings
from django.core.mail import send_mail
from django.db import models, transaction
from django.db.models import F, Q, QuerySet
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from . import conf
from .models import ArchiveRun, BackupRecord, Status

log = logging.getLogger("backup_archive.notify")


@dataclass
class Notice:
    """One failure mail: sent, or (dry run) due."""

    record_id: int  # the BackupRecord's id, or the ArchiveRun's for kind "archive"
    kind: str  # "backup", "verify" or "archive"
    subject: str
    body: str


def _not_mailed_attempt(model: Type[models.Model]) -> QuerySet:
    return model.objects.filter(status=Status.FAILED).filter(
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


def _notice(row: models.Model, kind: str, subject: str, headline: str, why: str,
            facts: Sequence[Tuple[str, object]], what_to_do: str) -> Notice:
    """The one layout of every mail: what failed, why, the facts in a column, the admin page, what to do."""
    width = max(len(k) for k, _ in facts) + 2
    lines = [headline, "", f"Why: {why}", ""] + [f"{k:<{width}}{v}" for k, v in facts]
    try:
        lines += ["", "In the admin: " + reverse(f"admin:backup_archive_{row._meta.model_name}_change",
                                                  args=[row.pk])]
    except NoReverseMatch:  # a project without the admin, or the model not registered there
        pass
    lines += ["", what_to_do]
    # One line whatever a name holds: Django refuses a subject with a line break (BadHeaderError), and one
    # refused mail would hold back every failure after it, run after run.
    return Notice(row.pk, kind, " ".join(subject.split()), "\n".join(lines))


def backup_notice(r: BackupRecord) -> Notice:
    config = r.configuration
    return _notice(
        r, "backup", f"backup {config.name!r} FAILED (record {r.pk}, attempt {r.attempt})",
        f"The {r.backup_type.lower()} backup of configuration {config.name!r} failed.",
        r.error_message or "(the worker gave no reason)",
        [("record", f"{r.pk} (attempt {r.attempt})"), ("job id", r.job_id), ("requested", _when(r.requested_at)),
         ("started", _when(r.started_at)), ("failed at", _when(r.completed_at)), ("worker", r.worker or "-"),
         ("folder", config.storage_path)],
        f"To retry it with the same job id: fusion-backup replay --job-id {r.job_id} (or \"Back up now\" in the "
        f"admin for a new backup).")


def verify_notice(r: BackupRecord) -> Notice:
    config = r.configuration
    return _notice(
        r, "verify", f"verification of {config.name!r} FAILED (record {r.pk})",
        f"The verification of a backup of configuration {config.name!r} failed: that backup may not restore.",
        r.verify_message or "(no reason given)",
        [("record", f"{r.pk} (backup of {_when(r.completed_at)}, {r.status})"), ("file", r.file_path or "-"),
         ("verified at", _when(r.last_verified_at)), ("verify job", r.verify_job_id)],
        f"Check it by hand: fusion-backup verify {r.file_path or 'ARTIFACT'} --secret-key backup.key")


def archive_notice(run: ArchiveRun) -> Notice:
    policy = run.policy
    kind = "dry run of the archival" if run.dry_run else "archival"
    return _notice(
        run, "archive", f"{'dry run' if run.dry_run else 'archival'} of {policy} FAILED (run {run.pk}, attempt "
                        f"{run.attempt})",
        f"The {kind} of {policy} (table {policy.db_table or '?'}) failed: its due rows are still in their table.",
        run.error_message or "(the worker gave no reason)",
        [("run", f"{run.pk} (attempt {run.attempt})"), ("job id", run.job_id), ("policy", policy.pk),
         ("requested", _when(run.requested_at)), ("started", _when(run.started_at)),
         ("failed at", _when(run.completed_at)), ("worker", run.worker or "-")],
        f"To retry it with the same job id: fusion-backup replay --job-id {run.job_id} (or \"Archive now\" in "
        f"the admin for a new run; the next scheduled run archives the same rows).")


@dataclass(frozen=True)
class _Kind:
    """One kind of failure: where the due ones are, its mail, and what marks one mailed."""

    model: Type[models.Model]
    pending: Callable[[], QuerySet]
    related: str
    notice: Callable[[Any], Notice]
    mark: Callable[[Any], Dict[str, Any]]


# Backups first, then verifications, then archive runs: with a limit, what loses data soonest is mailed first.
_KINDS = (
    _Kind(BackupRecord, lambda: _not_mailed_attempt(BackupRecord), "configuration", backup_notice,
          lambda r: {"failure_notified_attempt": r.attempt}),
    _Kind(BackupRecord, _failed_verifications, "configuration", verify_notice,
          lambda r: {"verify_notified_job_id": r.verify_job_id}),
    _Kind(ArchiveRun, lambda: _not_mailed_attempt(ArchiveRun), "policy", archive_notice,
          lambda r: {"failure_notified_attempt": r.attempt}),
)


def _mail_due(kind: _Kind, limit: int, recipients: List[str], dry_run: bool, out: List[Notice]) -> bool:
    """Mails (or, dry, lists) at most `limit` due failures of one kind into `out`, marking each once sent.
    False when the mail server refused one: the rest stay unmarked for the next run."""
    rows = list(kind.pending().select_for_update(skip_locked=True, of=("self",))
                .select_related(kind.related).order_by("completed_at", "id")[:limit])
    for row in rows:
        notice = kind.notice(row)
        if not dry_run:
            try:
                send_mail(f"{settings.EMAIL_SUBJECT_PREFIX}{notice.subject}", notice.body,
                          settings.SERVER_EMAIL, recipients)
            except Exception as e:  # SMTP down, refused, ...
                log.error("failure mail for %s %s not sent, will retry: %s: %s",
                          kind.model._meta.verbose_name, row.pk, type(e).__name__, e)
                return False
            kind.model.objects.filter(pk=row.pk).update(**kind.mark(row))
            log.info("failure mail sent: %s (to %s)", notice.subject, ", ".join(recipients))
        out.append(notice)
    return True


def notify_failures(*, limit: Optional[int] = None, dry_run: bool = False) -> List[Notice]:
    """Mails every failure not mailed yet (at most `limit`, default FUSION_BACKUP['NOTIFY_LIMIT']) and marks it.
    Returns the notices sent (or, with dry_run, the ones that would be, marking nothing). Sends nothing when
    there is no recipient (system check W003 says so); the failures then wait, unmarked."""
    recipients = conf.notify_recipients()
    if not recipients:
        return []
    left = int(limit if limit is not None else conf.get("NOTIFY_LIMIT"))
    out: List[Notice] = []
    with transaction.atomic():
        for kind in _KINDS:
            if len(out) >= left or not _mail_due(kind, left - len(out), recipients, dry_run, out):
                break
    return out
