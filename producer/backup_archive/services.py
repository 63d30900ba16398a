"""Requesting backups, verifications and archival runs: build the event, then publish it reliably.

Reliability, in order:
1. The event is built and validated by the contract's codec *inside* the caller's transaction: an event the
   workers would reject raises here and rolls the request back.
2. It is published only after the transaction commits (`transaction.on_commit`, one helper for every request:
   _publish_after_commit): a rolled-back request emits nothing, and a worker never receives a job whose row
   (BackupRecord, ArchiveRun) it cannot see yet.
3. Publishing waits for Kafka's delivery report; on failure the row becomes FAILED with the Kafka error
   (never QUEUED forever) and the error is logged. The on-commit callback never raises, so a broker outage can
   not turn a committed request into a 500 after the fact; callers read the outcome from the row
   (`record.refresh_from_db()`), or from the returned ArchiveRequest for archive jobs.

The database is the authority (issue 10): a worker runs a request only when it matches the rows it names, so
what is published is what is stored. request_backup stores the event's table list on the record (the republish
sweep sends those, not a fresh resolution), request_verify stores its job id on the record, and request_archive
publishes only what the policy row holds (the resolution ArchivePolicy.save() stored). Tables no request may
touch (authority.py) are refused here with `Refused`, before anything is created or sent.
"""
from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

import fusion_events
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from . import conf
from .authority import Refused, check_archive, check_backup_tables
from .models import ArchivePolicy, ArchiveRun, BackupConfiguration, BackupRecord, Status
from .publisher import NotSent, PublishError, publish
from .resolve import PolicyTarget, backup_tables, policy_target, relations, user_context

log = logging.getLogger("backup_archive")

DAY_MS = 86400 * 1000


def to_ms(moment: dt.datetime) -> int:
    """A Django datetime (aware, or naive in TIME_ZONE when USE_TZ=False) -> ms since the epoch, UTC."""
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_default_timezone())
    return int(moment.timestamp() * 1000)


def _user_id(user: Optional[Any]) -> Optional[int]:
    return user.pk if user is not None and getattr(user, "is_authenticated", False) else None


def storage_path(config: BackupConfiguration) -> str:
    """The configuration's folder, as stored: the workers compare the request's storage_path with the column."""
    if not config.storage_path:
        raise Refused(f"configuration {config.name!r} has no storage_path (emptied by hand?): save it again in "
                      f"the admin, which fills it from FUSION_BACKUP['STORAGE_PATH_TEMPLATE']")
    return config.storage_path


def config_tables(config: BackupConfiguration) -> List[Any]:
    """The table list of a new backup of `config`, in wire form; raises LookupError (unknown module) or Refused
    (a system table)."""
    tables = backup_tables(config.modules or [], config.tables or [])
    check_backup_tables(tables)
    return tables


def _envelope(kind: str, job_id: uuid.UUID, requested_by: Optional[int], attempt: int,
              now: Optional[dt.datetime] = None, **fields: Any) -> Dict[str, Any]:
    """A request event: the common fields of every type (SPEC.md: v, type, job_id, ts, requested_by, attempt),
    then the type's own. ts is `now`, or the moment of the call."""
    return {"v": fusion_events.VERSION, "type": kind, "job_id": str(job_id), "ts": to_ms(now or timezone.now()),
            "requested_by": requested_by, "attempt": attempt, **fields}


def _who(user: Optional[Any]) -> str:
    ctx = user_context(user)
    return f"user={ctx['user_id']} dept={ctx['department']}"


