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


def test_a_full_output_latency_window_stays_small() -> None:
    """The output keeps a 100,000-frame window per source and per hop for the run summary,
    for runs of weeks: full, one takes about 0.8 MB (Python floats in a deque took 3.2)."""
    import tracemalloc

    from stream.runtime import LatencyWindow

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        w = LatencyWindow(100_000)
        for i in range(150_000):
            w.add(i * 0.001)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1.0e6, f"a full window holds {held / 1e6:.1f} MB"
    p50, p99 = w.quantiles()  # the last 100,000 values: 50.0 .. 149.999
    assert abs(p50 - 99.9995) < 1e-6 and abs(p99 - 148.99901) < 1e-6
