"""The periodic status line of a running pipeline (``stream run``, ``stream demo``).

Every ``supervisor.status_interval_s`` seconds the supervisor logs one line per
source, the way DeepStream prints its perf line::

    status street: 5.0 fps, age 333 ms, 10 objects, 10 masks, 316 dropped

(and once, when the first frames reach the end: how long after the start that was)
from what the last stage reports in its heartbeats: fps = frames of that source
that reached the end in the window / window length; age = mean frame age
(output time − capture time) over the window, in milliseconds; objects and masks
on the newest frame; dropped = frames of that source dropped anywhere so far.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from stream.messages import Heartbeat


@dataclass
class StatusLine:
    """Formats the status lines; call ``poll`` often, it returns lines once per interval."""

    interval_s: float
    sources: tuple[str, ...]
    started: float = 0.0  # monotonic time the run started: the first line says how long frames took
    _last_t: float | None = None
    _last: dict[str, tuple[int, float]] = field(default_factory=dict)  # source -> (frames, age sum s)

    def poll(self, now: float, output: Heartbeat | None, dropped: Mapping[str, int]) -> list[str]:
        """Lines to print at monotonic time ``now`` (empty until an interval has passed).
        ``output``: the last stage's newest heartbeat; ``dropped``: frames dropped per source."""
        if self.interval_s <= 0:
            return []
        if self._last_t is None:  # the window starts with the first frames at the end
            if output is None or not output.age_buckets:
                return []
            self._last_t, self._last = now, self._counts(output)
            return [f"first frames at the output {now - self.started:.1f} s after start"]
        if now - self._last_t < self.interval_s:
            return []
        counts = self._counts(output)
        dt = now - self._last_t
        lines = []
        for src in self.sources:
            frames, age_sum = counts.get(src, (0, 0.0))
            frames0, age_sum0 = self._last.get(src, (0, 0.0))
            n = frames - frames0
            age = f"{(age_sum - age_sum0) / n * 1000:.0f} ms" if n > 0 else "-"
            objects, masks = output.objects.get(src, (0, 0)) if output is not None else (0, 0)
            lines.append(
                f"status {src}: {n / dt:.1f} fps, age {age}, {objects} objects, {masks} masks, "
                f"{dropped.get(src, 0)} dropped"
            )
        self._last_t, self._last = now, counts
        return lines

    @staticmethod
    def _counts(hb: Heartbeat | None) -> dict[str, tuple[int, float]]:
        if hb is None:
            return {}
        return {src: (b[-1] if b else 0, hb.age_sum_s.get(src, 0.0)) for src, b in hb.age_buckets.items()}
