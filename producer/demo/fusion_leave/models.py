"""Fusion's leave app, as far as archival needs it: a Leave with two CASCADE children and a SET_NULL
reference, exactly the on_delete rules of Fusion's models (Fusion created the tables: this app has no migrations, so Django never creates them)."""
from django.conf import settings
from django.db import models


class LeaveType(models.Model):
    name = models.CharField(max_length=40)

    class Meta:
        db_table = "leave_leavetype"


class Leave(models.Model):
    applicant = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    purpose = models.CharField(max_length=500)
    status = models.CharField(max_length=20)
    timestamp = models.DateTimeField(null=True)

    class Meta:
        db_table = "leave_leave"


class LeaveSegment(models.Model):
    leave = models.ForeignKey(Leave, on_delete=models.CASCADE, related_name="segments")
    leave_type = models.ForeignKey(LeaveType, on_delete=models.SET_NULL, null=True, related_name="+")
    start_date = models.DateField()
    end_date = models.DateField()

    class Meta:
        db_table = "leave_leavesegment"


class ReplacementSegment(models.Model):
    leave = models.ForeignKey(Leave, on_delete=models.CASCADE, related_name="replacements")
    replacer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    start_date = models.DateField()
    end_date = models.DateField()

    class Meta:
        db_table = "leave_replacementsegment"
