"""The figures and tables commands print (benchmarks, evaluations, run summaries): a leaf
module that all of them use, so that evaluation does not import the benchmarks and every
p50/p99 the project prints has one definition (``percentile``: linear interpolation between
the two nearest ranks, numpy's default)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


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


def percentile(values: Sequence[float], q: float) -> float:
    """q in [0, 100]; linear interpolation between the nearest ranks (numpy's default);
    nan for no values."""
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
