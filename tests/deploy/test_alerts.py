"""deploy/prometheus/alerts.yml: valid rules (promtool check rules), each alert firing on the series that should
fire it and quiet otherwise (promtool test rules alerts_test.yml), and only metrics the workers really export."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy/prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = Path(os.environ.get("FB_HOME", Path.home() / ".cache/fusion-backup")) / "bin/promtool"
    if not path.exists():
        pytest.fail(f"{path} missing: deploy/local/install-deps.sh installs it (install-promtool.sh)")
    return str(path)


def test_rules_are_valid(promtool):
    r = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=RULES, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "11 rules found" in r.stdout


def test_rules_fire_when_they_should_and_only_then(promtool):
    r = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=RULES, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_has_a_unit_test():
    alerts = set(re.findall(r"^\s+- alert: (\w+)", (RULES / "alerts.yml").read_text(), re.M))
    tested = set(re.findall(r"alertname: (\w+)", (RULES / "alerts_test.yml").read_text()))
    assert alerts and alerts == tested, f"untested: {alerts - tested}"


def test_rules_use_only_exported_metrics():
    exported = set(re.findall(r"\b(fusion_[a-z_]+?)(?:_bucket|_sum|_count)?\b",
                              (REPO / "worker/src/daemon/dmn_metrics.c").read_text()))
    used = set(re.findall(r"\b(fusion_[a-z_]+)\{", (RULES / "alerts.yml").read_text())) | set(
        re.findall(r"\((fusion_[a-z_]+)\)", (RULES / "alerts.yml").read_text()))
    assert used and used <= exported, f"not exported by the workers: {used - exported}"
