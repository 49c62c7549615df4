"""deploy/compose.yaml, its camera config, Prometheus config and the Dockerfiles, checked
as far as this machine allows: no container daemon or base images here, so nothing is
built or started; the files are validated against the Compose specification (the
compose-spec package's strict parser) and against each other and the pipeline."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import av
import compose_spec
import pytest
import yaml

from stream.config import load_config
from tests.conftest import REPO
from tests.deploy.common import DEPLOY, docker_bytes, env_refs, load_shipped, ring_bytes

COMPOSE_FILES = [DEPLOY / "compose.yaml", DEPLOY / "compose.gpu.yaml"]
CAMERAS = DEPLOY / "compose" / "cameras.yaml"
DOCKERFILES = {"cpu": DEPLOY / "docker" / "Dockerfile.cpu", "gpu": DEPLOY / "docker" / "Dockerfile.gpu"}
# what the images hold at these paths (Dockerfile COPY lines), for checks run here
IMAGE_FILES = {"/app/samples/street.mp4": REPO / "stream" / "data" / "vtest-street.mp4"}


def resolved(text: str) -> str:
    """The YAML as Compose reads it: anchors and merge keys (``<<: *x``) resolved (the
    compose-spec parser does not resolve merge keys itself)."""
    return yaml.safe_dump(yaml.safe_load(text), sort_keys=False)


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")))
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln.strip() else "")
            for ln in text.splitlines() if ln.strip()]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_files_follow_the_compose_specification(path: Path) -> None:
    spec = compose_spec.PyCompose.from_yaml(resolved(path.read_text())).to_spec()
    assert spec.services


def test_the_validator_rejects_a_misspelt_key() -> None:
    bad = (DEPLOY / "compose.yaml").read_text().replace("stop_grace_period:", "stop_grace_periode:")
    with pytest.raises(ValueError, match="stop_grace_periode"):
        compose_spec.PyCompose.from_yaml(resolved(bad))


def test_services_volumes_and_files_that_compose_refers_to_exist() -> None:
    c = compose()
    services = c["services"]
    assert {"stream", "mosquitto", "prometheus", "grafana"} <= set(services)
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is not in deploy/"
            else:
                assert source in c["volumes"], f"{name} uses undeclared volume {source}"
        if "build" in svc:
            context = (DEPLOY / svc["build"]["context"]).resolve()
            assert context == REPO and (context / svc["build"]["dockerfile"]).is_file()
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond the host's loopback"
    gpu = yaml.safe_load((DEPLOY / "compose.gpu.yaml").read_text())["services"]["stream"]
    assert (REPO / gpu["build"]["dockerfile"]).is_file()
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["count"] == 1 and "gpu" in device["capabilities"]


def test_camera_config_loads_and_compose_gives_it_every_secret_it_names(tmp_path: Path) -> None:
    svc = compose()["services"]["stream"]
    env = {k: "x" for k in svc["environment"]}
    needed = env_refs(CAMERAS.read_text())
    assert needed <= set(env), f"cameras.yaml reads {needed - set(env)} that compose.yaml does not pass"
    config = load_shipped(CAMERAS, env)
    mount = next(v for v in svc["volumes"] if v.startswith("./compose/cameras.yaml:"))
    assert mount.split(":")[1] == svc["command"][1], "stream runs the camera file compose mounts"
    for s in config.sources:
        if s.path:
            assert s.path in IMAGE_FILES, f"source {s.id}: {s.path} is not in the image"
    # an uncommented example camera also loads
    uncommented = re.sub(r"(?m)^  # (- id: gate)", r"  \1", CAMERAS.read_text())
    uncommented = re.sub(r"(?m)^  #   ", "    ", uncommented)
    (tmp_path / "cameras.yaml").write_text(uncommented)
    assert [s.id for s in load_config(tmp_path / "cameras.yaml", env=env).sources] == ["street", "gate"]


def test_metrics_healthcheck_and_prometheus_agree_on_one_port() -> None:
    config = load_shipped(CAMERAS, {"LIVE_TOKEN": "x", "CAM_PASSWORD": "x"})
    assert config.metrics.host == "0.0.0.0", "Prometheus in another container must reach /metrics"
    for path in DOCKERFILES.values():
        steps = dict(dockerfile(path))
        assert f"http://127.0.0.1:{config.metrics.port}/healthz" in steps["HEALTHCHECK"]
        assert str(config.metrics.port) in steps["EXPOSE"].split()
    prom = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"stream:{config.metrics.port}"]


def test_stop_grace_period_is_above_the_pipelines_shutdown_timeout() -> None:
    config = load_shipped(CAMERAS, {"LIVE_TOKEN": "x", "CAM_PASSWORD": "x"})
    svc = compose()["services"]["stream"]
    grace = compose_spec.parse_duration(svc["stop_grace_period"])
    grace_s = grace.total_seconds() if hasattr(grace, "total_seconds") else float(grace)
    # the supervisor waits shutdown_timeout_s, then SIGTERMs stragglers and kills them 1.5 s later
    assert grace_s > config.supervisor.shutdown_timeout_s + 1.5
    assert svc["stop_signal"] == "SIGTERM"


def test_shm_size_covers_the_frame_rings() -> None:
    config = load_shipped(CAMERAS, {"LIVE_TOKEN": "x", "CAM_PASSWORD": "x"})
    sizes = {}
    for s in config.sources:
        if s.path:
            with av.open(str(IMAGE_FILES[s.path])) as f:
                sizes[s.id] = (f.streams.video[0].width, f.streams.video[0].height)
    need = ring_bytes(config, sizes)
    have = docker_bytes(compose()["services"]["stream"]["shm_size"])
    assert need < have, f"rings need {need} bytes, shm_size gives {have}"
    assert have > 64 * 2**20, "more than Docker's default 64 MB"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfiles_run_stream_as_a_non_root_user_with_volumes_health_and_sigterm(kind: str) -> None:
    steps = dockerfile(DOCKERFILES[kind])
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM"):]  # the runtime stage
    ops = {op: arg for op, arg in final}
    assert ops["USER"] not in ("root", "0") and "useradd" in ops["RUN"]
    volumes = yaml.safe_load(ops["VOLUME"])
    assert {"/cache", "/recordings"} <= set(volumes)
    assert "STREAM_CACHE=/cache" in ops["ENV"]
    assert ops["STOPSIGNAL"] == "SIGTERM"
    assert "/healthz" in ops["HEALTHCHECK"] and "--start-period" in ops["HEALTHCHECK"]
    assert yaml.safe_load(ops["ENTRYPOINT"]) == ["stream"]
    assert any(op == "RUN" and "uv sync --no-dev" in arg for op, arg in steps), "installed with uv"
    if kind == "gpu":
        assert "nvidia/cuda" in steps[0][1] or "nvidia/cuda" in dict(steps).get("ARG", "")
    # every file the image copies from the build context (the repository root) exists
    for op, arg in steps:
        if op == "COPY" and "--from" not in arg:
            *sources, _dest = shlex.split(arg)
            for src in sources:
                assert (REPO / src).exists(), f"{kind}: COPY {src}: not in the repository"
    # what the configs expect inside the image is copied there
    copied = {shlex.split(arg)[-1] for op, arg in final if op == "COPY"}
    assert set(IMAGE_FILES) <= copied


def test_dockerignore_keeps_the_virtualenv_out_of_the_build_context() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (scripts/system-deps.sh)")
def test_prometheus_config_passes_promtool() -> None:
    out = subprocess.run(["promtool", "check", "config", str(DEPLOY / "compose" / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
