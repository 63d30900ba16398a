from django.apps import AppConfig


class BackupArchiveConfig(AppConfig):
    name = "backup_archive"
    label = "backup_archive"
    verbose_name = "Backup & Archive"
    # The models declare their primary keys (models._id); this only tells Django 3.2+ that the app chose, which
    # keeps its check W042 (auto-created primary key) quiet. Django 3.1 ignores it.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  registers the system checks
