"""backup_archive: Fusion's side of Fusion Backup & Archive.

A Django app that keeps backup configurations, archive policies and their records, and asks the C workers to do
the work by publishing events (schemas/SPEC.md) to Kafka: `services.request_backup()`,
`services.request_archive()`, the `backup_scheduler` command, and admin actions.
"""
