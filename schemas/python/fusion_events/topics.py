"""The four topics of the event contract (schemas/SPEC.md), named once for the Python side.

A topic's name is the configured prefix (default "fusion.") followed by its suffix. The C side has the same table
(worker/src/common/fb_topic.h and .c: suffixes, default partition counts, message keys); tests/python/
test_topics_shared.py fails when the two, or the defaults of deploy/local/lib.sh, differ.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Tuple

__all__ = ["Topic", "TOPICS", "SUFFIXES", "DEFAULT_PARTITIONS", "REQUEST_TOPIC"]


class Topic(NamedTuple):
    kind: str                # the app's name for it (FUSION_BACKUP["TOPICS"] keys)
    suffix: str              # after the prefix: "backup.requested"
    default_partitions: int  # request topics: the most workers that can share the work
    requests: bool           # workers consume requests from it
    key: str                 # what the message key is


TOPICS: Tuple[Topic, ...] = (
    Topic("backup", "backup.requested", 12, True, "configuration id"),
    Topic("archive", "archive.due", 12, True, "module.model"),
    Topic("completed", "jobs.completed", 6, False, "job id"),
    Topic("dlq", "jobs.dlq", 3, False, "job id"),
)

SUFFIXES: Dict[str, str] = {t.kind: t.suffix for t in TOPICS}
DEFAULT_PARTITIONS: Dict[str, int] = {t.kind: t.default_partitions for t in TOPICS}
# Which topic each request type is published on (the C side: worker/src/job/job_request.c).
REQUEST_TOPIC: Dict[str, str] = {"backup.requested": "backup", "backup.verify": "backup", "archive.due": "archive"}
