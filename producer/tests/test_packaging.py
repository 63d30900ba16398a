"""`pip install ./producer` alone gives a working app (issue 13): the wheel bundles fusion_events, declares what
the app imports, and keeps psycopg2 (Fusion's own pin, 2.8.6) a test extra; installed on its own, away from the
checkout, the app imports and `manage.py check` passes."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import PRODUCER, SCHEMAS_PY

CHECK = r"""
import sys
target = sys.argv[1]
from django.conf import settings
settings.configure(
    SECRET_KEY="x", USE_TZ=False, TIME_ZONE="Asia/Kolkata",
    INSTALLED_APPS=["django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
                    "django.contrib.sessions", "django.contrib.messages", "backup_archive"],
    DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "fusion"}},
    MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware",
                "django.contrib.messages.middleware.MessageMiddleware"],
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
                "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                                   "django.contrib.auth.context_processors.auth",
                                                   "django.contrib.messages.context_processors.messages"]}}],
    ADMINS=[("ops", "ops@example.org")],
    FUSION_BACKUP={"BROKERS": "kafka-1:9092", "JOB_ID_SECRET": "packaging-test-secret-0123456789"},
)
import django
django.setup()
import backup_archive, fusion_events
for mod in (backup_archive, fusion_events):
    assert mod.__file__.startswith(target), (mod.__name__, mod.__file__)
import backup_archive.admin, backup_archive.tasks, backup_archive.notify  # noqa: E401
from django.core.management import call_command
call_command("check", "--fail-level", "WARNING")
from django.core import checks
assert "backup_archive.checks" in {c.__module__ for c in checks.registry.registry.get_checks()}, "ready() did not run"
print("ok", django.get_version())
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The app's wheel, built from a copy of producer/ and schemas/python (so the build leaves nothing in the
    checkout), with the relative symlink producer/fusion_events kept as it is in the repository."""
    root = tmp_path_factory.mktemp("src")
    shutil.copytree(PRODUCER, root / "producer", symlinks=True,
                    ignore=shutil.ignore_patterns("tests", "demo", "build", "*.egg-info", "__pycache__"))
    shutil.copytree(SCHEMAS_PY, root / "schemas" / "python",
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    out = root / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                        "-w", str(out), str(root / "producer")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"pip wheel ./producer failed (it needs setuptools from PyPI):\n{r.stderr}"
    [whl] = out.glob("fusion_backup_archive-*.whl")
    return whl


def test_the_wheel_bundles_the_codec_migrations_and_templates(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("fusion_events/__init__.py", "fusion_events/codec.py", "backup_archive/tasks.py",
                 "backup_archive/migrations/0004_failure_notifications.py",
                 "backup_archive/management/commands/backup_notify.py",
                 "backup_archive/templates/admin/backup_archive/archivepolicy/archive_confirmation.html"):
        assert name in names, f"{name} missing from {wheel.name}"
    assert (SCHEMAS_PY / "fusion_events" / "codec.py").read_bytes() == \
        zipfile.ZipFile(wheel).read("fusion_events/codec.py"), "the bundled codec is the one in schemas/python"


def test_the_wheel_declares_what_the_app_imports_and_psycopg2_only_as_a_test_extra(wheel: Path) -> None:
    meta = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA"))
    requires = [line.split(":", 1)[1].strip() for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines()
                if line.startswith("Requires-Dist:")]
    plain = {r.split(";")[0].strip() for r in requires if "extra ==" not in r}
    assert plain == {"Django>=3.1", "confluent-kafka>=2.3", "croniter>=2.0", "msgpack>=1.0", "PyNaCl>=1.5"}, plain
    psycopg = [r for r in requires if r.startswith("psycopg2")]
    assert psycopg and all('extra == "test"' in r for r in psycopg), psycopg
    assert not any(r.lower().startswith(("fusion-events", "fusion_events")) for r in requires), \
        "a dependency on fusion-events would send pip to PyPI for it"


def test_installed_alone_the_app_imports_and_passes_check(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                        "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    # Away from the checkout: neither producer/ nor schemas/python on the path, only the install and the
    # venv's site-packages (Django and the declared dependencies).
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target)}
    r = subprocess.run([sys.executable, "-c", CHECK, str(target)], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "\nok " in r.stdout, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