def _publish_after_commit(topic: str, key: str, value: bytes, what: str, *, sent: Callable[[], object],
                          not_sent: Callable[[str], object], failed: Callable[[str], object]) -> None:
    """Publishes once the caller's transaction commits (at once outside one), then tells exactly one of sent(),
    not_sent(why) (a console/disabled publisher: valid, but nobody will run it) and failed(why) (Kafka did not
    take it, or anything unexpected happened). Never raises: it runs after the commit, where an exception would
    turn a committed request into a 500; the callbacks record the outcome on the request's row instead."""

    def send() -> None:
        try:
            partition, offset = publish(topic, key, value)
        except NotSent as e:
            not_sent(str(e))
        except PublishError as e:
            log.error("%s not published: %s", what, e)
            failed(str(e))
        except Exception as e:
            log.exception("%s: unexpected error while publishing", what)
            failed(f"{type(e).__name__}: {e}")
        else:
            log.info("%s published to %s [%d] @ %d", what, topic, partition, offset)
            sent()

    transaction.on_commit(send)


# ---------------------------------------------------------------------------------------------------------------
# backup.requested


def backup_event(record: BackupRecord, now: dt.datetime) -> Dict[str, Any]:
    """The record's backup.requested. Its tables are the record's own (fixed when it was created); only a record
    from before migration 0003 (tables NULL) gets the configuration's current list."""
    config = record.configuration
    if record.tables is None:
        tables = config_tables(config)
    else:
        tables = record.tables
        check_backup_tables(tables)
    return _envelope(
        "backup.requested", record.job_id, record.requested_by_id, record.attempt, now,
        record_id=record.pk,
        config_id=config.pk,
        config_name=config.name,
        backup_type=record.backup_type,
        tables=tables,
        modules=list(config.modules or []),
        storage_path=storage_path(config),
        retention_days=config.retention_days,
    )


def request_backup(
    config: BackupConfiguration,
    user: Optional[Any] = None,
    *,
    job_id: Optional[uuid.UUID] = None,
    now: Optional[dt.datetime] = None,
) -> BackupRecord:
    """Creates a QUEUED BackupRecord and publishes backup.requested once the transaction commits.

    `job_id` is random unless given (the scheduler passes a keyed one per cron slot). Raises LookupError for an
    unknown module, Refused for an inactive configuration or a table no backup may read (a system schema), and fusion_events.InvalidEvent for
    an event the contract rejects (a bad table name or storage path); in each case nothing is created or sent.
    """
    now = now or timezone.now()
    if not config.is_active:
        # The workers run backups only for active configurations (SECURITY.md): refuse here, with the reason,
        # rather than queue a record that a worker would then fail.
        raise Refused(f"configuration {config.name!r} is not active: activate it in the admin to back it up")
    tables = config_tables(config)
    storage_path(config)  # refuse before creating anything
    with transaction.atomic():
        record = BackupRecord.objects.create(
            configuration=config,
            job_id=job_id or uuid.uuid4(),
            backup_type=config.backup_type,
            status=Status.QUEUED,
            requested_at=now,
            requested_by=user if _user_id(user) is not None else None,
            tables=tables,
        )
        value = fusion_events.encode(backup_event(record, timezone.now()))
        mine = BackupRecord.objects.filter(pk=record.pk)
        # Only a record still QUEUED: never overwrite what a worker may already have reported. A console or
        # disabled publisher leaves it QUEUED (no failure mail; a switch to "kafka" lets the republish sweep send
        # it), saying why. Sent: only published_at, the worker may already have moved the record on.
        queued = mine.filter(status=Status.QUEUED)
        _publish_after_commit(
            conf.topic("backup"), str(config.pk), value, f"backup.requested record={record.pk} {_who(user)}",
            sent=lambda: mine.update(published_at=timezone.now()),
            not_sent=lambda why: queued.update(error_message=why),
            failed=lambda why: queued.update(status=Status.FAILED, error_message=f"not sent to the workers: {why}",
                                             completed_at=timezone.now()),
        )
    return record


