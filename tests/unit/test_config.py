from __future__ import annotations

from pathlib import Path

import pytest

from stream.config import load_config
from stream.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
BASE = {"sources": [{"id": "cam", "type": "synthetic"}]}


def test_set_overrides_with_list_index_and_yaml_values():
    c = load_config(None, ["sources.0.synthetic.width=320", "transport.hwm=8", "pipeline=[passthrough]"], base=BASE)
    assert c.sources[0].synthetic.width == 320 and c.transport.hwm == 8 and c.pipeline == ["passthrough"]


def test_env_secrets_are_resolved_and_missing_ones_named():
    c = load_config(None, ["name=${ENV:RUN_NAME}"], base=BASE, env={"RUN_NAME": "night"})
    assert c.name == "night"
    with pytest.raises(ConfigError, match="name: environment variable NOPE is not set"):
        load_config(None, ["name=${ENV:NOPE}"], base=BASE, env={})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sources.0.fps=-3", "sources.0.fps: Input should be greater than 0 (got -3)"),
        ("sources.0.id=../x", "sources.0.id: must be 1-64 letters"),
        ("transport.pixels=gpu", "transport.pixels: 'gpu' is not allowed (allowed: 'shm' or 'inline')"),
        ("metrics.bogus=1", "metrics.bogus: unknown key (allowed: api, enabled, host, idle_timeout_s, port, token)"),
        ("sources.3.id=x", "--set sources.3.id: sources has 1 items, no index '3'"),
        ("novalue", "expected KEY=VALUE"),
    ],
)
def test_bad_values_name_the_dotted_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override], base=BASE)
    assert message in str(err.value)


def test_duplicate_source_ids_are_refused():
    with pytest.raises(ConfigError, match="source id 'a' is used twice"):
        load_config(None, base={"sources": [{"id": "a", "type": "synthetic"}] * 2})


def test_file_source_needs_a_path():
    with pytest.raises(ConfigError, match="path is required for a source of type 'file'"):
        load_config(None, base={"sources": [{"id": "a", "type": "file"}]})


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    import re

    secrets = {name: "example" for name in re.findall(r"\$\{ENV:([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text())}
    config = load_config(path, env=secrets)
    assert config.sources
