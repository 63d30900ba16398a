"""A minimal Django app for the archive benchmark: Fusion's notifications table as an unmanaged model."""
