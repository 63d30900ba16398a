"""Issue 10 on the Django side: what no configuration or policy may name (authority.py), and that what Django
stores on the rows the workers check (migration 0003) is exactly what it publishes."""
from __future__ import annotations

import uuid
from importlib import import_module

import pytest
from django.apps import apps as django_apps
from django.core.exceptions import ValidationError
from django.utils import timezone

import fusion_events
from backup_archive import authority, services
from backup_archive.authority import Refused
from backup_archive.models import ArchivePolicy, BackupConfiguration, BackupRecord, Status
from tests.conftest import Topics

SYSTEM_TABLES = [["pg_catalog", "pg_authid"], ["information_schema", "tables"], ["pg_toast", "pg_toast_1260"],
                 ["pg_temp_3", "scratch"], ["PG_Catalog", "pg_authid"]]


# ---------------------------------------------------------------------------------------------------------------
# The rule


@pytest.mark.parametrize("ref", SYSTEM_TABLES)
def test_system_schemas_are_refused_for_backup_and_archive(ref) -> None:
    assert "system schema" in authority.backup_refusal(ref)
    assert "system schema" in authority.archive_refusal(ref)


@pytest.mark.parametrize("ref", ["backup_archive_archivedrecord", ["public", "backup_archive_backuprecord"],
                                 ["hr", "Backup_Archive_ArchivePolicy"]])
def test_own_tables_may_be_backed_up_but_never_archived(ref) -> None:
    assert authority.backup_refusal(ref) is None  # the archived rows live there: they must be in backups
    assert "this app's own tables" in authority.archive_refusal(ref)


@pytest.mark.parametrize("ref", ["leave_leave", "Blog Article", ["audit", "Log Entry"], ["pgx", "t"],
                                 "pg_authid"])  # a bare name is public.pg_authid (SPEC), not the catalog
def test_ordinary_tables_pass(ref) -> None:
    assert authority.backup_refusal(ref) is None and authority.archive_refusal(ref) is None


def test_refusal_names_every_offender() -> None:
    with pytest.raises(Refused) as e:
        authority.check_backup_tables(["ok", ["pg_catalog", "pg_authid"], ["information_schema", "columns"]])
    assert "pg_catalog.pg_authid" in str(e.value) and "information_schema.columns" in str(e.value)
    assert "public.ok" not in str(e.value)


# ---------------------------------------------------------------------------------------------------------------
# Backup configurations


@pytest.mark.django_db
@pytest.mark.parametrize("ref", SYSTEM_TABLES)
def test_configuration_naming_a_system_table_is_a_form_error(ref) -> None:
    config = BackupConfiguration(name="steal", tables=[ref])
    with pytest.raises(ValidationError) as e:
        config.full_clean()
    assert "tables" in e.value.message_dict and "system schema" in e.value.message_dict["tables"][0]


@pytest.mark.django_db
def test_configuration_with_an_unknown_module_is_a_form_error() -> None:
    with pytest.raises(ValidationError) as e:
        BackupConfiguration(name="typo", modules=["sampleap"]).full_clean()
    assert "'sampleap' is not an installed Django app" in e.value.message_dict["modules"][0]
    BackupConfiguration(name="fine", modules=["sampleapp"], tables=[["audit", "Log Entry"]]).full_clean()


@pytest.mark.django_db(transaction=True)
def test_request_backup_refuses_a_system_table_before_creating_or_sending_anything(kafka_topics: Topics) -> None:
    config = BackupConfiguration.objects.create(name="steal", modules=["sampleapp"])
    BackupConfiguration.objects.filter(pk=config.pk).update(tables=[["pg_catalog", "pg_authid"]])  # past clean()
    config.refresh_from_db()
    with pytest.raises(Refused, match="pg_catalog.pg_authid is in PostgreSQL's system schema"):
        services.request_backup(config, None)
    assert not BackupRecord.objects.exists()
    assert kafka_topics.count("backup.requested") == 0


