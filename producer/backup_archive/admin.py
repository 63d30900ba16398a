"""Admin for the four models, with "Back up now", "Verify" and "Archive now (dry run / for real)" actions."""
from __future__ import annotations

import json
from typing import Any, List, Optional, Tuple

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.utils.html import format_html
from django.utils.text import Truncator

from . import services
from .models import ArchivedRecord, ArchivePolicy, BackupConfiguration, BackupRecord, Status


def _report(modeladmin: admin.ModelAdmin, request: HttpRequest, ok: int, failures: list) -> None:
    if ok:
        modeladmin.message_user(request, f"{ok} request(s) sent to the workers.", messages.SUCCESS)
    for what, why in failures:
        modeladmin.message_user(request, f"{what}: {why}", messages.ERROR)


@admin.register(BackupConfiguration)
class BackupConfigurationAdmin(admin.ModelAdmin):
    list_display = ("name", "backup_type", "schedule", "verify_schedule", "retention_days", "is_active",
                    "last_scheduled_at")
    list_filter = ("backup_type", "is_active")
    search_fields = ("name",)
    readonly_fields = ("created_at", "updated_at", "last_scheduled_at", "last_verify_scheduled_at")
    actions = ["backup_now"]

    @admin.action(description="Back up now")
    def backup_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        ok, failures = 0, []
        for config in queryset:
            try:
                record = services.request_backup(config, request.user)
            except Exception as e:  # LookupError, InvalidEvent: show the reason, go on with the others
                failures.append((config.name, e))
                continue
            # Outside a transaction the publish has happened by now; inside ATOMIC_REQUESTS it happens after
            # the response, and the record list shows the outcome.
            record.refresh_from_db()
            if record.status == Status.FAILED:
                failures.append((config.name, record.error_message))
            else:
                ok += 1
        _report(self, request, ok, failures)


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


@admin.register(BackupRecord)
class BackupRecordAdmin(admin.ModelAdmin):
    list_display = ("requested_at", "configuration", "backup_type", "status", "size", "duration_display",
                    "attempt", "worker", "error_short", "last_verified_at", "verification_display")
    list_filter = ("status", "backup_type", VerificationFilter, "configuration")
    search_fields = ("job_id", "configuration__name", "file_path", "error_message")
    date_hierarchy = "requested_at"
    list_select_related = ("configuration",)
    actions = ["verify_integrity", "verify_restore"]

    def get_readonly_fields(self, request: HttpRequest, obj: Optional[BackupRecord] = None) -> Any:
        # Records are written by the workers; the admin only shows them.
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="size", ordering="file_size")
    def size(self, obj: BackupRecord) -> str:
        return filesizeformat(obj.file_size) if obj.file_size is not None else "–"

    @admin.display(description="duration")
    def duration_display(self, obj: BackupRecord) -> str:
        d = obj.duration
        if d is None:
            return "–"
        s = int(d.total_seconds())
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"

    @admin.display(description="error")
    def error_short(self, obj: BackupRecord) -> str:
        return Truncator(obj.error_message).chars(80)

    @admin.display(description="verification", ordering="verify_status")
    def verification_display(self, obj: BackupRecord) -> str:
        # The time has its own column; here the result and, for a failure, why (the full text is on the record).
        if not obj.verify_status:
            return "never"
        if obj.verify_status == Status.SUCCESS or not obj.verify_message:
            return obj.verify_status
        return f"{obj.verify_status}: {Truncator(' '.join(obj.verify_message.split())).chars(80)}"

    def _verify(self, request: HttpRequest, queryset: QuerySet, mode: str) -> None:
        ok, failures = 0, []
        for record in queryset.select_related("configuration"):
            if record.status != Status.SUCCESS or not record.file_path:
                failures.append((str(record), "only successful backups with a file can be verified"))
                continue
            services.request_verify(record, request.user, mode=mode)
            record.refresh_from_db()
            if record.verify_status == Status.FAILED:
                failures.append((str(record), record.verify_message))
            else:
                ok += 1
        _report(self, request, ok, failures)

    @admin.action(description="Verify (integrity)")
    def verify_integrity(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._verify(request, queryset, "integrity")

    @admin.action(description="Verify (restore into a scratch database)")
    def verify_restore(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._verify(request, queryset, "restore")


@admin.register(ArchivePolicy)
class ArchivePolicyAdmin(admin.ModelAdmin):
    list_display = ("__str__", "timestamp_column", "archive_after_days", "delete_after_days", "batch_size",
                    "max_rows_per_run", "schedule", "is_active", "last_scheduled_at")
    list_filter = ("module", "is_active")
    search_fields = ("module", "model_name")
    readonly_fields = ("last_scheduled_at",)
    actions = ["archive_dry_run", "archive_now"]

    def _archive(self, request: HttpRequest, queryset: QuerySet, dry_run: bool) -> None:
        ok, failures = 0, []
        for policy in queryset:
            try:
                req = services.request_archive(policy, request.user, dry_run=dry_run)
            except Exception as e:
                failures.append((str(policy), e))
                continue
            if req.published is False:
                failures.append((str(policy), req.error))
            else:
                ok += 1
        _report(self, request, ok, failures)

    @admin.action(description="Archive now (dry run: count only)")
    def archive_dry_run(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._archive(request, queryset, dry_run=True)

    @admin.action(description="Archive now (for real)")
    def archive_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._archive(request, queryset, dry_run=False)


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

    @admin.display(description="table")
    def table(self, obj: ArchivedRecord) -> str:
        return obj.table_name or "–"

    @admin.display(description="row")
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
