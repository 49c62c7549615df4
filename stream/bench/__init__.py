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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stream.report import median, percentile  # noqa: F401  (the benchmarks' figures: one definition)

BENCHMARKS = ("transport", "detect", "track", "segment", "outputs", "sources", "preprocess", "pipeline", "soak",
              "crosshost", "live")


@dataclass
class BenchResult:
    """rows: one dict per measured configuration (same keys in each row).
    summary: the headline figures (the keys an issue names, e.g. shm_fps).
    failures: one line per bound the run broke; the command still prints the figures
    (table or ``--json``), then each line, and exits 1."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """What ``--json`` prints: the summary's keys and ``rows``."""
        return {**self.summary, "rows": self.rows}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


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
