"""System checks of FUSION_BACKUP (backup_archive/checks.py): each mistake is named with its key at start-up."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List

import pytest
from django.core.checks import run_checks

FINE = {"BROKERS": "kafka-1:9092,kafka-2:9092", "JOB_ID_SECRET": "a-secret-long-enough-for-the-check"}


def _ours(settings, **fusion_backup: Any) -> Dict[str, List[str]]:
    """{check id: [messages]} of this app's checks for FUSION_BACKUP = FINE + fusion_backup."""
    settings.FUSION_BACKUP = {**FINE, **fusion_backup}
    out: Dict[str, List[str]] = {}
    for m in run_checks(include_deployment_checks=False):
        if m.id and m.id.startswith("backup_archive."):
            out.setdefault(m.id, []).append(f"{m.msg} | {m.hint or ''}")
    return out


def test_a_good_configuration_passes(settings, tmp_path: Path) -> None:
    pw, ca = tmp_path / "django.password", tmp_path / "ca.pem"
    pw.write_text("s3cret\n")
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert _ours(settings, SECURITY_PROTOCOL="SASL_SSL", SASL_USERNAME="django", SASL_PASSWORD_FILE=str(pw),
                 SSL_CA_FILE=str(ca), ARCHIVE_SCHEDULE="0 3 * * *", SCHEDULER_TIMEZONE="Asia/Kolkata") == {}


def test_unknown_key_is_one_error_naming_it_and_silences_the_rest(settings) -> None:
    found = _ours(settings, BROKER="typo:9092")
    assert list(found) == ["backup_archive.E002"], found
    assert "BROKER" in found["backup_archive.E002"][0] and "known:" in found["backup_archive.E002"][0]


@pytest.mark.parametrize("brokers", ["", "   ", None, "kafka-1", "kafka-1:9092,,", "kafka 1:9092"])
def test_missing_or_malformed_brokers(settings, brokers: Any) -> None:
    found = _ours(settings, BROKERS=brokers)
    assert list(found) == ["backup_archive.E004"], found


def test_brokers_are_not_needed_without_kafka(settings) -> None:
    found = _ours(settings, BROKERS="", PUBLISHER="console")
    assert list(found) == ["backup_archive.W002"], found
    assert "only logged, never sent" in found["backup_archive.W002"][0]


def test_unknown_publisher(settings) -> None:
    found = _ours(settings, PUBLISHER="stdout")
    assert list(found) == ["backup_archive.E003"] and "'console' or 'disabled'" not in found["backup_archive.E003"][0]
    assert "['kafka', 'console', 'disabled']" in found["backup_archive.E003"][0]


def test_bad_security_protocol_and_mechanism(settings) -> None:
    found = _ours(settings, SECURITY_PROTOCOL="SASL-SSL", SASL_MECHANISM="SCRAM")
    assert list(found) == ["backup_archive.E005"], found
    text = " ".join(found["backup_archive.E005"])
    assert "'SASL-SSL', not a Kafka security protocol" in text and "'SCRAM'" in text


def test_sasl_protocol_without_user_and_user_without_sasl(settings, tmp_path: Path) -> None:
    assert "SASL_USERNAME is not set" in _ours(settings, SECURITY_PROTOCOL="SASL_SSL")["backup_archive.E005"][0]
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    found = _ours(settings, SASL_USERNAME="django", SASL_PASSWORD_FILE=str(pw))
    assert list(found) == ["backup_archive.W004"] and "never used" in found["backup_archive.W004"][0]


def test_missing_password_and_ca_files(settings, tmp_path: Path) -> None:
    found = _ours(settings, SECURITY_PROTOCOL="SASL_SSL", SASL_USERNAME="django",
                  SASL_PASSWORD_FILE=str(tmp_path / "nope.password"), SSL_CA_FILE=str(tmp_path / "nope.pem"))
    e006 = " ".join(found["backup_archive.E006"])
    assert "SASL_PASSWORD_FILE" in e006 and "nope.password" in e006 and "no such file" in e006
    assert "SSL_CA_FILE" in e006 and "nope.pem" in e006
    assert "backup_archive.E005" not in found, "one problem, one message"


def test_unreadable_file(settings, tmp_path: Path, monkeypatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    ca.chmod(0)
    if os.geteuid() == 0:  # root reads every file: let the check see what another user would
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ca) else real(p, mode))
    found = _ours(settings, SECURITY_PROTOCOL="SSL", SSL_CA_FILE=str(ca))
    assert "not readable by this process" in found["backup_archive.E006"][0]


def test_empty_password_file(settings, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("\n")
    found = _ours(settings, SECURITY_PROTOCOL="SASL_SSL", SASL_USERNAME="django", SASL_PASSWORD_FILE=str(pw))
    assert list(found) == ["backup_archive.E005"] and "is empty" in found["backup_archive.E005"][0]


@pytest.mark.parametrize("key,value", [("PUBLISH_TIMEOUT", 0), ("PUBLISH_TIMEOUT", "10"),
                                       ("SCHEDULER_INTERVAL", -1), ("CATCHUP_SLOTS", 0), ("CATCHUP_SLOTS", 2.5),
                                       ("REQUEUE_AFTER_MINUTES", -5), ("NOTIFY_LIMIT", True), ("HEALTH_RUNS", 1)])
def test_numbers_out_of_range(settings, key: str, value: Any) -> None:
    found = _ours(settings, **{key: value})
    assert list(found) == ["backup_archive.E007"] and key in found["backup_archive.E007"][0], found


def test_requeue_may_be_turned_off(settings) -> None:
    assert _ours(settings, REQUEUE_AFTER_MINUTES=None) == {} and _ours(settings, REQUEUE_AFTER_MINUTES=0) == {}


def test_cron_time_zone_verify_mode_and_storage_template(settings) -> None:
    found = _ours(settings, ARCHIVE_SCHEDULE="daily", SCHEDULER_TIMEZONE="Mars/Olympus", VERIFY_MODE="full",
                  STORAGE_PATH_TEMPLATE="configs/{config}")
    text = " ".join(found["backup_archive.E008"])
    assert len(found["backup_archive.E008"]) == 4, found
    assert "ARCHIVE_SCHEDULE" in text and "Mars/Olympus" in text and "'full'" in text and "{config}" in text


def test_failure_mails_need_a_recipient(settings) -> None:
    settings.ADMINS = []
    assert "nobody will be told" in _ours(settings)["backup_archive.W003"][0]
    assert _ours(settings, NOTIFY_RECIPIENTS=[]) == {}  # off on purpose
    assert _ours(settings, NOTIFY_RECIPIENTS=["ops@example.org"]) == {}
    assert "list of e-mail addresses" in _ours(settings, NOTIFY_RECIPIENTS="ops@example.org")["backup_archive.E009"][0]
