"""The five tables of the app. schemas/sql/backup_archive.sql is the same DDL for the C side, which reads and
writes these tables by name (the worker fills in BackupRecord, is to fill in ArchiveRun, and inserts
ArchivedRecord rows), so a change here is a change of that contract: update the SQL file too
(tests/test_schema_sql.py compares them).

Migration 0003 (issue 10, the database is the authority): the workers run a request only when it matches these
rows, so what Django stores must be what it publishes: ArchivePolicy keeps its resolved table, key and timestamp
column, BackupRecord the table list and the verify job id of its requests, and BackupConfiguration.storage_path is
never empty. Custom permissions (run_backup, run_verify, run_archive, unarchive) guard the admin's actions.

Timestamps follow the project's USE_TZ (Fusion runs with USE_TZ=False and naive India time); the columns are
timestamptz either way, so the worker's writes are absolute times.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.utils import timezone

from . import conf
from .authority import Refused, check_archive, check_backup_tables
from .resolve import module_tables, policy_target, relations



def _id() -> models.BigAutoField:
    """Each model's primary key, declared rather than left to DEFAULT_AUTO_FIELD: Django 3.1 (Fusion's) has no
    such setting and would give the models an AutoField over the bigint columns migration 0001 made, and a
    project's `makemigrations` would then write a migration into this app. Declared exactly as the auto-created
    field of migration 0001, so no Django version sees a change."""
    return models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")


class BackupType(models.TextChoices):
    FULL = "FULL", "Full"
    INCREMENTAL = "INCREMENTAL", "Incremental"
    DIFFERENTIAL = "DIFFERENTIAL", "Differential"


class Status(models.TextChoices):
    QUEUED = "QUEUED", "Queued"  # created, event published or being published, no worker has started
    RUNNING = "RUNNING", "Running"
    SUCCESS = "SUCCESS", "Success"
    FAILED = "FAILED", "Failed"


def validate_cron(value: str) -> None:
    if not value:
        return
    from croniter import croniter

    if not croniter.is_valid(value):
        raise ValidationError(f"{value!r} is not a valid cron expression (e.g. '0 2 * * *': daily at 02:00)")


def validate_str_list(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
        raise ValidationError("must be a JSON list of non-empty strings")


def validate_tables(value: object) -> None:
    ok = isinstance(value, list) and all(
        (isinstance(t, str) and t)
        or (isinstance(t, list) and len(t) == 2 and all(isinstance(x, str) and x for x in t))
        for t in value
    )
    if not ok:
        raise ValidationError('must be a JSON list of table names or ["schema", "table"] pairs')


class BackupConfiguration(models.Model):
    id = _id()
    name = models.CharField(max_length=255, unique=True)
    backup_type = models.CharField(max_length=16, choices=BackupType.choices, default=BackupType.FULL)
    schedule = models.CharField(
        max_length=100, blank=True, default="", validators=[validate_cron],
        help_text="cron expression, e.g. '0 2 * * *'; empty: only on request",
    )
    modules = models.JSONField(
        default=list, blank=True, validators=[validate_str_list],
        help_text="Django app labels whose tables are backed up; with no modules and no tables: every table",
    )
    tables = models.JSONField(
        default=list, blank=True, validators=[validate_tables],
        help_text='extra tables exactly as PostgreSQL names them, or ["schema", "table"]',
    )
    storage_path = models.CharField(
        max_length=1024, blank=True, default="",
        help_text="folder under the worker's storage root; left empty, it is filled from "
                  "FUSION_BACKUP['STORAGE_PATH_TEMPLATE'] (configs/<id>) when saved",
    )
    retention_days = models.PositiveIntegerField(default=30, validators=[MaxValueValidator(36500)])
    verify_schedule = models.CharField(
        max_length=100, blank=True, default="", validators=[validate_cron],
        help_text="cron expression for verifying the latest successful backup; empty: never",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Scheduler state: the last cron slot requested for this configuration (backup and verify).
    last_scheduled_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_verify_scheduled_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]
        permissions = [("run_backup", "Can request a backup now")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # Resolve now, so an unknown module or a catalog table is a form error, not a FAILED job.
        if not (isinstance(self.modules, list) and isinstance(self.tables, list)):
            return  # the field validators have said why
        errors: Dict[str, str] = {}
        try:
            check_backup_tables(self.tables)
        except Refused as e:
            errors["tables"] = str(e)
        try:
            check_backup_tables(module_tables(self.modules))
        except (LookupError, Refused) as e:
            errors["modules"] = str(e)
        if errors:
            raise ValidationError(errors)

    def save(self, *args: Any, **kwargs: Any) -> None:
        # The workers compare a request's storage_path with this column exactly, so it is never left empty. The
        # template may use {id}, which a new row only has after its INSERT: then fill it in a second statement,
        # in the same transaction.
        if not self.storage_path and self.pk is not None:
            self.storage_path = conf.default_storage_path(self.pk, self.name)
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = set(kwargs["update_fields"]) | {"storage_path"}
        with transaction.atomic(using=kwargs.get("using")):
            super().save(*args, **kwargs)
            if not self.storage_path:
                self.storage_path = conf.default_storage_path(self.pk, self.name)
                type(self)._default_manager.filter(pk=self.pk).update(storage_path=self.storage_path)


class _Job(models.Model):
    """The columns of one job's row, BackupRecord's and ArchiveRun's alike: the request (Django writes it with the
    job id it publishes) and the outcome the recorder applies from the job's job.status events, by job id and the
    row's own ids, forward only (QUEUED -> RUNNING -> SUCCESS | FAILED; FAILED -> SUCCESS on a replay)."""

    id = _id()
    job_id = models.UUIDField(unique=True, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    requested_at = models.DateTimeField(default=timezone.now)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    error_message = models.TextField(blank=True, default="")
    attempt = models.IntegerField(default=1)
    worker = models.CharField(max_length=255, blank=True, default="")
    stats = models.JSONField(null=True, blank=True)
    # When Kafka last acknowledged this job's request (set by the producer, never by workers). A BackupRecord
    # still QUEUED long after it (or never published: the process died between commit and publish) is sent
    # again by the republish sweep (services.republish_queued), with the same job id.
    published_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Failure mails (notify.py, migrations 0004 and 0005): the attempt whose failure was mailed. Written by this
    # app only; a failure is due while it lags behind attempt.
    failure_notified_attempt = models.IntegerField(null=True, blank=True, editable=False)

    class Meta:
        abstract = True
        ordering = ["-requested_at", "-id"]

    @property
    def duration(self) -> Optional["timezone.timedelta"]:
        if self.started_at and self.completed_at:
            return self.completed_at - self.started_at
        return None


class BackupRecord(_Job):
    configuration = models.ForeignKey(BackupConfiguration, on_delete=models.CASCADE, related_name="records")
    backup_type = models.CharField(max_length=16, choices=BackupType.choices)
    file_path = models.CharField(max_length=1024, blank=True, default="")
    file_size = models.BigIntegerField(null=True, blank=True)
    last_verified_at = models.DateTimeField(null=True, blank=True)
    verify_status = models.CharField(max_length=16, blank=True, default="")
    verify_message = models.TextField(blank=True, default="")
    # The table list this record's backup.requested carries, in wire form (names or [schema, table]; [] = every
    # user table), fixed when the record is created: a worker runs the backup only when the request's tables
    # equal these. NULL: a record from before migration 0003 (the republish sweep fills it).
    tables = models.JSONField(null=True, blank=True, editable=False)
    # The job id of the verification last requested for this record: a worker runs, and the recorder accepts, a
    # backup.verify only under this id, so a forged verify result cannot set verify_status.
    verify_job_id = models.UUIDField(null=True, blank=True, editable=False)
    # Failure mails (notify.py, migration 0004): the verify job whose failure was mailed; a failure is due while
    # it is not verify_job_id.
    verify_notified_job_id = models.UUIDField(null=True, blank=True, editable=False)

    class Meta(_Job.Meta):
        permissions = [("run_verify", "Can request a verification of a backup")]

    def __str__(self) -> str:
        return f"{self.configuration} {self.requested_at:%Y-%m-%d %H:%M} {self.status}"

    def verification(self, message_chars: int = 60) -> str:
        """The last verification in one line: 'never', 'QUEUED', 'SUCCESS at 2026-05-01 10:00' or
        'FAILED at ...: why' (the message cut to message_chars)."""
        if not self.verify_status:
            return "never"
        out = self.verify_status
        if self.last_verified_at is not None and self.verify_status != Status.QUEUED:
            at = self.last_verified_at
            if timezone.is_aware(at):
                at = timezone.localtime(at)
            out += f" at {at:%Y-%m-%d %H:%M}"
        msg = " ".join(self.verify_message.split())
        if msg and self.verify_status != Status.SUCCESS:
            out += ": " + (msg if len(msg) <= message_chars else msg[: message_chars - 3] + "...")
        return out


class ArchivePolicy(models.Model):
    id = _id()
    module = models.CharField(max_length=100, help_text="Django app label, e.g. 'leave'")
    model_name = models.CharField(max_length=100, help_text="model name, e.g. 'Leave'")
    timestamp_column = models.CharField(
        max_length=63, help_text="date/time column (or field name): rows older than archive_after_days go"
    )
    archive_after_days = models.PositiveIntegerField(default=365)
    delete_after_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="delete archived copies this many days after archival; empty: keep"
    )
    batch_size = models.PositiveIntegerField(
        default=500, validators=[MinValueValidator(1), MaxValueValidator(100000)]
    )
    max_rows_per_run = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    schedule = models.CharField(
        max_length=100, blank=True, default="", validators=[validate_cron],
        help_text="cron expression; empty: FUSION_BACKUP['ARCHIVE_SCHEDULE'] (daily)",
    )
    is_active = models.BooleanField(default=True)
    last_scheduled_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The model's table and primary key as Django resolved them when the policy was last saved; a worker runs an
    # archive.due only when the event's module, model_name, table, pk_column and timestamp_column equal the
    # row's. '' when the policy did not resolve (or was not saved since migration 0003): workers refuse it.
    db_schema = models.CharField(max_length=63, blank=True, default="", editable=False)
    db_table = models.CharField(max_length=63, blank=True, default="", editable=False)
    pk_column = models.CharField(max_length=63, blank=True, default="", editable=False)

    class Meta:
        unique_together = [("module", "model_name")]
        verbose_name_plural = "archive policies"
        ordering = ["module", "model_name"]
        permissions = [("run_archive", "Can request archival (dry run or for real)")]

    def __str__(self) -> str:
        return f"{self.module}.{self.model_name}"

    # The columns save() writes from the resolution (kept in update_fields when a caller names some).
    TARGET_FIELDS = ("module", "model_name", "timestamp_column", "db_schema", "db_table", "pk_column")

    def clean(self) -> None:
        # Resolve now, so a typo or a forbidden table is an admin form error rather than a FAILED job at 2 a.m.
        try:
            model, target = policy_target(self.module, self.model_name, self.timestamp_column)
            check_archive(target.db_table, relations(model))
        except (LookupError, Refused) as e:
            raise ValidationError(str(e)) from None
        self.model_name, self.timestamp_column = target.model_name, target.timestamp_column

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.store_target()
        if kwargs.get("update_fields") is not None:
            kwargs["update_fields"] = set(kwargs["update_fields"]) | set(self.TARGET_FIELDS)
        super().save(*args, **kwargs)

    def store_target(self) -> None:
        """Sets the resolved names on this instance; a policy that does not resolve, or names a table archival
        must never touch, gets empty db_* columns, which every worker refuses (services refuse it earlier)."""
        try:
            model, target = policy_target(self.module, self.model_name, self.timestamp_column)
            check_archive(target.db_table, relations(model))
        except (LookupError, Refused):
            self.db_schema = self.db_table = self.pk_column = ""
            return
        for name in self.TARGET_FIELDS:
            setattr(self, name, getattr(target, name))


