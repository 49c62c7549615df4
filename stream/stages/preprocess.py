"""The preprocess stage: denoise / tone curve / CLAHE per source, before detection.

Configured by the top-level ``preprocess`` section, keyed by source id; ``"*"``
applies to every source without its own entry; a source with neither passes
through untouched::

    pipeline: [preprocess, detect, track]
    preprocess:
      night-cam: {denoise: bilateral, strength: 8, gamma: 1.8, clahe: true}
      "*": {clahe: true}

Each key holds a ``stream.sections.preprocess.PreprocessConfig``; the operations are the
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

from stream.config import ALL_SOURCES, Config
from stream.errors import ConfigError
from stream.messages import Frame
from stream.preprocess import PreprocessConfig, Preprocessor
from stream.stage import StageBase

log = logging.getLogger(__name__)

def params(config: Config) -> dict[str, PreprocessConfig]:
    """Per-source settings: {source id or "*": PreprocessConfig}, validated at load
    (a key that is not a source id is refused there)."""
    return dict(config.preprocess)


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
