from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "demo.fusion_notifications"
    label = "notifications"  # Fusion's app label: ArchivePolicy(module="notifications") finds it