class ArchiveRun(_Job):
    """One archive job (archive.due): created by services.request_archive() with the job id it publishes, so an
    archival failure has a row to be found in, as a backup's has (notify.py mails it).

    Django writes QUEUED, published_at, and FAILED when Kafka did not take the request; the worker's outcome
    (RUNNING, SUCCESS, FAILED with its error and stats) is the recorder's to write, by job id and policy id, on the
    same rules as BackupRecord's (worker/src/daemon/dmn_recorder.h). A scheduled slot whose publish failed is
    requested again under the same job id: the same row, queued again (services._archive_run).
    """

    policy = models.ForeignKey(ArchivePolicy, on_delete=models.CASCADE, related_name="runs")
    dry_run = models.BooleanField(default=False)

    class Meta(_Job.Meta):
        pass

    def __str__(self) -> str:
        kind = "dry run" if self.dry_run else "archival"
        return f"{kind} of {self.policy} {self.requested_at:%Y-%m-%d %H:%M} {self.status}"


class ArchivedRecord(models.Model):
    """One row moved out of its table by an archive job (written by the worker, read here and by unarchive).

    `data` is JSON text, an envelope of version 1 (worker/src/job/job_archive.h):
        {"v": 1, "table": ["public", "leave_leave"], "pk": "id", "row": {...the row as row_to_json gives it...}}
    "table" and "pk" say where the row goes back; "row" is the row itself.
    """

    id = _id()

    module = models.CharField(max_length=100)
    model_name = models.CharField(max_length=100)
    original_id = models.CharField(max_length=255)
    data = models.TextField(
        help_text='JSON envelope {"v": 1, "table": [schema, name], "pk": column, "row": {...}}'
    )
    archived_at = models.DateTimeField(default=timezone.now, db_index=True)
    archived_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    job_id = models.UUIDField(null=True, blank=True)

    class Meta:
        constraints = [
            # One archived copy per original row. The worker does not insert with ON CONFLICT: it checks for an
            # existing record first and leaves a conflicting live row in its table (stats: skipped_conflict),
            # so nothing is overwritten; re-running a job is harmless because committed rows are already gone.
            models.UniqueConstraint(
                fields=["module", "model_name", "original_id"], name="backup_archive_archivedrecord_uniq"
            )
        ]
        ordering = ["-archived_at"]
        permissions = [("unarchive", "Can put archived rows back into their tables")]

    def __str__(self) -> str:
        return f"{self.module}.{self.model_name} #{self.original_id}"

    @property
    def envelope(self) -> Optional[Dict[str, Any]]:
        """`data` parsed, or None when it is not a version-1 envelope (hand-made or damaged rows)."""
        try:
            env = json.loads(self.data)
        except (TypeError, ValueError):
            return None
        if not isinstance(env, dict) or env.get("v") != 1 or not isinstance(env.get("row"), dict):
            return None
        return env

    @property
    def row(self) -> Optional[Dict[str, Any]]:
        env = self.envelope
        return env["row"] if env is not None else None

    @property
    def table_name(self) -> str:
        """The source table as `schema.name` (quoted where PostgreSQL would need it), '' when unknown."""
        env = self.envelope
        table = env.get("table") if env is not None else None
        if isinstance(table, str):
            table = ["public", table]
        if not (isinstance(table, list) and len(table) == 2 and all(isinstance(x, str) for x in table)):
            return ""
        return ".".join(x if x.isidentifier() and x == x.lower() else '"' + x.replace('"', '""') + '"'
                        for x in table)
