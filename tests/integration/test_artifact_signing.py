"""Signed artifacts (issue 12, FORMAT.md "Signatures (format 5)"), end to end with the built binaries.

The attacker here is a worker host or anyone with write access to the storage: it holds the backup public key and
can make a complete, well-formed backup with a signing key of its own (that is what `event run --sign-key` does).
Proves: restore, verify and inspect of such an artifact refuse it, naming its key, and execute nothing (its schema
archive carries a function and a table that would be created); a genuine artifact copied over another job's name is
refused; an INCREMENTAL never takes the forged artifact as its base; `list` says who signed what; a re-run of a
backup whose signed artifact exists leaves it byte for byte (a replay cannot break a chain that uses it); and after
`rekey` (index re-MACed and re-signed by an operator key) list, prune, the next INCREMENTAL and its restore work.
"""
from __future__ import annotations

import hashlib
import json
import shutil

import psycopg2
import pytest

import flow
from flow import table_digests as digests
from test_incremental import backup_event, cfg, run_event, sql  # noqa: F401 - cfg is a fixture

SCHEMA = """
CREATE TABLE grades (id serial PRIMARY KEY, student text NOT NULL, mark int);
INSERT INTO grades (student, mark) SELECT 's' || g, g % 100 FROM generate_series(1, 500) g;
"""
# What a forged restore would leave behind if it executed anything of its schema archive.
MARKERS = """
CREATE TABLE pwned_marker (at timestamptz DEFAULT now());
CREATE FUNCTION pwned() RETURNS int LANGUAGE sql AS 'SELECT 1';
"""


def scalar(conninfo: str, q: str):
    conn = psycopg2.connect(conninfo)
    cur = conn.cursor()
    cur.execute(q)
    v = cur.fetchone()[0]
    conn.close()
    return v


def key_id(pub_file) -> str:
    """fb_sign.h's key id: the first 8 bytes of BLAKE2b-256 of the public key, in hex."""
    pk = bytes.fromhex(next(ln for ln in pub_file.read_text().splitlines() if ln.startswith("ed25519-public")).split()[1])
    return hashlib.blake2b(pk, digest_size=32).hexdigest()[:16]


def backup(bin, db, cfg, backup_type="FULL", *extra, job_id=None) -> dict:  # noqa: F811 - cfg is the fixture's value
    job_id, ev = backup_event(backup_type, job_id=job_id)
    out = run_event(bin, ev, cfg["tmp"], "--pg", db, *cfg["settings"], *extra)
    assert out["status"] == "SUCCESS", out
    return out


@pytest.fixture
def attacker(bin, tmp_path):
    """A signing key nobody trusts: (secret key file, public key file)."""
    bin.run("keygen", "--sign", "--out", str(tmp_path / "attacker"), check=True)
    return tmp_path / "attacker.key", tmp_path / "attacker.pub"


