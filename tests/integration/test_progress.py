"""Progress of long commands (common/fb_progress.h): on a terminal (a pseudo-terminal here) `restore` redraws one
bar in place with rows, bytes, rate and ETA; when stderr is not a terminal it writes plain lines at an interval
and never a carriage return; `backup --json` and `verify --log-format json` write JSON lines. stdout keeps only the
command's result."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time

import psycopg2
import pytest

import flow
from conftest import APP_SQL, psql

ROWS = 600_000


@pytest.fixture
def artifact(bin, fresh_db, storage_root, keypair):
    """A backup of one table big enough that reading it takes a while (on the worker's path: `backup`)."""
    pub, _ = keypair
    psql(fresh_db, "CREATE TABLE auth_user (id serial PRIMARY KEY, username text)")
    psql(fresh_db, file=APP_SQL)
    psql(fresh_db, f"CREATE TABLE big (id int PRIMARY KEY, note text); INSERT INTO big SELECT g, "
                   f"md5(g::text) || md5((g * 7)::text) FROM generate_series(1, {ROWS}) g")
    with psycopg2.connect(fresh_db) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO backup_archive_backupconfiguration (name, backup_type, schedule, modules, tables,"
                    " storage_path, retention_days, verify_schedule, is_active, created_at, updated_at)"
                    " VALUES ('big', 'FULL', '', '[]', %s, 'progress', 0, '', true, now(), now())",
                    (json.dumps(["big", "auth_user"]),))
    r = bin.run("backup", "big", "--json", "--pg", fresh_db, "--storage-root", str(storage_root),
                "--public-key", str(pub), "--progress-lines-ms", "100",
                "--sign-key", flow.worker_sign_key())  # signed as a worker: what readers here trust
    assert r.returncode == 0, r.stderr
    return fresh_db, storage_root / json.loads(r.stdout)["file_path"], r


def test_not_a_terminal_gets_plain_lines_at_an_interval_and_no_carriage_return(bin, artifact, keypair, new_db):
    _, path, _ = artifact
    _, secret = keypair
    r = bin.run("restore", str(path), "--secret-key", str(secret), "--pg", new_db(), "--create",
                "--progress-lines-ms", "100")
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr, repr(r.stderr[:300])
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("restore: ")]
    assert len(lines) >= 2, f"expected progress lines every 100 ms, got: {r.stderr!r}"
    assert re.search(r"^restore: +\d+% \d/2 tables, \d+/\d+ rows, .+ of .+, .+/s, ETA ", lines[0]), lines[0]
    assert lines[-1].startswith("restore: done, 100% 2/2 tables") and "took" in lines[-1], lines[-1]
    assert r.stdout.startswith(f"restored 2 tables, {ROWS} rows"), "stdout holds only the result"


def test_json_output_gets_json_progress_lines(bin, artifact, keypair):
    _, path, backup = artifact
    # backup --json: its progress lines are JSON objects too, on stderr; stdout is the one result object.
    events = [json.loads(ln) for ln in backup.stderr.splitlines() if ln.startswith('{"progress"')]
    assert len(events) >= 2 and all(e["progress"] == "backup" for e in events), backup.stderr
    assert events[-1]["state"] == "done" and events[-1]["rows"] == ROWS and events[-1]["tables_total"] == 2
    assert any(e["state"] == "running" and e["bytes_per_s"] > 0 for e in events), events
    assert json.loads(backup.stdout)["rows"] == ROWS

    _, secret = keypair
    r = bin.run("verify", str(path), "--secret-key", str(secret), "--log-format", "json", "--progress", "lines",
                "--progress-lines-ms", "100")
    assert r.returncode == 0, r.stderr
    events = [json.loads(ln) for ln in r.stderr.splitlines() if ln.startswith('{"progress"')]
    assert events and all(e["progress"] == "verify" for e in events), r.stderr
    assert events[-1]["state"] == "done" and events[-1]["rows"] == events[-1]["rows_total"] == ROWS, events[-1]
    assert events[-1]["bytes"] >= events[-1]["bytes_total"] > 0
    assert r.stdout.startswith("OK "), r.stdout


def _run_on_pty(args: list[str], timeout: float = 300) -> tuple[int, str, str]:
    """Runs args with stderr on a pseudo-terminal; returns (exit code, what the terminal got, stdout)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            got += chunk
        elif p.poll() is not None:
            break
    os.close(master)
    out = p.stdout.read().decode()
    return p.wait(timeout=60), got.decode(errors="replace"), out


def test_a_terminal_gets_one_bar_redrawn_in_place_with_rate_and_eta(bin, artifact, keypair, new_db):
    _, path, _ = artifact
    _, secret = keypair
    target = new_db()
    rc, tty, out = _run_on_pty([bin.cli, "restore", str(path), "--secret-key", str(secret), "--pg", target,
                                "--create"])
    assert rc == 0, tty
    frames = [f for f in tty.split("\r") if f.startswith("restore [")]
    assert len(frames) >= 2, f"expected redraws of one bar, got {tty!r}"
    bar = re.compile(r"restore \[[#.]{24}\] +\d+% \d/2 tables, \d+/\d+ rows, .+ of .+, [0-9.]+ [KMGT]?B/s, ETA \d+:\d\d")
    running = [f for f in frames if bar.search(f)]
    assert running, f"no frame shows rows, bytes, a rate and an ETA: {frames!r}"
    assert "100%" in frames[-1] and "2/2 tables" in frames[-1] and "took" in frames[-1], frames[-1]
    # restore first says what it restores (job, type, configuration, snapshot, signer: issue 12), one line; after it,
    # the bar is redrawn in place, not printed line after line
    assert tty.startswith("backup ") and "snapshot" in tty.split("\n", 1)[0], tty
    assert tty.split("\n", 1)[1].count("\n") <= 2, "the bar is redrawn in place, not printed line after line"
    assert out.startswith(f"restored 2 tables, {ROWS} rows"), out
    assert psql(target, "SELECT count(*) FROM big").strip() == str(ROWS)
