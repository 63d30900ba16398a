"""Small Kafka admin helper for deploy/local/services.sh, run with the venv's python.

Why not Kafka's own TopicCommand: each call starts a JVM (2-3 s on two cores), and the tests
create four topics per test prefix. confluent_kafka's AdminClient does the same in one process,
in a fraction of a second.

    admin.py --bootstrap HOST:PORT [SECURITY] wait --timeout SECONDS
    admin.py --bootstrap HOST:PORT [SECURITY] create [--grant PREFIX [--base]] NAME:PARTITIONS ...
                                          (like --create --if-not-exists; then `grant`, in the same process)
    admin.py --bootstrap HOST:PORT [SECURITY] delete NAME ...              (like --delete --if-exists)
    admin.py --bootstrap HOST:PORT [SECURITY] grant [--base] PREFIX ...     (the ACLs of those topic prefixes)
    admin.py --bootstrap HOST:PORT [SECURITY] list

SECURITY: --ca FILE --user NAME --password-file FILE (SASL_SSL, SCRAM-SHA-512); without them PLAINTEXT.

The ACLs of the local broker are declared once here (GRANTS, BASE_GRANTS); services.sh applies them at start
for FB_TOPIC_PREFIX and for every `services.sh topics PREFIX`, and the tests' topic_prefix fixture imports
grant() for its own prefixes. Kafka patterns match name prefixes only, not suffixes, so each topic prefix gets
LITERAL grants on its four topic names.

Exit codes: 0 done, 1 failed (message on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient, NewTopic,
                                  ResourcePatternType, ResourceType)

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


# Per topic prefix P: (principal, topic suffix, operations). WRITE and READ imply DESCRIBE.
GRANTS = [
    ("django", "backup.requested", ("WRITE",)),
    ("django", "archive.due", ("WRITE",)),
    ("worker", "backup.requested", ("READ",)),
    ("worker", "archive.due", ("READ",)),
    ("worker", "jobs.completed", ("WRITE",)),
    ("worker", "jobs.dlq", ("WRITE",)),
    ("worker", "jobs.completed", ("READ",)),  # so that one process may run both roles (--role all)
    ("recorder", "jobs.completed", ("READ",)),
    ("ops", "backup.requested", ("WRITE",)),  # replay
    ("ops", "archive.due", ("WRITE",)),
]
# Once per cluster: (principal, resource type, name, operations). Consumer groups are not where the principals
# are told apart (topics are), so the consuming principals may use any group; ops reads every topic and may
# create topics (`fusion-backup topics create`).
BASE_GRANTS = [
    ("worker", "GROUP", "*", ("READ",)),
    ("recorder", "GROUP", "*", ("READ",)),
    ("ops", "GROUP", "*", ("READ",)),
    ("ops", "TOPIC", "*", ("READ",)),
    ("ops", "BROKER", "kafka-cluster", ("CREATE", "DESCRIBE")),  # BROKER: the cluster resource
]
PRINCIPALS = ("admin", "django", "worker", "recorder", "ops")


def client_config(bootstrap: str, ca: str | None = None, user: str | None = None,
                  password_file: str | None = None) -> dict:
    """The confluent-kafka settings of a client; SASL_SSL with SCRAM-SHA-512 when user is given."""
    cfg = {"bootstrap.servers": bootstrap}
    if user:
        with open(password_file or "", encoding="utf-8") as f:
            password = f.read().strip()
        cfg.update({"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                    "sasl.username": user, "sasl.password": password})
        if ca:
            cfg["ssl.ca.location"] = ca
    return cfg


def bindings(prefixes: list[str], base: bool = False) -> list[AclBinding]:
    out = []

    def add(principal: str, rtype: str, name: str, ops: tuple) -> None:
        for op in ops:
            out.append(AclBinding(ResourceType[rtype], name, ResourcePatternType.LITERAL, f"User:{principal}", "*",
                                  AclOperation[op], AclPermissionType.ALLOW))

    if base:
        for principal, rtype, name, ops in BASE_GRANTS:
            add(principal, rtype, name, ops)
    for prefix in prefixes:
        for principal, suffix, ops in GRANTS:
            add(principal, "TOPIC", prefix + suffix, ops)
    return out


def grant(a: AdminClient, prefixes: list[str], base: bool = False, timeout: float = 30.0) -> None:
    """Creates the ACLs of the topic prefixes (and the base ones); creating an existing ACL is a no-op. Returns
    once the broker enforces them: the controller takes them first, the broker's authorizer a moment later."""
    todo = bindings(prefixes, base)
    if not todo:
        return
    for b, fut in a.create_acls(todo, request_timeout=timeout).items():
        fut.result()
    want: dict[tuple, int] = {}
    for b in todo:
        key = (b.restype, b.name)
        want[key] = want.get(key, 0) + 1
    deadline = time.monotonic() + timeout
    while want:
        for key, n in list(want.items()):
            flt = AclBindingFilter(key[0], key[1], ResourcePatternType.LITERAL, None, None, AclOperation.ANY,
                                   AclPermissionType.ANY)
            if len(a.describe_acls(flt, request_timeout=timeout).result()) >= n:
                del want[key]
        if want:
            if time.monotonic() >= deadline:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"ACLs not in force after {timeout:g}s: "
                                                f"{sorted(k[1] for k in want)}"))
            time.sleep(0.05)


