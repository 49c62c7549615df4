"""The one retry schedule: a wait that doubles from ``initial_s`` up to ``max_s``. Live
sources reconnect by ``Backoff`` (with jitter and a fast start), the supervisor restarts
a crashed process after ``doubling(crashes in the window)``, the re-stream sink
reconnects by ``Backoff`` without jitter."""

from __future__ import annotations

import random
import time
from collections.abc import Callable


def doubling(attempt: int, initial_s: float, max_s: float) -> float:
    """The wait before retry ``attempt`` (1, 2, …): min(max_s, initial_s · 2^(attempt-1)) seconds."""
    # the exponent stops growing long before a float overflows (2.0**1024 raises)
    return min(max_s, initial_s * 2.0 ** min(max(attempt - 1, 0), 60))


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
        cap = doubling(self.attempts + 1, self.initial_s, self.max_s)
        if now - self._since < self.fast_for_s:
            cap = min(cap, self.fast_s)
        self.attempts += 1
        return cap * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        self.attempts = 0
