"""The stream-count search of ``stream bench pipeline --find-max``, with the pipeline run
replaced by a known capacity (the real runs are in tests/integration/test_bench_pipeline.py)."""

from __future__ import annotations

import argparse

import pytest

from stream.bench import pipeline


@pytest.mark.parametrize(
    ("start", "capacity", "limit", "expected", "tried"),
    [
        (1, 5, 256, 5, [1, 2, 4, 5, 6, 8]),  # doubling, then bisection between 4 and 8
        (1, 0, 256, 0, [1]),  # nothing holds
        (32, 5, 256, 5, [4, 5, 6, 8, 16, 32]),  # a start above the capacity searches downwards
        (1, 1000, 10, 10, [1, 2, 4, 8, 10]),  # capped by --max-streams
    ],
)
def test_finds_the_largest_stream_count_that_holds(monkeypatch, start, capacity, limit, expected, tried):
    calls: list[int] = []

    def fake_trial(args, plan, n):
        calls.append(n)
        return {"rows": [], "figures": {"streams": n, "held": n <= capacity}}

    monkeypatch.setattr(pipeline, "_trial", fake_trial)
    args = argparse.Namespace(streams=start, max_streams=limit)
    held, trials = pipeline._find_max(args, {})
    assert held == expected
    assert sorted(calls) == tried and len(set(calls)) == len(calls)  # no count is run twice
    assert sorted(trials) == tried
