"""System checks of the app's settings (`manage.py check`, and every runserver/migrate).

W001: the scheduled job ids are keyed (scheduler.slot_job_id); without FUSION_BACKUP['JOB_ID_SECRET'] the key is
derived from SECRET_KEY, which works but ties the job ids to a setting people rotate for other reasons (and
every scheduler process must share it). An explicit secret makes that choice visible.
"""
from __future__ import annotations

from typing import Any, List

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from . import conf


@checks.register(checks.Tags.security)
def job_id_secret(app_configs: Any = None, **kwargs: Any) -> List[checks.CheckMessage]:
    try:
        explicit = conf.get("JOB_ID_SECRET") is not None
        conf.job_id_key()
    except ImproperlyConfigured as e:
        return [checks.Error(str(e), id="backup_archive.E001")]
    if explicit:
        return []
    return [checks.Warning(
        "FUSION_BACKUP['JOB_ID_SECRET'] is not set: scheduled job ids are keyed with a key derived from SECRET_KEY",
        hint="set FUSION_BACKUP['JOB_ID_SECRET'] to a long random string, the same in every scheduler process "
             "(python -c 'import secrets; print(secrets.token_hex(32))'), so that rotating SECRET_KEY does not "
             "change the ids of future slots",
        id="backup_archive.W001",
    )]
