"""What the app uses from Django that Fusion's own Django (3.1.5) lacks, in one place.

The app supports Django 3.1 through 5.x. Where a newer Django has the API, it is used as is; otherwise the
fallback does what that API does (the attributes Django 3.1's admin already reads), so the rest of the app is
written for the new API only and this file shrinks as old versions are dropped.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from django.contrib import admin


def _action(function: Optional[Callable] = None, *, permissions: Optional[Sequence[str]] = None,
            description: Optional[str] = None) -> Any:
    # Django 3.2's admin.action: 3.1 reads allowed_permissions and short_description off the function.
    def decorator(func: Callable) -> Callable:
        if permissions is not None:
            func.allowed_permissions = permissions  # type: ignore[attr-defined]
        if description is not None:
            func.short_description = description  # type: ignore[attr-defined]
        return func

    return decorator if function is None else decorator(function)


def _display(function: Optional[Callable] = None, *, boolean: Optional[bool] = None, ordering: Any = None,
             description: Optional[str] = None, empty_value: Optional[str] = None) -> Any:
    # Django 3.2's admin.display: 3.1 reads boolean, admin_order_field, short_description, empty_value_display.
    def decorator(func: Callable) -> Callable:
        if boolean is not None and empty_value is not None:
            raise ValueError("The boolean and empty_value arguments to the @display decorator are mutually "
                             "exclusive.")
        if boolean is not None:
            func.boolean = boolean  # type: ignore[attr-defined]
        if ordering is not None:
            func.admin_order_field = ordering  # type: ignore[attr-defined]
        if description is not None:
            func.short_description = description  # type: ignore[attr-defined]
        if empty_value is not None:
            func.empty_value_display = empty_value  # type: ignore[attr-defined]
        return func

    return decorator if function is None else decorator(function)


action = getattr(admin, "action", _action)
display = getattr(admin, "display", _display)
