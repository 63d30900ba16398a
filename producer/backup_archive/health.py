"""A configuration's health, for the admin: last success and its age, whether it is overdue, next run, last
verification, and size and duration over its recent runs as inline SVG sparklines (no JavaScript, no library:
a person glances at the shape; the numbers are in each point's tooltip and in the record list).

Overdue: a whole cron slot has passed since the last success (the slot before the newest one is later than
it), so a backup that is merely running now is not flagged, and one missed night is. The same question as the
Prometheus alert (deploy/prometheus), asked of the database.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.timesince import timesince, timeuntil

from . import conf
from .models import BackupConfiguration, BackupRecord, Status
from .scheduler import next_slot, previous_slot


@dataclass
class Run:
    """One finished run, oldest first in a series."""

    record_id: int
    completed_at: dt.datetime
    status: str
    size: Optional[int]
    seconds: Optional[float]


@dataclass
class Health:
    last_success: Optional[BackupRecord]
    last_failure: Optional[BackupRecord]
    last_verified: Optional[BackupRecord]
    next_run: Optional[dt.datetime]
    next_verify: Optional[dt.datetime]
    overdue: bool
    runs: List[Run] = field(default_factory=list)


def local(moment: dt.datetime) -> dt.datetime:
    return timezone.localtime(moment) if timezone.is_aware(moment) else moment


def _stored(moment: dt.datetime) -> dt.datetime:
    """A scheduler datetime (aware) in the form the project compares with (naive local when USE_TZ=False)."""
    return moment if timezone.is_aware(timezone.now()) else timezone.make_naive(moment)


def when(moment: Optional[dt.datetime], now: Optional[dt.datetime] = None) -> str:
    """'2026-05-01 02:10 (3 hours ago)' / '... (in 5 hours)', '–' for None."""
    if moment is None:
        return "–"
    now = now or timezone.now()
    rel = f"{timesince(moment, now)} ago" if moment <= now else f"in {timeuntil(moment, now)}"
    return f"{local(moment):%Y-%m-%d %H:%M} ({rel})"


def overdue(config: BackupConfiguration, last_success_at: Optional[dt.datetime], now: dt.datetime) -> bool:
    if not (config.is_active and config.schedule):
        return False
    newest = previous_slot(config.schedule, now)
    before = _stored(previous_slot(config.schedule, newest - dt.timedelta(seconds=1)))
    created = config.created_at
    if created is not None and before < created:
        return False  # too new to have missed a whole slot
    return last_success_at is None or last_success_at < before


def next_run(expr: str, active: bool, now: dt.datetime) -> Optional[dt.datetime]:
    return _stored(next_slot(expr, now)) if active and expr else None


def config_health(config: BackupConfiguration, now: Optional[dt.datetime] = None,
                  runs: Optional[int] = None) -> Health:
    now = now or timezone.now()
    n = int(runs if runs is not None else conf.get("HEALTH_RUNS"))
    records = BackupRecord.objects.filter(configuration=config)
    finished = records.filter(status__in=[Status.SUCCESS, Status.FAILED], completed_at__isnull=False)
    last_success = finished.filter(status=Status.SUCCESS).order_by("-completed_at", "-id").first()
    recent = list(finished.order_by("-completed_at", "-id")[:n])
    return Health(
        last_success=last_success,
        last_failure=finished.filter(status=Status.FAILED).order_by("-completed_at", "-id").first(),
        last_verified=records.exclude(verify_status="").exclude(verify_status=Status.QUEUED)
        .filter(last_verified_at__isnull=False).order_by("-last_verified_at", "-id").first(),
        next_run=next_run(config.schedule, config.is_active, now),
        next_verify=next_run(config.verify_schedule, config.is_active, now),
        overdue=overdue(config, last_success.completed_at if last_success else None, now),
        runs=[Run(r.pk, r.completed_at, r.status, r.file_size,
                  r.duration.total_seconds() if r.duration is not None else None) for r in reversed(recent)],
    )


# --- the sparkline ------------------------------------------------------------------------------------------

WIDTH, HEIGHT, PAD = 260, 44, 4


def sparkline(title: str, points: Sequence[Tuple[Optional[float], str, bool]]) -> SafeString:
    """An inline SVG line over `points` (value, tooltip, failed), oldest first; a point without a value is left
    out of the line; failed runs are red dots. Every number is computed here and every text escaped, so the
    markup carries nothing a record could inject."""
    values = [v for v, _, _ in points if v is not None]
    if len(values) < 2:
        return format_html('<span class="fb-spark-empty">{}: not enough runs to chart yet</span>', title)
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    step = (WIDTH - 2 * PAD) / max(1, len(points) - 1)
    xy: List[Tuple[float, float, str, bool]] = []
    for i, (v, tip, failed) in enumerate(points):
        if v is None:
            continue
        x = PAD + i * step
        y = HEIGHT - PAD - (v - lo) / span * (HEIGHT - 2 * PAD)
        xy.append((x, y, tip, failed))
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in xy)
    dots = format_html_join(
        "", '<circle cx="{}" cy="{}" r="{}" fill="{}"><title>{}</title></circle>',
        ((f"{x:.1f}", f"{y:.1f}", 3 if failed else 2, "#ba2121" if failed else "#417690", tip)
         for x, y, tip, failed in xy))
    return format_html(
        '<svg class="fb-spark" role="img" aria-label="{}" width="{}" height="{}" viewBox="0 0 {} {}" '
        'xmlns="http://www.w3.org/2000/svg"><title>{}</title>'
        '<polyline points="{}" fill="none" stroke="#417690" stroke-width="1.5"/>{}</svg>',
        title, WIDTH, HEIGHT, WIDTH, HEIGHT, title, line, dots)
