"""The Source protocol: what a capture process reads frames from.

A source is opened once (``open()`` returns its ``SourceInfo``), then iterated:
each item is a ``SourceFrame`` holding a BGR image (H×W×3 uint8, C-contiguous)
and its presentation timestamp in ``time_base`` units. ``open()`` raises
``SourceError`` with a message a user can act on (the path, what was wrong,
what to do). Iteration ends at the end of a file; live sources never end by
themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class SourceInfo:
    """What the supervisor needs to size a source's shared-memory ring.

    width, height: pixels of the largest frame the source will produce.
    fps: nominal frame rate (frames per second), 0 when unknown.
    time_base: seconds per pts unit.
    live: True for cameras and paced streams (drop at the edge when downstream
        is behind); False for files (backpressure, no frame lost).
    frame_count: frames in a file when known, else None.
    """

    width: int
    height: int
    fps: float
    time_base: Fraction
    live: bool
    frame_count: int | None = None


@dataclass(frozen=True)
class SourceFrame:
    """One decoded frame. image: H×W×3 uint8 BGR; pts in the source's time_base.

    extra: optional per-frame side data a source provides (the synthetic source
    puts its ground truth here; the MOT source its public detections).
    """

    image: np.ndarray
    pts: int
    extra: dict[str, Any] = field(default_factory=dict)


class Source(Protocol):
    def open(self) -> SourceInfo: ...

    def frames(self, start: int = 0) -> Iterator[SourceFrame]:
        """Frames from index ``start`` on (a restarted capture resumes where it stopped)."""
        ...

    def close(self) -> None: ...
