"""The app's migrations create exactly the tables of schemas/sql/backup_archive.sql (the C side's contract)."""
from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest
from django.core.management import call_command
from django.db import connection

SQL = Path(__file__).resolve().parents[2] / "schemas" / "sql" / "backup_archive.sql"
TABLES = ["backup_archive_backupconfiguration", "backup_archive_backuprecord", "backup_archive_archivepolicy",
          "backup_archive_archiverun", "backup_archive_archivedrecord"]


def _columns(schema: str, table: str) -> Dict[str, Tuple[str, object, str]]:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type, character_maximum_length, is_nullable FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s", [schema, table])
        return {name: (dtype, maxlen, nullable) for name, dtype, maxlen, nullable in cur.fetchall()}


def _constraints(schema: str, table: str) -> Set[Tuple[str, Tuple[str, ...], str]]:
    """(kind, columns, what) for primary key, unique, foreign key and check constraints; names ignored."""
    with connection.cursor() as cur:
        cur.execute(
            """SELECT c.contype,
                      ARRAY(SELECT a.attname FROM unnest(c.conkey) k JOIN pg_attribute a
                            ON a.attrelid = c.conrelid AND a.attnum = k ORDER BY a.attname),
                      CASE c.contype WHEN 'f' THEN c.confrelid::regclass::text || ' deferrable=' || c.condeferrable
                                                   || ' deferred=' || c.condeferred
                                     WHEN 'c' THEN pg_get_constraintdef(c.oid) ELSE '' END
               FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
               JOIN pg_namespace n ON n.oid = t.relnamespace
               WHERE n.nspname = %s AND t.relname = %s""", [schema, table])
        # The referenced table prints schema-qualified only when it is not on the search path: strip it.
        return {(k, tuple(cols), what.replace(f"{schema}.", "")) for k, cols, what in cur.fetchall()}


def _indexed_columns(schema: str, table: str) -> Set[Tuple[str, ...]]:
    with connection.cursor() as cur:
        cur.execute(
            """SELECT ARRAY(SELECT a.attname FROM unnest(i.indkey) k JOIN pg_attribute a
                            ON a.attrelid = i.indrelid AND a.attnum = k)
               FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
               WHERE n.nspname = %s AND t.relname = %s""", [schema, table])
        return {tuple(r[0]) for r in cur.fetchall()}


@pytest.mark.django_db
@pytest.mark.parametrize("table", TABLES)
def test_migrations_match_schemas_sql(table: str) -> None:
    with connection.cursor() as cur:
        cur.execute("CREATE SCHEMA fb_sqlfile")
        # auth_user resolves to the migrated public.auth_user; the app's tables land in fb_sqlfile.
        cur.execute("SET LOCAL search_path = fb_sqlfile, public")
        cur.execute(SQL.read_text(encoding="utf-8"))
        cur.execute("SET LOCAL search_path = public")
    want, got = _columns("fb_sqlfile", table), _columns("public", table)
    assert want, f"{table} is not in {SQL.name}"
    assert got == want, f"{table}: columns differ: only in migrations {set(got.items()) - set(want.items())}, " \
                        f"only in the SQL file {set(want.items()) - set(got.items())}"
    assert _constraints("public", table) == _constraints("fb_sqlfile", table)
    assert _indexed_columns("public", table) == _indexed_columns("fb_sqlfile", table)


@pytest.mark.django_db
def test_models_need_no_new_migration() -> None:
    out = StringIO()
    try:
        call_command("makemigrations", "backup_archive", "--check", "--dry-run", stdout=out)
    except SystemExit as e:  # --check exits 1 when a migration is missing
        pytest.fail(f"the models changed without a migration:\n{out.getvalue()} (exit {e.code})")
