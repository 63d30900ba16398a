from django.apps import AppConfig


class BackupArchiveConfig(AppConfig):
    name = "backup_archive"
    label = "backup_archive"
    verbose_name = "Backup & Archive"
    # Explicit, so the migrations are the same whatever the project's DEFAULT_AUTO_FIELD says.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  registers the system checks
