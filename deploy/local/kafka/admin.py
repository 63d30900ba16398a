"""Small Kafka admin helper for deploy/local/services.sh, run with the venv's python.

Why not Kafka's own TopicCommand: each call starts a JVM (2-3 s on two cores), and the tests
create four topics per test prefix. confluent_kafka's AdminClient does the same in one process,
in a fraction of a second.

    admin.py --bootstrap HOST:PORT wait --timeout SECONDS
    admin.py --bootstrap HOST:PORT create NAME:PARTITIONS ...   (like --create --if-not-exists)
    admin.py --bootstrap HOST:PORT delete NAME ...              (like --delete --if-exists)
    admin.py --bootstrap HOST:PORT list

Exit codes: 0 done, 1 failed (message on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

# Errors worth retrying while a freshly started broker settles.
RETRIABLE = {
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_CONTROLLER,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.BROKER_NOT_AVAILABLE,
}


def admin(bootstrap: str) -> AdminClient:
    quiet = logging.getLogger("fb-admin")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    # Connection-refused noise while the broker starts is expected; keep stderr for real errors.
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "socket.timeout.ms": 5000},
                       logger=quiet)


def cmd_wait(a: AdminClient, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            md = a.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            if md.brokers:
                return 0
        except KafkaException:
            pass
        if time.monotonic() >= deadline:
            return 1
        time.sleep(0.2)


def wait_ready(a: AdminClient, want: dict[str, int], deadline: float) -> list[str]:
    """Waits until every topic in want is in the metadata with a leader for each partition;
    returns the problems left at the deadline."""
    while True:
        problems = []
        try:
            md = a.list_topics(timeout=5)
        except KafkaException as e:
            problems = [f"metadata request failed: {e}"]
        else:
            for name, parts in want.items():
                t = md.topics.get(name)
                if t is None or t.error is not None:
                    problems.append(f"{name}: not in metadata yet")
                elif parts and len(t.partitions) != parts:
                    # An existing topic keeps its count: report it, the caller decides.
                    problems.append(f"{name}: has {len(t.partitions)} partitions, wanted {parts}")
                    want[name] = 0
                elif any(p.leader < 0 for p in t.partitions.values()):
                    problems.append(f"{name}: partitions without a leader yet")
        if not problems or all("wanted" in p for p in problems) or time.monotonic() >= deadline:
            return problems
        time.sleep(0.1)


def cmd_create(a: AdminClient, specs: list[str], timeout: float) -> int:
    want: dict[str, int] = {}
    for s in specs:
        name, _, parts = s.rpartition(":")
        if not name or not parts.isdigit() or int(parts) < 1:
            print(f"admin.py: bad topic spec {s!r}: want NAME:PARTITIONS", file=sys.stderr)
            return 2
        want[name] = int(parts)
    deadline = time.monotonic() + timeout
    pending = dict(want)
    while pending:
        futures = a.create_topics(
            [NewTopic(n, num_partitions=p, replication_factor=1) for n, p in pending.items()],
            operation_timeout=timeout, request_timeout=timeout)
        retry: dict[str, int] = {}
        for name, fut in futures.items():
            try:
                fut.result()
            except KafkaException as e:
                err = e.args[0]
                if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                if err.code() in RETRIABLE and time.monotonic() < deadline:
                    retry[name] = pending[name]
                    continue
                print(f"admin.py: could not create topic {name}: {err.str()}", file=sys.stderr)
                return 1
        pending = retry
        if pending:
            time.sleep(0.3)
    problems = wait_ready(a, want, deadline)
    for p in problems:
        print(f"admin.py: {'warning: ' if 'wanted' in p else ''}{p}", file=sys.stderr)
    return 1 if any("wanted" not in p for p in problems) else 0


def cmd_delete(a: AdminClient, names: list[str], timeout: float) -> int:
    futures = a.delete_topics(names, operation_timeout=timeout, request_timeout=timeout)
    rc = 0
    for name, fut in futures.items():
        try:
            fut.result()
        except KafkaException as e:
            if e.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                print(f"admin.py: could not delete topic {name}: {e.args[0].str()}", file=sys.stderr)
                rc = 1
    return rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--timeout", type=float, default=30.0)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait")
    w.add_argument("--timeout", type=float, default=30.0, dest="wait_timeout")
    sub.add_parser("create").add_argument("specs", nargs="+")
    sub.add_parser("delete").add_argument("names", nargs="+")
    sub.add_parser("list")
    args = ap.parse_args()

    a = admin(args.bootstrap)
    if args.cmd == "wait":
        return cmd_wait(a, args.wait_timeout)
    if args.cmd == "create":
        return cmd_create(a, args.specs, args.timeout)
    if args.cmd == "delete":
        return cmd_delete(a, args.names, args.timeout)
    for name in sorted(a.list_topics(timeout=10).topics):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
