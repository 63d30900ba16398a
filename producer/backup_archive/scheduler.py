"""The scheduler: turns cron slots into backup, verify and archive requests, each slot exactly once.

Exactly once, by three independent guards:
- one active scheduler: a PostgreSQL session advisory lock (FUSION_BACKUP['SCHEDULER_LOCK_ID']); a second
  scheduler waits as a standby and takes over when the first one's connection goes away;
- per object, the slots due are read and `last_scheduled_at` advanced under SELECT ... FOR UPDATE of that row,
  in the same transaction that creates the request;
- job ids are derived from the slot (slot_job_id), so even a replayed slot gets the same job id:
  BackupRecord.job_id is unique, and workers can recognise a duplicate archive or verify job.

The derivation is keyed (HMAC-SHA256 with FUSION_BACKUP['JOB_ID_SECRET']): the workers' ledger answers a job id it
has seen from its record, so with public ids (they were uuid5 of kind, object and time) anyone who can write to
Kafka could run a tiny decoy under a future slot's id and turn the real scheduled backup into a no-op recorded
as SUCCESS. Every scheduler process must hold the same secret; changing it changes the ids of future slots only
(past records keep theirs, and a slot already requested is found by last_scheduled_at, not by its id).

Verification (BackupConfiguration.verify_schedule): the newest due slot requests backup.verify, in
FUSION_BACKUP['VERIFY_MODE'], for the configuration's newest SUCCESS record with a file; its job id is
slot_job_id("verify", configuration, slot) like the others.

Each tick ends with the republish sweep (services.republish_queued): records left QUEUED because a process died
between commit and publish are sent again with their own job id.

Each tick then mails the failures not mailed yet (notify.notify_failures): the recorder writes records with SQL,
so no Django signal would tell of them; the active scheduler is the one process that looks.

One tick on its own, for a Celery beat (backup_archive.tasks) or cron, is `run_tick()`: it takes the same lock
for the tick's duration only, so it and a long-running `backup_scheduler` never both schedule.

Catch-up: after downtime, a tick requests at most CATCHUP_SLOTS missed slots per object (the newest), and logs
how many older ones it skipped. A new object's first slot is the first one after it was created (configurations)
or after the scheduler first saw it (policies, which have no creation time).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import time
import uuid
from typing import Callable, Iterator, List, Optional, Tuple

from croniter import croniter
from django.db import connection, transaction
from django.utils import timezone

from . import conf
from .authority import Refused
from .models import ArchivePolicy, BackupConfiguration, BackupRecord, Status
from .notify import notify_failures
from .services import republish_queued, request_archive, request_backup, request_verify

log = logging.getLogger("backup_archive.scheduler")

def slot_job_id(kind: str, object_id: int, slot: dt.datetime) -> uuid.UUID:
    """The job id of one cron slot: same (kind, object, instant) and same secret -> same id, in every scheduler
    process; without the secret (conf.job_id_key) nobody can compute it in advance.

    The first 16 bytes of HMAC-SHA256(key, "kind:object:instant") marked as an RFC 9562 version 8 (custom) UUID."""
    instant = slot.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = bytearray(hmac.new(conf.job_id_key(), f"{kind}:{object_id}:{instant}".encode(),
                                hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC variant
    return uuid.UUID(bytes=bytes(digest))


def _tz() -> dt.tzinfo:
    name = conf.get("SCHEDULER_TIMEZONE")
    if name:
        import zoneinfo  # Python 3.9+; only needed when a zone other than TIME_ZONE is configured

        return zoneinfo.ZoneInfo(name)
    return timezone.get_default_timezone()


def _aware(moment: dt.datetime) -> dt.datetime:
    if timezone.is_naive(moment):  # USE_TZ=False: Django's naive datetimes are in TIME_ZONE
        return timezone.make_aware(moment, timezone.get_default_timezone())
    return moment


def _stored(moment: dt.datetime) -> dt.datetime:
    """A datetime in the form the project stores (naive local when USE_TZ=False)."""
    moment = _aware(moment)
    return moment if timezone.is_aware(timezone.now()) else timezone.make_naive(moment)


def due_slots(expr: str, after: dt.datetime, now: dt.datetime, limit: int) -> Tuple[List[dt.datetime], int]:
    """Cron slots s with after < s <= now, in order; at most the newest `limit`. Returns (slots, skipped)."""
    tz = _tz()
    it = croniter(expr, _aware(after).astimezone(tz))
    now = _aware(now)
    slots: List[dt.datetime] = []
    skipped = 0
    while True:
        s = it.get_next(dt.datetime)
        if s > now:
            break
        slots.append(s)
        if len(slots) > limit:  # keep memory bounded after a long downtime on a per-minute schedule
            slots.pop(0)
            skipped += 1
    return slots, skipped


def next_slot(expr: str, after: dt.datetime) -> dt.datetime:
    """The first cron slot after `after`, read in the scheduler's time zone (what the admin shows as next run)."""
    return croniter(expr, _aware(after).astimezone(_tz())).get_next(dt.datetime)


