"""End to end with the real C worker: Django's admin (or scheduler) -> Kafka -> `fusion-backup-worker --role all`
-> jobs.completed -> the recorder -> the tables Django shows.

The worker runs against pytest-django's test database (the same tables the admin reads) with a key pair from
`fusion-backup keygen` and a storage root in tmp. Needs the workers built: FB_BUILD_DIR (tests/run.sh sets it)
or <repo>/build; a missing build FAILS the tests when either is there, and skips them only when neither is.
"""
from __future__ import annotations

import datetime as dt
import json
from io import StringIO
from pathlib import Path
from typing import Any, Dict, List

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

import fusion_events
from backup_archive import services
from backup_archive.models import (ArchivedRecord, ArchivePolicy, ArchiveRun, BackupConfiguration, BackupRecord,
                                   Status)
from backup_archive.notify import notify_failures
from backup_archive.resolve import backup_tables
from backup_archive.scheduler import Scheduler, slot_job_id
from tests.conftest import Topics, Workers, django_conninfo, wait_for
from tests.sampleapp.models import (Article, Bookmark, Citation, Comment, Leave, LeaveAudit, LeaveNotice,
                                    LeaveSegment, Reply, SegmentNote, Tag)

pytestmark = pytest.mark.django_db(transaction=True)

FINISHED = (Status.SUCCESS, Status.FAILED)


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_superuser("admin", "admin@example.org", "pw")


@pytest.fixture
def config(db) -> BackupConfiguration:
    return BackupConfiguration.objects.create(name="e2e sample", modules=["sampleapp"], storage_path="e2e/sample")


def _finished(record_id: int) -> Any:
    r = BackupRecord.objects.get(pk=record_id)
    return r if r.status in FINISHED else None


def _statuses(values: List[bytes]) -> List[Dict[str, Any]]:
    return [fusion_events.decode(v) for v in values]


def _artifacts(root: Path) -> List[Path]:
    return [p for p in root.rglob("*") if p.is_file() and ".ledger" not in p.parts]


def _seed_articles() -> Dict[str, Any]:
    """Old and new articles with every kind of child; returns them by role."""
    now = timezone.now()
    old = now - dt.timedelta(days=400)
    tag = Tag.objects.create(name="history")
    gone = Article.objects.create(slug="old-news", title="Old news", published_at=old)
    gone.tags.add(tag)
    c1 = Comment.objects.create(article=gone, created=old.date())
    c2 = Comment.objects.create(article=gone, parent=c1, created=old.date())  # CASCADE through the self-FK too
    reply = Reply.objects.create(comment=c2)  # two CASCADE levels down, custom db_column
    bookmark = Bookmark.objects.create(article=gone)  # SET_NULL: stays, loses its article
    cited = Article.objects.create(slug="cited", title="Cited", published_at=old)
    citation = Citation.objects.create(article=cited)  # PROTECT: the article must stay
    cited_comment = Comment.objects.create(article=cited, created=old.date())
    fresh = Article.objects.create(slug="fresh", title="Fresh", published_at=now)
    return dict(gone=gone, comments=[c1, c2], reply=reply, bookmark=bookmark, cited=cited, citation=citation,
                cited_comment=cited_comment, fresh=fresh, tag=tag)


# ---------------------------------------------------------------------------------------------------------------


def test_back_up_now_in_the_admin_ends_as_a_successful_record_with_its_file(
        kafka_topics: Topics, workers: Workers, client, admin_user, config) -> None:
    rows = _seed_articles()
    workers.start()
    client.force_login(admin_user)
    r = client.post("/admin/backup_archive/backupconfiguration/",
                    {"action": "backup_now", "_selected_action": [config.pk]}, follow=True)
    assert r.status_code == 200 and "1 request(s) sent" in r.content.decode()
    [record] = BackupRecord.objects.filter(configuration=config)
    assert record.requested_by == admin_user and record.published_at is not None

    rec = wait_for(lambda: _finished(record.pk), what=f"BackupRecord {record.pk} to finish", explain=workers.log)
    assert rec.status == Status.SUCCESS, f"backup failed: {rec.error_message}\n{workers.log()}"
    assert rec.file_path.startswith("e2e/sample/"), rec.file_path
    artifact = workers.storage_root / rec.file_path
    assert artifact.is_file(), f"the record names {rec.file_path}, which is not in the storage root"
    assert artifact.stat().st_size == rec.file_size
    assert _artifacts(workers.storage_root) == [artifact]
    assert rec.worker == "w0" and rec.attempt == 1 and rec.error_message == ""
    assert rec.started_at is not None and rec.completed_at >= rec.started_at
    tables = backup_tables(["sampleapp"], [])
    assert rec.stats["tables"] == len(tables)
    expected_rows = (Tag.objects.count() + Article.objects.count() + Article.tags.through.objects.count()
                     + Comment.objects.count() + Reply.objects.count() + Bookmark.objects.count()
                     + Citation.objects.count())
    assert rec.stats["rows"] == expected_rows, rec.stats
    assert rows["gone"].pk  # the seed is what was backed up

    # What the admin and backup_status show for it.
    page = client.get("/admin/backup_archive/backuprecord/").content.decode()
    assert "Success" in page and "e2e sample" in page
    out = StringIO()
    call_command("backup_status", stdout=out)
    assert "SUCCESS" in out.getvalue() and "never" in out.getvalue()  # not verified yet


