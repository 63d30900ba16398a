"""Settings of the test project: the app, a sample app, and the local services of deploy/local/.

The database and brokers come from `deploy/local/services.sh env` (FB_TEST_PG, FB_TEST_BROKERS) and default to
its ports. FB_DJANGO_DB_NAME and FB_TOPIC_PREFIX let the tests point subprocesses (two schedulers) at the test
database and the test's own topics; FB_DJANGO_TEST_DB names the test database. Time zone as in Fusion: USE_TZ=False, naive India time.
"""
import os
import shlex

BASE_DIR = os.path.dirname(os.path.abspath(__file__))


def _conninfo(s: str) -> dict:
    # libpq key=value form, as services.sh prints it: "host=127.0.0.1 port=55432 user=postgres dbname=postgres"
    return dict(part.split("=", 1) for part in shlex.split(s))


def _test_signing_key() -> str:
    """The app's signing key in the tests: RFC 8032's third Ed25519 test seed, public on purpose: a key for
    tests only, never for a deployment. Written (0600, atomically) where every process of a test run, the
    schedulers started as subprocesses too, finds the same file; tests/conftest.py gives workers its .pub."""
    import tempfile

    seed = "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7"
    d = os.path.join(tempfile.gettempdir(), f"fusion-backup-producer-tests-{os.getuid()}")
    os.makedirs(d, mode=0o700, exist_ok=True)
    path = os.path.join(d, "django.key")
    tmp = f"{path}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"# tests only (RFC 8032 test 3)\ned25519-seed {seed}\n")
    os.replace(tmp, path)
    return path


_pg = _conninfo(os.environ.get("FB_TEST_PG", "host=127.0.0.1 port=55432 user=postgres dbname=postgres"))

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = False
TIME_ZONE = "Asia/Kolkata"
USE_I18N = False
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"  # as Fusion (Django 3.1)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "backup_archive",
    "tests.sampleapp",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("FB_DJANGO_DB_NAME", "fusion_backup_producer"),
        "USER": _pg.get("user", "postgres"),
        "PASSWORD": _pg.get("password", ""),
        "HOST": _pg.get("host", "127.0.0.1"),
        "PORT": _pg.get("port", "55432"),
        # FB_DJANGO_TEST_DB: another name, so two test runs on one server (two Django versions at once, two
        # people) do not drop each other's test database.
        "TEST": {"NAME": os.environ.get("FB_DJANGO_TEST_DB", "test_fusion_backup_producer")},
    }
}

FUSION_BACKUP = {
    "BROKERS": os.environ.get("FB_TEST_BROKERS", "127.0.0.1:59092"),
    "TOPIC_PREFIX": os.environ.get("FB_TOPIC_PREFIX", "fusion."),
    "PUBLISH_TIMEOUT": 15.0,
    "JOB_ID_SECRET": "tests-only-job-id-secret-not-secret",
    "SIGNING_KEY_FILE": _test_signing_key(),
    # The secured local broker (deploy/local/services.sh env): the app speaks as the `django` principal.
    **({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_USERNAME": "django",
        "SASL_PASSWORD_FILE": os.path.join(os.environ["FB_TEST_KAFKA_SECRETS"], "django.password"),
        "SSL_CA_FILE": os.environ.get("FB_TEST_KAFKA_CA")} if os.environ.get("FB_TEST_KAFKA_SECRETS") else {}),
}

# Failure mails go to ADMINS (FUSION_BACKUP['NOTIFY_RECIPIENTS'] unset); pytest-django swaps in the locmem backend.
ADMINS = [("Backup admins", "backup-admins@example.org")]
SERVER_EMAIL = "fusion-backup@example.org"

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"backup_archive": {"handlers": ["console"], "level": os.environ.get("FB_LOG_LEVEL", "INFO")}},
}
