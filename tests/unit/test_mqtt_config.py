"""sinks.mqtt config: errors name the dotted key and never show the password; the
documented example is a valid section."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stream.config import load_config, validate_section
from stream.errors import ConfigError
from stream.sinks.mqtt import MqttConfig, build

DOC = Path(__file__).resolve().parents[2] / "docs" / "mqtt.md"


def test_config_errors_name_the_key_and_never_show_the_password():
    config = load_config(None, base={"sources": [{"id": "cam", "type": "synthetic"}]})
    for section, expected in [
        ({"hots": "x"}, "sinks.mqtt.hots: unknown key"),
        ({"topic_prefix": "a/+/b"}, "sinks.mqtt.topic_prefix: must not contain the wildcards"),
        ({"qos": 3}, "sinks.mqtt.qos: 3 is not allowed"),
        ({"username": "u", "password": 123456789}, "sinks.mqtt.password: must be a string"),
        ({"password": "hunter2-pw"}, "sinks.mqtt.password: set sinks.mqtt.username too"),
        ({"tls": {"ca_file": "/nonexistent/ca.pem"}}, "sinks.mqtt.tls.ca_file: /nonexistent/ca.pem is not a file"),
        ({"tls": {"insecure": True, "bogus": 1}}, "sinks.mqtt.tls.bogus: unknown key"),
        ({"host": "mqtt://broker:1883"}, "sinks.mqtt.host: must be a host name or address alone"),
        ({"tls": {"ca_file": __file__}}, "sinks.mqtt.tls: cannot set up TLS"),  # not a PEM file
    ]:
        with pytest.raises(ConfigError) as err:
            build(section, config)
        assert expected in str(err.value), str(err.value)
        assert "123456789" not in str(err.value) and "hunter2" not in str(err.value)



def test_the_documented_example_is_a_valid_section():
    text = DOC.read_text()
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))["sinks"]["mqtt"]
    example["password"] = "from-the-environment"
    cfg = validate_section(MqttConfig, example, "sinks.mqtt")
    assert cfg.tls is not None and cfg.qos == 1 and cfg.username == "stream"
    for name in MqttConfig.model_fields:  # every key is documented
        assert name in text or name == "enabled", name


def test_the_section_is_validated_at_load_and_stream_check_refuses_a_typo(tmp_path):
    """``sinks.mqtt`` is typed like every sink section: a bad key fails at load (``stream check``),
    naming the dotted key, before any process starts; the password survives the JSON trip to
    the output worker and shows nowhere else."""
    from stream.config import Config

    base = {"sources": [{"id": "cam", "type": "synthetic"}]}
    with pytest.raises(ConfigError, match=r"sinks\.mqtt\.hots: unknown key"):
        load_config(None, ["sinks.mqtt.hots=broker"], base=base)
    with pytest.raises(ConfigError, match=r"sinks\.mqtt\.tls: cert_file and key_file go together"):
        load_config(None, ["sinks.mqtt.tls.cert_file=c.pem"], base=base)
    config = load_config(None, ["sinks.mqtt.username=u", "sinks.mqtt.password=hunter2-pw"], base=base)
    assert isinstance(config.sinks.mqtt, MqttConfig) and "hunter2" not in repr(config)
    again = Config.model_validate(config.model_dump(mode="json"))  # what the output worker gets on stdin
    assert again.sinks.mqtt is not None and again.sinks.mqtt.password.get_secret_value() == "hunter2-pw"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({**base, "sinks": {"mqtt": {"hots": "broker.lan"}}}))
    out = subprocess.run([sys.executable, "-m", "stream.cli", "check", str(cfg)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "sinks.mqtt.hots: unknown key" in out.stderr, out.stderr
