"""The admin's actions need their own permissions (run_backup, run_verify, run_archive), and "Archive now (for
real)" shows what will move before it runs. Real Kafka: "no event published" is read off the topics.

transaction=True: the requests publish on commit, which the default test transaction never does.
"""
from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import List

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

import fusion_events
from backup_archive.models import ArchivePolicy, BackupConfiguration, BackupRecord, Status
from tests.conftest import Topics
from tests.sampleapp.models import Article, Citation

pytestmark = pytest.mark.django_db(transaction=True)

CONFIGS = "/admin/backup_archive/backupconfiguration/"
RECORDS = "/admin/backup_archive/backuprecord/"
POLICIES = "/admin/backup_archive/archivepolicy/"
ACTIONS = ["backup_now", "verify_integrity", "verify_restore", "archive_dry_run", "archive_now"]


def _staff(username: str, codenames: List[str]):
    user = get_user_model().objects.create_user(username, f"{username}@example.org", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="backup_archive",
                                                        codename__in=codenames))
    return user


VIEW = ["view_backupconfiguration", "view_backuprecord", "view_archivepolicy", "view_archivedrecord"]


@pytest.fixture
def config(db) -> BackupConfiguration:
    return BackupConfiguration.objects.create(name="nightly", modules=["sampleapp"])


@pytest.fixture
def policy(db) -> ArchivePolicy:
    return ArchivePolicy.objects.create(module="sampleapp", model_name="Article", timestamp_column="published_at",
                                        archive_after_days=365, max_rows_per_run=1000)


@pytest.fixture
def done(config) -> BackupRecord:
    return BackupRecord.objects.create(configuration=config, job_id=uuid.uuid4(), backup_type="FULL",
                                       status=Status.SUCCESS, file_path=f"configs/{config.pk}/a.fbk")


def test_view_only_staff_sees_no_action_and_a_forged_post_runs_nothing(
        kafka_topics: Topics, client, config, policy, done) -> None:
    client.force_login(_staff("viewer", VIEW))
    for url in (CONFIGS, RECORDS, POLICIES):
        page = client.get(url)
        assert page.status_code == 200, url
        for action in ACTIONS:
            assert f'value="{action}"' not in page.content.decode(), f"{action} offered on {url}"
    forged = [(CONFIGS, "backup_now", config.pk), (RECORDS, "verify_integrity", done.pk),
              (RECORDS, "verify_restore", done.pk), (POLICIES, "archive_dry_run", policy.pk),
              (POLICIES, "archive_now", policy.pk)]
    for url, action, pk in forged:
        r = client.post(url, {"action": action, "_selected_action": [pk], "confirm": "yes"}, follow=True)
        # With no action allowed the changelist ignores the POST; with others allowed it says "No action
        # selected". Either way nothing ran (checked below, on the tables and topics).
        assert r.status_code == 200
        assert "sent to the workers" not in r.content.decode(), f"forged {action} ran"
        assert "Archive these rows now?" not in r.content.decode()
    assert BackupRecord.objects.count() == 1  # only the fixture's: no backup was requested
    done.refresh_from_db()
    assert done.verify_status == "" and done.verify_job_id is None
    assert kafka_topics.count("backup.requested") == 0 and kafka_topics.count("archive.due") == 0


def test_each_permission_allows_its_own_action_only(kafka_topics: Topics, client, config, policy, done) -> None:
    client.force_login(_staff("operator", VIEW + ["run_backup"]))
    page = client.get(CONFIGS).content.decode()
    assert 'value="backup_now"' in page
    assert 'value="archive_now"' not in client.get(POLICIES).content.decode()
    r = client.post(CONFIGS, {"action": "backup_now", "_selected_action": [config.pk]}, follow=True)
    assert "1 request(s) sent" in r.content.decode()
    r = client.post(RECORDS, {"action": "verify_integrity", "_selected_action": [done.pk]}, follow=True)
    assert "sent to the workers" not in r.content.decode()
    done.refresh_from_db()
    assert done.verify_status == "" and done.verify_job_id is None
    assert kafka_topics.count("backup.requested") == 1  # the backup, not the verification


def _seed() -> None:
    old = timezone.now() - dt.timedelta(days=400)
    for i in range(3):
        Article.objects.create(slug=f"old-{i}", title="old", published_at=old)
    Citation.objects.create(article=Article.objects.get(slug="old-0"))
    Article.objects.create(slug="new", title="new", published_at=timezone.now())


