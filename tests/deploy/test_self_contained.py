"""The repository is self-contained: a user's clone has nothing beside it (none of the workplace's sibling folders), so
nothing in it may read a path outside it, and the demo's data step must work from a bare copy of the tracked
files alone."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# A reference that leaves the repository: the workplace's sibling folder, or an absolute path into the workplace.
# Built from pieces so that this file does not itself contain the path it looks for.
SIBLING = "shared"
OUTSIDE = re.compile(r"\.\./" + SIBLING + r"\b|/work/(" + SIBLING + r"|main|\.library)\b")


def tracked_files() -> list[str]:
    r = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True)
    return [f for f in r.stdout.decode().split("\0") if f]


def test_no_tracked_file_refers_to_a_path_outside_the_repository():
    offenders = []
    for rel in tracked_files():
        path = REPO / rel
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()[:120]}")
    assert not offenders, "paths outside the repository:\n" + "\n".join(offenders)


def test_fixture_is_inside_and_complete():
    sql = REPO / "tests/fixtures/fusion/fusion_prod_schema_pg15.sql"
    assert sql.is_file(), "the Fusion schema fixture must be carried in tests/fixtures/fusion"
    assert sql.read_text().count("CREATE TABLE ") == 463


def test_demo_data_step_runs_from_a_bare_copy_of_the_repository(tmp_path):
    # Fails, never skips, without the services: tests/run.sh always starts them and sets these.
    for name in ("FB_TEST_PG", "FB_VENV"):
        assert os.environ.get(name), f"{name} is not set: run the tests through tests/run.sh"
    # Only the tracked files, in a folder with nothing beside it: what `git clone` gives a user.
    copy = tmp_path / "isolated" / "clone"
    for rel in tracked_files():
        src = REPO / rel
        if src.is_file():
            dst = copy / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    db = f"fbt_selfcontained_{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k != "FB_FUSION_FIXTURE"}
    try:
        r = subprocess.run(["bash", str(copy / "deploy/demo/data.sh"), db], cwd=copy, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"data.sh failed from the copy:\n{r.stdout}\n{r.stderr}"
        assert "Fusion schema: 463 tables" in r.stdout
        out = subprocess.run(["psql", "-X", "-At", "-d", f"{os.environ['FB_TEST_PG']} dbname={db}", "-c",
                              "SELECT (SELECT count(*) FROM notifications_notification) > 0, "
                              "(SELECT count(*) FROM backup_archive_archivepolicy) >= 0"],
                             capture_output=True, text=True, check=True).stdout.strip()
        assert out == "t|t", out
    finally:
        subprocess.run(["psql", "-X", "-q", "-d", os.environ["FB_TEST_PG"], "-c",
                        f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'], capture_output=True)
