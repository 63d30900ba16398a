"""`restore --create --jobs N` of a database that does not exist yet (issue 11: restore speed, never partial).

The database is built under a temporary name (fb_restore_tmp_*) on N connections and renamed at the end, the one
commit point (worker/src/dump/dump_rebuild.h):
- the "zoo" database of every object type (test_full_recovery) comes back identical: `pg_dump --schema-only`,
  sorted-row digests, sequences, large objects, matview rows; its rows are frozen (COPY FREEZE after TRUNCATE in
  the load's transaction); no temporary database is left;
- killed with SIGKILL while loading rows: no target database; the next restore drops the leftover and says so;
- a flipped byte in a table's data segment: exit 7, no target database, no temporary database;
- a target database created by someone else while the restore runs: exit 13, that database untouched, nothing
  left behind;
- an existing target keeps the one-transaction path (test_full_recovery covers it).
"""
from __future__ import annotations

import re
import signal
import subprocess
import time
import uuid

import psycopg2
import psycopg2.extensions
import pytest

from test_full_recovery import (assert_same_database, backup, inspect, restore, rows, settings,  # noqa: F401
                                user_objects, zoo)

TMP_PREFIX = "fb_restore_tmp_"


def _admin(pg: str):
    c = psycopg2.connect(pg)
    c.autocommit = True
    return c


def admin_sql(pg: str, sql: str, params: tuple = ()) -> list[tuple]:
    c = _admin(pg)
    try:
        cur = c.cursor()
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []
    finally:
        c.close()


def databases(pg: str, like: str) -> list[str]:
    return [r[0] for r in admin_sql(pg, "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", (like,))]


def leftovers_for(pg: str, target: str) -> list[str]:
    """Temporary databases whose comment names this target."""
    return [r[0] for r in admin_sql(pg, "SELECT datname FROM pg_database WHERE datname LIKE %s AND "
                                    "shobj_description(oid, 'pg_database') LIKE %s",
                                    (TMP_PREFIX + "%", f'%database "{target}"%'))]


@pytest.fixture
def absent_db(pg: str):
    """A factory of database names that do not exist (conninfo, name); they and their leftovers are dropped after."""
    made: list[str] = []

    def make(name: str | None = None) -> tuple[str, str]:
        name = name or f"fbt_new_{uuid.uuid4().hex[:10]}"
        made.append(name)
        return psycopg2.extensions.make_dsn(pg, dbname=name), name

    yield make
    c = _admin(pg)
    with c.cursor() as cur:
        for name in made:
            for tmp in leftovers_for(pg, name):
                cur.execute(f'DROP DATABASE IF EXISTS "{tmp}" WITH (FORCE)')
            cur.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name.replace('"', '""'))
    c.close()


def exists(pg: str, name: str) -> bool:
    return databases(pg, name) == [name]


