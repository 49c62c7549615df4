"""Wall-clock pacing for sources that play recorded or generated frames as a live camera."""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction


def fps_time_base(fps: float) -> Fraction:
    """Seconds per frame as an exact fraction: 30 → 1/30, 29.97 → 100/2997, 30000/1001 → 1001/30000."""
    return 1 / Fraction(fps).limit_denominator(1001)


class Pacer:
    """Releases frames at their media time, like a camera that does not wait for its reader.

    ``wait(media_s)`` sleeps until the frame's due time (the wall-clock time of the
    first paced frame plus ``media_s - first media_s``) and returns True. A frame
    that is already more than ``late_drop_s`` seconds overdue when asked for is
    not released: ``wait`` returns False and counts it in ``dropped`` — a slow
    reader misses frames instead of receiving a growing backlog.

    clock, sleep: injectable for tests (defaults ``time.monotonic``/``time.sleep``).
    """

    def __init__(
        self,
        late_drop_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.late_drop_s = late_drop_s
        self.dropped = 0
        self._clock = clock
        self._sleep = sleep
        self._origin: float | None = None

    def reset(self) -> None:
        """Forget the time origin: the next frame is released at once and sets a new origin."""
        self._origin = None

    def wait(self, media_s: float) -> bool:
        """Block until ``media_s`` (seconds, media time) is due; False when the frame is too late."""
        now = self._clock()
        if self._origin is None:
            self._origin = now - media_s
        due = self._origin + media_s
        if due > now:
            self._sleep(due - now)
            return True
        if now - due > self.late_drop_s:
            self.dropped += 1
            return False
        return True
