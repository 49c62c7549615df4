"""sinks.mqtt config: errors name the dotted key and never show the password; the
documented example is a valid section."""

from __future__ import annotations

import re
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