def request_verify(
    record: BackupRecord, user: Optional[Any] = None, *, mode: Optional[str] = None,
    job_id: Optional[uuid.UUID] = None,
) -> uuid.UUID:
    """Publishes backup.verify for a finished backup; its outcome lands in record.verify_status / verify_message
    / last_verified_at (the recorder writes them). `mode` defaults to FUSION_BACKUP['VERIFY_MODE']."""
    if mode is None:
        mode = conf.verify_mode()
    if mode not in conf.VERIFY_MODES:
        raise ValueError(f"verify mode must be 'integrity' or 'restore', not {mode!r}")
    job = job_id or uuid.uuid4()
    value = fusion_events.encode(_envelope(
        "backup.verify", job, _user_id(user), 1,
        config_id=record.configuration_id, record_id=record.pk, mode=mode, file_path=record.file_path or None,
    ))
    with transaction.atomic():
        # The job id with the status: a worker runs (and the recorder accepts) only the verification asked for
        # last, so an older or forged verify result cannot overwrite this one.
        BackupRecord.objects.filter(pk=record.pk).update(verify_status=Status.QUEUED, verify_message="",
                                                         verify_job_id=job)
        this_verify = BackupRecord.objects.filter(pk=record.pk, verify_job_id=job)
        _publish_after_commit(
            conf.topic("backup"), str(record.configuration_id), value,
            f"backup.verify job={job} record={record.pk} {_who(user)}",
            sent=lambda: None,
            not_sent=lambda why: this_verify.update(verify_message=why),  # still waiting, and says why
            failed=lambda why: this_verify.update(verify_status=Status.FAILED, verify_message=why),
        )
    return job


# ---------------------------------------------------------------------------------------------------------------
# Republish sweep


@dataclass
class Republished:
    """One QUEUED record the sweep sent again (or would send, in a dry run)."""

    record_id: int
    job_id: uuid.UUID
    error: str = ""  # '' when Kafka acknowledged it (or in a dry run)


def republish_queued(
    older_than_minutes: Optional[float] = None, *, dry_run: bool = False, limit: int = 100
) -> List[Republished]:
    """Sends backup.requested again, with the same job id, for records still QUEUED long after their publish.

    Why: publishing happens after the commit, so a process that dies in between (or a publish that timed out
    after Kafka did take the message) leaves a committed QUEUED record that no worker will ever see. Sending
    the same job id again is safe: a worker that already finished the job answers from its ledger instead of
    running it twice, and the recorder never moves a record backwards.

    A record qualifies when it is QUEUED and its published_at (or, never published, its requested_at) is older
    than `older_than_minutes` (default FUSION_BACKUP['REQUEUE_AFTER_MINUTES']). The sweep claims the records by
    moving published_at to now under row locks (SKIP LOCKED), so two sweepers never send one record twice, and
    a record is sent at most once per interval. A publish that fails leaves the record QUEUED with the reason in
    error_message: the next sweep tries again (a broker outage is not the job's failure). A record whose event
    can no longer be built (its module was uninstalled) becomes FAILED with the reason.

    Each record is sent with its own table list (BackupRecord.tables); a record from before migration 0003 gets
    the configuration's current list, stored with the claim so the workers can check the request against it.
    """
    minutes = conf.get("REQUEUE_AFTER_MINUTES") if older_than_minutes is None else older_than_minutes
    if minutes is None or float(minutes) < 0:
        raise ValueError(f"older_than_minutes must be >= 0, not {minutes!r}")
    now = timezone.now()
    cutoff = now - dt.timedelta(minutes=float(minutes))
    due = (Q(published_at__lt=cutoff) | Q(published_at__isnull=True, requested_at__lt=cutoff))
    out: List[Republished] = []
    to_send: List[Tuple[BackupRecord, bytes]] = []
    with transaction.atomic():
        records = list(
            BackupRecord.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("configuration").filter(due, status=Status.QUEUED)
            .order_by("requested_at", "id")[:limit]
        )
        if dry_run:
            return [Republished(r.pk, r.job_id) for r in records]
        for r in records:
            try:
                event = backup_event(r, now)
                value = fusion_events.encode(event)
            except (LookupError, Refused, fusion_events.InvalidEvent) as e:
                log.error("backup.requested record=%s job=%s cannot be sent again: %s", r.pk, r.job_id, e)
                BackupRecord.objects.filter(pk=r.pk).update(
                    status=Status.FAILED, completed_at=now,
                    error_message=f"queued but never picked up, and cannot be sent again: {e}")
                out.append(Republished(r.pk, r.job_id, str(e)))
                continue
            if r.tables is None:
                BackupRecord.objects.filter(pk=r.pk).update(tables=event["tables"])
            to_send.append((r, value))
        BackupRecord.objects.filter(pk__in=[r.pk for r, _ in to_send]).update(published_at=now)
    # Outside the transaction: the claim is committed, so waiting for Kafka holds no row locks.
    for r, value in to_send:
        try:
            partition, offset = publish(conf.topic("backup"), str(r.configuration_id), value)
        except Exception as e:  # PublishError or anything unexpected: keep QUEUED, say why, next sweep retries
            log.error("backup.requested record=%s job=%s: republish failed: %s", r.pk, r.job_id, e)
            BackupRecord.objects.filter(pk=r.pk, status=Status.QUEUED).update(
                error_message=f"still queued; sending it again failed: {e}")
            out.append(Republished(r.pk, r.job_id, str(e)))
        else:
            log.warning("backup.requested record=%s job=%s was still QUEUED %s min after its request: "
                        "sent again to %s [%d] @ %d", r.pk, r.job_id, minutes, conf.topic("backup"), partition, offset)
            BackupRecord.objects.filter(pk=r.pk, status=Status.QUEUED).exclude(error_message="").update(
                error_message="")
            out.append(Republished(r.pk, r.job_id))
    return out


