"""Settings that put boxes and masks on screen when the models have random weights.

Untrained YOLO-NAS scores every anchor about 0.0101 whatever the picture, so the
usual thresholds (``detect.conf`` 0.35, ByteTrack's 0.7 activation) leave nothing:
no box, no track, no mask. Random outputs are not detections, but a benchmark and a
demo still need the stages to do their real work on a realistic number of objects.
This module is the one place that knows how: ``stream bench pipeline`` and
``stream demo --random-weights`` (and ``stream demo`` when no weights can be had)
both build their settings from ``choices``.

Every choice carries the dotted config key it sets and why, so a command can print
what it chose.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

CONF = 0.01
"""Detection threshold: random weights score about 0.0101, so this keeps the top boxes."""
SEED = 2
"""With seed 2 (also 5, 7) yolo_nas_s puts most of its top boxes inside the frame at 320
and 640 (with 0, all of them fall in the letterbox padding at 640)."""
BOXES = 20
"""Detections kept per frame."""
KEYFRAME_INTERVAL = 10
"""Frames between SAM keyframes of a track."""


@dataclass(frozen=True)
class Choice:
    """One setting: dotted config key (as ``--set`` takes it), value, and why."""

    key: str
    value: Any
    why: str

    def override(self) -> str:
        """``KEY=VALUE`` for ``load_config``'s overrides (the value as YAML/JSON)."""
        return f"{self.key}={json.dumps(self.value)}"


def input_size_for(device_type: str) -> int:
    """Detector input side: 640 on CUDA, 320 on a CPU (4× fewer pixels than 640)."""
    return 640 if device_type == "cuda" else 320


def sam_model_for(device_type: str) -> str:
    """SAM ViT-B on CUDA; on a CPU the small test SAM ('tiny', not a released model): a ViT-B
    image embedding takes seconds there, and with random weights its masks mean nothing anyway."""
    return "vit_b" if device_type == "cuda" else "tiny"


def choices(
    device_type: str,
    *,
    fps: float,
    boxes: int = BOXES,
    conf: float = CONF,
    seed: int = SEED,
    keyframe_interval: int = KEYFRAME_INTERVAL,
    input_size: int | None = None,
    sam_model: str | None = None,
) -> list[Choice]:
    """The settings for random-weight models on ``device_type`` ('cuda' or 'cpu') and a
    source of ``fps`` frames/s; ``None`` picks the device's default."""
    cpu = device_type != "cuda"
    size = input_size or input_size_for(device_type)
    sam = sam_model or sam_model_for(device_type)
    where = "on a CPU" if cpu else "on CUDA"
    return [
        Choice("detect.conf", conf, f"random weights score about 0.0101: {conf:g} keeps the top boxes"),
        Choice("detect.max_detections", boxes, "a realistic number of objects for tracking and SAM"),
        Choice("detect.random_seed", seed, f"with seed {seed} most of the top boxes fall inside the frame"),
        Choice("detect.input_size", size, f"{where} {size} keeps up with the source"),
        Choice("track.track_activation_threshold", 0.0, "random scores are all near 0.01: every box is tracked"),
        Choice("track.high_conf_det_threshold", 0.0, "same"),
        Choice("track.minimum_consecutive_frames", 1, "a track gets its id on its first frame"),
        Choice("track.frame_rate", fps, "the source's frame rate"),
        Choice("segment.model", sam, "a small test SAM (not a released model): ViT-B takes seconds per frame on a CPU"
               if sam == "tiny" else "the default SAM"),
        Choice("segment.random_seed", seed, "the same seed as the detector"),
        Choice("segment.interval", keyframe_interval, f"a fresh SAM mask every {keyframe_interval} frames per track"),
    ]


def sections(items: Iterable[Choice]) -> dict[str, dict[str, Any]]:
    """The choices as config sections: {'detect': {'conf': 0.01, …}, 'track': {…}, …}."""
    out: dict[str, dict[str, Any]] = {}
    for c in items:
        section, _, key = c.key.partition(".")
        out.setdefault(section, {})[key] = c.value
    return out


def describe(items: Sequence[Choice]) -> list[str]:
    """One line per choice, for a command to print: ``  detect.conf = 0.01  (why)``."""
    width = max((len(c.key) for c in items), default=0)
    return [f"  {c.key:<{width}} = {json.dumps(c.value)}  ({c.why})" for c in items]
