"""What ``/healthz`` says: the supervisor's verdict on a running pipeline.

- ``ok`` (200): every stage is up and working, no source is failing.
- ``degraded`` (200): frames get through, but some source is failed or stalled,
  a stage process is down (restarting), or a stage failed frames in the last
  ``window_s``; ``failing`` names them and says why.
- ``failing`` (503): no source is streaming, or sources stream and no frame came
  out of the last stage for ``window_s`` (e.g. every frame fails in detect).
- ``starting`` (503): no source has streamed yet.
- ``done`` (200): every source reached its end.

The verdict uses counters sampled over a sliding window (a few samples a second,
at most ``window_s`` of them), so its memory stays bounded on a run of weeks.
"""

from __future__ import annotations

from collections import deque
from typing import Any

STREAMING = "streaming"
FAILING_STATES = ("failed", "stalled")
_SAMPLE_EVERY_S = 0.5


class HealthWindow:
    """Per-process (frames_in, frames_out, errors) sampled over the last ``window_s`` seconds."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, dict[str, tuple[int, int, int]]]] = deque()
        self._first_at: float | None = None

    def observe(self, now: float, counters: dict[str, tuple[int, int, int]]) -> None:
        """Add a sample (ignored when the last one is younger than half a second)."""
        if self._first_at is None:
            self._first_at = now
        if self._samples and now - self._samples[-1][0] < _SAMPLE_EVERY_S:
            return
        self._samples.append((now, dict(counters)))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()

    def full(self, now: float) -> bool:
        """True once the window has been observed for its whole length."""
        return bool(self._samples) and now - self._samples[0][0] >= self.window_s * 0.9

    def deltas(self) -> dict[str, tuple[int, int, int]]:
        """Counter increments per process between the oldest and the newest sample."""
        if len(self._samples) < 2:
            return {}
        old, new = self._samples[0][1], self._samples[-1][1]
        out = {}
        for name, (fi, fo, er) in new.items():
            a, b, c = old.get(name, (0, 0, 0))
            # a restarted process starts its counters again at 0
            out[name] = (fi - a, fo - b, er - c) if fi >= a and fo >= b and er >= c else (fi, fo, er)
        return out


def verdict(stages: dict[str, dict[str, Any]], sources: dict[str, str], window: HealthWindow,
            now: float) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for /healthz. stages: the supervisor's snapshot per process
    (up, state, frames_in/out, errors); sources: source id -> state."""
    failing: dict[str, str] = {}
    for src, state in sources.items():
        if state in FAILING_STATES:
            failing[f"source:{src}"] = state
    deltas = window.deltas()
    for name, st in stages.items():
        if name.startswith("capture:"):
            continue
        if not st["up"] and st["state"] not in ("done", "starting"):
            failing[name] = "down"
            continue
        d_in, d_out, d_err = deltas.get(name, (0, 0, 0))
        if d_err > 0:
            failing[name] = f"{d_err} of {max(d_in, d_err)} frames failed in the last {window.window_s:.0f} s"
    streaming = [s for s, state in sources.items() if state == STREAMING]
    out_delta = deltas.get("output", (0, 0, 0))[1]
    if sources and all(state == "done" for state in sources.values()):
        status = "done"
    elif not streaming and not any(state in FAILING_STATES for state in sources.values()):
        status = "starting" if not any(st["frames_out"] for st in stages.values()) else "failing"
    elif not streaming:
        status = "failing"
        failing.setdefault("sources", "no source is streaming")
    elif window.full(now) and out_delta == 0:
        status = "failing"
        failing["output"] = f"no frame came through in the last {window.window_s:.0f} s"
    else:
        status = "degraded" if failing else "ok"
    code = 503 if status in ("failing", "starting") else 200
    return code, {"status": status, "failing": failing}