def revoke(a: AdminClient, prefixes: list[str], timeout: float = 30.0) -> None:
    """Deletes the ACLs grant() made for the topic prefixes (never the base ones): the tests' teardown, so a
    broker that ran the suite many times does not carry thousands of dead ACLs."""
    filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation,
                                b.permission_type) for b in bindings(prefixes)]
    if filters:
        for fut in a.delete_acls(filters, request_timeout=timeout).values():
            fut.result()


def admin(bootstrap: str, ca: str | None = None, user: str | None = None,
          password_file: str | None = None) -> AdminClient:
    quiet = logging.getLogger("fb-admin")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    # Connection-refused noise while the broker starts is expected; keep stderr for real errors.
    cfg = client_config(bootstrap, ca, user, password_file)
    return AdminClient({**cfg, "log_level": 0, "socket.timeout.ms": 5000}, logger=quiet)


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
    ap.add_argument("--ca")
    ap.add_argument("--user")
    ap.add_argument("--password-file")
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait")
    w.add_argument("--timeout", type=float, default=30.0, dest="wait_timeout")
    c = sub.add_parser("create")
    c.add_argument("--grant", action="append", default=[], metavar="PREFIX")
    c.add_argument("--base", action="store_true")
    c.add_argument("specs", nargs="+")
    sub.add_parser("delete").add_argument("names", nargs="+")
    g = sub.add_parser("grant")
    g.add_argument("--base", action="store_true", help="also the cluster-wide grants (BASE_GRANTS)")
    g.add_argument("prefixes", nargs="*")
    sub.add_parser("list")
    args = ap.parse_args()

    a = admin(args.bootstrap, args.ca, args.user, args.password_file)
    if args.cmd == "wait":
        return cmd_wait(a, args.wait_timeout)
    if args.cmd == "create":
        rc = cmd_create(a, args.specs, args.timeout)
        if rc or not (args.grant or args.base):
            return rc
        args.prefixes = args.grant
    if args.cmd == "delete":
        return cmd_delete(a, args.names, args.timeout)
    if args.cmd in ("grant", "create"):
        try:
            grant(a, args.prefixes, args.base, args.timeout)
        except KafkaException as e:
            print(f"admin.py: could not create the ACLs of {args.prefixes}: {e.args[0].str()}", file=sys.stderr)
            return 1
        return 0
    for name in sorted(a.list_topics(timeout=10).topics):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
