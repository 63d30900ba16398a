"""notifications_notification as Fusion has it (django-notifications), unmanaged: the table comes from the Fusion
schema, not from migrations. Foreign keys are plain integer columns here; deleting a Notification has no reverse
relations to collect either way, so Django's delete() issues the same single DELETE as in Fusion."""
from django.db import models


class Notification(models.Model):
    level = models.CharField(max_length=20)
    unread = models.BooleanField()
    actor_object_id = models.CharField(max_length=255)
    verb = models.CharField(max_length=255)
    description = models.TextField(null=True)
    target_object_id = models.CharField(max_length=255, null=True)
    action_object_object_id = models.CharField(max_length=255, null=True)
    timestamp = models.DateTimeField()
    public = models.BooleanField()
    action_object_content_type_id = models.IntegerField(null=True)
    actor_content_type_id = models.IntegerField()
    recipient_id = models.IntegerField()
    target_content_type_id = models.IntegerField(null=True)
    deleted = models.BooleanField()
    emailed = models.BooleanField()
    data = models.TextField(null=True)

    class Meta:
        app_label = "benchapp"
        db_table = "notifications_notification"
        managed = False