@pytest.mark.django_db(transaction=True)
def test_request_backup_refuses_an_inactive_configuration(kafka_topics: Topics) -> None:
    config = BackupConfiguration.objects.create(name="retired", modules=["sampleapp"], is_active=False)
    with pytest.raises(Refused, match="'retired' is not active: activate it"):
        services.request_backup(config, None)
    assert not BackupRecord.objects.exists()
    assert kafka_topics.count("backup.requested") == 0


@pytest.mark.django_db
def test_storage_path_is_filled_from_the_template_when_saved(settings) -> None:
    config = BackupConfiguration.objects.create(name="nightly")
    assert config.storage_path == f"configs/{config.pk}"
    assert BackupConfiguration.objects.get(pk=config.pk).storage_path == f"configs/{config.pk}"
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "STORAGE_PATH_TEMPLATE": "by-name/{name}-{id}"}
    other = BackupConfiguration.objects.create(name="weekly")
    assert BackupConfiguration.objects.get(pk=other.pk).storage_path == f"by-name/weekly-{other.pk}"
    mine = BackupConfiguration.objects.create(name="mine", storage_path="hr/mine")
    assert BackupConfiguration.objects.get(pk=mine.pk).storage_path == "hr/mine"  # an explicit one stays
    config.storage_path = ""
    config.save(update_fields=["storage_path"])  # emptied in a form: filled again, never stored empty
    assert BackupConfiguration.objects.get(pk=config.pk).storage_path == f"by-name/nightly-{config.pk}"


@pytest.mark.django_db(transaction=True)
def test_record_keeps_the_tables_it_was_requested_with(kafka_topics: Topics) -> None:
    config = BackupConfiguration.objects.create(name="nightly", modules=["sampleapp"], tables=[["audit", "Log"]])
    record = services.request_backup(config, None)
    [(_, value)] = kafka_topics.read("backup.requested", 1)
    ev = fusion_events.decode(value)
    record.refresh_from_db()
    assert record.tables == ev["tables"] and ["audit", "Log"] in record.tables
    assert ev["storage_path"] == config.storage_path == f"configs/{config.pk}"
    # The configuration changes afterwards: the record's request (and its republish) still says what it said.
    BackupConfiguration.objects.filter(pk=config.pk).update(tables=[], modules=[])
    BackupRecord.objects.filter(pk=record.pk).update(published_at=timezone.now() - timezone.timedelta(hours=1))
    [again] = services.republish_queued(10)
    assert again.error == ""
    values = [fusion_events.decode(v) for _, v in kafka_topics.read("backup.requested", 2)]
    assert [v["tables"] for v in values] == [ev["tables"], ev["tables"]]


@pytest.mark.django_db(transaction=True)
def test_republish_fills_the_tables_of_a_record_from_before_0003(kafka_topics: Topics) -> None:
    config = BackupConfiguration.objects.create(name="nightly", modules=["sampleapp"])
    old = BackupRecord.objects.create(configuration=config, job_id=uuid.uuid4(), backup_type="FULL",
                                      requested_at=timezone.now() - timezone.timedelta(hours=1))
    assert old.tables is None
    [r] = services.republish_queued(10)
    assert r.error == ""
    [(_, value)] = kafka_topics.read("backup.requested", 1)
    old.refresh_from_db()
    assert old.tables == fusion_events.decode(value)["tables"] and "Blog Article" in old.tables


@pytest.mark.django_db(transaction=True)
def test_republish_fails_a_record_whose_tables_became_forbidden(kafka_topics: Topics) -> None:
    config = BackupConfiguration.objects.create(name="nightly")
    rec = BackupRecord.objects.create(configuration=config, job_id=uuid.uuid4(), backup_type="FULL",
                                      tables=[["pg_catalog", "pg_authid"]],  # written by hand into the table
                                      requested_at=timezone.now() - timezone.timedelta(hours=1))
    [r] = services.republish_queued(10)
    assert "pg_catalog.pg_authid" in r.error
    rec.refresh_from_db()
    assert rec.status == Status.FAILED and "system schema" in rec.error_message
    assert kafka_topics.count("backup.requested") == 0