# ---------------------------------------------------------------------------------------------------------------
# archive.due


@dataclass
class ArchiveRequest:
    """What request_archive() sent: the event, and after the commit whether Kafka took it."""

    job_id: uuid.UUID
    event: Dict[str, Any]
    published: Optional[bool] = None  # None until the transaction has committed and the publish was tried
    error: str = ""
    relations: List[Dict[str, Any]] = field(default_factory=list)
    run_id: Optional[int] = None  # the ArchiveRun of the job


def archive_target(policy: ArchivePolicy) -> Tuple[Type[models.Model], PolicyTarget, List[Dict[str, Any]]]:
    """(model, PolicyTarget, relations) of a policy, checked against the policy's row: the worker runs an
    archive.due only when it names what the row holds, so a policy whose model changed since it was saved (or
    that was never saved since migration 0003) is refused here, with what to do. Raises LookupError or Refused."""
    model, target = policy_target(policy.module, policy.model_name, policy.timestamp_column)
    rels = relations(model)
    check_archive(target.db_table, rels)
    stored = ArchivePolicy.objects.filter(pk=policy.pk).values(*ArchivePolicy.TARGET_FIELDS, "is_active").first()
    if stored is None:
        raise Refused(f"archive policy {policy} (id {policy.pk}) is not in the database")
    if not stored.pop("is_active"):
        raise Refused(f"archive policy {policy} is not active: workers only run active policies; activate it first")
    differ = {k: (v, getattr(target, k)) for k, v in stored.items() if v != getattr(target, k)}
    if differ:
        what = ", ".join(f"{k} stored {old!r}, now {new!r}" for k, (old, new) in sorted(differ.items()))
        raise Refused(f"archive policy {policy} no longer matches its model ({what}): open it in the admin, check "
                      f"it and save it again (workers only run what the saved policy names)")
    return model, target, rels


def archive_event(policy: ArchivePolicy, user_id: Optional[int], job_id: uuid.UUID, now: dt.datetime,
                  dry_run: bool, attempt: int = 1) -> Dict[str, Any]:
    """The archive.due of a policy; cutoff and purge_before are computed from `now`, ts is the real time."""
    _, target, rels = archive_target(policy)
    now_ms = to_ms(now)
    return _envelope(
        "archive.due", job_id, user_id, attempt,
        policy_id=policy.pk,
        module=target.module,
        model_name=target.model_name,
        table=target.db_table,  # a str: schema public (target.db_schema), as the SPEC reads it
        pk_column=target.pk_column,
        timestamp_column=target.timestamp_column,
        cutoff=max(0, now_ms - policy.archive_after_days * DAY_MS),
        batch_size=policy.batch_size,
        max_rows=policy.max_rows_per_run or None,
        purge_before=(
            max(0, now_ms - policy.delete_after_days * DAY_MS) if policy.delete_after_days is not None else None
        ),
        archived_by=user_id,
        dry_run=bool(dry_run),
        relations=rels,
    )


