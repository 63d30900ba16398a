"""Settings of the demo project: Fusion's database on the local services (deploy/local), the backup_archive app,
and unmanaged stand-ins for Fusion's `notifications` and `leave` apps. Time zone as in Fusion."""
import os
import shlex

_pg = dict(p.split("=", 1) for p in shlex.split(os.environ.get("FB_TEST_PG", "host=127.0.0.1 port=55432 user=postgres")))

SECRET_KEY = "demo-only-not-secret"
DEBUG = False
USE_TZ = False
TIME_ZONE = "Asia/Kolkata"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "backup_archive",
    "demo.fusion_notifications",
    "demo.fusion_leave",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("FB_DEMO_DB", "fusion_demo"),
        "USER": _pg.get("user", "postgres"),
        "PASSWORD": _pg.get("password", ""),
        "HOST": _pg.get("host", "127.0.0.1"),
        "PORT": _pg.get("port", "55432"),
    }
}
FUSION_BACKUP = {
    "BROKERS": os.environ.get("FB_TEST_BROKERS", "127.0.0.1:59092"),
    "TOPIC_PREFIX": os.environ.get("FB_TOPIC_PREFIX", "fusion."),
    "PUBLISH_TIMEOUT": 15.0,
    "JOB_ID_SECRET": "demo-only-job-id-secret-not-secret",
    # The app's signing key, made by deploy/local/keys.sh (workers trust its .pub through FB_TRUSTED_REQUESTERS).
    "SIGNING_KEY_FILE": os.path.join(os.environ.get("FB_HOME", os.path.expanduser("~/.cache/fusion-backup")), "keys",
                                     "django.key"),
    # The secured local broker (deploy/local/services.sh env): the app speaks as the `django` principal.
    **({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_USERNAME": "django",
        "SASL_PASSWORD_FILE": os.path.join(os.environ["FB_TEST_KAFKA_SECRETS"], "django.password"),
        "SSL_CA_FILE": os.environ.get("FB_TEST_KAFKA_CA")} if os.environ.get("FB_TEST_KAFKA_SECRETS") else {}),
}
