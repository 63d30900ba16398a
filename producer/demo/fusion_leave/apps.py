from django.apps import AppConfig


class LeaveConfig(AppConfig):
    name = "demo.fusion_leave"
    label = "leave"  # Fusion's app label
