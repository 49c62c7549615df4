"""What a live connection yields, and how a live source waits between attempts.

A ``Connection`` is one open stream (``stream.sources.rtsp.PyAVConnection``,
``stream.sources.webcam.WebcamConnection``); ``stream.sources.live.LiveSource``
reconnects them. Kept apart so that a new kind of connection needs only this module.
"""

from __future__ import annotations

import random
import time
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


class Backoff:
    """Capped exponential backoff with jitter: wait k (k = 1, 2, …) is
    min(max_s, initial_s · 2^(k-1)) · U(1 - jitter, 1) seconds — except in the first
    ``fast_for_s`` seconds of a series of failures, where the cap is ``fast_s``: a
    camera that blinks or reboots is back within seconds, and a wait of ``max_s``
    would add up to that much to every such outage. A long outage still backs off
    to ``max_s``. ``reset()`` (a connection delivered frames) starts a new series.
    clock: monotonic seconds (injectable for tests)."""

    def __init__(
        self, initial_s: float, max_s: float, jitter: float = 0.5, rng: random.Random | None = None, *,
        fast_s: float = 0.5, fast_for_s: float = 0.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self.fast_s = fast_s
        self.fast_for_s = fast_for_s
        self.attempts = 0
        self._rng = rng or random.Random()
        self._clock = clock
        self._since = 0.0

    def next(self) -> float:
        now = self._clock()
        if self.attempts == 0:
            self._since = now
        # the exponent stops growing long before a float overflows (2.0**1024 raises)
        cap = min(self.max_s, self.initial_s * 2.0 ** min(self.attempts, 60))
        if now - self._since < self.fast_for_s:
            cap = min(cap, self.fast_s)
        self.attempts += 1
        return cap * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        self.attempts = 0
