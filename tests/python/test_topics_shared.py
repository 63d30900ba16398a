"""The topics are named once per language and the two tables agree: fusion_events.topics (Python: the Django app's
topic names) and worker/src/common/fb_topic.c (C: workers, `topics create`, `status`, `replay`), plus the default
partition counts in fb_topic.h and in deploy/local/lib.sh (the dev stack creates the topics with them).

The C rows are read as text: a row the regular expression cannot read fails the test, so a reformatted table is
caught too, not silently skipped.
"""
from __future__ import annotations

import re
from pathlib import Path

from fusion_events import topics

ROOT = Path(__file__).resolve().parents[2]
C_ROWS = re.compile(r'\[FB_TOPIC_(\w+)\] = \{"(\w+)", "([\w.]+)", (FB_TOPIC_\w+_PARTITIONS), ([01]), "([^"]*)"\},')
C_DEFINE = re.compile(r"#define (FB_TOPIC_\w+_PARTITIONS) (\d+)")


def c_topics():
    src = (ROOT / "worker/src/common/fb_topic.c").read_text(encoding="utf-8")
    hdr = (ROOT / "worker/src/common/fb_topic.h").read_text(encoding="utf-8")
    parts = {name: int(v) for name, v in C_DEFINE.findall(hdr)}
    rows = C_ROWS.findall(src)
    assert len(rows) == src.count("[FB_TOPIC_"), "a row of fb_topics[] is not in the form this test reads"
    enum = re.findall(r"^\s+FB_TOPIC_(\w+),", hdr, re.M)
    return [(enum.index(e), kind, suffix, parts[p], bool(int(req)), key) for e, kind, suffix, p, req, key in rows]


def test_c_and_python_tables_are_the_same():
    c = sorted(c_topics())
    py = [(i, t.kind, t.suffix, t.default_partitions, t.requests, t.key) for i, t in enumerate(topics.TOPICS)]
    assert [row[1:] for row in c] == [row[1:] for row in py]
    assert [row[0] for row in c] == list(range(len(py))), "fb_topic enum order differs from TOPICS order"


def test_dev_stack_defaults_are_the_contracts():
    lib = (ROOT / "deploy/local/lib.sh").read_text(encoding="utf-8")
    got = {m[0]: int(m[1]) for m in re.findall(r'"\$\{(FB_\w+_PARTITIONS):=(\d+)\}"', lib)}
    assert got == {
        "FB_JOB_PARTITIONS": topics.DEFAULT_PARTITIONS["backup"],
        "FB_COMPLETED_PARTITIONS": topics.DEFAULT_PARTITIONS["completed"],
        "FB_DLQ_PARTITIONS": topics.DEFAULT_PARTITIONS["dlq"],
    }
    assert topics.DEFAULT_PARTITIONS["archive"] == topics.DEFAULT_PARTITIONS["backup"]  # one FB_JOB_PARTITIONS


def test_every_request_type_has_a_request_topic():
    from fusion_events import EVENT_TYPES

    requests = {t for t in EVENT_TYPES if t != "job.status"}
    assert set(topics.REQUEST_TOPIC) == requests
    assert all(topics.TOPICS[[t.kind for t in topics.TOPICS].index(k)].requests for k in topics.REQUEST_TOPIC.values())
    c_req = (ROOT / "worker/src/job/job_request.c").read_text(encoding="utf-8")
    for ev_type, kind in topics.REQUEST_TOPIC.items():
        const = "EV_" + ev_type.upper().replace(".", "_")
        m = re.search(r"\{" + const + r", EV_JOB_\w+, FB_TOPIC_(\w+),", c_req)
        assert m and m.group(1).lower() == kind, f"{ev_type}: the C request table puts it elsewhere"