def test_archive_now_asks_for_confirmation_first(kafka_topics: Topics, client, policy, caplog) -> None:
    _seed()
    user = _staff("archivist", VIEW + ["run_archive"])
    client.force_login(user)
    caplog.set_level(logging.INFO, logger="backup_archive.admin")
    r = client.post(POLICIES, {"action": "archive_now", "_selected_action": [policy.pk]})
    assert r.status_code == 200
    page = r.content.decode()
    assert "Archive these rows now?" in page
    assert "sampleapp.Article" in page and "public.Blog Article" in page
    cutoff = timezone.now() - dt.timedelta(days=365)
    assert f"{cutoff:%Y-%m-%d}" in page
    assert '<td class="due">3</td>' in page  # three old articles (the PROTECTed one is counted, then skipped)
    assert "at most 1000 this run" in page
    assert 'name="confirm" value="yes"' in page and f'name="_selected_action" value="{policy.pk}"' in page
    assert kafka_topics.count("archive.due") == 0  # nothing requested by the first POST

    r = client.post(POLICIES, {"action": "archive_now", "_selected_action": [policy.pk], "confirm": "yes"},
                    follow=True)
    assert "1 request(s) sent" in r.content.decode()
    [(_, value)] = kafka_topics.read("archive.due", 1)
    ev = fusion_events.decode(value)
    assert ev["dry_run"] is False and ev["policy_id"] == policy.pk and ev["requested_by"] == user.pk
    assert kafka_topics.count("archive.due") == 1
    logged = [r.getMessage() for r in caplog.records if r.name == "backup_archive.admin"]
    assert any("confirmation shown" in m and f"id={user.pk} username=archivist" in m for m in logged), logged
    assert any(m.startswith("archive_now by user") and f"id={user.pk} username=archivist" in m
               and f"sampleapp.Article (id {policy.pk})" in m for m in logged), logged


def test_confirmation_page_shows_why_a_policy_cannot_run(kafka_topics: Topics, client, policy) -> None:
    ArchivePolicy.objects.filter(pk=policy.pk).update(db_table="sampleapp_tag")  # stale since the model changed
    client.force_login(_staff("archivist", VIEW + ["run_archive"]))
    page = client.post(POLICIES, {"action": "archive_now", "_selected_action": [policy.pk]}).content.decode()
    assert "not runnable:" in page and "no longer matches its model" in page
    assert 'name="confirm"' not in page  # nothing to confirm
    assert kafka_topics.count("archive.due") == 0


def test_every_action_logs_the_acting_user(kafka_topics: Topics, client, config, done, caplog) -> None:
    user = _staff("operator", VIEW + ["run_backup", "run_verify"])
    client.force_login(user)
    caplog.set_level(logging.INFO, logger="backup_archive.admin")
    client.post(CONFIGS, {"action": "backup_now", "_selected_action": [config.pk]})
    client.post(RECORDS, {"action": "verify_integrity", "_selected_action": [done.pk]})
    logged = [r.getMessage() for r in caplog.records if r.name == "backup_archive.admin"]
    who = f"by user id={user.pk} username=operator"
    assert any(m.startswith(f"backup_now {who}") and "nightly" in m for m in logged), logged
    assert any(m.startswith(f"verify (integrity) {who}") for m in logged), logged
    done.refresh_from_db()
    assert done.verify_status == Status.QUEUED and done.verify_job_id is not None


def test_policy_form_refuses_own_tables_and_shows_what_it_stored(client) -> None:
    client.force_login(get_user_model().objects.create_superuser("admin", "admin@example.org", "pw"))
    form = {"module": "backup_archive", "model_name": "ArchivedRecord", "timestamp_column": "archived_at",
            "archive_after_days": 30, "batch_size": 500, "schedule": "", "is_active": "on"}
    page = client.post(POLICIES + "add/", form).content.decode()
    assert "backup_archive_archivedrecord is one of this app&#x27;s own tables" in page
    assert not ArchivePolicy.objects.exists()
    r = client.post(POLICIES + "add/", {**form, "module": "sampleapp", "model_name": "comment",
                                        "timestamp_column": "created"})
    assert r.status_code == 302
    policy = ArchivePolicy.objects.get()
    assert (policy.model_name, policy.db_table, policy.pk_column) == ("Comment", "sampleapp_comment", "id")
    page = client.get(POLICIES + f"{policy.pk}/change/").content.decode()
    assert "sampleapp_comment" in page  # the stored table is shown, read-only
