"""Figures the project prints: one percentile definition, tables."""

from __future__ import annotations


def test_one_percentile_for_every_printed_figure() -> None:
    """The stages' latency windows (run summary, /metrics) and the benchmarks agree on p50/p99."""
    import numpy as np

    from stream.report import percentile
    from stream.runtime import LatencyWindow

    values = [float(v) for v in np.random.default_rng(0).exponential(20.0, 1001)]
    w = LatencyWindow(2000)
    for v in values:
        w.add(v)
    p50, p99 = w.quantiles()
    assert p50 == percentile(values, 50) == float(np.percentile(values, 50))
    assert p99 == percentile(values, 99) == float(np.percentile(values, 99))
