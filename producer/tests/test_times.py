"""Event times are UTC milliseconds whatever the project's USE_TZ (Fusion runs USE_TZ=False, India time)."""
from __future__ import annotations

import datetime as dt

from django.test import override_settings

from backup_archive.services import to_ms

EPOCH_2026 = 1767225600000  # 2026-01-01T00:00:00Z


def test_naive_datetimes_are_project_local_time() -> None:
    # TIME_ZONE = Asia/Kolkata (+05:30): 05:30 local is midnight UTC
    assert to_ms(dt.datetime(2026, 1, 1, 5, 30)) == EPOCH_2026


@override_settings(USE_TZ=True)
def test_aware_datetimes() -> None:
    assert to_ms(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)) == EPOCH_2026
    assert to_ms(dt.datetime(2026, 1, 1, 5, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))) == EPOCH_2026
