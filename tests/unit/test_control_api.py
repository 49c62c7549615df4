"""The control API without a run: a posted source is validated exactly like the config
file (same one-line message), who may call it (loopback, token, Host header), what a
split or sharded run refuses, and its OpenAPI document."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate

from stream.config import Config, MetricsConfig, load_config, with_source
from stream.control import ControlApi, openapi
from stream.errors import ConfigError, ControlError
from stream.metrics import MetricsServer
from stream.roster import RosterChanges
from stream.shard import Shard, owner
from stream.supervisor import Supervisor

CAM1 = {"id": "cam1", "type": "pattern", "synthetic": {"width": 32, "height": 32}}
BASE = {"sources": [CAM1], "pipeline": ["passthrough"]}


@pytest.mark.parametrize("definition", [
    {"id": "cam2", "type": "rtsp"},  # url required
    {"id": "cam2", "type": "camera"},  # not a type
    {"id": "cam2", "type": "pattern", "fps": 0},
    {"id": "cam2", "type": "pattern", "colour": "red"},  # unknown key
    {"id": "-cam2", "type": "pattern"},
    {"id": "cam1", "type": "pattern"},  # the id is taken
    {"id": "cam2", "type": "rtsp", "url": "rtsp://u:${ENV:CAM_PASSWORD}@h/x"},  # env var not set
    {"type": "pattern"},
])
def test_a_posted_source_gets_the_config_loaders_message(tmp_path: Path, definition: dict[str, Any]) -> None:
    file = tmp_path / "cameras.yaml"
    file.write_text(yaml.safe_dump({**BASE, "sources": [CAM1, definition]}))
    with pytest.raises(ConfigError) as from_file:
        load_config(file, env={})
    config = load_config(None, base=BASE)
    with pytest.raises(ConfigError) as posted:
        with_source(config, definition, env={}, label="POST /api/sources")
    assert str(posted.value) == str(from_file.value).replace(f"in {file}", "in POST /api/sources")
    assert "\n" not in str(posted.value)


def test_a_posted_source_reads_env_like_the_file_and_keeps_the_password_out_of_errors() -> None:
    config = load_config(None, base=BASE)
    new = with_source(config, {"id": "cam2", "type": "rtsp", "url": "rtsp://u:${ENV:CAM_PASSWORD}@h/x"},
                      env={"CAM_PASSWORD": "hunter2"}, label="POST /api/sources")
    assert new.sources[1].url is not None and new.sources[1].url.get_secret_value() == "rtsp://u:hunter2@h/x"
    assert "CAM_PASSWORD" in new.env_names  # kept out of the workers' environment, as the file's
    with pytest.raises(ConfigError, match=r"sources\.2\.id: source id 'cam2' is used twice") as info:
        with_source(new, {"id": "cam2", "type": "pattern"}, env={}, label="POST /api/sources")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        with_source(config, {"id": "cam2", "type": "rtsp", "url": "rtsp://u:hunter2@h/x", "fps": -1},
                    env={}, label="POST /api/sources")
    assert "hunter2" not in str(info.value) and "sources.1.fps" in str(info.value)


class _Roster:
    """Stands in for a run's RosterChanges: what the HTTP layer calls."""

    def sources(self) -> list[dict[str, Any]]:
        return [{"id": "cam1"}]


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[MetricsServer] = []

    def start(**metrics: Any) -> str:
        cfg = MetricsConfig(port=0, **metrics)
        api = ControlApi(_Roster(), cfg)  # type: ignore[arg-type]
        server = MetricsServer(cfg.host, 0, lambda: {"stages": {}, "drops": {}}, lambda: (True, {}), api=api)
        server.start()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for s in servers:
        s.close()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            body = r.read()
            return r.status, json.loads(body) if r.headers.get("Content-Type") == "application/json" else body
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, body


def test_loopback_without_a_token_answers_loopback_hosts_only(serve: Any) -> None:
    base = serve()
    assert _get(base + "/api/sources") == (200, {"sources": [{"id": "cam1"}]})
    assert _get(base + "/api/sources", {"Host": "evil.example:9464"})[0] == 403  # DNS rebinding
    assert _get(base + "/api/nothing")[0] == 404


def test_off_loopback_the_api_needs_a_token_and_metrics_do_not(serve: Any) -> None:
    base = serve(host="0.0.0.0")
    status, body = _get(base + "/api/sources")
    assert status == 403 and "metrics.token" in body["error"], body
    assert _get(base + "/metrics")[0] == 200  # Prometheus scrapes a pod without the token
    base = serve(host="0.0.0.0", token="a-long-token-0123456789")
    assert _get(base + "/api/sources")[0] == 401
    assert _get(base + "/api/sources", {"Authorization": "Bearer a-long-token-0123456789"})[0] == 200
    assert _get(base + "/api/openapi.json")[0] == 200
    with pytest.raises(ConfigError, match=r"metrics\.token"):
        MetricsConfig(token=1234)  # type: ignore[arg-type]


def test_the_openapi_document_is_valid_and_lists_every_route() -> None:
    doc = openapi()
    validate(doc)  # raises on an invalid OpenAPI 3 document
    assert set(doc["paths"]["/api/sources"]) == {"get", "post"}
    assert {"get", "patch", "delete"} <= set(doc["paths"]["/api/sources/{id}"])


def _roster(config: Config, **kwargs: Any) -> RosterChanges:
    return Supervisor(config, **kwargs).roster


def test_a_split_run_refuses_changes_and_a_shard_takes_only_its_own_ids() -> None:
    config = load_config(None, base=BASE)
    roster = _roster(config)
    roster.sup.split = object()  # type: ignore[assignment]
    with pytest.raises(ControlError, match="split pipeline") as info:
        roster.add({"id": "cam2", "type": "pattern"}, "POST /api/sources")
    assert info.value.status == 409
    foreign = next(f"cam{i}" for i in range(2, 50) if owner(f"cam{i}", 2) == 1)
    sharded = _roster(config, shard=Shard(0, 2))
    with pytest.raises(ControlError, match="belongs to shard 1/2") as info:
        sharded.add({"id": foreign, "type": "pattern"}, "POST /api/sources")
    assert info.value.status == 409
    with pytest.raises(ControlError) as info:
        sharded.remove("nope")
    assert info.value.status == 404
