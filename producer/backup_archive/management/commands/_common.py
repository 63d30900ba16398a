"""Helpers shared by the management commands: finding objects and users by what a person types."""
from __future__ import annotations

from typing import Any, Optional

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from ...models import ArchivePolicy, BackupConfiguration


def find_config(ref: str) -> BackupConfiguration:
    qs = BackupConfiguration.objects.all()
    config = qs.filter(name=ref).first() or (qs.filter(pk=int(ref)).first() if ref.isdigit() else None)
    if config is None:
        names = ", ".join(qs.values_list("name", flat=True)[:20]) or "none yet: add one in the admin"
        raise CommandError(f"no backup configuration named or numbered {ref!r} (configurations: {names})")
    return config


def find_policy(ref: str) -> ArchivePolicy:
    qs = ArchivePolicy.objects.all()
    policy = None
    if ref.isdigit():
        policy = qs.filter(pk=int(ref)).first()
    elif "." in ref:
        module, model = ref.split(".", 1)
        policy = qs.filter(module=module, model_name__iexact=model).first()
    if policy is None:
        known = ", ".join(f"{p.pk} ({p})" for p in qs[:20]) or "none yet: add one in the admin"
        raise CommandError(f"no archive policy {ref!r}: give its id or module.Model (policies: {known})")
    return policy


def find_user(username: Optional[str]) -> Optional[Any]:
    if not username:
        return None
    User = get_user_model()
    try:
        return User.objects.get(**{User.USERNAME_FIELD: username})
    except User.DoesNotExist:
        raise CommandError(f"no user {username!r}") from None
