"""What no backup or archive request may touch, declared once (issue 10; SECURITY.md).

A Kafka message is a request from an unknown sender, so the C workers check every request against the database
and refuse these tables whatever the message says. Django refuses them earlier and more politely: in the admin
form (`ValidationError` from the models' clean()) and in the services before anything is published (`Refused`),
so a person learns at save time, not from a FAILED job at 2 a.m. Both sides must apply the same rule: keep this
file and the worker's own check in step.

- PostgreSQL's own schemas (pg_catalog, information_schema, pg_toast*, and every schema starting with pg_, which
  PostgreSQL reserves) are never backed up or archived: an archive.due naming pg_catalog.pg_authid would
  delete a login role, a backup of it would put password hashes in an artifact.
- This app's own tables (backup_archive_*) are never archived, as roots or as relations: archiving
  ArchivedRecord into itself loops, archiving BackupRecord hides the backup history. They may be backed up (the
  archived rows live in them).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

TableRef = Union[str, List[str]]

# The schema a bare table name lives in (schemas/SPEC.md: a str table is in public).
DEFAULT_SCHEMA = "public"
# Schemas that are PostgreSQL's, by exact name and by prefix (pg_catalog and pg_toast* start with pg_).
SYSTEM_SCHEMAS = ("information_schema",)
SYSTEM_SCHEMA_PREFIX = "pg_"
# This app's tables: Django names them <app label>_<model>; the app label is backup_archive.
PROJECT_TABLE_PREFIX = "backup_archive_"


class Refused(ValueError):
    """A request (or a configuration) names a table the system must never touch; the message says which, why."""


def split(ref: TableRef) -> Tuple[str, str]:
    """A wire-form table reference -> (schema, table)."""
    if isinstance(ref, str):
        return DEFAULT_SCHEMA, ref
    return ref[0], ref[1]


def qualified(ref: TableRef) -> str:
    schema, table = split(ref)
    return f"{schema}.{table}"


def is_system_schema(schema: str) -> bool:
    # Case-folded: a quoted "PG_Catalog" is another schema to PostgreSQL, but refusing it costs nothing and
    # leaves no look-alike to argue about.
    s = schema.casefold()
    return s in SYSTEM_SCHEMAS or s.startswith(SYSTEM_SCHEMA_PREFIX)


def is_project_table(table: str) -> bool:
    return table.casefold().startswith(PROJECT_TABLE_PREFIX)


def backup_refusal(ref: TableRef) -> Optional[str]:
    """Why a backup must not include this table, or None when it may."""
    schema, _ = split(ref)
    if is_system_schema(schema):
        return (f"{qualified(ref)} is in PostgreSQL's system schema {schema!r}: backups never read the catalogs "
                f"(pg_catalog, information_schema, pg_toast*, any pg_* schema)")
    return None


def archive_refusal(ref: TableRef) -> Optional[str]:
    """Why archival must not move rows of this table, or None when it may."""
    schema, table = split(ref)
    if is_system_schema(schema):
        return (f"{qualified(ref)} is in PostgreSQL's system schema {schema!r}: archival never touches the "
                f"catalogs (pg_catalog, information_schema, pg_toast*, any pg_* schema)")
    if is_project_table(table):
        return (f"{qualified(ref)} is one of this app's own tables ({PROJECT_TABLE_PREFIX}*): archiving it would "
                f"move the backup history or the archive itself")
    return None


def check_backup_tables(tables: Iterable[TableRef]) -> None:
    """Raises Refused naming every table of a backup that is not allowed."""
    reasons = [r for r in (backup_refusal(t) for t in tables) if r]
    if reasons:
        raise Refused("refused: " + "; ".join(reasons))


def check_archive(table: TableRef, relations: Iterable[Dict[str, Any]]) -> None:
    """Raises Refused when the archive root or any relation (its table or the table it references) is not
    allowed; a relation is named by the model it belongs to, so the fix (which policy, which FK) is findable."""
    reasons: List[str] = []
    root = archive_refusal(table)
    if root:
        reasons.append(root)
    for rel in relations:
        for key in ("table", "references"):
            why = archive_refusal(rel[key])
            msg = f"relation {rel.get('module')}.{rel.get('model_name')}.{rel.get('column')}: {why}"
            if why and msg not in reasons:
                reasons.append(msg)
    if reasons:
        raise Refused("refused: " + "; ".join(reasons))
