"""Settings of the producer image: a minimal Django project around the backup_archive app, configured from the
environment, for docker-compose and for running the scheduler on its own.

In production Fusion installs backup_archive into its own Django project (producer/README.md) and runs
`manage.py backup_scheduler` from Fusion's image; this project exists for the stack in deploy/docker and as a
reference for the settings. The database comes from libpq's own variables (PGHOST, PGPORT, PGDATABASE, PGUSER,
PGPASSWORD), the app's settings from FUSION_BACKUP_* variables. Nothing here is named FB_*: those belong to the
C workers (worker/src/common/fb_config.c).
"""
import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "not-used-no-http-no-sessions")
DEBUG = False
ALLOWED_HOSTS: list = []
USE_TZ = os.environ.get("DJANGO_USE_TZ", "false").lower() == "true"
TIME_ZONE = os.environ.get("DJANGO_TIME_ZONE", "Asia/Kolkata")
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "backup_archive",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("PGHOST", "postgres"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "NAME": os.environ.get("PGDATABASE", "fusion"),
        "USER": os.environ.get("PGUSER", "fusion"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
        "CONN_MAX_AGE": 60,
    }
}
FUSION_BACKUP = {
    "BROKERS": os.environ.get("FUSION_BACKUP_BROKERS", "kafka:9092"),
    "TOPIC_PREFIX": os.environ.get("FUSION_BACKUP_TOPIC_PREFIX", "fusion."),
    "PUBLISH_TIMEOUT": float(os.environ.get("FUSION_BACKUP_PUBLISH_TIMEOUT", "10")),
    "SCHEDULER_INTERVAL": float(os.environ.get("FUSION_BACKUP_SCHEDULER_INTERVAL", "30")),
    # Kafka security: the app's principal; the password only from a file (a mounted secret).
    "SECURITY_PROTOCOL": os.environ.get("FUSION_BACKUP_SECURITY_PROTOCOL") or None,
    "SASL_MECHANISM": os.environ.get("FUSION_BACKUP_SASL_MECHANISM", "SCRAM-SHA-512"),
    "SASL_USERNAME": os.environ.get("FUSION_BACKUP_SASL_USERNAME") or None,
    "SASL_PASSWORD_FILE": os.environ.get("FUSION_BACKUP_SASL_PASSWORD_FILE") or None,
    "SSL_CA_FILE": os.environ.get("FUSION_BACKUP_SSL_CA_FILE") or None,
    # The key of the scheduled job ids (a secret): unset, it would be derived from the SECRET_KEY above, which
    # is public here. `manage.py check` warns (backup_archive.W001).
    "JOB_ID_SECRET": os.environ.get("FUSION_BACKUP_JOB_ID_SECRET") or None,
    # Failure mails, sent by the scheduler: comma-separated addresses; unset, to ADMINS (DJANGO_ADMINS).
    "NOTIFY_RECIPIENTS": [a.strip() for a in os.environ["FUSION_BACKUP_NOTIFY_RECIPIENTS"].split(",") if a.strip()]
    if "FUSION_BACKUP_NOTIFY_RECIPIENTS" in os.environ else None,
    # The app's secret signing key (every request is signed with it; nothing is published without it).
    "SIGNING_KEY_FILE": os.environ.get("FUSION_BACKUP_SIGNING_KEY_FILE") or None,
}
ADMINS = [(a.strip(), a.strip()) for a in os.environ.get("DJANGO_ADMINS", "").split(",") if a.strip()]
SERVER_EMAIL = os.environ.get("DJANGO_SERVER_EMAIL", "fusion-backup@localhost")
EMAIL_HOST = os.environ.get("DJANGO_EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("DJANGO_EMAIL_PORT", "25"))
EMAIL_USE_TLS = os.environ.get("DJANGO_EMAIL_USE_TLS", "false").lower() == "true"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
}
