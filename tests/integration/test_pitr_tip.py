"""The chain's tip (capture/cap_tip.h): on a quiet database the recoverable window of `restore --until` ends at
about "now minus capture-flush-s", not at the last commit, because the capture writes a signed tip beside the
chain ("nothing committed between the chain's end and LSN X, up to the server's commit time T of its heartbeat").

Proves, with the real binaries against the real wal_level=logical server:
- after the last change, with the capture streaming and healthy, the window's end moves past a moment read from
  the server's clock after that change (within a few flush intervals); `list` shows the tip as the window's end,
  `verify` checks it;
- `restore --until` a time after the last change and before the tip, and `--until` the tip's LSN, succeed and
  equal the source; a time or an LSN after the tip is refused naming the window (and no database appears);
- a tampered tip (its LSN raised and the file renamed to match, or its time moved) is refused: the window is not
  extended, restore says why the tip was not used, verify fails on it, list shows the problem;
- a chain without a tip (as every chain before tips) still reads, its window ending at its last commit.
"""
from __future__ import annotations

import datetime
import json
import re
import signal
import time

import psycopg2

from conftest import conninfo_for
from test_backup_command import FOLDER, add_config
from test_capture import (DURABLE_WAIT_S, FLUSH_S, Capture, _no_capture_outlives_its_test, commit,  # noqa: F401
                          fingerprint, logical_pg, lsn)
from test_pitr import db_exists, iso_ms, pitr_db, restore_until, take_base  # noqa: F401


def lsn_text(v: int) -> str:
    return f"{v >> 32:X}/{v & 0xFFFFFFFF:X}"


def server_now(ci: str) -> float:
    with psycopg2.connect(ci) as c, c.cursor() as cur:
        cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
        t = cur.fetchone()[0]
    c.close()
    return t


def window(bin, storage_root, pub, ci: str, slot: str) -> dict:
    r = bin.run("list", "--storage-root", str(storage_root), "--public-key", str(pub), "--pg", ci, "--capture-slot",
                slot, "--json")
    assert r.returncode == 0, r.stderr
    [w] = [x for x in json.loads(r.stdout) if x.get("capture_chain")]
    return w


def iso_to_epoch(s: str) -> float:
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def verify_chain(bin, artifact: str, secret) -> tuple[int, dict | None, str]:
    r = bin.run("verify", artifact, "--secret-key", str(secret), "--json")
    return r.returncode, (json.loads(r.stdout)["capture_chain"] if r.returncode == 0 else None), r.stderr


