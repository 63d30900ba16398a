"""Minimal Django settings for the archive benchmark (bench.py sets FB_BENCH_PG to the benchmark database).

As in Fusion: USE_TZ=False with naive India time. Uses the real `backup_archive` app from producer/ (put on
sys.path by bench.py) for ArchivedRecord."""
import os
import shlex

_pg = dict(p.split("=", 1) for p in shlex.split(os.environ["FB_BENCH_PG"]))
SECRET_KEY = "bench-only"
USE_TZ = False
TIME_ZONE = "Asia/Kolkata"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "backup_archive", "benchapp"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _pg.get("dbname", "postgres"),
        "USER": _pg.get("user", "postgres"),
        "PASSWORD": _pg.get("password", ""),
        "HOST": _pg.get("host", "127.0.0.1"),
        "PORT": _pg.get("port", "5432"),
    }
}
FUSION_BACKUP = {}
