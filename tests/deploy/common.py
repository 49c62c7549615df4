"""Helpers for the deploy/ tests: load a shipped camera config as the pipeline would,
and size its frame rings."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from stream.config import LIVE_TYPES, Config, load_config
from stream.transport import FrameRing
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
ENV_REF = re.compile(r"\$\{ENV:([A-Za-z_][A-Za-z0-9_]*)\}")


def env_refs(text: str) -> set[str]:
    """The NAMEs of every ${ENV:NAME} in a config's text (comments included: a commented
    camera is one a user will uncomment)."""
    return set(ENV_REF.findall(text))


def load_shipped(path: Path, env: Mapping[str, str]) -> Config:
    """Load and validate a shipped config: the top level (load_config) and every stage and
    sink section the pipeline would validate when it builds them."""
    from stream.sinks import live, mqtt, publish, record
    from stream.stages import detect, track

    config = load_config(path, env=env)
    if "detect" in config.pipeline:
        detect.params(config)
    if "track" in config.pipeline:
        track.params(config)
    for name, model in (("live", live.LiveConfig), ("publish", publish.PublishConfig),
                        ("record", record.RecordConfig), ("mqtt", mqtt.MqttConfig)):
        section = getattr(config.sinks, name)
        if section:
            from stream.config import validate_section

            validate_section(model, section, f"sinks.{name}")
    return config


def ring_bytes(config: Config, file_sizes: Mapping[str, tuple[int, int]] | None = None) -> int:
    """/dev/shm the rings of ``config`` take (as the supervisor sizes them: a camera for
    max_width x max_height; a file for its frame size, given in ``file_sizes``)."""
    total = 0
    for s in config.sources:
        w, h = (s.max_width, s.max_height) if s.type in LIVE_TYPES else (file_sizes or {})[s.id]
        total += FrameRing.nbytes(s.ring_slots, w * h * 3)
    return total


def k8s_bytes(q: str) -> int:
    """A Kubernetes memory quantity ("2Gi", "512Mi", "1G") in bytes."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|K|M|G|T)?", str(q).strip())
    if m is None:
        raise ValueError(f"not a Kubernetes memory quantity: {q!r}")
    factor = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
              "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[m.group(2)]
    return int(m.group(1)) * factor


def docker_bytes(q: str) -> int:
    """A Docker size ("1gb", "512m", "64mb") in bytes (Docker's units are binary)."""
    m = re.fullmatch(r"(\d+)([bkmg]?)b?", str(q).strip().lower())
    if m is None:
        raise ValueError(f"not a Docker size: {q!r}")
    return int(m.group(1)) * {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}[m.group(2)]