def _seed_leaves() -> Dict[str, Any]:
    """Old and new leaves with CASCADE (two levels), SET_NULL and PROTECT children; returns them by role."""
    now = timezone.now()
    old = now - dt.timedelta(days=400)
    gone = Leave.objects.create(applicant="ravi", timestamp=old)
    segments = [LeaveSegment.objects.create(leave=gone, day=old.date() + dt.timedelta(days=i)) for i in range(2)]
    notes = [SegmentNote.objects.create(segment=segments[0], text="medical \u2013 certificate attached")]
    notice = LeaveNotice.objects.create(leave=gone)  # SET_NULL: stays, loses its leave
    audited = Leave.objects.create(applicant="asha", timestamp=old)
    audit = LeaveAudit.objects.create(leave=audited)  # PROTECT: the leave must stay
    audited_segment = LeaveSegment.objects.create(leave=audited, day=old.date())
    fresh = Leave.objects.create(applicant="mohan", timestamp=now)
    return dict(gone=gone, segments=segments, notes=notes, notice=notice, audited=audited, audit=audit,
                audited_segment=audited_segment, fresh=fresh)


def test_archive_now_in_the_admin_moves_rows_and_cascade_children_and_keeps_protected(
        kafka_topics: Topics, workers: Workers, client, admin_user) -> None:
    rows = _seed_leaves()
    policy = ArchivePolicy.objects.create(module="sampleapp", model_name="Leave", timestamp_column="timestamp",
                                          archive_after_days=365)
    workers.start()
    client.force_login(admin_user)
    # The first POST only shows what will move (two old leaves, one of them PROTECTed); confirming runs it.
    r = client.post("/admin/backup_archive/archivepolicy/",
                    {"action": "archive_now", "_selected_action": [policy.pk]})
    assert r.status_code == 200 and '<td class="due">2</td>' in r.content.decode()
    assert kafka_topics.count("archive.due") == 0
    r = client.post("/admin/backup_archive/archivepolicy/",
                    {"action": "archive_now", "_selected_action": [policy.pk], "confirm": "yes"}, follow=True)
    assert r.status_code == 200 and "1 request(s) sent" in r.content.decode()

    values = kafka_topics.read_until(
        "jobs.completed", lambda got: any(e["status"] in FINISHED for e in _statuses(got)), explain=workers.log)
    [done] = [e for e in _statuses(values) if e["status"] in FINISHED]
    assert done["job_type"] == "archive" and done["policy_id"] == policy.pk
    assert done["status"] == Status.SUCCESS, f"{done['error']}\n{workers.log()}"
    stats = done["stats"]
    # one leave archived with 2 segments and 1 note; 1 notice nulled; the audited leave skipped
    assert (stats["archived"], stats["cascaded"], stats["nulled"], stats["skipped_protected"]) == (1, 3, 1, 1), stats

    # The old leave and its whole CASCADE subtree left their tables ...
    gone, audited, fresh = rows["gone"], rows["audited"], rows["fresh"]
    assert not Leave.objects.filter(pk=gone.pk).exists()
    assert not LeaveSegment.objects.filter(leave_id=gone.pk).exists()
    assert not SegmentNote.objects.exists()
    # ... and are in ArchivedRecord, each under its own model, stamped with who asked and which job.
    archived = {(a.model_name, a.original_id) for a in ArchivedRecord.objects.filter(module="sampleapp")}
    want = {("Leave", str(gone.pk)), ("SegmentNote", str(rows["notes"][0].pk))}
    want |= {("LeaveSegment", str(seg.pk)) for seg in rows["segments"]}
    assert archived == want
    assert {a.archived_by_id for a in ArchivedRecord.objects.all()} == {admin_user.pk}
    assert {str(a.job_id) for a in ArchivedRecord.objects.all()} == {done["job_id"]}
    a = ArchivedRecord.objects.get(model_name="Leave", original_id=str(gone.pk))
    assert a.row is not None and a.row["applicant"] == "ravi" and a.row["id"] == gone.pk
    assert a.table_name == "public.sampleapp_leave"
    note = ArchivedRecord.objects.get(model_name="SegmentNote")
    assert note.row["text"] == "medical \u2013 certificate attached"  # the text survives as text
    # SET_NULL: the notice stays and forgets the leave; PROTECT: the audited leave stays with its children.
    assert LeaveNotice.objects.get(pk=rows["notice"].pk).leave_id is None
    assert Leave.objects.filter(pk=audited.pk).exists() and LeaveAudit.objects.filter(pk=rows["audit"].pk).exists()
    assert LeaveSegment.objects.filter(pk=rows["audited_segment"].pk).exists()
    assert Leave.objects.filter(pk=fresh.pk).exists()  # not due yet

    # The admin shows the archived row readably, with its table.
    page = client.get(f"/admin/backup_archive/archivedrecord/{a.pk}/change/").content.decode()
    assert "&quot;ravi&quot;" in page and "public.sampleapp_leave" in page
    listing = client.get("/admin/backup_archive/archivedrecord/?q=Leave").content.decode()
    assert "public.sampleapp_leave" in listing