@pytest.mark.django_db(transaction=True)
def test_request_verify_stores_its_job_id_on_the_record(kafka_topics: Topics) -> None:
    config = BackupConfiguration.objects.create(name="nightly")
    record = BackupRecord.objects.create(configuration=config, job_id=uuid.uuid4(), backup_type="FULL",
                                         status=Status.SUCCESS, file_path=f"configs/{config.pk}/a.fbk")
    first = services.request_verify(record, None, mode="integrity")
    record.refresh_from_db()
    assert record.verify_job_id == first and record.verify_status == Status.QUEUED
    second = services.request_verify(record, None, mode="integrity")
    record.refresh_from_db()
    assert record.verify_job_id == second != first  # only the newest verification counts
    jobs = [fusion_events.decode(v)["job_id"] for _, v in kafka_topics.read("backup.requested", 2)]
    assert sorted(jobs) == sorted([str(first), str(second)])


# ---------------------------------------------------------------------------------------------------------------
# Archive policies


@pytest.mark.django_db
def test_policy_stores_what_it_resolves_to() -> None:
    policy = ArchivePolicy.objects.create(module="sampleapp", model_name="comment", timestamp_column="created")
    row = ArchivePolicy.objects.values(*ArchivePolicy.TARGET_FIELDS).get(pk=policy.pk)
    assert row == {"module": "sampleapp", "model_name": "Comment", "timestamp_column": "created",
                   "db_schema": "public", "db_table": "sampleapp_comment", "pk_column": "id"}
    revision = ArchivePolicy.objects.create(module="sampleapp", model_name="Article", timestamp_column="published_at")
    assert (revision.db_table, revision.pk_column) == ("Blog Article", "id")


@pytest.mark.django_db
def test_event_names_exactly_what_the_policy_row_holds() -> None:
    policy = ArchivePolicy.objects.create(module="sampleapp", model_name="Leave", timestamp_column="timestamp",
                                          archive_after_days=30, delete_after_days=90)
    now = timezone.now()
    ev = services.archive_event(policy, None, uuid.uuid4(), now, dry_run=False)
    row = ArchivePolicy.objects.get(pk=policy.pk)
    assert (ev["policy_id"], ev["module"], ev["model_name"], ev["table"], ev["pk_column"],
            ev["timestamp_column"]) == (row.pk, row.module, row.model_name, row.db_table, row.pk_column,
                                        row.timestamp_column)
    assert row.db_schema == "public"  # the event's table is a bare name: public, as the SPEC reads it
    assert ev["cutoff"] == services.to_ms(now) - 30 * services.DAY_MS
    assert ev["purge_before"] == services.to_ms(now) - 90 * services.DAY_MS


@pytest.mark.django_db
@pytest.mark.parametrize("module,model,column,why", [
    ("backup_archive", "ArchivedRecord", "archived_at", "public.backup_archive_archivedrecord is one of this app's"),
    ("backup_archive", "BackupRecord", "requested_at", "public.backup_archive_backuprecord is one of this app's"),
    # auth.User's rows are referenced by BackupRecord.requested_by: archiving users would reach into the history
    ("auth", "User", "date_joined", "relation backup_archive.BackupRecord.requested_by_id"),
])
def test_policy_reaching_own_tables_is_refused(module, model, column, why) -> None:
    policy = ArchivePolicy(module=module, model_name=model, timestamp_column=column)
    with pytest.raises(ValidationError, match=why.replace(".", r"\.")):
        policy.full_clean()
    policy.save()  # saved past clean() (a shell, a fixture): stored unresolved, which every worker refuses
    stored = ArchivePolicy.objects.get(pk=policy.pk)
    assert (stored.db_schema, stored.db_table, stored.pk_column) == ("", "", "")
    with pytest.raises(Refused, match=why.replace(".", r"\.")):
        services.request_archive(policy, None)