def test_forged_artifact_restores_nothing_and_is_no_base(bin, fresh_db, new_db, cfg, attacker, tmp_path):  # noqa: F811
    db = fresh_db
    sql(db, SCHEMA)
    genuine = backup(bin, db, cfg)
    # The attacker's backup: complete and sealed to the real public key, its schema archive creating the markers.
    sql(db, MARKERS)
    forged = backup(bin, db, cfg, "FULL", "--sign-key", str(attacker[0]))
    forged_path = cfg["root"] / forged["file_path"]
    sql(db, "DROP TABLE pwned_marker; DROP FUNCTION pwned()")

    target = new_db()
    r = bin.run("restore", str(forged_path), "--pg", target, "--secret-key", str(cfg["key"]), "--create")
    assert r.returncode == 16, r.stderr
    assert "not trusted" in r.stderr and "nothing was read" in r.stderr, r.stderr
    assert scalar(target, "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace") == 0
    assert scalar(target, "SELECT count(*) FROM pg_proc WHERE proname = 'pwned'") == 0
    for cmd in (["verify"], ["inspect"], ["verify", "--restore-into", new_db()]):
        r = bin.run(cmd[0], str(forged_path), "--secret-key", str(cfg["key"]), *cmd[1:])
        assert r.returncode == 16 and "not trusted" in r.stderr, (cmd, r.stderr)

    # the genuine one restores; copied over another job's name it is refused
    target = new_db()
    r = bin.run("restore", str(cfg["root"] / genuine["file_path"]), "--pg", target, "--secret-key", str(cfg["key"]),
                "--create")
    assert r.returncode == 0, r.stderr
    assert f"backup {genuine['job_id']}" in r.stderr and "snapshot" in r.stderr and "signed by key" in r.stderr
    assert digests(target)["public.grades"].startswith("500:")
    other = tmp_path / "other" / f"{forged['job_id']}.fbak"
    other.parent.mkdir()
    shutil.copy(cfg["root"] / genuine["file_path"], other)
    target = new_db()
    r = bin.run("restore", str(other), "--pg", target, "--secret-key", str(cfg["key"]), "--create")
    assert r.returncode == 14 and genuine["job_id"] in r.stderr and "copied" in r.stderr, r.stderr
    assert scalar(target, "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace") == 0

    # list: who signed what; the forged one is not restorable
    r = bin.run("list", "--storage-root", str(cfg["root"]), "--storage-path", "cfg77/daily", "--public-key",
                cfg["settings"][cfg["settings"].index("--public-key") + 1], "--json")
    assert r.returncode == 0, r.stderr
    rows = {e["job_id"]: e for e in json.loads(r.stdout)}
    assert rows[forged["job_id"]]["signed_by"] == "untrusted" and not rows[forged["job_id"]]["restorable"]
    assert rows[genuine["job_id"]]["signed_by"] not in ("untrusted", "unsigned") and rows[genuine["job_id"]]["restorable"]

    # an INCREMENTAL takes the genuine FULL as its base, never the newer forged one
    inc = backup(bin, db, cfg, "INCREMENTAL")
    assert inc["stats"]["ran_as_full"] == 0, inc
    r = bin.run("inspect", str(cfg["root"] / inc["file_path"]), "--secret-key", str(cfg["key"]), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["base_job"] == genuine["job_id"], r.stdout + r.stderr
    assert f"not a base: backup {forged['job_id']}" in inc["_stderr"], inc["_stderr"]


def test_rerun_does_not_overwrite_a_signed_artifact(bin, fresh_db, new_db, cfg):  # noqa: F811
    sql(fresh_db, SCHEMA)
    first = backup(bin, fresh_db, cfg)
    art = cfg["root"] / first["file_path"]
    before, ino = art.read_bytes(), art.stat().st_ino
    inc = backup(bin, fresh_db, cfg, "INCREMENTAL")  # uses it as its base
    # A replay of the first job (its ledger entry lost, so the job itself runs) after the data changed.
    (cfg["root"] / ".ledger" / f"{first['job_id']}.success").unlink(missing_ok=True)
    sql(fresh_db, "UPDATE grades SET mark = mark + 1")
    again = backup(bin, fresh_db, cfg, job_id=first["job_id"])
    assert again["stats"].get("artifact_reused") == 1, again
    assert art.read_bytes() == before and art.stat().st_ino == ino
    # so the chain that uses it still restores
    target = new_db()
    r = bin.run("restore", str(cfg["root"] / inc["file_path"]), "--pg", target, "--secret-key", str(cfg["key"]),
                "--create")
    assert r.returncode == 0, r.stderr


def test_rekey_then_list_prune_and_incremental(bin, fresh_db, new_db, cfg, signing_keys, monkeypatch, tmp_path):  # noqa: F811
    # The operators' key re-signs re-MACed indexes: everyone who reads artifacts trusts it besides the workers'.
    monkeypatch.setenv("FB_TRUSTED_SIGNERS", f"{signing_keys['worker'][0]},{signing_keys['ops'][0]}")
    sql(fresh_db, SCHEMA)
    full = backup(bin, fresh_db, cfg)
    full_state = digests(fresh_db)
    art = cfg["root"] / full["file_path"]
    before = art.read_bytes()
    bin.run("keygen", "--out", str(tmp_path / "new"), check=True)
    r = bin.run("rekey", str(art), "--secret-key", str(cfg["key"]), "--new-public-key", str(tmp_path / "new.pub"),
                "--sign-key", str(signing_keys["ops"][1]))
    assert r.returncode == 0, r.stderr
    after = art.read_bytes()
    assert after[:16] == before[:16] and after[16:96] != before[16:96]
    # list with the new public key: the index authenticates (re-MACed) and says the operators re-signed it
    r = bin.run("list", "--storage-root", str(cfg["root"]), "--storage-path", "cfg77/daily", "--public-key",
                str(tmp_path / "new.pub"), "--json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)[0]
    assert row["restorable"] and " index " in row["signed_by"], row
    r = bin.run("prune", "--storage-root", str(cfg["root"]), "--storage-path", "cfg77/daily", "--retention-days",
                "1", "--dry-run", "--public-key", str(tmp_path / "new.pub"))
    assert r.returncode == 0, r.stderr
    # workers now seal to the new key: the next INCREMENTAL builds on the rekeyed FULL, and restores
    settings = [s if s != cfg["settings"][cfg["settings"].index("--public-key") + 1] else str(tmp_path / "new.pub")
                for s in cfg["settings"]]
    sql(fresh_db, "INSERT INTO grades (student, mark) VALUES ('late', 1)")
    job_id, ev = backup_event("INCREMENTAL")
    inc = run_event(bin, ev, cfg["tmp"], "--pg", fresh_db, *settings)
    assert inc["status"] == "SUCCESS" and inc["stats"]["ran_as_full"] == 0, inc
    target = new_db()
    r = bin.run("restore", str(cfg["root"] / inc["file_path"]), "--pg", target, "--secret-key",
                str(tmp_path / "new.key"), "--create")
    assert r.returncode == 0, r.stderr
    assert digests(target) == digests(fresh_db)
    # without trusting the operators' key the re-signed index is refused, naming that key
    r = bin.run("verify", str(art), "--secret-key", str(tmp_path / "new.key"),
                env={"FB_TRUSTED_SIGNERS": str(signing_keys["worker"][0])})
    assert r.returncode == 16 and "chain index" in r.stderr, r.stderr

    # a compromised key: --new-data-key re-encrypts every segment under a fresh data key (same offsets and sizes)
    bin.run("keygen", "--out", str(tmp_path / "newer"), check=True)
    resealed = art.read_bytes()
    r = bin.run("rekey", str(art), "--secret-key", str(tmp_path / "new.key"), "--new-public-key",
                str(tmp_path / "newer.pub"), "--new-data-key", "--sign-key", str(signing_keys["ops"][1]))
    assert r.returncode == 0, r.stderr
    reencrypted = art.read_bytes()
    data_end = int.from_bytes(resealed[-32:-24], "little")
    assert int.from_bytes(reencrypted[-32:-24], "little") == data_end and reencrypted[:16] == resealed[:16]
    # no segment's bytes survive: the old data key opens nothing of the new file
    assert all(reencrypted[o:o + 64] != resealed[o:o + 64] for o in range(96, data_end - 64, 4096))
    r = bin.run("verify", str(art), "--secret-key", str(tmp_path / "newer.key"))
    assert r.returncode == 0, r.stderr
    target = new_db()
    r = bin.run("restore", str(art), "--pg", target, "--secret-key", str(tmp_path / "newer.key"), "--create")
    assert r.returncode == 0, r.stderr
    assert digests(target) == full_state
    r = bin.run("list", "--storage-root", str(cfg["root"]), "--storage-path", "cfg77/daily", "--public-key",
                str(tmp_path / "newer.pub"), "--json")
    rows = {e["job_id"]: e for e in json.loads(r.stdout)}
    # both parts are now the operators' signatures (a new ciphertext needs a new manifest signature)
    assert rows[full["job_id"]]["restorable"] and rows[full["job_id"]]["signed_by"] == key_id(signing_keys["ops"][0])