@pytest.mark.parametrize("mode", ["integrity", "restore"])
def test_scheduled_verification_passes_then_catches_a_corrupted_artifact(
        kafka_topics: Topics, workers: Workers, settings, client, admin_user, config, mode: str) -> None:
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "VERIFY_MODE": mode}
    _seed_articles()
    # Verification decrypts: this worker holds the secret key; restore mode also needs a server for scratch
    # databases (the test server itself; later conninfo keywords win, so dbname=postgres replaces the test db).
    workers.start(secret_key=True, scratch_pg=django_conninfo() + " dbname=postgres")
    record = services.request_backup(config, None)
    rec = wait_for(lambda: _finished(record.pk), what="the backup to finish", explain=workers.log)
    assert rec.status == Status.SUCCESS, f"{rec.error_message}\n{workers.log()}"

    # A weekly verify schedule with one slot due: the scheduler requests it once, for the newest good backup.
    BackupConfiguration.objects.filter(pk=config.pk).update(
        verify_schedule="0 3 * * 0", last_verify_scheduled_at=dt.datetime(2026, 5, 1))
    now = dt.datetime(2026, 5, 4, 12)  # 2026-05-03 is a Sunday
    assert Scheduler(now=now).tick() == 1
    assert Scheduler(now=now).tick() == 0
    slot = timezone.make_aware(dt.datetime(2026, 5, 3, 3), timezone.get_default_timezone())
    verifies = [e for e in _statuses(kafka_topics.read_until(
        "backup.requested", lambda got: sum(fusion_events.decode(v)["type"] == "backup.verify" for v in got) >= 1))
        if e["type"] == "backup.verify"]
    assert [(e["job_id"], e["record_id"], e["mode"], e["file_path"]) for e in verifies] == \
        [(str(slot_job_id("verify", config.pk, slot)), rec.pk, mode, rec.file_path)]

    def verified(status: str) -> Any:
        r = BackupRecord.objects.get(pk=rec.pk)
        return r if r.verify_status == status else None

    ok = wait_for(lambda: verified(Status.SUCCESS) or verified(Status.FAILED), what="the verification result",
                  explain=workers.log)
    assert ok.verify_status == Status.SUCCESS, f"{ok.verify_message}\n{workers.log()}"
    assert ok.last_verified_at is not None and ok.status == Status.SUCCESS  # the backup itself is untouched
    out = StringIO()
    call_command("backup_status", stdout=out)
    assert "SUCCESS at" in out.getvalue(), out.getvalue()

    # One flipped byte in the artifact: the next slot's verification fails and says so.
    artifact = workers.storage_root / rec.file_path
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))
    assert Scheduler(now=dt.datetime(2026, 5, 11, 12)).tick() == 1
    bad = wait_for(lambda: verified(Status.FAILED), what="the corrupted artifact's verification to fail",
                   explain=workers.log)
    assert "authentication failed" in bad.verify_message and "altered" in bad.verify_message, bad.verify_message
    assert bad.last_verified_at >= ok.last_verified_at
    assert BackupRecord.objects.get(pk=rec.pk).status == Status.SUCCESS  # verification never rewrites the backup

    # The admin shows it and filters by it; backup_status prints the reason.
    client.force_login(admin_user)
    failed_page = client.get("/admin/backup_archive/backuprecord/?verified=failed").content.decode()
    assert "FAILED:" in failed_page and "e2e sample" in failed_page
    passed_page = client.get("/admin/backup_archive/backuprecord/?verified=success").content.decode()
    assert "e2e sample" not in passed_page
    out = StringIO()
    call_command("backup_status", stdout=out)
    assert "FAILED at" in out.getvalue(), out.getvalue()


