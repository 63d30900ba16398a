"""Fusion's notifications_notification, as far as archival needs it (Fusion created the table: this app has no migrations, so Django never touches it)."""
from django.conf import settings
from django.db import models


class Notification(models.Model):
    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    verb = models.CharField(max_length=255)
    timestamp = models.DateTimeField()

    class Meta:
        db_table = "notifications_notification"
