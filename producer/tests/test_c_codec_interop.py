"""Django's events through the C codec (`fusion-backup event decode|reencode`), and the two codecs against each
other. Skipped when the C CLI is not built: set FB_CLI, or FB_BUILD_DIR (tests/run.sh does), or build into
<repo>/build.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any, Optional, Tuple

import pytest

import fusion_events
from backup_archive import services
from backup_archive.models import ArchivePolicy, BackupConfiguration, BackupRecord, Status
from tests.conftest import PRODUCER, VECTORS, Topics


def _find_cli() -> Optional[Path]:
    candidates = [os.environ.get("FB_CLI")]
    if os.environ.get("FB_BUILD_DIR"):
        candidates.append(os.path.join(os.environ["FB_BUILD_DIR"], "fusion-backup"))
    candidates.append(str(PRODUCER.parent / "build" / "fusion-backup"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return Path(c)
    return None


CLI = _find_cli()
# tests/run.sh sets FB_BUILD_DIR: then a missing CLI is a broken build, not a reason to skip interop.
if CLI is None and os.environ.get("FB_BUILD_DIR"):
    raise RuntimeError(f"FB_BUILD_DIR={os.environ['FB_BUILD_DIR']} has no fusion-backup: build the C code first "
                       "(cmake -S . -B build && cmake --build build)")
pytestmark = pytest.mark.skipif(CLI is None, reason="C CLI fusion-backup not built (set FB_CLI or FB_BUILD_DIR)")


def c_run(verb: str, data: bytes, tmp_path: Path) -> Tuple[int, bytes, str]:
    f = tmp_path / "event.msgpack"
    f.write_bytes(data)
    p = subprocess.run([str(CLI), "event", verb, str(f)], capture_output=True, timeout=30)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def to_json(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return {"$bin": obj.hex()}
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_json(v) for v in obj]
    return obj


def assert_c_agrees(value: bytes, tmp_path: Path) -> None:
    """C decodes `value` to the same JSON as Python, and re-encodes it to the same bytes."""
    rc, out, err = c_run("decode", value, tmp_path)
    assert rc == 0, f"C rejected what Python accepts: {err}"
    assert json.loads(out) == to_json(fusion_events.decode(value))
    rc, out, err = c_run("reencode", value, tmp_path)
    assert rc == 0, err
    assert out == value, "the C encoder writes other bytes than the Python encoder for the same event"


@pytest.mark.django_db(transaction=True)
def test_django_events_decode_and_reencode_in_c(kafka_topics: Topics, tmp_path: Path) -> None:
    config = BackupConfiguration.objects.create(name="c interop é", modules=["sampleapp"],
                                                tables=[["audit", "Log Entry"], 'a"b'])
    policy = ArchivePolicy.objects.create(module="sampleapp", model_name="Article",
                                          timestamp_column="published_at", delete_after_days=90)
    services.request_backup(config, None)
    services.request_archive(policy, None, dry_run=True)
    record = BackupRecord.objects.create(configuration=config, job_id="0b6e7d8c-3f2a-4c1e-9a5b-7d2e4f6a8b0c",
                                         backup_type="FULL", status=Status.SUCCESS)
    services.request_verify(record, None)
    values = [v for _, v in kafka_topics.read("backup.requested", 2)] + \
             [v for _, v in kafka_topics.read("archive.due", 1)]
    assert {fusion_events.decode(v)["type"] for v in values} == {"backup.requested", "backup.verify",
                                                                  "archive.due"}
    for value in values:
        assert_c_agrees(value, tmp_path)


def test_python_decodes_what_c_encodes(tmp_path: Path) -> None:
    index = json.loads((VECTORS / "valid" / "INDEX.json").read_text())
    for vec in index:
        data = (VECTORS / "valid" / f"{vec['name']}.msgpack").read_bytes()
        rc, out, err = c_run("reencode", data, tmp_path)
        assert rc == 0, f"{vec['name']}: {err}"
        assert fusion_events.decode(out) == fusion_events.decode(data), vec["name"]
        assert fusion_events.encode(fusion_events.decode(data)) == out, vec["name"]


def test_codecs_agree_on_mutated_inputs(tmp_path: Path) -> None:
    """Differential check: for mutated vectors, both codecs accept (with the same result) or both reject."""
    corpus = [p.read_bytes() for p in sorted((VECTORS / "valid").glob("*.msgpack"))]
    rng = random.Random(7)
    disagreements = []
    for i in range(300):
        b = bytearray(rng.choice(corpus))
        for _ in range(rng.randint(1, 2)):
            pos = rng.randrange(len(b))
            if rng.random() < 0.5:
                b[pos] ^= 1 << rng.randrange(8)
            else:
                b[pos] = rng.randrange(256)
        data = bytes(b)
        try:
            py: Optional[Any] = to_json(fusion_events.decode(data))
        except fusion_events.InvalidEvent as e:
            py, py_err = None, str(e)
        rc, out, err = c_run("decode", data, tmp_path)
        c = json.loads(out) if rc == 0 else None
        if (py is None) != (c is None) or (py is not None and py != c):
            disagreements.append(f"{data.hex()}: python={'ok' if py is not None else py_err!r} "
                                 f"c={'ok' if c is not None else err.strip()!r}")
    assert not disagreements, f"{len(disagreements)} disagreement(s), first: " + "\n".join(disagreements[:5])
