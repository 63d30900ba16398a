"""Archive runs (issue 13: archival failures are mailed like backup failures): one row per archive.due job, made
by the app when it requests one. No row exists before this migration, so there is nothing to mark as mailed."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ('backup_archive', '0004_failure_notifications'),
    ]

    operations = [
        migrations.CreateModel(
            name='ArchiveRun',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('job_id', models.UUIDField(editable=False, unique=True)),
                ('dry_run', models.BooleanField(default=False)),
                ('status', models.CharField(choices=[('QUEUED', 'Queued'), ('RUNNING', 'Running'), ('SUCCESS', 'Success'), ('FAILED', 'Failed')], default='QUEUED', max_length=16)),
                ('requested_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('published_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('started_at', models.DateTimeField(blank=True, null=True)),
                ('completed_at', models.DateTimeField(blank=True, null=True)),
                ('error_message', models.TextField(blank=True, default='')),
                ('attempt', models.IntegerField(default=1)),
                ('worker', models.CharField(blank=True, default='', max_length=255)),
                ('stats', models.JSONField(blank=True, null=True)),
                ('failure_notified_attempt', models.IntegerField(blank=True, editable=False, null=True)),
                ('policy', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='runs', to='backup_archive.archivepolicy')),
                ('requested_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['-requested_at', '-id'],
            },
        ),
    ]
