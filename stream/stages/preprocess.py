"""The preprocess stage: denoise / tone curve / CLAHE per source, before detection.

Configured by the top-level ``preprocess`` section, keyed by source id; ``"*"``
applies to every source without its own entry; a source with neither passes
through untouched::

    pipeline: [preprocess, detect, track]
    preprocess:
      night-cam: {denoise: bilateral, strength: 8, gamma: 1.8, clahe: true}
      "*": {clahe: true}

Each key holds a ``stream.preprocess.PreprocessConfig``; the operations are the
ones ``stream predict --preprocess`` applies to stills.

The stage returns ``frame.evolve(image=processed)``. With pixels in shared memory
only the PixelRef travels, so the runner writes the processed image back into the
frame's own ring slot (``FrameRing.writable_view``) before forwarding it; inline
(tcp) pixels travel in the message as they are. Because the slot is rewritten,
the stage must come first in ``pipeline`` (checked at start): no other stage may
have read the raw pixels of that slot.
"""

from __future__ import annotations

import logging
from typing import Any

from stream.config import Config
from stream.errors import ConfigError
from stream.messages import Frame
from stream.preprocess import PreprocessConfig, Preprocessor
from stream.stage import StageBase

log = logging.getLogger(__name__)

ALL_SOURCES = "*"


def _section(config: Config) -> dict[str, Any]:
    section = getattr(config, "preprocess", None) or {}
    if not isinstance(section, dict):
        raise ConfigError(
            "config error: preprocess: must be a mapping of source id → settings, "
            f"e.g. {{cam1: {{gamma: 1.8}}}} (got {type(section).__name__})"
        )
    return section


def params(config: Config) -> dict[str, PreprocessConfig]:
    """Validated per-source settings: {source id or "*": PreprocessConfig}. Raises ConfigError
    naming ``preprocess.<key>.<field>`` for a bad value, or a key that is not a source id."""
    from stream.config import validate_section

    ids = [s.id for s in config.sources]
    out: dict[str, PreprocessConfig] = {}
    for key, value in _section(config).items():
        key = str(key)
        if key != ALL_SOURCES and key not in ids:
            raise ConfigError(
                f"config error: preprocess.{key}: no source has this id (sources: {', '.join(ids)}; "
                f"'{ALL_SOURCES}' applies to all)"
            )
        if not isinstance(value, dict):
            raise ConfigError(
                f"config error: preprocess.{key}: expected a mapping of settings, e.g. {{gamma: 1.8}}, "
                f"got {value!r}"
            )
        out[key] = validate_section(PreprocessConfig, value, f"preprocess.{key}")
    return out


def preflight(config: Config) -> None:
    """Before anything starts: the section is valid and the stage comes first."""
    params(config)
    if "preprocess" in config.pipeline and config.pipeline[0] != "preprocess":
        raise ConfigError(
            f"config error: pipeline: 'preprocess' must be the first stage (it rewrites the frame's "
            f"pixels in place); got {config.pipeline}"
        )


class PreprocessStage(StageBase):
    """Per source, ``Preprocessor`` on frame.image → a frame with the new image.

    processors: source id → Preprocessor; ``default`` serves the other sources
    (None: they pass through unchanged)."""

    name = "preprocess"

    def __init__(self, processors: dict[str, Preprocessor], default: Preprocessor | None = None) -> None:
        self.processors = {k: p for k, p in processors.items() if p.enabled}
        self.default = default if default is not None and default.enabled else None

    def process(self, frame: Frame) -> Frame | None:
        proc = self.processors.get(frame.source, self.default)
        if proc is None:
            return frame.evolve()
        if frame.image is None:
            raise ValueError(f"source={frame.source} seq={frame.seq}: frame has no pixels to preprocess")
        return frame.evolve(image=proc(frame.image))


def build(config: Config) -> PreprocessStage:
    settings = params(config)
    default = settings.pop(ALL_SOURCES, None)
    for key, cfg in settings.items():
        log.info("preprocess: source=%s %s", key, cfg.describe())
    if default is not None:
        log.info("preprocess: other sources %s", default.describe())
    return PreprocessStage(
        {k: Preprocessor(v) for k, v in settings.items()},
        Preprocessor(default) if default is not None else None,
    )
