"""The demo project (deploy/demo/run.sh): the backup_archive app installed next to two of Fusion's own apps,
modelled just far enough (models without migrations on Fusion's real tables) for the app to resolve tables and
relations the way it would inside Fusion."""
