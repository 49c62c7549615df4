"""The edge of a live source: where decoded frames wait for the capture, and their clock.

``EdgeBuffer`` holds at most ``size`` frames; pushing into a full one drops the oldest
(counted as ``"downstream busy"``). Frames lost for any reason are counted in order:
each delivered ``Entry`` carries what was lost just before it (``before``), so the
capture can give the lost frames their seqs in the right place. Thread-safe: the
reader thread pushes, the capture thread takes.

``PtsClock`` maps a connection's media time (seconds) to pts in ``TIME_BASE``
(1/90000 s), strictly increasing, continuing across connections.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction

from stream.sources.connection import Decoded

TIME_BASE = Fraction(1, 90000)  # pts unit of every live source: the RTP video clock
TICKS = 90000
_CLOCK_JUMP_S = 10.0


@dataclass
class Pending:
    """Frames lost by reason (``skipped``) and a reset reason, to go out with the next frame."""

    skipped: dict[str, int] = field(default_factory=dict)
    reset: str | None = None

    def add(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def merge(self, other: Pending) -> None:
        for reason, n in other.skipped.items():
            self.add(reason, n)
        self.reset = self.reset or other.reset


@dataclass
class Entry:
    """A decoded frame waiting: pts in TIME_BASE, capture_ns wall clock (time.time_ns)."""

    decoded: Decoded
    pts: int
    capture_ns: int
    before: Pending  # what happened between the previous frame and this one


class EdgeBuffer:
    """Drop-oldest buffer of ``size`` >= 1 entries between a reader and a consumer thread."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._queue: deque[Entry] = deque()
        self._pending = Pending()
        self._cond = threading.Condition()
        self._closed = False

    def count(self, reason: str, n: int = 1) -> None:
        """Frames lost before the next pushed one (e.g. "corrupt")."""
        with self._cond:
            self._pending.add(reason, n)

    def push(self, decoded: Decoded, pts: int, capture_ns: int) -> None:
        with self._cond:
            entry = Entry(decoded, pts, capture_ns, self._pending)
            self._pending = Pending()
            if len(self._queue) >= self.size:
                oldest = self._queue.popleft()
                # what happened before the lost frame goes with the next one
                heir = self._queue[0] if self._queue else entry
                oldest.before.add("downstream busy")
                oldest.before.merge(heir.before)
                heir.before = oldest.before
            self._queue.append(entry)
            self._cond.notify()

    def restart(self, missing: int, reset: str | None) -> None:
        """A new connection: waiting frames are stale (dropped, counted); ``missing`` frames
        are counted as "source outage" and ``reset`` goes with the next frame."""
        with self._cond:
            for old in self._queue:
                self._pending.merge(old.before)
                self._pending.add("downstream busy")
            self._queue.clear()
            if missing:
                self._pending.add("source outage", missing)
            if reset:
                self._pending.reset = reset

    def take(self, timeout_s: float) -> Entry | None:
        """The oldest waiting entry, or None after ``timeout_s`` or once closed."""
        with self._cond:
            if not self._queue and not self._closed:
                self._cond.wait(timeout_s)
            return self._queue.popleft() if self._queue else None

    def close(self) -> None:
        """Wake every waiting ``take``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class PtsClock:
    """Media time → pts (TIME_BASE). A connection starts at ``base`` (its first frame);
    frames without media time follow the wall clock; a clock jump of more than 10 s is
    followed by the wall clock from there on."""

    base: int = 0
    media0: float | None = None
    wall0: float = 0.0
    last: int = -1

    def start(self, base: int, now: float) -> None:
        self.base, self.media0, self.wall0 = base, None, now

    def pts(self, media_s: float | None, now: float) -> int:
        wall = now - self.wall0
        if media_s is not None and self.media0 is None:
            self.media0 = media_s - wall
        elapsed = wall if media_s is None or self.media0 is None else media_s - self.media0
        if abs(elapsed - wall) > _CLOCK_JUMP_S:
            self.media0 = None if media_s is None else media_s - wall
            elapsed = wall
        self.last = max(self.base + round(elapsed * TICKS), self.last + 1)
        return self.last