def test_parallel_create_of_a_new_database_is_identical(bin, pg, zoo, absent_db, storage_root, keypair, settings,
                                                        tmp_path):
    out, _ = backup(bin, zoo, settings, tmp_path)
    artifact = storage_root / out["file_path"]
    target, name = absent_db()
    assert not exists(pg, name)
    r = restore(bin, artifact, target, keypair[1], "--create", "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert "building database" in r.stderr and "with --jobs 2" in r.stderr, r.stderr
    assert f'into "{name}"' in r.stdout, r.stdout
    # the tables' own indexes and keys were built per table, as soon as each was loaded (not left to the end)
    per_table = re.search(r"rows and (\d+) of their indexes and keys", r.stderr)
    assert per_table and int(per_table.group(1)) >= 5, r.stderr
    assert_same_database(zoo, target)
    assert leftovers_for(pg, name) == []
    # the rename removed the temporary database's marker comment
    assert rows(pg, f"SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{name}'") \
        == [(None,)]
    # loaded with COPY FREEZE after a TRUNCATE in the same transaction: page 0's tuples are all frozen
    c = psycopg2.connect(target)
    c.autocommit = True
    c.cursor().execute("CREATE EXTENSION pageinspect")
    c.close()
    frozen = rows(target, "SELECT count(*) FILTER (WHERE t_infomask & 768 = 768), count(*) FROM "
                          "heap_page_items(get_raw_page('zoo.events_2024', 0))")[0]
    assert frozen[1] > 0 and frozen[0] == frozen[1], f"frozen tuples / tuples on page 0: {frozen}"
    # the same name again: it exists now, so this is the one-transaction path, refused as not empty
    r = restore(bin, artifact, target, keypair[1], "--create", "--jobs", "2")
    assert r.returncode == 13 and "empty database" in r.stderr, r.stderr
    # one connection (no --jobs) builds a new database the same way
    one, one_name = absent_db()
    r = restore(bin, artifact, one, keypair[1], "--create", "--no-owner")
    assert r.returncode == 0, r.stderr
    assert "with --jobs 1" in r.stderr, r.stderr
    assert rows(one, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'zoo.secrets'::regclass")[0][0] \
        == "postgres"


def _wait_for_copy_in_tmp(pg: str, p: subprocess.Popen, target: str, timeout: float = 60) -> bool:
    mon = _admin(pg)
    cur = mon.cursor()
    deadline = time.time() + timeout
    try:
        while p.poll() is None and time.time() < deadline:
            cur.execute("SELECT count(*) FROM pg_stat_activity a JOIN pg_database d ON d.datname = a.datname "
                        "WHERE a.datname LIKE %s AND shobj_description(d.oid, 'pg_database') LIKE %s "
                        "AND a.query LIKE 'COPY %%FROM STDIN%%' AND a.state = 'active'",
                        (TMP_PREFIX + "%", f'%database "{target}"%'))
            if cur.fetchone()[0] > 0:
                return True
        return False
    finally:
        mon.close()


def test_parallel_create_killed_leaves_no_database_and_the_next_restore_cleans_up(bin, pg, zoo, absent_db,
                                                                                 storage_root, keypair, settings,
                                                                                 tmp_path):
    out, _ = backup(bin, zoo, settings, tmp_path)
    artifact = storage_root / out["file_path"]
    caught = None
    for _ in range(5):
        target, name = absent_db()
        p = subprocess.Popen([str(bin.cli), "restore", str(artifact), "--pg", target, "--secret-key",
                              str(keypair[1]), "--create", "--jobs", "2"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        seen = _wait_for_copy_in_tmp(pg, p, name)
        if seen:
            p.send_signal(signal.SIGKILL)
        p.wait()
        if seen:
            assert p.returncode == -signal.SIGKILL
            caught = name
            break
    assert caught, "the restore always finished before it could be killed while loading rows"
    assert not exists(pg, caught)
    left = leftovers_for(pg, caught)
    assert len(left) == 1, left
    # the next restore (of any database) drops the leftover, and says so; its own target is complete
    again, again_name = absent_db()
    r = restore(bin, artifact, again, keypair[1], "--create", "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert f'dropped "{left[0]}"' in r.stderr and "did not finish" in r.stderr, r.stderr
    assert leftovers_for(pg, caught) == [] and not exists(pg, caught)
    assert_same_database(zoo, again)


def test_parallel_create_of_a_running_restore_is_not_taken_for_a_leftover(bin, pg, zoo, absent_db, storage_root,
                                                                          keypair, settings, tmp_path):
    """Two restores at once: the second must not drop the first one's temporary database."""
    out, _ = backup(bin, zoo, settings, tmp_path)
    artifact = storage_root / out["file_path"]
    first, first_name = absent_db()
    p = subprocess.Popen([str(bin.cli), "restore", str(artifact), "--pg", first, "--secret-key", str(keypair[1]),
                          "--create", "--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Freeze the first restore as soon as its temporary database exists, so the two always overlap (the zoo
    # restores in about a second: waiting for it to be seen loading lost the race on a quiet machine).
    deadline = time.time() + 60
    while p.poll() is None and time.time() < deadline and not leftovers_for(pg, first_name):
        pass
    assert p.poll() is None, "the first restore ended before its temporary database was seen"
    p.send_signal(signal.SIGSTOP)
    try:
        assert len(leftovers_for(pg, first_name)) == 1
        second, _ = absent_db()
        r = restore(bin, artifact, second, keypair[1], "--create", "--jobs", "2")
        assert len(leftovers_for(pg, first_name)) == 1, "the second restore dropped a running restore's database"
    finally:
        p.send_signal(signal.SIGCONT)
    _, err = p.communicate(timeout=300)
    assert r.returncode == 0, r.stderr
    assert "dropped" not in r.stderr, r.stderr
    assert p.returncode == 0, err
    assert_same_database(zoo, first)


def test_parallel_create_with_a_bad_segment_leaves_no_database(bin, pg, zoo, absent_db, storage_root, keypair,
                                                               settings, tmp_path):
    out, _ = backup(bin, zoo, settings, tmp_path)
    artifact = storage_root / out["file_path"]
    m = inspect(bin, artifact, keypair[1])
    big = max(m["tables"], key=lambda t: t["length"])
    assert big["length"] > 1000, big
    (tmp_path / "bad").mkdir()
    bad = tmp_path / "bad" / artifact.name
    data = bytearray(artifact.read_bytes())
    data[big["offset"] + big["length"] - 100] ^= 0x01  # near the end: the other tables are loaded by then
    bad.write_bytes(bytes(data))
    target, name = absent_db()
    r = restore(bin, bad, target, keypair[1], "--create", "--jobs", "2")
    assert r.returncode == 7, r.stderr
    assert "authentication failed" in r.stderr and f'database "{name}" was not created' in r.stderr, r.stderr
    assert not exists(pg, name)
    assert leftovers_for(pg, name) == []


def test_parallel_create_of_a_name_taken_meanwhile_fails_cleanly(bin, pg, zoo, absent_db, storage_root, keypair,
                                                                 settings, tmp_path):
    out, _ = backup(bin, zoo, settings, tmp_path)
    artifact = storage_root / out["file_path"]
    target, name = absent_db()
    p = subprocess.Popen([str(bin.cli), "restore", str(artifact), "--pg", target, "--secret-key", str(keypair[1]),
                          "--create", "--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # as soon as the temporary database exists, someone else creates the target name and puts a table in it
    deadline = time.time() + 60
    while p.poll() is None and time.time() < deadline and not leftovers_for(pg, name):
        pass
    assert p.poll() is None, "the restore ended before its temporary database was seen"
    admin_sql(pg, f'CREATE DATABASE "{name}"')
    c = psycopg2.connect(target)
    c.autocommit = True
    c.cursor().execute("CREATE TABLE theirs (x int); INSERT INTO theirs VALUES (42)")
    c.close()
    _, err = p.communicate(timeout=300)
    assert p.returncode == 13, err
    assert "was created by someone else" in err, err
    assert rows(target, "SELECT x FROM theirs") == [(42,)]
    assert user_objects(target) == 1
    assert leftovers_for(pg, name) == []


def test_parallel_create_of_a_name_with_capitals_spaces_and_quotes(bin, pg, zoo, absent_db, storage_root, keypair,
                                                                   settings, tmp_path):
    """The rename path quotes the target everywhere: in CREATE/ALTER DATABASE, in the temporary database's marker
    comment and in the leftover sweep. A name that needs quoting (capitals, a space, a double and a single quote)
    comes back identical under exactly that name, with nothing left behind, and a lowercase twin is untouched."""
    out, _ = backup(bin, zoo, settings, tmp_path)
    artifact = storage_root / out["file_path"]
    tag = uuid.uuid4().hex[:8]
    target, name = absent_db(f'Fbt New "{tag}" o\'Brien')
    twin, twin_name = absent_db(f'fbt new "{tag}" o\'brien')
    admin_sql(pg, 'CREATE DATABASE "%s"' % twin_name.replace('"', '""'))
    r = restore(bin, artifact, target, keypair[1], "--create", "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert exists(pg, name), databases(pg, "%" + tag + "%")
    assert_same_database(zoo, target)
    assert leftovers_for(pg, name) == []
    assert user_objects(twin) == 0, "the lowercase twin was touched"
