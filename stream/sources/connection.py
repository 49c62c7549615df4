"""What a live connection yields (the wait between attempts is ``stream.backoff``).

A ``Connection`` is one open stream (``stream.sources.rtsp.PyAVConnection``,
``stream.sources.webcam.WebcamConnection``); ``stream.sources.live.LiveSource``
reconnects them. Kept apart so that a new kind of connection needs only this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from stream.errors import SourceError


class StreamStalled(SourceError):
    """No data or no clean frame arrived within the stall timeout."""


@dataclass(frozen=True)
class LiveStatus:
    """What a live source reports (heartbeats, /healthz). state: connecting | streaming |
    stalled | failed. detail: one line without secrets. failures: failed attempts in a
    row; reconnects: connections after the first that delivered frames; last_outage_s:
    seconds without frames before the latest reconnect."""

    state: str
    detail: str
    failures: int = 0
    reconnects: int = 0
    last_outage_s: float = 0.0


@dataclass(frozen=True)
class Decoded:
    """One item from a connection. kind: ``frame`` (a clean picture), ``bad`` (a frame lost
    to corruption, no pixels) or ``tick`` (data arrived but finished no frame; lets the
    stall watchdog run). width, height: decoded size in pixels. media_s: presentation
    time in seconds on the connection's clock, None when unknown. image(w, h): the
    picture as BGR uint8 (h,w,3), resized to w×h when that differs from its size."""

    kind: Literal["frame", "bad", "tick"]
    width: int = 0
    height: int = 0
    media_s: float | None = None
    image: Callable[[int, int], np.ndarray] | None = None


BAD = Decoded("bad")
TICK = Decoded("tick")


class Connection(Protocol):
    """An open stream. ``frames()`` raises SourceError (StreamStalled when no data came
    within its read timeout) and ends at the end of the stream."""

    fps: float  # nominal frame rate, 0 when unknown
    description: str  # e.g. "h264 1280x720 @ 25 fps"; never holds a secret

    def frames(self) -> Iterator[Decoded]: ...

    def close(self) -> None: ...


