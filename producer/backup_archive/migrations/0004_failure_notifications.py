"""Failure mails (issue 13, backup_archive/notify.py): what has been mailed. Failures that exist when this runs
are marked as mailed, so an upgrade does not send one mail per failure in the table's history."""

from django.db import migrations, models
from django.db.models import F


def mark_existing(apps, schema_editor):
    BackupRecord = apps.get_model("backup_archive", "BackupRecord")
    db = schema_editor.connection.alias
    BackupRecord.objects.using(db).filter(status="FAILED").update(failure_notified_attempt=F("attempt"))
    BackupRecord.objects.using(db).filter(verify_status="FAILED").update(verify_notified_job_id=F("verify_job_id"))


class Migration(migrations.Migration):

    dependencies = [
        ('backup_archive', '0003_authority'),
    ]

    operations = [
        migrations.AddField(
            model_name='backuprecord',
            name='failure_notified_attempt',
            field=models.IntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='backuprecord',
            name='verify_notified_job_id',
            field=models.UUIDField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(mark_existing, migrations.RunPython.noop),
    ]
