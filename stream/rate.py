"""One definition of a source's frame rate, used by the figures the output side shows
(the overlay's status line and the live page); the periodic status line (stream.status)
counts the same way, frames that reached the end over its own interval.

fps = frames that arrived in the last ``window_s`` seconds / ``window_s`` (the window
shrinks to the meter's age, at least 1 s, while it is younger than ``window_s``). A burst
after a stall therefore counts as what it is, N frames in the window, not as 1/Δt of two
frames a microsecond apart.
"""

from __future__ import annotations

import threading
import time
from collections import deque


class RateMeter:
    """Frames per second of arrivals. ``tick()`` once per frame; ``fps()`` at any time.
    Memory is bounded: timestamps older than the window are dropped (and at most
    ``max_events`` are kept, enough for 1,000 fps over a 4 s window). Thread-safe: one
    thread may tick while others read."""

    def __init__(self, window_s: float = 2.0, max_events: int = 4096) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = float(window_s)
        self._times: deque[float] = deque(maxlen=max_events)
        self._start: float | None = None
        self._lock = threading.Lock()

    def tick(self, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        with self._lock:
            if self._start is None:
                self._start = t
            self._times.append(t)
            self._trim(t)

    def fps(self, now: float | None = None) -> float:
        t = time.monotonic() if now is None else now
        with self._lock:
            if self._start is None:
                return 0.0
            self._trim(t)
            span = min(self.window_s, max(t - self._start, 1.0))
            return len(self._times) / span

    def reset(self) -> None:
        with self._lock:
            self._times.clear()
            self._start = None

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
