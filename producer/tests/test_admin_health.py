"""The admin's health view of a configuration (issue 13): last success and its age, overdue, next run, last
verification on the changelist; a panel with SVG sparklines of size and duration on the change page."""
from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from backup_archive.health import sparkline
from backup_archive.models import BackupConfiguration, BackupRecord, Status

pytestmark = pytest.mark.django_db

CONFIGS = "/admin/backup_archive/backupconfiguration/"


@pytest.fixture
def admin_client_(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.org", "pw"))
    return client


def _run(config: BackupConfiguration, hours_ago: float, status: str = Status.SUCCESS, size: int = 1000,
         seconds: int = 60, **kw: Any) -> BackupRecord:
    done = timezone.now() - dt.timedelta(hours=hours_ago)
    return BackupRecord.objects.create(configuration=config, job_id=uuid.uuid4(), backup_type="FULL", status=status,
                                       requested_at=done - dt.timedelta(seconds=seconds + 5),
                                       started_at=done - dt.timedelta(seconds=seconds), completed_at=done,
                                       file_size=size if status == Status.SUCCESS else None, **kw)


def _created_days_ago(config: BackupConfiguration, days: int) -> None:
    BackupConfiguration.objects.filter(pk=config.pk).update(created_at=timezone.now() - dt.timedelta(days=days))


def _row(page: str, name: str) -> str:
    m = re.search(r"<tr[^>]*>(?:(?!</tr>).)*>" + re.escape(name) + r"</a>(?:(?!</tr>).)*</tr>", page, re.S)
    assert m, f"no changelist row for {name}"
    return m.group(0)


def test_changelist_shows_last_success_age_overdue_next_run_and_verification(admin_client_) -> None:
    fresh = BackupConfiguration.objects.create(name="fresh", modules=["sampleapp"], schedule="0 2 * * *")
    stale = BackupConfiguration.objects.create(name="stale", modules=["sampleapp"], schedule="0 2 * * *")
    manual = BackupConfiguration.objects.create(name="manual", modules=["sampleapp"])
    for c in (fresh, stale, manual):
        _created_days_ago(c, 30)
    _run(fresh, 3, verify_status=Status.FAILED, verify_message="bad chunk", last_verified_at=timezone.now())
    _run(stale, 24 * 3)
    _run(stale, 1, status=Status.FAILED, error_message="disk full")  # failures do not count as success
    page = admin_client_.get(CONFIGS).content.decode()
    for header in ("last success", "next run", "last verification"):
        assert header in page.lower(), header
    row = _row(page, "fresh")
    assert re.search(r"3\shours ago", row) and "overdue" not in row
    assert re.search(r"\d{4}-\d\d-\d\d 02:00 \(in ", row), row  # the next 02:00 in TIME_ZONE
    assert "FAILED" in row and "#ba2121" in row  # the failed verification, in red
    row = _row(page, "stale")
    assert re.search(r"3\sdays ago", row) and "overdue" in row
    row = _row(page, "manual")
    assert "never" in row and "on request only" in row and "overdue" not in row


def test_a_new_configuration_is_not_overdue_before_its_first_slots(admin_client_) -> None:
    BackupConfiguration.objects.create(name="brand-new", modules=["sampleapp"], schedule="0 2 * * *")
    assert "overdue" not in _row(admin_client_.get(CONFIGS).content.decode(), "brand-new")


def test_change_page_charts_size_and_duration_of_recent_runs(admin_client_, settings) -> None:
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "HEALTH_RUNS": 5}
    config = BackupConfiguration.objects.create(name="nightly", modules=["sampleapp"], schedule="0 2 * * *")
    for i in range(7):  # oldest first; the two oldest fall outside the last 5
        _run(config, 24 * (7 - i), size=1024 * (i + 1), seconds=60 * (i + 1))
    _run(config, 2, status=Status.FAILED, error_message="<script>alert(1)</script>")
    page = admin_client_.get(f"{CONFIGS}{config.pk}/change/").content.decode()
    svgs = re.findall(r'<svg class="fb-spark".*?</svg>', page, re.S)
    assert len(svgs) == 2, "one sparkline for size, one for duration"
    size_svg, duration_svg = svgs
    assert 'aria-label="size"' in size_svg and 'aria-label="duration"' in duration_svg
    # duration: 5 runs, the newest a failure (a red dot), no JavaScript anywhere
    assert duration_svg.count("<circle") == 5 and duration_svg.count('fill="#ba2121"') == 1
    assert size_svg.count("<circle") == 4  # the failed run has no file: no size point
    assert "7.0\xa0KB" in size_svg and "4.0\xa0KB" in size_svg and "3.0\xa0KB" not in size_svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the error text is shown, escaped
    assert "size, last 5 runs" in page and "4.0\xa0KB – 7.0\xa0KB" in page


def test_sparkline_heights_follow_the_values() -> None:
    svg = sparkline("size", [(10.0, "a", False), (None, "b", False), (30.0, "c", True), (20.0, "d", False)])
    ys = [float(y) for y in re.findall(r'cy="([\d.]+)"', svg)]
    assert len(ys) == 3 and ys[1] < ys[2] < ys[0]  # SVG y grows downwards: the largest value is highest
    assert "not enough runs" in sparkline("size", [(1.0, "only one", False)])
    assert "&lt;b&gt;" in sparkline("x", [(1.0, "<b>", False), (2.0, "ok", False)])