def test_quiet_database_restores_up_to_the_tip_and_a_forged_tip_extends_nothing(bin, pitr_db, logical_pg, storage_root,
                                                                              keypair, signing_keys, tmp_path):
    name, ci, slot, admin = pitr_db
    pub, secret = keypair
    add_config(ci, name, [])
    artifact = take_base(bin, ci, slot, storage_root, pub, name)["artifact"]
    cap = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "capture.log", path=FOLDER)
    cap.start(create=False)
    conn = psycopg2.connect(ci)
    conn.autocommit = True
    xid, _ = commit(conn, 'INSERT INTO leave ("Note", n) VALUES (%s, 1)', ("the last change",))
    conn.close()
    cap.wait_durable(xid, DURABLE_WAIT_S)
    source = fingerprint(ci)

    # 1. Quiet since; the capture streams. Two flush intervals later, a moment of the server's clock: the window
    # must reach it (the tip is written every capture-flush-s with its heartbeat's commit time).
    time.sleep(2 * FLUSH_S + 0.5)
    moment = server_now(ci)
    t0 = time.monotonic()
    while True:
        w = window(bin, storage_root, pub, ci, slot)
        if w["tip"] and iso_to_epoch(w["window_end"]) >= moment:
            break
        assert time.monotonic() - t0 < 10 * FLUSH_S + 10, (
            f"the window did not reach the server's {iso_ms(moment)}: {w}; log: {cap.log.read_text()}")
        time.sleep(0.3)
    assert cap.stop(signal.SIGTERM) == 0, cap.log.read_text()
    w = window(bin, storage_root, pub, ci, slot)
    assert w["restorable"] and w["tip"] and not w["tip_problem"], w
    assert lsn(w["end_lsn"]) > lsn(w["chain_end_lsn"]), w
    rc, v, err = verify_chain(bin, artifact, secret)
    assert rc == 0, err
    assert v["tip"] and v["end_lsn"] == w["end_lsn"] and v["chain_end_lsn"] == w["chain_end_lsn"], (v, w)
    last_us, tip_us, tip_lsn = v["chain_end_us"], v["end_us"], lsn(v["end_lsn"])
    assert last_us < moment * 1e6 <= tip_us + 1000, (v, moment)

    # 2. Between the last change and the tip: by time and by the tip's LSN, the source as it is.
    target = iso_ms((last_us + tip_us) / 2e6)
    for i, t in enumerate((target, lsn_text(tip_lsn))):
        new = f"{name}_in{i}"
        r = restore_until(bin, artifact, t, secret, conninfo_for(logical_pg, new))
        assert r.returncode == 0, f"--until {t} (inside the tip): {r.stderr}"
        out = json.loads(r.stdout)
        assert out["window"]["tip"] and out["transactions_applied"] >= 1, out
        assert fingerprint(conninfo_for(logical_pg, new)) == source, f"--until {t} differs from the source"
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE "{new}" WITH (FORCE)')

    # 3. After the tip, by time and by LSN: refused, naming the window; no database.
    new = f"{name}_out"
    for t in (iso_ms(tip_us / 1e6 + 2), lsn_text(tip_lsn + 1)):
        r = restore_until(bin, artifact, t, secret, conninfo_for(logical_pg, new))
        assert r.returncode != 0 and "recoverable window" in r.stderr and "signed tip" in r.stderr, (t, r.stderr)
        assert v["end_lsn"] in r.stderr, r.stderr
        assert not db_exists(admin, new), f"--until {t} was refused but left a database"

    # 4. Tampered tips: the LSN raised with the file renamed to match, then the time moved later. Neither extends
    # the window: a target the genuine tip allowed is refused, saying why; verify fails; list shows the problem.
    chain = storage_root / FOLDER / "capture" / name / slot
    [tip] = sorted(chain.glob("tip-*.fbtip"))
    good = tip.read_bytes()
    assert len(good) == 192, len(good)
    raised = tip_lsn + 0x100000
    forged_lsn = good[:24] + raised.to_bytes(8, "big") + good[32:]
    forged_time = good[:40] + (int.from_bytes(good[40:48], "big") + 3600 * 10**6).to_bytes(8, "big") + good[48:]
    for bad, fname, why in ((forged_lsn, tip.name[:21] + f"{raised:016X}.fbtip", "lsn"), (forged_time, tip.name, "time")):
        tip.unlink()
        (chain / fname).write_bytes(bad)
        for t in (target, lsn_text(raised if why == "lsn" else tip_lsn)):
            r = restore_until(bin, artifact, t, secret, conninfo_for(logical_pg, new))
            assert r.returncode != 0 and "recoverable window" in r.stderr, (why, t, r.stderr)
            assert "tip was not used" in r.stderr and "tip refused" in r.stderr, (why, r.stderr)
            assert not db_exists(admin, new), (why, t)
        rc, _, err = verify_chain(bin, artifact, secret)
        assert rc != 0 and "tip" in err, (why, err)
        wb = window(bin, storage_root, pub, ci, slot)
        assert wb["restorable"] and not wb["tip"] and wb["tip_problem"], (why, wb)
        assert wb["end_lsn"] == wb["chain_end_lsn"] == v["chain_end_lsn"], (why, wb)
        (chain / fname).unlink()
        tip.write_bytes(good)

    # 5. The genuine tip restored, then removed: a chain without a tip (every chain before tips) still reads, and
    # its window ends at its last commit again.
    rc, v2, err = verify_chain(bin, artifact, secret)
    assert rc == 0 and v2["tip"] and v2["end_lsn"] == v["end_lsn"], err
    tip.unlink()
    rc, v3, err = verify_chain(bin, artifact, secret)
    assert rc == 0 and not v3["tip"] and v3["end_lsn"] == v["chain_end_lsn"] and v3["end_us"] == last_us, (err, v3)
    r = restore_until(bin, artifact, target, secret, conninfo_for(logical_pg, new))
    assert r.returncode != 0 and "the chain's last durable commit" in r.stderr, r.stderr
    assert not db_exists(admin, new)


