"""From Django's app registry to the names the worker needs: tables of modules, a policy's model, its
timestamp column, and the relations (reverse foreign keys with their on_delete) of a model, recursively.

The database itself never cascades in Fusion (every FK is DEFERRABLE INITIALLY DEFERRED with no action; Django
emulates on_delete in Python), so the worker can only archive correctly if we tell it what Django would do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple, Type, Union

from django.apps import apps
from django.db import models

from .authority import DEFAULT_SCHEMA

TableRef = Union[str, List[str]]

# Django's on_delete handlers, by the name the SPEC uses. RESTRICT and SET(...) have no SPEC value: both are
# sent as PROTECT, the safe choice (the worker skips such a parent row instead of guessing).
_ON_DELETE = {
    models.CASCADE: "CASCADE",
    models.SET_NULL: "SET_NULL",
    models.PROTECT: "PROTECT",
    models.DO_NOTHING: "DO_NOTHING",
    models.SET_DEFAULT: "SET_DEFAULT",
}


def on_delete_name(handler: Any) -> str:
    return _ON_DELETE.get(handler, "PROTECT")


def _stored(model: Type[models.Model]) -> bool:
    """True for models with a table of their own that Django manages (no proxies, unmanaged or swapped out)."""
    m = model._meta
    return m.managed and not m.proxy and not m.swapped


def module_tables(labels: Iterable[str]) -> List[str]:
    """The tables of the given app labels: every model's db_table and its auto-created many-to-many tables.

    Raises LookupError naming the label that is not an installed app.
    """
    out: List[str] = []
    seen: Set[str] = set()
    for label in labels:
        try:
            app = apps.get_app_config(label)
        except LookupError:
            raise LookupError(f"module {label!r} is not an installed Django app (use the app label)") from None
        # include_auto_created brings the implicit M2M through models (e.g. sampleapp_article_tags).
        for model in app.get_models(include_auto_created=True):
            if _stored(model) and model._meta.db_table not in seen:
                seen.add(model._meta.db_table)
                out.append(model._meta.db_table)
    return out


def backup_tables(modules: Iterable[str], tables: Iterable[TableRef]) -> List[TableRef]:
    """The `tables` of a backup.requested event: the modules' tables, then the explicit ones, without duplicates."""
    out: List[TableRef] = []
    seen: Set[Tuple[str, str]] = set()
    for t in list(module_tables(modules)) + list(tables):
        key = ("public", t) if isinstance(t, str) else (t[0], t[1])
        if key not in seen:
            seen.add(key)
            out.append(t if isinstance(t, str) else [t[0], t[1]])
    return out


def resolve_model(module: str, model_name: str) -> Type[models.Model]:
    """The model a policy names by app label and model name (plain strings: this module never imports the app's
    models, which import it). Raises LookupError saying what does not resolve."""
    try:
        model = apps.get_model(module, model_name)
    except (LookupError, ValueError):
        raise LookupError(
            f"no model {model_name!r} in app {module!r} (module is the app label, e.g. 'leave')"
        ) from None
    if not _stored(model):
        raise LookupError(f"{module}.{model_name} has no table of its own (proxy or unmanaged)")
    return model


@dataclass(frozen=True)
class PolicyTarget:
    """What an archive policy names, as the archive.due event carries it and the policy row stores it (the worker
    runs an archive.due only when the event's values equal the row's: migration 0003)."""

    module: str  # the app label
    model_name: str  # the model's object name, as Django spells it
    db_schema: str
    db_table: str
    pk_column: str
    timestamp_column: str  # the column, never the field name


def policy_target(module: str, model_name: str, timestamp_column: str) -> Tuple[Type[models.Model], PolicyTarget]:
    """Resolves a policy's module, model and timestamp field or column. Plain strings, not a policy, so that
    migration 0003 fills old rows with exactly what ArchivePolicy.save() stores. Raises LookupError saying what
    does not resolve."""
    model = resolve_model(module, model_name)
    meta = model._meta
    return model, PolicyTarget(
        module=meta.app_label, model_name=meta.object_name, db_schema=DEFAULT_SCHEMA, db_table=meta.db_table,
        pk_column=meta.pk.column, timestamp_column=resolve_timestamp_column(model, timestamp_column),
    )


def resolve_timestamp_column(model: Type[models.Model], name: str) -> str:
    """Accepts a field name or a column name of a date/datetime field; returns the column."""
    for f in model._meta.concrete_fields:
        if name in (f.name, f.column):
            if not isinstance(f, (models.DateField, models.DateTimeField)):
                raise LookupError(f"{model._meta.label}.{f.name} is a {type(f).__name__}, not a date or time")
            return f.column
    choices = [f.column for f in model._meta.concrete_fields if isinstance(f, (models.DateField,))]
    raise LookupError(f"{model._meta.label} has no field or column {name!r}; date/time columns: {choices}")


def relations(model: Type[models.Model]) -> List[Dict[str, Any]]:
    """Every reverse foreign key / one-to-one of `model` as SPEC relation maps, following CASCADE recursively.

    A CASCADE child's rows go with their parent, so the child's own children matter too; a SET_NULL, PROTECT,
    DO_NOTHING or SET_DEFAULT child keeps its rows, so the walk stops there. Hidden relations (related_name='+',
    auto-created many-to-many tables) are included: they are rows in the database all the same.
    """
    out: List[Dict[str, Any]] = []
    seen: Set[Tuple[str, str, str]] = set()
    expanded: Set[str] = set()

    def walk(parent: Type[models.Model]) -> None:
        if parent._meta.db_table in expanded:  # self-references and diamonds: list each table's children once
            return
        expanded.add(parent._meta.db_table)
        for rel in parent._meta.get_fields(include_hidden=True):
            if not (rel.auto_created and not rel.concrete and (rel.one_to_many or rel.one_to_one)):
                continue  # forward fields and many-to-many descriptors (their through table has the FKs)
            child = rel.related_model
            if not _stored(child):
                continue
            fk = rel.field
            key = (child._meta.db_table, fk.column, parent._meta.db_table)
            if key in seen:
                continue
            seen.add(key)
            target = fk.target_field
            on_delete = on_delete_name(rel.on_delete)
            out.append({
                "table": child._meta.db_table,
                "column": fk.column,
                "references": parent._meta.db_table,
                "on_delete": on_delete,
                # nil when the FK points at the primary key, as the SPEC asks
                "to_column": None if target.primary_key else target.column,
                "module": child._meta.app_label,
                "model_name": child._meta.object_name,
                "pk_column": child._meta.pk.column,
            })
            if on_delete == "CASCADE":
                walk(child)

    walk(model._meta.concrete_model)
    return out


def user_context(user: Optional[Any]) -> Dict[str, Any]:
    """Who asked: the user id and, where Fusion's `globals` app is installed, the department (for logs)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return {"user_id": None, "department": None}
    ctx: Dict[str, Any] = {"user_id": user.pk, "department": None}
    try:
        ExtraInfo = apps.get_model("globals", "ExtraInfo")  # Fusion's applications.globals
    except LookupError:
        return ctx
    try:
        info = ExtraInfo.objects.select_related("department").filter(user=user).first()
        if info is not None and getattr(info, "department", None) is not None:
            ctx["department"] = str(info.department)
    except Exception:  # optional context: a schema difference must never block a backup
        pass
    return ctx