def _archive_run(policy: ArchivePolicy, job_id: uuid.UUID, user: Optional[Any], dry_run: bool) -> ArchiveRun:
    """The run of this job id, locked: a new QUEUED row, or the row of a job requested again under its id (the
    scheduler sends a slot again under the same id after Kafka did not take it). A run Kafka never took is
    queued again under the same attempt, so its failure, mailed once, is not mailed again while the broker stays
    down. Raises Refused when the id is another policy's run."""
    run, created = ArchiveRun.objects.select_for_update().get_or_create(
        job_id=job_id,
        defaults={"policy": policy, "dry_run": bool(dry_run), "requested_at": timezone.now(),
                  "requested_by": user if _user_id(user) is not None else None},
    )
    if not created and (run.policy_id != policy.pk or run.dry_run != bool(dry_run)):
        raise Refused(f"job id {job_id} is already archive run {run.pk} (policy {run.policy_id}, dry run "
                      f"{run.dry_run}): a new request needs a new job id")
    if not created and run.status == Status.FAILED and run.published_at is None:
        run.status, run.error_message, run.completed_at = Status.QUEUED, "", None
        run.save(update_fields=["status", "error_message", "completed_at"])
    return run


def request_archive(
    policy: ArchivePolicy,
    user: Optional[Any] = None,
    *,
    dry_run: bool = False,
    job_id: Optional[uuid.UUID] = None,
    now: Optional[dt.datetime] = None,
) -> ArchiveRequest:
    """Records an ArchiveRun and publishes archive.due for a policy once the current transaction commits (at once
    outside one).

    `now` is the moment cutoff and purge_before are computed from (the scheduler passes the cron slot).
    Raises LookupError when the policy's model or column does not resolve, Refused when it names a table
    archival must never touch or no longer matches its saved row, InvalidEvent when the contract rejects the
    event; nothing is created or sent then. The result says whether Kafka accepted the message; the run
    (ArchiveRequest.run_id) says so too, FAILED when Kafka did not take it, so the failure is mailed (notify.py).
    """
    job = job_id or uuid.uuid4()
    user_id = _user_id(user)
    with transaction.atomic():
        run = _archive_run(policy, job, user, dry_run)
        event = archive_event(policy, user_id, job, now or timezone.now(), dry_run, run.attempt)
        value = fusion_events.encode(event)
        req = ArchiveRequest(job_id=job, event=event, relations=event["relations"], run_id=run.pk)
        mine = ArchiveRun.objects.filter(pk=run.pk)

        def sent() -> None:
            req.published = True
            mine.update(published_at=timezone.now())
            # A failure mailed before (Kafka did not take an earlier send of this job) is not this one's: the
            # worker's outcome of the run now sent is mailed when it fails.
            mine.filter(status=Status.QUEUED).update(failure_notified_attempt=None)

        def not_sent(why: str) -> None:
            req.published, req.error = False, why
            mine.filter(status=Status.QUEUED).update(error_message=why)

        def failed(why: str) -> None:
            req.published, req.error = False, why
            mine.filter(status=Status.QUEUED).update(status=Status.FAILED, completed_at=timezone.now(),
                                                     error_message=f"not sent to the workers: {why}")

        _publish_after_commit(conf.topic("archive"), f"{event['module']}.{event['model_name']}", value,
                              f"archive.due policy={policy.pk} job={job} dry_run={dry_run} {_who(user)}",
                              sent=sent, not_sent=not_sent, failed=failed)
    return req
