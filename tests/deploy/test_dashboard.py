"""The Grafana dashboard against a real run: a real ``stream run`` (live pattern sources
through a slow pass-through stage, so frames are also dropped), scraped by a real
Prometheus; every query of every panel and every template variable must return data,
so the dashboard references only metric names and labels that /metrics really exposes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port, get_json, stream_cmd, wait_for
from tests.deploy.common import DEPLOY

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "stream.json"
PROMETHEUS = shutil.which("prometheus")
# Grafana's variables, as "All" and a short rate window for a 1 s scrape interval
VARIABLES = {"${datasource}": "prometheus", "$__rate_interval": "10s", "$job": ".*", "$instance": ".*",
             "$source": ".*"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panel_queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def substitute(expr: str) -> str:
    for var, value in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def scrape(port: int) -> str | None:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3).read().decode()
    except OSError:
        return None


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real pipeline with two live cameras; yields its metrics port once frames flow and drop."""
    tmp = tmp_path_factory.mktemp("dash")
    port = free_port()
    cfg = tmp / "cameras.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "dashboard",
        "sources": [{"id": s, "type": "pattern", "live": True, "fps": 30, "synthetic": {"width": 160, "height": 120}}
                    for s in ("gate", "yard")],
        "pipeline": ["passthrough"],
        "passthrough": {"delay_ms": 40},  # slower than 2 x 30 fps: the live edge drops frames
        "metrics": {"host": "127.0.0.1", "port": port},
    }))
    proc = subprocess.Popen(stream_cmd("run", str(cfg)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def flowing() -> bool:
            text = scrape(port)
            if not text:
                return False
            names = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
                     if s.name in ("stream_frame_age_seconds_count", "stream_frames_dropped_total")}
            return len(names) == 2 and all(v > 0 for v in names.values())

        wait_for(flowing, 90, "frames processed and dropped in /metrics")
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-3000:]


@pytest.fixture(scope="module")
def prometheus(run: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus scraping the run every second; yields its base URL once it holds samples."""
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed (scripts/system-deps.sh installs it)")
    tmp = tmp_path_factory.mktemp("prom")
    web = free_port()
    (tmp / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "stream", "static_configs": [{"targets": [f"127.0.0.1:{run}"]}]}],
    }))
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
                             f"--web.listen-address=127.0.0.1:{web}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{web}"
    try:
        def samples() -> bool:  # enough scrapes for rate() over 10 s
            r = query(base, 'count_over_time(stream_stage_up{job="stream"}[30s])')
            return bool(r) and min(float(x["value"][1]) for x in r) >= 3

        wait_for(samples, 60, "Prometheus to scrape the run three times", interval=0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def query(base: str, expr: str) -> list[dict[str, Any]] | None:
    body = get_json(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    if body is None:
        return None
    assert body.get("status") == "success", f"{expr}: {body.get('error')}"
    return list(body["data"]["result"])


def test_every_dashboard_query_returns_data_from_a_real_run(prometheus: str) -> None:
    dash = dashboard()
    queries = panel_queries(dash)
    assert len(queries) >= 10
    empty = [(title, expr) for title, expr in queries if not query(prometheus, substitute(expr))]
    assert not empty, f"panels whose query returns nothing on a real run: {empty}"


def test_every_template_variable_has_values(prometheus: str) -> None:
    for var in dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = substitute(var["query"]["query"])
        metric, label = q.removeprefix("label_values(").removesuffix(")").rsplit(",", 1)
        url = f"{prometheus}/api/v1/label/{label.strip()}/values?{urllib.parse.urlencode({'match[]': metric.strip()})}"
        body = get_json(url)
        assert body and body["status"] == "success" and body["data"], (var["name"], body)
    sources = get_json(f"{prometheus}/api/v1/label/source/values")["data"]
    assert {"gate", "yard"} <= set(sources)


def test_the_dashboard_shows_what_an_operator_needs() -> None:
    """Per-source fps, frame age, drops by reason, stage latency p50/p99, source state."""
    exprs = " ".join(e for _, e in panel_queries(dashboard()))
    for needed in ("stream_frame_age_seconds_count", "stream_frame_age_seconds_bucket", "stream_frames_dropped_total",
                   'quantile="0.5"', 'quantile="0.99"', "stream_source_state", "stream_stage_up",
                   "stream_stage_restarts_total"):
        assert needed in exprs, needed
    assert "by (source, reason)" in exprs
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids are unique"
    cells = [(x, y) for p in panels for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
             for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])]
    assert len(cells) == len(set(cells)), "panels do not overlap"
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)
    # no GPU metric exists yet: the dashboard says so instead of showing an empty panel
    gpu = [p for p in dashboard()["panels"] if "GPU" in p["title"]]
    assert gpu and all(p["type"] == "text" for p in gpu)


def test_a_query_on_a_metric_the_run_does_not_expose_is_caught(prometheus: str) -> None:
    """The check above can fail: a misspelt metric returns nothing."""
    assert query(prometheus, substitute('sum by (source) (rate(stream_frame_age_seconds_cnt[$__rate_interval]))')) == []
    assert query(prometheus, 'stream_stage_latency_ms{quantile="0.95"}') == []


def test_provisioned_datasource_and_dashboard_folder_match_the_compose_mounts() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/stream.yaml").read_text())["providers"][0]
    assert (DEPLOY / mounts[provider["options"]["path"]] / DASHBOARD.name).is_file()
    assert (DEPLOY / mounts["/etc/grafana/provisioning"]).resolve() == (DEPLOY / "grafana/provisioning").resolve()
    source = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())["datasources"][0]
    host, port = urllib.parse.urlsplit(source["url"]).hostname, urllib.parse.urlsplit(source["url"]).port
    assert host in compose["services"] and port == 9090
    assert dashboard()["templating"]["list"][0]["current"]["value"] == source["uid"]