@pytest.mark.django_db
def test_policy_that_no_longer_matches_its_row_is_refused() -> None:
    policy = ArchivePolicy.objects.create(module="sampleapp", model_name="Comment", timestamp_column="created")
    ArchivePolicy.objects.filter(pk=policy.pk).update(db_table="sampleapp_reply")  # the model changed since
    with pytest.raises(Refused, match=r"no longer matches its model \(db_table stored 'sampleapp_reply', now "
                                      r"'sampleapp_comment'\).*save it again"):
        services.request_archive(policy, None)
    ArchivePolicy.objects.filter(pk=policy.pk).update(db_schema="", db_table="", pk_column="")  # pre-0003 row
    with pytest.raises(Refused, match="no longer matches"):
        services.request_archive(policy, None)
    policy.refresh_from_db()
    policy.save()  # what the message says to do
    assert services.archive_event(policy, None, uuid.uuid4(), timezone.now(), True)["table"] == "sampleapp_comment"
    ArchivePolicy.objects.filter(pk=policy.pk).update(is_active=False)
    with pytest.raises(Refused, match="not active"):
        services.request_archive(policy, None)


@pytest.mark.django_db
def test_migration_0003_fills_existing_rows() -> None:
    fill = import_module("backup_archive.migrations.0003_authority").fill
    good = ArchivePolicy.objects.create(module="sampleapp", model_name="Comment", timestamp_column="created")
    bad = ArchivePolicy.objects.create(module="backup_archive", model_name="ArchivedRecord",
                                       timestamp_column="archived_at")
    gone = ArchivePolicy.objects.create(module="sampleapp", model_name="Tag", timestamp_column="created")  # no date
    config = BackupConfiguration.objects.create(name="old")
    # As 0002 left them: no resolved names, an empty storage_path, a field name for the timestamp column.
    ArchivePolicy.objects.update(db_schema="", db_table="", pk_column="")
    ArchivePolicy.objects.filter(pk=good.pk).update(model_name="comment")
    BackupConfiguration.objects.update(storage_path="")
    fill(django_apps, None)
    row = ArchivePolicy.objects.get(pk=good.pk)
    assert (row.model_name, row.db_schema, row.db_table, row.pk_column) == ("Comment", "public",
                                                                            "sampleapp_comment", "id")
    for p in (bad, gone):
        assert ArchivePolicy.objects.get(pk=p.pk).db_table == ""
    assert BackupConfiguration.objects.get(pk=config.pk).storage_path == f"configs/{config.pk}"


@pytest.mark.django_db(transaction=True)
def test_commands_and_scheduler_report_a_refusal_and_go_on(kafka_topics: Topics, caplog) -> None:
    import datetime as dt

    from django.core.management import call_command
    from django.core.management.base import CommandError

    from backup_archive.scheduler import Scheduler

    bad = BackupConfiguration.objects.create(name="steal", schedule="0 2 * * *")
    BackupConfiguration.objects.filter(pk=bad.pk).update(tables=[["pg_catalog", "pg_authid"]],
                                                         last_scheduled_at=dt.datetime(2026, 5, 1, 3))
    good = BackupConfiguration.objects.create(name="nightly", modules=["sampleapp"], schedule="0 2 * * *")
    BackupConfiguration.objects.filter(pk=good.pk).update(last_scheduled_at=dt.datetime(2026, 5, 1, 3))
    with pytest.raises(CommandError, match="configuration 'steal': refused: pg_catalog.pg_authid"):
        call_command("backup_request", "steal")
    policy = ArchivePolicy.objects.create(module="backup_archive", model_name="ArchivedRecord",
                                          timestamp_column="archived_at")
    with pytest.raises(CommandError, match="backup_archive_archivedrecord is one of this app's own tables"):
        call_command("archive_run", str(policy.pk))
    # The scheduler logs the refused configuration and still requests the others' slots.
    assert Scheduler(now=dt.datetime(2026, 5, 2, 3)).tick() == 1
    assert [r.configuration_id for r in BackupRecord.objects.all()] == [good.pk]
    assert any("backup steal: slot" in r.getMessage() and "pg_catalog.pg_authid" in r.getMessage()
               for r in caplog.records)
    assert kafka_topics.count("archive.due") == 0
