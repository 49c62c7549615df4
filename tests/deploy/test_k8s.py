"""deploy/k8s: every overlay rendered by kustomize (``kubectl kustomize``, skipped with a
reason where kubectl is absent) and every object validated offline against the
Kubernetes schemas (kubernetes-validate, strict: unknown fields fail), then checked
against the pipeline: shards, probes, grace period, /dev/shm, GPUs, selectors, secrets."""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from stream.config import Config
from stream.shard import parse_shard, shard_config
from tests.deploy.common import DEPLOY, env_refs, k8s_bytes, load_shipped, ring_bytes

K8S = DEPLOY / "k8s"
TARGETS = ["base", "overlays/cpu", "overlays/gpu"]
OVERLAYS = TARGETS[1:]
KUBERNETES_VERSION = "1.30.0"
KUBECTL = shutil.which("kubectl")


@functools.cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    """The objects of a kustomization. The base's objects are plain manifests, readable
    without kustomize; the overlays' strategic-merge patches need the real thing."""
    if KUBECTL is None:
        if target != "base":
            pytest.skip("kubectl is not installed: rendering an overlay's strategic-merge patches needs "
                        "kustomize (the base's objects are still validated)")
        kust = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
        assert set(kust) <= {"apiVersion", "kind", "resources"}, "the base must stay plain manifests"
        return tuple(doc for f in kust["resources"] for doc in yaml.safe_load_all((K8S / "base" / f).read_text()) if doc)
    out = subprocess.run([KUBECTL, "kustomize", str(K8S / target)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def one(docs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    return one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def secret_example() -> dict[str, Any]:
    return yaml.safe_load((K8S / "base" / "secret.example.yaml").read_text())


def camera_config(docs: tuple[dict[str, Any], ...], tmp_path: Path) -> Config:
    """The ConfigMap's camera file as the pod loads it, with the Secret's keys in the environment."""
    sts = one(docs, "StatefulSet")
    volume = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "cameras")
    cm = one(docs, "ConfigMap", volume["configMap"]["name"])
    (tmp_path / "cameras.yaml").write_text(cm["data"]["cameras.yaml"])
    return load_shipped(tmp_path / "cameras.yaml", {k: "x" for k in secret_example()["stringData"]})


def check_podmonitor(doc: dict[str, Any], docs: tuple[dict[str, Any], ...]) -> None:
    """PodMonitor is the Prometheus Operator's CRD, outside the Kubernetes schemas: the fields
    used are checked by hand against the operator's v1 API."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"} and set(doc["spec"]) <= {
        "selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel", "podTargetLabels"}
    labels = one(docs, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"] for p in container(docs)["ports"]}
    for ep in doc["spec"]["podMetricsEndpoints"]:
        assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings"}
        assert ep["port"] in ports and ep["path"] == "/metrics"


@pytest.mark.parametrize("target", TARGETS)
def test_every_object_is_valid_against_the_kubernetes_schemas(target: str) -> None:
    docs = render(target)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ConfigMap", "StatefulSet", "Service", "Service", "Service", "PodMonitor",
                            "PodDisruptionBudget"])
    for doc in docs:
        if doc["kind"] == "PodMonitor":
            check_podmonitor(doc, docs)
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    kubernetes_validate.validate(secret_example(), KUBERNETES_VERSION, strict=True)


def test_the_schema_check_can_fail() -> None:
    sts = copy.deepcopy(one(render("base"), "StatefulSet"))
    sts["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, KUBERNETES_VERSION, strict=True)
    sts = copy.deepcopy(one(render("base"), "StatefulSet"))
    sts["spec"]["replicas"] = "2"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("target", TARGETS)
def test_each_pod_runs_its_own_shard_and_every_pod_has_cameras(target: str, tmp_path: Path) -> None:
    docs = render(target)
    sts = one(docs, "StatefulSet")
    c = container(docs)
    replicas = sts["spec"]["replicas"]
    env = env_of(c)
    assert env["STREAM_SHARDS"] == str(replicas), "STREAM_SHARDS must equal replicas"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert c["args"][:2] == ["run", "/etc/stream/cameras.yaml"]
    assert c["args"][c["args"].index("--shard") + 1] == "auto/$(STREAM_SHARDS)"
    config = camera_config(docs, tmp_path)
    owned: list[str] = []
    for i in range(replicas):  # pod names of a StatefulSet: <name>-<ordinal>
        shard = parse_shard(f"auto/{replicas}", pod_name=f"{sts['metadata']['name']}-{i}")
        owned += [s.id for s in shard_config(config, shard).sources]  # raises if a pod owns none
    assert sorted(owned) == sorted(s.id for s in config.sources)


@pytest.mark.parametrize("target", TARGETS)
def test_probes_ports_and_grace_period_match_the_pipeline(target: str, tmp_path: Path) -> None:
    docs = render(target)
    pod = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    c = container(docs)
    config = camera_config(docs, tmp_path)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == config.metrics.port and config.metrics.host == "0.0.0.0"
    assert ports["live"] == config.sinks.live.port
    assert ports["publish"] == int(config.sinks.publish.endpoint.rsplit(":", 1)[1])
    for probe, path in (("startupProbe", "/readyz"), ("livenessProbe", "/readyz"), ("readinessProbe", "/readyz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= config.supervisor.startup_timeout_s, \
        "the startup probe must give models as long to load as the supervisor does"
    # the supervisor waits shutdown_timeout_s, then SIGTERMs stragglers and kills them 1.5 s later
    assert pod["terminationGracePeriodSeconds"] > config.supervisor.shutdown_timeout_s + 1.5
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0


@pytest.mark.parametrize("target", TARGETS)
def test_dev_shm_is_memory_backed_and_holds_the_largest_shards_rings(target: str, tmp_path: Path) -> None:
    docs = render(target)
    sts = one(docs, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    c = container(docs)
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/dev/shm")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"]["medium"] == "Memory"
    size = k8s_bytes(volume["emptyDir"]["sizeLimit"])
    config = camera_config(docs, tmp_path)
    n = sts["spec"]["replicas"]
    largest = max(ring_bytes(shard_config(config, parse_shard(f"{i}/{n}"))) for i in range(n))
    assert largest < size, f"the largest shard's rings need {largest} bytes, /dev/shm holds {size}"
    limit = c.get("resources", {}).get("limits", {}).get("memory")
    if limit is not None:  # memory-backed emptyDir counts against the container's memory limit
        assert k8s_bytes(limit) >= size + 4 * 2**30


@pytest.mark.parametrize("target", OVERLAYS)
def test_overlays_pick_their_image_and_resources(target: str) -> None:
    docs = render(target)
    kind = Path(target).name
    pod = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    images = {x["image"] for x in pod["containers"] + pod["initContainers"]}
    assert images == {f"stream:{kind}"}
    assert (DEPLOY / "docker" / f"Dockerfile.{kind}").is_file()
    limits = container(docs)["resources"]["limits"]
    if kind == "gpu":
        assert limits["nvidia.com/gpu"] == 1, "one pipeline per GPU"
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    else:
        assert "nvidia.com/gpu" not in limits


@pytest.mark.parametrize("target", TARGETS)
def test_services_monitor_and_budget_select_the_pipeline_pods(target: str) -> None:
    docs = render(target)
    sts = one(docs, "StatefulSet")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"] for p in container(docs)["ports"]}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert services[sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None", "per-pod addresses for subscribers"
    served = set()
    for svc in services.values():
        assert svc["spec"]["selector"].items() <= labels.items()
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports
            served.add(p["targetPort"])
    assert served == {"metrics", "live", "publish"}
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items() and pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("target", TARGETS)
def test_every_secret_the_cameras_name_comes_from_the_secret(target: str) -> None:
    docs = render(target)
    c = container(docs)
    sts = one(docs, "StatefulSet")
    cm = one(docs, "ConfigMap", next(v for v in sts["spec"]["template"]["spec"]["volumes"]
                                     if v["name"] == "cameras")["configMap"]["name"])
    secret = secret_example()
    assert [e["secretRef"]["name"] for e in c["envFrom"]] == [secret["metadata"]["name"]]
    needed = env_refs(cm["data"]["cameras.yaml"])
    given = set(secret["stringData"]) | set(env_of(c)) | {"HOSTNAME"}  # HOSTNAME: the pod's name, set by Kubernetes
    assert needed and needed <= given, needed - given
    # and no password is written in the ConfigMap itself
    assert "change-me" not in cm["data"]["cameras.yaml"]


def test_the_commented_mqtt_example_is_a_valid_sinks_mqtt_section(tmp_path: Path) -> None:
    """The ConfigMap leaves sinks.mqtt commented (no broker in the base); uncommented it must load."""
    text = one(render("base"), "ConfigMap")["data"]["cameras.yaml"]
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("# mqtt:"))
    block = [lines[start]] + [ln for ln in lines[start + 1:start + 4] if ln.lstrip().startswith("#  ")]
    uncommented = [ln.replace("# ", "", 1) for ln in block]
    lines[start:start + len(block)] = uncommented
    (tmp_path / "cameras.yaml").write_text("\n".join(lines) + "\n")
    env = {k: "x" for k in secret_example()["stringData"]} | {"HOSTNAME": "stream-0"}
    config = load_shipped(tmp_path / "cameras.yaml", env)
    assert config.sinks.mqtt is not None and config.sinks.mqtt.availability_topic == "stream/stream-0/availability"