def test_republished_record_runs_once_on_the_worker(kafka_topics: Topics, workers: Workers, config) -> None:
    """A record the sweep sends again while the first message is still waiting: the worker runs the job once
    (its ledger answers the duplicate) and the record ends SUCCESS."""
    record = services.request_backup(config, None)  # published; no worker is running yet
    BackupRecord.objects.filter(pk=record.pk).update(published_at=timezone.now() - dt.timedelta(hours=1))
    [again] = services.republish_queued(30)
    assert again.job_id == record.job_id and again.error == ""
    assert kafka_topics.count("backup.requested") == 2
    workers.start()
    rec = wait_for(lambda: _finished(record.pk), what="the backup to finish", explain=workers.log)
    assert rec.status == Status.SUCCESS, f"{rec.error_message}\n{workers.log()}"
    values = kafka_topics.read_until(
        "jobs.completed",
        lambda got: sum(e["status"] == Status.SUCCESS for e in _statuses(got)) >= 2, explain=workers.log)
    events = [e for e in _statuses(values) if e["job_id"] == str(record.job_id)]
    starts = [e for e in events if e["status"] == Status.RUNNING and e["stats"] is None]  # progress has stats
    assert len(starts) == 1, f"the duplicate ran the job again: {events}"
    assert len(_artifacts(workers.storage_root)) == 1


def test_a_worker_failed_archive_run_is_mailed(kafka_topics: Topics, workers: Workers) -> None:
    """A real worker fails an archive job (a trigger refuses the DELETE, as a Fusion trigger might): its FAILED
    must reach the job's ArchiveRun through the recorder, and be mailed once."""
    _seed_leaves()
    with connection.cursor() as cur:
        cur.execute("CREATE FUNCTION fb_e2e_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$BEGIN RAISE EXCEPTION 'leaves are kept by order of the registrar'; END$$")
        cur.execute("CREATE TRIGGER fb_e2e_refuse BEFORE DELETE ON sampleapp_leave "
                    "FOR EACH ROW EXECUTE FUNCTION fb_e2e_refuse()")
    try:
        _fail_an_archive_run(kafka_topics, workers)
    finally:  # DDL outlives the test's flush: the other tests delete leaves
        with connection.cursor() as cur:
            cur.execute("DROP TRIGGER fb_e2e_refuse ON sampleapp_leave; DROP FUNCTION fb_e2e_refuse()")


def _fail_an_archive_run(kafka_topics: Topics, workers: Workers) -> None:
    policy = ArchivePolicy.objects.create(module="sampleapp", model_name="Leave", timestamp_column="timestamp",
                                          archive_after_days=365)
    workers.start()
    req = services.request_archive(policy, None)
    assert req.published is True, req.error
    values = kafka_topics.read_until(
        "jobs.completed", lambda got: any(e["status"] in FINISHED for e in _statuses(got)), explain=workers.log)
    [done] = [e for e in _statuses(values) if e["status"] in FINISHED]
    assert done["job_id"] == str(req.job_id) and done["status"] == Status.FAILED, done
    assert "registrar" in (done["error"] or ""), done
    # The recorder (same worker process) applies a status within moments of its publication.
    run = wait_for(lambda: ArchiveRun.objects.filter(pk=req.run_id, status=Status.FAILED).first(), timeout=20,
                   what="the ArchiveRun to be FAILED")
    assert "registrar" in run.error_message and run.worker
    [n] = notify_failures()
    assert n.kind == "archive" and "registrar" in n.body and len(mail.outbox) == 1
    assert notify_failures() == []
