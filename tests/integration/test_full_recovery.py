"""A restore brings back the WHOLE database (issue 11, part 1).

Backups carry a schema archive (pg_dump -Fc of every object but the tables' rows, taken on the backup's own
snapshot); `restore --create` replays its pre-data, the worker's COPY data, its data section (sequence values,
large objects) and its post-data in one transaction. Jobs run through the job code (`event run --no-publish`).

- a "zoo" database holding every object type PostgreSQL 15 can have (schemas, an extension, enum, composite type,
  domain with a check, functions and a procedure, an unowned sequence with a value, identity and serial columns, a
  partitioned table with rows in its partitions, a view, a materialized view with an index, triggers, a rule, RLS
  with a policy, comments, grants to a role, an owner other than the restoring role, large objects with data) and
  awkward values (NULLs, bytea with zero bytes, tabs/newlines/backslashes, NaN, infinity, arrays, jsonb, a 6 MB
  TOAST value, quoted and spaced names, a dropped column, a generated column, a zero-column table): after backup
  and restore --create into an empty database, `pg_dump --schema-only` of source and target are identical (less
  the header lines naming versions and psql's random \\restrict keys), every table's sorted rows hash the same,
  and so do materialized views, sequence values and large objects;
- the same from an INCREMENTAL artifact, after the schema and the rows changed (it carries its own archive);
- --no-owner: every restored object belongs to the restoring role; --jobs 2 stays one transaction; a second
  --create into the restored database is refused (exit 13) and changes nothing;
- the Fusion schema with rows: identical schema dumps and table digests;
- a flipped byte in the schema segment, and a restore killed (SIGKILL) while loading rows: non-zero exit / no
  commit, the new database holds no objects at all.
- a password in the worker's conninfo never reaches pg_dump's command line or environment (a 0600 passfile,
  removed afterwards); a missing or too old pg_dump fails the job, naming the setting, and leaves no artifact.

The source databases hold a matching active BackupConfiguration and QUEUED BackupRecord for every job (the
worker's authority check at the start of each job requires them).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from fusion_events import encode
from flow import run_event, table_digests

REPO = Path(__file__).resolve().parents[2]
APP_SQL = REPO / "schemas/sql/backup_archive.sql"
PG_BIN = Path(os.environ.get("FB_PG_BIN", "/usr/lib/postgresql/15/bin"))
STORAGE_PATH = "zoo/nightly"

ROLES_SQL = """
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fb_zoo_reader') THEN CREATE ROLE fb_zoo_reader NOLOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fb_zoo_owner') THEN CREATE ROLE fb_zoo_owner NOLOGIN; END IF;
END $$;
"""

ZOO_SQL = r"""
CREATE EXTENSION citext WITH SCHEMA public;
CREATE SCHEMA zoo;
CREATE SCHEMA "Odd Schema";
COMMENT ON SCHEMA zoo IS 'every object type';

CREATE TYPE zoo.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE zoo.pair AS (a integer, b text);
CREATE DOMAIN zoo.posint AS integer CONSTRAINT posint_positive CHECK (VALUE > 0);
COMMENT ON TYPE zoo.mood IS 'how an animal feels';

CREATE FUNCTION zoo.add1(i integer) RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT i + 1';
CREATE FUNCTION zoo.touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.updated := now(); RETURN NEW; END$$;
CREATE FUNCTION zoo.log_insert() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO zoo.log (msg) VALUES ('inserted ' || NEW.id); RETURN NEW; END$$;
CREATE TABLE zoo.counter (n integer NOT NULL);
INSERT INTO zoo.counter VALUES (0);
CREATE PROCEDURE zoo.bump(k integer) LANGUAGE sql AS $$UPDATE zoo.counter SET n = n + k$$;
COMMENT ON FUNCTION zoo.add1(integer) IS 'adds one';

CREATE SEQUENCE zoo.free_seq START 100 INCREMENT 7;
SELECT setval('zoo.free_seq', 1234);

