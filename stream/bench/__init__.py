"""Benchmarks behind ``stream bench NAME``.

Each benchmark is a module ``stream.bench.NAME`` defining::

    HELP: str
    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> BenchResult

The command prints ``result.rows`` as a table, or with ``--json`` one JSON
object (``result.summary`` plus the rows under "rows"). Figures are measured in
the same run as their reference so that ratios are meaningful on a noisy host.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

BENCHMARKS = ("transport", "detect", "track", "segment", "outputs", "sources", "preprocess", "pipeline", "soak")


@dataclass
class BenchResult:
    """rows: one dict per measured configuration (same keys in each row).
    summary: the headline figures (the keys an issue names, e.g. shm_fps)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({**self.summary, "rows": self.rows})


def percentile(values: Sequence[float], q: float) -> float:
    """q in [0, 100]; linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    data = sorted(values)
    if len(data) == 1:
        return float(data[0])
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return float(data[lo] + (data[hi] - data[lo]) * (pos - lo))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain aligned text table; floats with 3 significant decimals."""
    if not rows:
        return "(no rows)"
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return "" if v is None else str(v)

    cells = [[cell(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells)
    return "\n".join(lines)


def time_pair(ours: Callable[[], object], reference: Callable[[], object], iters: int, warmup: int,
              sync: Callable[[], None] = lambda: None) -> tuple[list[float], list[float]]:
    """ms per call of ``ours`` and ``reference``, run alternately so that load from other
    processes on a shared host falls on both alike; ``sync`` waits for the device."""
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(warmup + iters):
        for fn, out in ((ours, times[0]), (reference, times[1])):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if i >= warmup:
                out.append((time.perf_counter() - t0) * 1000.0)
    return times
