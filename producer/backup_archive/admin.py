"""Admin for the five models, with "Back up now", "Verify" and "Archive now (dry run / for real)" actions.

Each action needs its own permission (Meta.permissions: run_backup, run_verify, run_archive), not just access
to the admin: Django leaves an action out of the list, and refuses a POST naming it ("No action selected"), for
a user without it, so view-only staff can look but not start jobs. "Archive now (for real)" moves rows out of
live tables, so it first shows what will move (each policy's table, cutoff and rows due) and runs only on a
POST that confirms. Every action is logged with the acting user on the `backup_archive.admin` logger.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db import models, transaction
from django.db.models import Max, OuterRef, Q, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from . import health, services
from .compat import action, display
from .authority import Refused, qualified
from .models import ArchivedRecord, ArchivePolicy, ArchiveRun, BackupConfiguration, BackupRecord, Status

audit = logging.getLogger("backup_archive.admin")


def _has_perm(modeladmin: admin.ModelAdmin, request: HttpRequest, codename: str) -> bool:
    return request.user.has_perm(f"{modeladmin.opts.app_label}.{codename}")


def _log_action(request: HttpRequest, action: str, objects: List[Any]) -> None:
    user = request.user
    audit.info("%s by user id=%s username=%s on %d object(s): %s", action, user.pk, user.get_username(),
               len(objects), ", ".join(f"{o} (id {o.pk})" for o in objects))


def _request_each(modeladmin: admin.ModelAdmin, request: HttpRequest, what: str, objects: List[Any],
                  send: Callable[[Any], str], label: Callable[[Any], str] = str) -> None:
    """An action's requests: logged with the acting user, then one per object. send(obj) returns '' when the
    workers will get it, else why not; an exception (LookupError, Refused, InvalidEvent) says why too, and the
    other objects go on. Reports how many went and, one message each, what did not."""
    _log_action(request, what, objects)
    ok, failures = 0, []
    for obj in objects:
        try:
            why: object = send(obj)
        except Exception as e:
            why = e
        if why:
            failures.append((label(obj), why))
        else:
            ok += 1
    if ok:
        modeladmin.message_user(request, f"{ok} request(s) sent to the workers.", messages.SUCCESS)
    for name, why in failures:
        modeladmin.message_user(request, f"{name}: {why}", messages.ERROR)


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "–"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@admin.register(BackupConfiguration)
class BackupConfigurationAdmin(admin.ModelAdmin):
    # Health first (issue 13): is it backing up, when next, does the last backup verify.
    list_display = ("name", "backup_type", "schedule", "last_success", "next_run", "last_verification",
                    "retention_days", "is_active")
    list_filter = ("backup_type", "is_active")
    search_fields = ("name",)
    readonly_fields = ("health_panel", "created_at", "updated_at", "last_scheduled_at", "last_verify_scheduled_at")
    actions = ["backup_now"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # One query for the changelist's health columns (no query per row).
        newest_verified = (BackupRecord.objects.filter(configuration=OuterRef("pk"), last_verified_at__isnull=False)
                           .exclude(verify_status__in=["", Status.QUEUED]).order_by("-last_verified_at", "-id"))
        return super().get_queryset(request).annotate(
            last_success_at=Max("records__completed_at", filter=Q(records__status=Status.SUCCESS)),
            last_verified_at=Subquery(newest_verified.values("last_verified_at")[:1]),
            last_verify_status=Subquery(newest_verified.values("verify_status")[:1]),
        )

    @display(description="last success", ordering="last_success_at")
    def last_success(self, obj: BackupConfiguration) -> str:
        at = getattr(obj, "last_success_at", None)
        text = health.when(at) if at is not None else "never"
        if health.overdue(obj, at, timezone.now()):
            return format_html('<span style="color:#ba2121;font-weight:bold">{} – overdue</span>', text)
        return text

    @display(description="next run")
    def next_run(self, obj: BackupConfiguration) -> str:
        at = health.next_run(obj.schedule, obj.is_active, timezone.now())
        return health.when(at) if at is not None else ("inactive" if obj.schedule else "on request only")

    @display(description="last verification", ordering="last_verified_at")
    def last_verification(self, obj: BackupConfiguration) -> str:
        status = getattr(obj, "last_verify_status", None)
        if not status:
            return "never"
        text = f"{status} {health.when(obj.last_verified_at)}"
        if status == Status.FAILED:
            return format_html('<span style="color:#ba2121;font-weight:bold">{}</span>', text)
        return text

    @display(description="health")
    def health_panel(self, obj: Optional[BackupConfiguration]) -> str:
        if obj is None or obj.pk is None:
            return "–"
        h = health.config_health(obj)
        now = timezone.now()
        failure = h.last_failure
        verified = h.last_verified
        rows = [
            ("last success", health.when(h.last_success.completed_at, now) if h.last_success else "never"),
            ("overdue", "yes: a whole scheduled slot has passed without a successful backup" if h.overdue else "no"),
            ("last failure", f"{health.when(failure.completed_at, now)}: {Truncator(failure.error_message).chars(120)}"
             if failure else "none"),
            ("next run", health.when(h.next_run, now) if h.next_run else "–"),
            ("next verification", health.when(h.next_verify, now) if h.next_verify else "–"),
            ("last verification", f"{verified.verify_status} {health.when(verified.last_verified_at, now)}"
             + (f": {Truncator(verified.verify_message).chars(120)}" if verified.verify_message else "")
             if verified else "never"),
        ]

        def tip(r: health.Run, what: str) -> str:
            return f"{health.local(r.completed_at):%Y-%m-%d %H:%M} {r.status}: {what}"

        size = health.sparkline("size", [(float(r.size) if r.size is not None else None,
                                          tip(r, filesizeformat(r.size) if r.size is not None else "no file"),
                                          r.status == Status.FAILED) for r in h.runs])
        duration = health.sparkline("duration", [(r.seconds, tip(r, _duration(r.seconds)),
                                                  r.status == Status.FAILED) for r in h.runs])
        sizes = [r.size for r in h.runs if r.size is not None]
        secs = [r.seconds for r in h.runs if r.seconds is not None]
        return format_html(
            '<table class="fb-health">{}'
            '<tr><th>size, last {} runs</th><td>{} <small>{}</small></td></tr>'
            '<tr><th>duration, last {} runs</th><td>{} <small>{}</small></td></tr></table>',
            format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows),
            len(h.runs), size,
            f"{filesizeformat(min(sizes))} – {filesizeformat(max(sizes))}" if sizes else "",
            len(h.runs), duration, f"{_duration(min(secs))} – {_duration(max(secs))}" if secs else "",
        )

    def has_run_backup_permission(self, request: HttpRequest) -> bool:
        return _has_perm(self, request, "run_backup")

    @action(description="Back up now", permissions=["run_backup"])
    def backup_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        def send(config: BackupConfiguration) -> str:
            record = services.request_backup(config, request.user)
            # Outside a transaction the publish has happened by now; inside ATOMIC_REQUESTS it happens after
            # the response, and the record list shows the outcome.
            record.refresh_from_db()
            return (record.error_message or "FAILED") if record.status == Status.FAILED else ""

        _request_each(self, request, "backup_now", list(queryset), send, label=lambda c: c.name)


class VerificationFilter(admin.SimpleListFilter):
    """Filter by the last verification: never verified, waiting, passed, failed."""

    title = "last verification"
    parameter_name = "verified"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> List[Tuple[str, str]]:
        return [("never", "never verified"), ("queued", "verification queued"), ("success", "passed"),
                ("failed", "failed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == "never":
            return queryset.filter(verify_status="")
        if value in ("queued", "success", "failed"):
            return queryset.filter(verify_status=value.upper())
        return queryset


class _WrittenByWorkers(admin.ModelAdmin):
    """Rows the workers (and requests) write: the admin only shows them."""

    def get_readonly_fields(self, request: HttpRequest, obj: Optional[models.Model] = None) -> Any:
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @display(description="error")
    def error_short(self, obj: Any) -> str:
        return Truncator(obj.error_message).chars(80)


@admin.register(BackupRecord)
class BackupRecordAdmin(_WrittenByWorkers):
    list_display = ("requested_at", "configuration", "backup_type", "status", "size", "duration_display",
                    "attempt", "worker", "error_short", "last_verified_at", "verification_display")
    list_filter = ("status", "backup_type", VerificationFilter, "configuration")
    search_fields = ("job_id", "configuration__name", "file_path", "error_message")
    date_hierarchy = "requested_at"
    list_select_related = ("configuration",)
    actions = ["verify_integrity", "verify_restore"]

    def has_run_verify_permission(self, request: HttpRequest) -> bool:
        return _has_perm(self, request, "run_verify")

    @display(description="size", ordering="file_size")
    def size(self, obj: BackupRecord) -> str:
        return filesizeformat(obj.file_size) if obj.file_size is not None else "–"

    @display(description="duration")
    def duration_display(self, obj: BackupRecord) -> str:
        d = obj.duration
        return _duration(d.total_seconds() if d is not None else None)

    @display(description="verification", ordering="verify_status")
    def verification_display(self, obj: BackupRecord) -> str:
        # The time has its own column; here the result and, for a failure, why (the full text is on the record).
        if not obj.verify_status:
            return "never"
        if obj.verify_status == Status.SUCCESS or not obj.verify_message:
            return obj.verify_status
        return f"{obj.verify_status}: {Truncator(' '.join(obj.verify_message.split())).chars(80)}"

    def _verify(self, request: HttpRequest, queryset: QuerySet, mode: str) -> None:
        def send(record: BackupRecord) -> str:
            if record.status != Status.SUCCESS or not record.file_path:
                return "only successful backups with a file can be verified"
            services.request_verify(record, request.user, mode=mode)
            record.refresh_from_db()
            return (record.verify_message or "FAILED") if record.verify_status == Status.FAILED else ""

        _request_each(self, request, f"verify ({mode})", list(queryset.select_related("configuration")), send)

    @action(description="Verify (integrity)", permissions=["run_verify"])
    def verify_integrity(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._verify(request, queryset, "integrity")

    @action(description="Verify (restore into a scratch database)", permissions=["run_verify"])
    def verify_restore(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._verify(request, queryset, "restore")


@admin.register(ArchiveRun)
class ArchiveRunAdmin(_WrittenByWorkers):
    list_display = ("requested_at", "policy", "dry_run", "status", "attempt", "worker", "error_short")
    list_filter = ("status", "dry_run", "policy")
    search_fields = ("job_id", "error_message")
    date_hierarchy = "requested_at"
    list_select_related = ("policy",)

@admin.register(ArchivePolicy)
class ArchivePolicyAdmin(admin.ModelAdmin):
    list_display = ("__str__", "timestamp_column", "archive_after_days", "delete_after_days", "batch_size",
                    "max_rows_per_run", "schedule", "is_active", "last_scheduled_at")
    list_filter = ("module", "is_active")
    search_fields = ("module", "model_name")
    # What save() resolved and the workers compare archive.due events with (migration 0003).
    readonly_fields = ("last_scheduled_at", "db_schema", "db_table", "pk_column")
    actions = ["archive_dry_run", "archive_now"]
    confirmation_template = "admin/backup_archive/archivepolicy/archive_confirmation.html"

    def has_run_archive_permission(self, request: HttpRequest) -> bool:
        return _has_perm(self, request, "run_archive")

    def _archive(self, request: HttpRequest, queryset: QuerySet, dry_run: bool) -> None:
        def send(policy: ArchivePolicy) -> str:
            req = services.request_archive(policy, request.user, dry_run=dry_run)
            return (req.error or "not sent") if req.published is False else ""

        _request_each(self, request, "archive_dry_run" if dry_run else "archive_now", list(queryset), send)

    @action(description="Archive now (dry run: count only)", permissions=["run_archive"])
    def archive_dry_run(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._archive(request, queryset, dry_run=True)

    @action(description="Archive now (for real)", permissions=["run_archive"])
    def archive_now(self, request: HttpRequest, queryset: QuerySet) -> Optional[HttpResponse]:
        # Rows leave live tables: show what will move first; only the confirming POST (from that page) runs it.
        if request.POST.get("confirm") != "yes":
            return self._archive_confirmation(request, queryset)
        self._archive(request, queryset, dry_run=False)
        return None

    def _archive_confirmation(self, request: HttpRequest, queryset: QuerySet) -> TemplateResponse:
        now = timezone.now()
        rows = [self._due(policy, now) for policy in queryset]
        audit.info("archive_now confirmation shown to user id=%s username=%s for: %s", request.user.pk,
                   request.user.get_username(), ", ".join(f"{r['policy']} ({r['due']} due)" for r in rows))
        context = {
            **self.admin_site.each_context(request),
            "title": "Archive these rows now?",
            "opts": self.opts,
            "rows": rows,
            "queryset": queryset,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "runnable": any(not r["error"] for r in rows),
        }
        return TemplateResponse(request, self.confirmation_template, context)

    @staticmethod
    def _due(policy: ArchivePolicy, now: dt.datetime) -> Dict[str, Any]:
        """One line of the confirmation page: the policy, its table, the cutoff a run now would use, and how many
        rows are older than it (the ORM's count; the worker skips PROTECTed ones and moves CASCADE children)."""
        row: Dict[str, Any] = {"policy": policy, "table": "", "cutoff": None, "due": "", "limit": None,
                               "relations": 0, "purge": policy.delete_after_days, "error": ""}
        try:
            model, target, rels = services.archive_target(policy)
        except (LookupError, Refused) as e:
            row["error"] = str(e)
            return row
        cutoff = now - dt.timedelta(days=policy.archive_after_days)
        row.update(table=qualified([target.db_schema, target.db_table]), cutoff=cutoff,
                   limit=policy.max_rows_per_run, relations=len(rels))
        field = next(f for f in model._meta.concrete_fields if f.column == target.timestamp_column)
        if isinstance(field, models.DateTimeField):
            condition = {f"{field.name}__lt": cutoff}
        else:  # a date column: "column < cutoff" holds for every day before the cutoff's, and its own after 00:00
            local = timezone.localtime(cutoff) if timezone.is_aware(cutoff) else cutoff
            lookup = "lt" if local.time() == dt.time() else "lte"
            condition = {f"{field.name}__{lookup}": local.date()}
        try:
            with transaction.atomic():  # a failing count must not break the request's transaction
                row["due"] = model._base_manager.filter(**condition).count()
        except Exception as e:  # the table is missing or unreadable: the page says so, the worker will too
            row["error"] = f"could not count the rows due: {e}"
        return row


@admin.register(ArchivedRecord)
class ArchivedRecordAdmin(admin.ModelAdmin):
    list_display = ("archived_at", "module", "model_name", "original_id", "table", "archived_by", "job_id")
    list_filter = ("module", "model_name")
    search_fields = ("module", "model_name", "original_id")
    date_hierarchy = "archived_at"
    # The row first, as a person reads it; the raw envelope last, for whoever needs the exact stored text.
    fields = ("module", "model_name", "original_id", "table", "row_display", "archived_at", "archived_by",
              "job_id", "data")

    def get_readonly_fields(self, request: HttpRequest, obj: Optional[ArchivedRecord] = None) -> Any:
        return [f.name for f in self.model._meta.fields] + ["table", "row_display"]

    # The admin only shows archived rows; putting them back is `fusion-backup unarchive`. The `unarchive`
    # permission (Meta) is declared for that right, for an admin action to come.

    @display(description="table")
    def table(self, obj: ArchivedRecord) -> str:
        return obj.table_name or "–"

    @display(description="row")
    def row_display(self, obj: ArchivedRecord) -> str:
        row = obj.row
        if row is None:
            return "(not a version-1 envelope: see data below)"
        # One column per line in the table's order, values as JSON (so NULL, numbers and text stay distinct).
        width = max((len(k) for k in row), default=0)
        text = "\n".join(f"{k.ljust(width)}  {json.dumps(v, ensure_ascii=False)}" for k, v in row.items())
        return format_html('<pre style="margin:0">{}</pre>', text)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