def test_a_restart_before_the_first_segment_keeps_the_chain_at_its_base(bin, pitr_db, keypair, signing_keys,
                                                                       storage_root, tmp_path):
    """A capture that streamed a quiet database (its tip confirmed the slot past the chain's base, the slot's
    consistent point) and restarted before its first segment still starts the chain at the base: the tip's start
    says where it is (the slot's confirmed position no longer does), so the first segment joins the base without a
    gap, and before it the window already reaches the tip. (`capture --create-slot`: a base without a FULL, whose
    own bookkeeping commits would otherwise be the first segment.)"""
    name, ci, slot, admin = pitr_db
    chain = storage_root / "p" / "capture" / name / slot
    cap = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "capture.log")
    cap.start(create=True)
    cap.wait_created()
    m = re.search(r"consistent point ([0-9A-F]+/[0-9A-F]+)", cap.log.read_text())
    base = lsn(m.group(1))
    t0 = time.monotonic()
    while not list(chain.glob("tip-*.fbtip")):
        assert time.monotonic() - t0 < 10 * FLUSH_S + 10, f"no tip: {cap.log.read_text()}"
        time.sleep(0.2)
    time.sleep(FLUSH_S + 0.5)  # a second tip, further than the first
    assert cap.stop(signal.SIGTERM) == 0, cap.log.read_text()
    assert not list(chain.glob("cap-*.fbcap")), "a quiet database wrote a segment"
    with admin.cursor() as cur:
        cur.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        confirmed = lsn(cur.fetchone()[0])
    [tip] = chain.glob("tip-*.fbtip")
    assert tip.name.startswith(f"tip-{base:016X}-"), (tip.name, base)
    assert confirmed > base and int(tip.name[21:37], 16) == confirmed, (tip.name, confirmed)  # exactly what it proves

    cap.start(create=False)
    conn = psycopg2.connect(ci)
    conn.autocommit = True
    xid, _ = commit(conn, 'INSERT INTO leave ("Note", n) VALUES (%s, 7)', ("after the restart",))
    conn.close()
    cap.wait_durable(xid, DURABLE_WAIT_S)
    [seg] = chain.glob("cap-*.fbcap")
    conn = psycopg2.connect(ci)
    conn.autocommit = True
    xid2, _ = commit(conn, 'INSERT INTO leave ("Note", n) VALUES (%s, 8)', ("a second segment",))
    conn.close()
    cap.wait_durable(xid2, DURABLE_WAIT_S)
    [last] = [p for p in chain.glob("cap-*.fbcap") if p != seg]
    t0 = time.monotonic()
    while not list(chain.glob(f"tip-{last.name[21:37]}-*.fbtip")):  # a tip from the chain's end
        assert time.monotonic() - t0 < 10 * FLUSH_S + 10, f"no tip after the segment: {cap.log.read_text()}"
        time.sleep(0.2)
    assert cap.stop(signal.SIGTERM) == 0, cap.log.read_text()
    assert seg.name.startswith(f"cap-{base:016X}-"), (seg.name, f"{base:016X}", "a gap after the base")
    segs, txns = cap.chain()
    assert [t["xid"] for t in txns] == [xid, xid2], txns

    # The newest segment removed: the tip says the chain reached further, so the capture refuses to continue over
    # the hole (its next tip would remove the evidence), and says what to do.
    moved = tmp_path / last.name
    last.rename(moved)
    cap.start(create=False)
    rc = cap.proc.wait(timeout=60)
    cap.out.close()
    log = cap.log.read_text()
    assert rc != 0 and "segments are missing" in log and "new base" in log, log
    assert list(chain.glob("tip-*.fbtip")), "the refusal removed the tip"
    moved.rename(last)


def test_someone_elses_heartbeats_do_not_hold_the_window_back(bin, pitr_db, keypair, signing_keys, storage_root,
                                                              tmp_path, monkeypatch):
    """Anyone who may connect can commit the capture's heartbeat message. Sent without pause, they keep the newest
    server commit time fresh, so the capture sends none of its own; it still writes a tip every capture-flush-s
    while the position moves, so the window (and the slot's confirmed position) keeps up. (capture-flush-s 3 here:
    well above the walsender's occasional delivery delays, which would otherwise let the capture's own heartbeat
    do it.)"""
    import test_capture
    monkeypatch.setattr(test_capture, "FLUSH_S", 3)
    flush_s = 3
    name, ci, slot, admin = pitr_db
    chain = storage_root / "p" / "capture" / name / slot
    cap = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "capture.log")
    cap.start(create=True)
    cap.wait_created()
    conn = psycopg2.connect(ci)
    conn.autocommit = True
    with conn.cursor() as cur:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3 * flush_s + 1:
            cur.execute("SELECT pg_logical_emit_message(true, 'fusion-backup.heartbeat', '')")
            time.sleep(0.05)
        moment = server_now(ci)
        cur.execute("SELECT pg_current_wal_lsn()::text")
        at = lsn(cur.fetchone()[0])
        t1 = time.monotonic()
        while True:
            cur.execute("SELECT pg_logical_emit_message(true, 'fusion-backup.heartbeat', '')")
            tips = sorted(chain.glob("tip-*.fbtip"))
            if tips and int.from_bytes(tips[-1].read_bytes()[40:48], "big") >= moment * 1e6 and \
                    int(tips[-1].name[21:37], 16) >= at:
                break
            assert time.monotonic() - t1 < 4 * flush_s + 5, f"the tip stalled: {tips}; {cap.log.read_text()}"
            time.sleep(0.1)
    conn.close()
    assert cap.stop(signal.SIGTERM) == 0, cap.log.read_text()
    assert not list(chain.glob("cap-*.fbcap")), "heartbeats were written as transactions"