def previous_slot(expr: str, before: dt.datetime) -> dt.datetime:
    """The last cron slot at or before `before`."""
    return croniter(expr, _aware(before).astimezone(_tz()) + dt.timedelta(seconds=1)).get_prev(dt.datetime)


class Scheduler:
    def __init__(self, now: Optional[dt.datetime] = None) -> None:
        self._fixed_now = now  # tests pin the clock

    def now(self) -> dt.datetime:
        return self._fixed_now or timezone.now()

    # --- the single-scheduler lock --------------------------------------------------------------------------

    def acquire_lock(self) -> bool:
        """Takes (or confirms we still hold) the advisory lock on Django's connection. Session-level: it is
        released when this process's connection closes, so a crashed scheduler never blocks the next one."""
        key = int(conf.get("SCHEDULER_LOCK_ID"))
        with connection.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                " AND classid = (%s >> 32)::oid AND objid = (%s & 4294967295)::oid AND objsubid = 1",
                [key, key],
            )
            if cur.fetchone()[0]:
                return True
            cur.execute("SELECT pg_try_advisory_lock(%s)", [key])
            return bool(cur.fetchone()[0])

    def release_lock(self) -> None:
        key = int(conf.get("SCHEDULER_LOCK_ID"))
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock_all()")
        log.debug("released scheduler lock %d", key)

    # --- one tick -----------------------------------------------------------------------------------------

    def tick(self) -> int:
        """Requests every due slot once, then republishes stuck QUEUED records, then mails new failures. Returns
        how many requests were sent (republished ones included)."""
        n = 0
        for pk in BackupConfiguration.objects.filter(is_active=True).values_list("pk", flat=True):
            n += self._tick_config(pk)
        for pk in ArchivePolicy.objects.filter(is_active=True).values_list("pk", flat=True):
            n += self._tick_policy(pk)
        n += self.requeue()
        self.notify()
        return n

    def notify(self) -> int:
        """Failure mails (notify.py); returns how many were sent."""
        return len(notify_failures())

    def requeue(self) -> int:
        """The republish sweep (services.republish_queued), when FUSION_BACKUP['REQUEUE_AFTER_MINUTES'] is set.

        It runs on the real clock, not the pinned one: published_at is always a real time."""
        minutes = conf.get("REQUEUE_AFTER_MINUTES")
        if not minutes:
            return 0
        return sum(1 for r in republish_queued(float(minutes)) if not r.error)

    def _slots(self, what: str, expr: str, last: Optional[dt.datetime], start: dt.datetime) -> List[dt.datetime]:
        slots, skipped = due_slots(expr, last or start, self.now(), int(conf.get("CATCHUP_SLOTS")))
        if skipped:
            log.warning("%s: skipped %d missed slot(s) older than the newest %d (FUSION_BACKUP['CATCHUP_SLOTS'])",
                        what, skipped, len(slots))
        return slots

    def _tick_config(self, pk: int) -> int:
        n = 0
        with transaction.atomic():
            config = BackupConfiguration.objects.select_for_update().filter(pk=pk, is_active=True).first()
            if config is None:
                return 0
            if config.schedule:
                slots = self._slots(f"backup {config.name}", config.schedule, config.last_scheduled_at,
                                    config.created_at)
                for slot in slots:
                    job = slot_job_id("backup", config.pk, slot)
                    if BackupRecord.objects.filter(job_id=job).exists():
                        continue  # already requested (by a scheduler that lost its state update)
                    try:
                        request_backup(config, None, job_id=job, now=_stored(slot))
                    except (LookupError, Refused) as e:
                        # One broken configuration must not stop the others' slots: say why, spend the slot.
                        log.error("backup %s: slot %s not requested: %s", config.name, slot.isoformat(), e)
                        continue
                    log.info("backup %s: slot %s requested, job %s", config.name, slot.isoformat(), job)
                    n += 1
                if slots:
                    config.last_scheduled_at = _stored(slots[-1])
                    BackupConfiguration.objects.filter(pk=pk).update(last_scheduled_at=config.last_scheduled_at)
            if config.verify_schedule:
                slots = self._slots(f"verify {config.name}", config.verify_schedule,
                                    config.last_verify_scheduled_at, config.created_at)
                if slots:
                    # Only the newest slot matters: verifying the same latest backup twice proves nothing new.
                    latest = (BackupRecord.objects.filter(configuration=config, status=Status.SUCCESS)
                              .exclude(file_path="").order_by("-completed_at", "-id").first())
                    if latest is not None:
                        job = slot_job_id("verify", config.pk, slots[-1])
                        request_verify(latest, None, mode=conf.verify_mode(), job_id=job)
                        log.info("verify %s: slot %s requested for record %s (%s), job %s", config.name,
                                 slots[-1].isoformat(), latest.pk, latest.file_path, job)
                        n += 1
                    else:
                        log.warning("verify %s: slot %s skipped: no successful backup to verify yet",
                                    config.name, slots[-1].isoformat())
                    BackupConfiguration.objects.filter(pk=pk).update(last_verify_scheduled_at=_stored(slots[-1]))
        return n

    def _tick_policy(self, pk: int) -> int:
        n = 0
        req = None
        with transaction.atomic():
            policy = ArchivePolicy.objects.select_for_update().filter(pk=pk, is_active=True).first()
            if policy is None:
                return 0
            expr = policy.schedule or conf.get("ARCHIVE_SCHEDULE")
            if policy.last_scheduled_at is None:
                # No creation time on policies: start from now, so enabling the scheduler does not archive
                # at once for every policy (the first run is the next slot).
                ArchivePolicy.objects.filter(pk=pk).update(last_scheduled_at=_stored(self.now()))
                return 0
            slots = self._slots(f"archive {policy}", expr, policy.last_scheduled_at, policy.last_scheduled_at)
            if not slots:
                return 0
            # Archival is cumulative (cutoff moves forward): one request for the newest slot covers the others.
            slot = slots[-1]
            previous = policy.last_scheduled_at
            try:
                req = request_archive(policy, None, job_id=slot_job_id("archive", policy.pk, slot),
                                      now=_stored(slot))
                n += 1
            except (LookupError, Refused) as e:  # a broken policy is skipped (and logged) until someone fixes it
                log.error("archive %s: not requested: %s", policy, e)
            ArchivePolicy.objects.filter(pk=pk).update(last_scheduled_at=_stored(slot))
        if req is not None and req.published is False:
            # Nothing sends a QUEUED ArchiveRun again (the republish sweep is BackupRecord's), so a lost publish
            # would lose the slot: put the slot back and let the next tick send it again (same slot, same job
            # id, same ArchiveRun; its failure was mailed once).
            ArchivePolicy.objects.filter(pk=pk, last_scheduled_at=_stored(slot)).update(last_scheduled_at=previous)
            log.error("archive %s: slot %s not sent, will retry next tick: %s", policy, slot.isoformat(), req.error)
            n -= 1
        return n


def run_tick(now: Optional[dt.datetime] = None) -> Optional[int]:
    """One tick under the scheduler lock, released afterwards: the requests sent, or None when another
    scheduler holds the lock (it schedules; this tick has nothing to do). For Celery beat and cron, where no
    process stays up between ticks."""
    sched = Scheduler(now)
    key = int(conf.get("SCHEDULER_LOCK_ID"))
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", [key])
        if not cur.fetchone()[0]:
            log.info("tick skipped: another scheduler holds lock %d", key)
            return None
    try:
        return sched.tick()
    finally:
        # Only this tick's hold (pg_advisory_unlock, not _all): the connection lives on in a Celery worker.
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", [key])


def iter_ticks(interval: float, stop: Callable[[], bool]) -> Iterator[None]:
    """Yields once per tick until stop() is true, sleeping in short steps so a signal stops it quickly."""
    while not stop():
        yield
        end = time.monotonic() + interval
        while not stop() and time.monotonic() < end:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))
