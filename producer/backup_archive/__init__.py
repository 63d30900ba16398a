"""backup_archive: Fusion's side of Fusion Backup & Archive.

A Django app that keeps backup configurations, archive policies and their records, and asks the C workers to do
the work by publishing events (schemas/SPEC.md) to Kafka: `services.request_backup()`,
`services.request_archive()`, the `backup_scheduler` command, and admin actions.
"""

import django

if django.VERSION < (3, 2):
    # Django 3.1 (Fusion's) does not find apps.BackupArchiveConfig by itself, and without it ready() never
    # registers the system checks. 3.2+ finds it, and warns about this attribute, so only older ones get it.
    default_app_config = "backup_archive.apps.BackupArchiveConfig"