CREATE TABLE zoo.animals (
    id integer GENERATED ALWAYS AS IDENTITY (START WITH 10) PRIMARY KEY,
    serial_no serial,
    name public.citext NOT NULL UNIQUE,
    mood zoo.mood,
    pair zoo.pair,
    legs zoo.posint,
    tags text[],
    doc jsonb,
    raw bytea,
    note text,
    f8 double precision,
    at timestamptz,
    dropped_me integer,
    name_len integer GENERATED ALWAYS AS (length(name::text)) STORED,
    updated timestamptz
);
ALTER TABLE zoo.animals DROP COLUMN dropped_me;
COMMENT ON TABLE zoo.animals IS 'awkward values live here';
COMMENT ON COLUMN zoo.animals.note IS 'tabs, newlines, backslashes';
CREATE INDEX animals_doc ON zoo.animals USING gin (doc);
CREATE INDEX animals_lower ON zoo.animals (lower(note)) WHERE note IS NOT NULL;

CREATE TABLE zoo.log (id serial PRIMARY KEY, msg text);
CREATE TRIGGER animals_touch BEFORE UPDATE ON zoo.animals FOR EACH ROW EXECUTE FUNCTION zoo.touch();
CREATE TRIGGER animals_log AFTER INSERT ON zoo.animals FOR EACH ROW EXECUTE FUNCTION zoo.log_insert();
CREATE RULE log_no_delete AS ON DELETE TO zoo.log DO INSTEAD NOTHING;

CREATE TABLE zoo.feeding (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    animal integer NOT NULL REFERENCES zoo.animals (id) DEFERRABLE INITIALLY DEFERRED,
    grams numeric(8, 2) CHECK (grams >= 0)
);

CREATE TABLE zoo.events (id bigint NOT NULL, at date NOT NULL, what text) PARTITION BY RANGE (at);
CREATE TABLE zoo.events_2024 PARTITION OF zoo.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE zoo.events_2025 PARTITION OF zoo.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
ALTER TABLE zoo.events ADD PRIMARY KEY (id, at);
INSERT INTO zoo.events SELECT i, date '2024-01-01' + i, 'event ' || i FROM generate_series(1, 600) i;

CREATE TABLE zoo.secrets (id integer PRIMARY KEY, owner_name name NOT NULL, secret text);
ALTER TABLE zoo.secrets ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON zoo.secrets USING (owner_name = current_user);
ALTER TABLE zoo.secrets OWNER TO fb_zoo_owner;
INSERT INTO zoo.secrets VALUES (1, 'postgres', 'a'), (2, 'fb_zoo_reader', 'b');

CREATE TABLE zoo.nocols ();
INSERT INTO zoo.nocols DEFAULT VALUES;
INSERT INTO zoo.nocols DEFAULT VALUES;
INSERT INTO zoo.nocols DEFAULT VALUES;

CREATE TABLE "Odd Schema"."Spaced ""Quoted"" Table" ("Weird Col" text, "select" integer, "ÄÖ" text);
INSERT INTO "Odd Schema"."Spaced ""Quoted"" Table" VALUES ('a b', 1, 'ü'), (NULL, NULL, NULL), (E'x\ty', -1, '€');

CREATE TABLE zoo.big (id integer PRIMARY KEY, payload text);
-- a 6 MB value (TOAST, out of line, compressed badly on purpose: md5 text)
INSERT INTO zoo.big SELECT 1, string_agg(md5(g::text), '') FROM generate_series(1, 200000) g;
-- enough rows for a restore to be caught while loading them
INSERT INTO zoo.big SELECT g, repeat(md5(g::text), 8) FROM generate_series(2, 120000) g;

