"""The worker's HTTP endpoint (worker/src/daemon/dmn_metrics.c) against the real broker and database: a silent
connection cannot hold it, it listens on IPv6, /healthz follows the consumer loops, other paths are 404, and every
metric is named fusion_backup_*."""
from __future__ import annotations

import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _free_port(family=socket.AF_INET, host="127.0.0.1") -> int:
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _up(url: str):
    try:
        return _get(url, timeout=2)
    except OSError:
        return None


def _version() -> str:
    m = re.search(r"project\(\s*\S+\s+VERSION\s+([0-9.]+)", (ROOT / "CMakeLists.txt").read_text())
    assert m, "CMakeLists.txt declares the project version"
    return m.group(1)


def test_an_idle_connection_does_not_block_scrapes_and_healthz_follows_the_consumer(bin, fusion_db, workers):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    w = workers.start(fusion_db, role="all", extra=("--metrics-listen", f"127.0.0.1:{port}"))
    wait_for(lambda: _up(base + "/metrics"), timeout=30, what="the metrics endpoint")
    status, body = wait_for(lambda: (r := _up(base + "/healthz")) and r[0] == 200 and r, timeout=60,
                            what=f"/healthz to answer 200\n{workers.log(w)}")
    assert "worker: ok" in body and "recorder: ok" in body, body

    # A client that connects and sends nothing (a port scan, a stuck proxy) ...
    idle = socket.create_connection(("127.0.0.1", port))
    try:
        time.sleep(0.2)  # it is accepted and waiting for a request that never comes
        t0 = time.monotonic()
        status, body = _get(base + "/metrics", timeout=1)
        took = time.monotonic() - t0
        assert status == 200 and took < 1.0, f"a scrape beside an idle connection took {took:.2f} s"
    finally:
        idle.close()

    # Every metric is in the fusion_backup_ namespace, never doubled; build_info carries the version.
    names = {ln.split("{")[0].split(" ")[0] for ln in body.splitlines() if ln and not ln.startswith("#")}
    assert names and all(n.startswith("fusion_backup_") for n in names), sorted(names)
    assert not [n for n in names if n.startswith("fusion_backup_backup_")], sorted(names)
    assert f'fusion_backup_build_info{{version="{_version()}"}} 1' in body.splitlines(), body
    assert 'fusion_backup_jobs_total{type="backup",status="SUCCESS"} 0' in body

    status, body = _get(base + "/nope")
    assert status == 404 and "/metrics and /healthz" in body, (status, body)
    assert _get(base + "/metrics?x=1")[0] == 200, "a query string does not change the path"

    # Once the process stops consuming (SIGTERM: it finishes and leaves), /healthz is not 200 any more, or the
    # endpoint is gone with the process.
    w.terminate()
    def unhealthy():
        r = _up(base + "/healthz")
        return r is None or r[0] == 503
    wait_for(unhealthy, timeout=60, what="/healthz to stop answering 200 after SIGTERM")


def test_healthz_is_503_while_the_recorder_cannot_reach_its_database(bin, workers):
    port = _free_port()
    dead_db = f"host=127.0.0.1 port={_free_port()} dbname=nothing user=nobody connect_timeout=1"
    w = workers.start(dead_db, role="recorder", extra=("--metrics-listen", f"127.0.0.1:{port}"))
    r = wait_for(lambda: _up(f"http://127.0.0.1:{port}/healthz"), timeout=30, what=f"the endpoint\n{workers.log(w)}")
    assert r[0] == 503 and "recorder: not consuming yet" in r[1], r
    time.sleep(1)
    r = _get(f"http://127.0.0.1:{port}/healthz")
    assert r[0] == 503, r
    assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 200, "metrics are served even while unhealthy"


def test_listens_on_ipv6_loopback_and_on_every_address(bin, fusion_db, workers):
    port6 = _free_port(socket.AF_INET6, "::1")
    workers.start(fusion_db, role="recorder", extra=("--metrics-listen", f"[::1]:{port6}"))
    r = wait_for(lambda: _up(f"http://[::1]:{port6}/metrics"), timeout=30, what="the [::1] endpoint")
    assert r[0] == 200 and "fusion_backup_build_info" in r[1]
    with socket.socket() as s:  # bound to ::1 only: IPv4 loopback is not served
        s.settimeout(2)
        assert s.connect_ex(("127.0.0.1", port6)) != 0

    port_any = _free_port(socket.AF_INET6, "::")
    workers.start(fusion_db, role="recorder", extra=("--metrics-listen", f"[::]:{port_any}"))
    wait_for(lambda: _up(f"http://[::1]:{port_any}/metrics"), timeout=30, what="the [::] endpoint over IPv6")
    assert _get(f"http://127.0.0.1:{port_any}/metrics")[0] == 200, "[::] also accepts IPv4"


def test_bad_listen_addresses_are_refused_with_the_form_to_use(bin, fusion_db):
    for bad, says in [("::1:9", "brackets"), ("[::1]:0", "bad port"), ("127.0.0.1:x", "bad port"),
                      ("10.0.0.300:10061", "not an IPv4 address"), ("[::g]:10061", "not an IPv6 address")]:
        r = subprocess.run([bin.worker, "--metrics-listen", bad, "--pg", fusion_db, "--role", "recorder"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and says in r.stderr, (bad, r.returncode, r.stderr)