INSERT INTO zoo.animals (name, mood, pair, legs, tags, doc, raw, note, f8, at) VALUES
  ('Lion', 'happy', ROW(1, 'x'), 4, ARRAY['big', 'cat'], '{"a": [1, 2, {"b": null}]}', '\x00ff00', E'tab\there\nnewline \\ backslash', 'NaN', 'infinity'),
  ('lion2', 'sad', NULL, NULL, ARRAY[NULL, 'q"uote', ''], 'null', '\x', NULL, '-Infinity', '-infinity'),
  ('Émeu', NULL, ROW(NULL, NULL), 2, '{}', '{"ü": "\u00e9\t"}', '\x000000', '', 1e-300, '2024-02-29 23:59:59.999999+00'),
  ('Null Animal', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
UPDATE zoo.animals SET note = note || '!' WHERE name = 'Émeu';
INSERT INTO zoo.feeding (animal, grams) SELECT id, 1.5 FROM zoo.animals;
CALL zoo.bump(5);

CREATE VIEW zoo.happy AS SELECT id, name FROM zoo.animals WHERE mood = 'happy';
COMMENT ON VIEW zoo.happy IS 'only the happy ones';
CREATE MATERIALIZED VIEW zoo.mood_counts AS SELECT mood, count(*) AS n FROM zoo.animals GROUP BY mood;
CREATE UNIQUE INDEX mood_counts_mood ON zoo.mood_counts (mood);

GRANT USAGE ON SCHEMA zoo TO fb_zoo_reader;
GRANT SELECT ON zoo.animals, zoo.happy TO fb_zoo_reader;
GRANT SELECT (id, animal), UPDATE (grams) ON zoo.feeding TO fb_zoo_reader;
GRANT EXECUTE ON FUNCTION zoo.add1(integer) TO fb_zoo_reader;
REVOKE EXECUTE ON FUNCTION zoo.touch() FROM PUBLIC;
GRANT USAGE ON SEQUENCE zoo.free_seq TO fb_zoo_reader;

SELECT lo_from_bytea(0, '\x00010203000000ff'::bytea);
SELECT lo_from_bytea(0, convert_to(repeat('large object ', 100000), 'UTF8'));
"""


# --- helpers -------------------------------------------------------------------------------------------------

def psql(conninfo: str, sql: str) -> str:
    r = subprocess.run([str(PG_BIN / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"psql failed: {r.stderr}"
    return r.stdout


def psql_file(conninfo: str, path: Path) -> None:
    r = subprocess.run([str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-f", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"psql -f {path} failed: {r.stderr}"


def schema_dump(conninfo: str) -> list[str]:
    """pg_dump --schema-only, less the lines that name versions or carry psql's random \\restrict key."""
    r = subprocess.run([str(PG_BIN / "pg_dump"), "--schema-only", "-d", conninfo], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    skip = ("-- Dumped from", "-- Dumped by", "\\restrict", "\\unrestrict")
    return [line for line in r.stdout.splitlines() if not line.startswith(skip)]


def assert_same_schema(source: str, target: str) -> None:
    a, b = schema_dump(source), schema_dump(target)
    assert len(a) > 20
    if a != b:
        import difflib
        diff = "\n".join(list(difflib.unified_diff(a, b, "source", "target", lineterm=""))[:80])
        pytest.fail(f"pg_dump --schema-only differs between source and restored database:\n{diff}")


def rows(conninfo: str, sql: str) -> list[tuple]:
    conn = psycopg2.connect(conninfo)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(sql)
    out = cur.fetchall()
    conn.close()
    return out


def sequences(conninfo: str) -> list[tuple]:
    return rows(conninfo, "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2")


def large_objects(conninfo: str) -> list[tuple]:
    return rows(conninfo, "SELECT m.oid::int8, md5(lo_get(m.oid)), pg_catalog.pg_get_userbyid(m.lomowner) "
                          "FROM pg_largeobject_metadata m ORDER BY 1")


def matviews(conninfo: str) -> list[tuple]:
    return rows(conninfo, "SELECT coalesce(mood::text, '-'), n FROM zoo.mood_counts ORDER BY 1")


def user_objects(conninfo: str) -> int:
    """Objects a restore could have left: relations, types, functions, schemas, extensions, large objects."""
    return rows(conninfo, """
        SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast'))
             + (SELECT count(*) FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema',
                 'pg_toast', 'public') AND nspname NOT LIKE 'pg_temp%' AND nspname NOT LIKE 'pg_toast_temp%')
             + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')
             + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))
             + (SELECT count(*) FROM pg_largeobject_metadata)""")[0][0]


def digests_without_app(conninfo: str) -> dict[str, str]:
    """table_digests less the backup_archive tables: the worker itself writes to those around the snapshot (the
    record's status), so they may differ from what the snapshot saw."""
    return {k: v for k, v in table_digests(conninfo).items() if not k.startswith("public.backup_archive_")}


def add_authority(conninfo: str, backup_type: str = "FULL", storage_path: str = STORAGE_PATH,
                  config_id: int | None = None, tables: list | None = None) -> tuple[int, int, str]:
    """An active BackupConfiguration (or the given one) and a QUEUED BackupRecord matching the event we send."""
    tables = tables or []
    job_id = str(uuid.uuid4())
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        if config_id is None:
            cur.execute(
                "INSERT INTO backup_archive_backupconfiguration (name, backup_type, schedule, modules, tables,"
                " storage_path, retention_days, verify_schedule, is_active, created_at, updated_at)"
                " VALUES (%s, %s, '0 2 * * *', '[]', %s, %s, 30, '', true, now(), now()) RETURNING id",
                (f"zoo-{job_id[:8]}", backup_type, json.dumps(tables), storage_path))
            config_id = cur.fetchone()[0]
        cur.execute(
            "INSERT INTO backup_archive_backuprecord (configuration_id, job_id, backup_type, status, requested_at,"
            " file_path, error_message, attempt, worker, verify_status, verify_message, tables)"
            " VALUES (%s, %s, %s, 'QUEUED', now(), '', '', 1, '', '', '', %s) RETURNING id",
            (config_id, job_id, backup_type, json.dumps(tables)))
        record_id = cur.fetchone()[0]
    return config_id, record_id, job_id


def backup(bin, conninfo: str, settings: list[str], tmp: Path, backup_type: str = "FULL",
           config_id: int | None = None) -> tuple[dict, int]:
    config_id, record_id, job_id = add_authority(conninfo, backup_type, config_id=config_id)
    ev = encode({
        "v": 1, "type": "backup.requested", "job_id": job_id, "ts": int(time.time() * 1000), "requested_by": None,
        "attempt": 1, "record_id": record_id, "config_id": config_id, "config_name": f"zoo-{job_id[:8]}",
        "backup_type": backup_type, "tables": [], "modules": [], "storage_path": STORAGE_PATH,
        "retention_days": 30})
    r, out = run_event(bin, ev, tmp, "--pg", conninfo, *settings)
    assert out is not None, f"no outcome printed (exit {r.returncode}): {r.stderr}"
    assert out["status"] == "SUCCESS", f"{out}\n{r.stderr}"
    return out, config_id


def restore(bin, artifact: Path, conninfo: str, key: Path, *extra: str) -> subprocess.CompletedProcess:
    return bin.run("restore", str(artifact), "--pg", conninfo, "--secret-key", str(key), *extra)


def inspect(bin, artifact: Path, key: Path) -> dict:
    r = bin.run("inspect", str(artifact), "--secret-key", str(key), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def assert_same_database(source: str, target: str) -> None:
    assert_same_schema(source, target)
    src = digests_without_app(source)
    assert len(src) >= 10
    assert digests_without_app(target) == src
    assert sequences(target) == sequences(source)
    assert large_objects(target) == large_objects(source)
    assert matviews(target) == matviews(source)


@pytest.fixture
def settings(storage_root: Path, keypair) -> list[str]:
    pub, _ = keypair
    return ["--storage-root", str(storage_root), "--public-key", str(pub)]


@pytest.fixture
def zoo(pg: str, fresh_db: str, tmp_path: Path) -> str:
    psql(pg, ROLES_SQL)
    # the app's tables reference Django's auth_user (the Fusion schema has it; the zoo gets a minimal one)
    psql(fresh_db, "CREATE TABLE public.auth_user (id serial PRIMARY KEY, username varchar(150) NOT NULL UNIQUE)")
    psql_file(fresh_db, APP_SQL)
    f = tmp_path / "zoo.sql"
    f.write_text(ZOO_SQL)
    psql_file(fresh_db, f)
    return fresh_db


# --- tests ---------------------------------------------------------------------------------------------------

def test_zoo_restored_whole_and_identical(bin, zoo, new_db, storage_root, keypair, settings, tmp_path):
    source_schema = "\n".join(schema_dump(zoo))
    for needle in ("CREATE TYPE zoo.mood", "CREATE DOMAIN zoo.posint", "CREATE PROCEDURE zoo.bump",
                   "PARTITION BY RANGE", "CREATE MATERIALIZED VIEW", "CREATE TRIGGER animals_touch",
                   "CREATE RULE log_no_delete", "CREATE POLICY own_rows", "ENABLE ROW LEVEL SECURITY",
                   "GRANT SELECT ON TABLE zoo.animals TO fb_zoo_reader", "CREATE EXTENSION IF NOT EXISTS citext",
                   "OWNER TO fb_zoo_owner", "COMMENT ON COLUMN zoo.animals.note", "CREATE SEQUENCE zoo.free_seq",
                   "GENERATED ALWAYS AS IDENTITY", "GENERATED ALWAYS AS (length"):
        assert needle in source_schema, f"the zoo lacks {needle!r}: the test would prove nothing about it"
    assert len(large_objects(zoo)) == 2

    out, _ = backup(bin, zoo, settings, tmp_path)
    artifact = storage_root / out["file_path"]
    m = inspect(bin, artifact, keypair[1])
    assert m["format"] == 6
    sa = m["schema_archive"]
    assert sa["length"] > 0 and sa["raw_bytes"] > 0 and sa["pg_dump_version"].startswith("pg_dump (PostgreSQL) 15")
    names = {(t["schema"], t["name"]) for t in m["tables"]}
    assert ("zoo", "events_2024") in names and ("zoo", "nocols") in names

    target = new_db()
    r = restore(bin, artifact, target, keypair[1], "--create")
    assert r.returncode == 0, r.stderr
    assert_same_database(zoo, target)
    # the restored objects work: identity continues after the restored rows, the trigger fires, the rule holds
    psql(target, "INSERT INTO zoo.animals (name) VALUES ('new one'); DELETE FROM zoo.log")
    assert rows(target, "SELECT max(id) FROM zoo.animals")[0][0] == rows(zoo, "SELECT max(id) FROM zoo.animals")[0][0] + 1
    assert rows(target, "SELECT count(*) FROM zoo.log WHERE msg LIKE 'inserted %'")[0][0] == 5
    # the tables were loaded with COPY FREEZE (created in the restore's transaction): their tuples are frozen
    psql(target, "CREATE EXTENSION pageinspect")
    frozen = rows(target, "SELECT count(*) FILTER (WHERE t_infomask & 768 = 768), count(*) FROM "
                          "heap_page_items(get_raw_page('zoo.events_2024', 0))")[0]
    assert frozen[1] > 0 and frozen[0] == frozen[1], f"frozen tuples / tuples on page 0: {frozen}"

    # --no-owner: everything belongs to the restoring role
    mine = new_db()
    r = restore(bin, artifact, mine, keypair[1], "--create", "--no-owner")
    assert r.returncode == 0, r.stderr
    assert rows(mine, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'zoo.secrets'::regclass")[0][0] \
        == "postgres"
    assert rows(zoo, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'zoo.secrets'::regclass")[0][0] \
        == "fb_zoo_owner"
    assert digests_without_app(mine) == digests_without_app(zoo)

    # --jobs 2: a whole-database restore from a schema archive stays one transaction on one connection
    two = new_db()
    r = restore(bin, artifact, two, keypair[1], "--create", "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert "one transaction on one connection" in r.stderr, r.stderr
    assert_same_schema(zoo, two)
    assert digests_without_app(two) == digests_without_app(zoo)

    # a second --create into the now non-empty target is refused, and changes nothing
    before = schema_dump(target)
    r = restore(bin, artifact, target, keypair[1], "--create")
    assert r.returncode == 13 and "empty database" in r.stderr, r.stderr
    assert schema_dump(target) == before


def test_incremental_carries_its_own_schema_archive(bin, zoo, new_db, storage_root, keypair, settings, tmp_path):
    _, config_id = backup(bin, zoo, settings, tmp_path)
    # the schema and some rows change after the FULL
    psql(zoo, "CREATE TYPE zoo.size AS ENUM ('s', 'm', 'l'); ALTER TABLE zoo.feeding ADD COLUMN size zoo.size;"
              "CREATE VIEW zoo.heavy AS SELECT * FROM zoo.feeding WHERE grams > 1;"
              "INSERT INTO zoo.events VALUES (9999, '2025-06-01', 'late'); SELECT nextval('zoo.free_seq')")
    out, _ = backup(bin, zoo, settings, tmp_path, backup_type="INCREMENTAL", config_id=config_id)
    assert out["stats"]["ran_as_full"] == 0 and out["stats"]["tables_referenced"] > 0, out
    artifact = storage_root / out["file_path"]
    m = inspect(bin, artifact, keypair[1])
    assert m["format"] == 6 and m["backup_type"] == "INCREMENTAL" and m["schema_archive"]["length"] > 0
    target = new_db()
    r = restore(bin, artifact, target, keypair[1], "--create")
    assert r.returncode == 0, r.stderr
    assert_same_database(zoo, target)
    assert rows(target, "SELECT count(*) FROM zoo.heavy")[0][0] == rows(zoo, "SELECT count(*) FROM zoo.heavy")[0][0]


def test_fusion_schema_with_rows_restored_identical(bin, fusion_db, new_db, storage_root, keypair, settings,
                                                    tmp_path):
    from test_backup_cli import HARD_TABLES, fill_tables

    filled = fill_tables(fusion_db, HARD_TABLES, n=30)
    assert filled.get("Cpda Application", 0) >= 30
    out, _ = backup(bin, fusion_db, settings, tmp_path)
    target = new_db()
    r = restore(bin, storage_root / out["file_path"], target, keypair[1], "--create")
    assert r.returncode == 0, r.stderr
    assert_same_schema(fusion_db, target)
    src = digests_without_app(fusion_db)
    assert len(src) >= 463
    assert digests_without_app(target) == src
    assert sequences(target) == sequences(fusion_db)


def test_flipped_byte_in_schema_segment_leaves_no_object(bin, zoo, new_db, storage_root, keypair, settings,
                                                         tmp_path):
    out, _ = backup(bin, zoo, settings, tmp_path)
    artifact = storage_root / out["file_path"]
    sa = inspect(bin, artifact, keypair[1])["schema_archive"]
    (tmp_path / "bad").mkdir()
    bad = tmp_path / "bad" / artifact.name  # the job's own name: another one is refused before any byte is read
    data = bytearray(artifact.read_bytes())
    data[sa["offset"] + sa["length"] // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    target = new_db()
    assert user_objects(target) == 0
    r = restore(bin, bad, target, keypair[1], "--create")
    assert r.returncode == 7, r.stderr
    assert "schema archive" in r.stderr and "authentication failed" in r.stderr, r.stderr
    assert user_objects(target) == 0
    # verify finds it too
    r = bin.run("verify", str(bad), "--secret-key", str(keypair[1]))
    assert r.returncode == 7 and "schema archive" in r.stderr, r.stderr


def test_restore_killed_while_loading_rows_leaves_no_object(bin, pg, zoo, new_db, storage_root, keypair, settings,
                                                            tmp_path):
    out, _ = backup(bin, zoo, settings, tmp_path)
    artifact = storage_root / out["file_path"]
    caught = 0
    for _ in range(5):
        target = new_db()
        dbname = psycopg2.extensions.parse_dsn(target)["dbname"]
        p = subprocess.Popen([str(bin.cli), "restore", str(artifact), "--pg", target, "--secret-key",
                              str(keypair[1]), "--create"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        mon = psycopg2.connect(pg)
        mon.autocommit = True
        cur = mon.cursor()
        seen = False
        while p.poll() is None and not seen:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query LIKE 'COPY %%FROM STDIN%%'"
                        " AND state = 'active'", (dbname,))
            seen = cur.fetchone()[0] > 0
        if seen:
            p.send_signal(signal.SIGKILL)
        p.wait()
        # the server notices the dropped connection and rolls the transaction back
        for _ in range(100):
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'"
                        " AND pid <> pg_backend_pid()", (dbname,))
            if cur.fetchone()[0] == 0:
                break
            time.sleep(0.1)
        mon.close()
        if seen:
            assert p.returncode == -signal.SIGKILL
            assert user_objects(target) == 0
            caught += 1
            break
    assert caught, "the restore always finished before it could be killed while loading rows"


def test_pg_dump_gets_no_password_on_its_command_line(bin, zoo, storage_root, settings, tmp_path):
    """A password in the worker's conninfo reaches pg_dump only through a 0600 passfile, removed afterwards."""
    log = tmp_path / "pgdump-log"
    log.mkdir()
    wrapper = tmp_path / "pg_dump_wrapper"
    wrapper.write_text(f"""#!/bin/sh
if [ "$1" != "--version" ]; then
  printf '%s\\n' "$@" > {log}/argv
  env > {log}/env
  for a in "$@"; do
    pf=$(printf '%s' "$a" | sed -n "s/.*passfile='\\([^']*\\)'.*/\\1/p")
    if [ -n "$pf" ]; then echo "$pf" > {log}/passfile; stat -c %a "$pf" > {log}/mode; cat "$pf" > {log}/pass; fi
  done
fi
exec {PG_BIN}/pg_dump "$@"
""")
    wrapper.chmod(0o755)
    secret = "s3cret:pa\\ss'word"
    conninfo = zoo + " password='" + secret.replace("\\", "\\\\").replace("'", "\\'") + "'"
    out, _ = backup(bin, conninfo, [*settings, "--pg-dump", str(wrapper)], tmp_path)
    argv = (log / "argv").read_text()
    assert "--snapshot=" in argv and "--exclude-table-data=" in argv
    assert "s3cret" not in argv, argv
    assert "PGPASSWORD" not in (log / "env").read_text()
    assert (log / "mode").read_text().strip() == "600"
    assert (log / "pass").read_text() == "*:*:*:*:s3cret\\:pa\\\\ss'word\n"
    assert not Path((log / "passfile").read_text().strip()).exists(), "the passfile was not removed"


def test_pg_dump_missing_or_too_old_fails_the_job_with_a_clear_message(bin, zoo, storage_root, settings, tmp_path):
    config_id, record_id, job_id = add_authority(zoo)
    ev = encode({
        "v": 1, "type": "backup.requested", "job_id": job_id, "ts": int(time.time() * 1000), "requested_by": None,
        "attempt": 1, "record_id": record_id, "config_id": config_id, "config_name": f"zoo-{job_id[:8]}",
        "backup_type": "FULL", "tables": [], "modules": [], "storage_path": STORAGE_PATH, "retention_days": 30})
    r, out = run_event(bin, ev, tmp_path, "--pg", zoo, *settings, "--pg-dump", "/nonexistent/pg_dump")
    assert out and out["status"] == "FAILED", r.stderr
    assert "could not run \"/nonexistent/pg_dump\"" in out["error"] and "FB_PG_DUMP" in out["error"], out
    old = tmp_path / "old_pg_dump"
    old.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    old.chmod(0o755)
    r, out = run_event(bin, ev, tmp_path, "--pg", zoo, *settings, "--pg-dump", str(old))
    assert out and out["status"] == "FAILED", r.stderr
    assert "version 9 but the server is 15" in out["error"], out
    assert not list(storage_root.rglob("*.fbak")), "a failed backup left an artifact"
