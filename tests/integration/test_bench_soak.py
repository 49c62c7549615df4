"""``stream bench soak``: a short soak of 4 live sources with recording, a subscriber and
/metrics, sampled every few seconds; and the bounds that make it fail."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import pytest

from stream.bench.soak import _result, add_arguments
from tests.conftest import run_stream

pytestmark = pytest.mark.timeout(300)


def test_a_short_soak_samples_every_process_and_holds_its_bounds():
    r = run_stream("bench", "soak", "--minutes", "1", "--interval-s", "5", "--warmup-s", "15",
                   "--pipeline", "passthrough", "--max-rss-mb-per-h", "1500", "--max-fds-per-h", "600",
                   "--json", timeout=280)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["held"] is True and out["restarts"] == 0
    assert out["samples"] >= 10 and out["minutes"] >= 0.95
    names = {row["process"] for row in out["rows"]}
    assert names == {"supervisor", "passthrough", "output", *(f"capture:s{i:02d}" for i in range(4))}
    assert all(row["rss_mb"] > 5 and row["fds"] > 3 for row in out["rows"])
    assert out["shm_mb"] > 0 and abs(out["shm_mb_per_h"]) <= 1.0  # the rings: a fixed size
    assert 0 < out["scrape_ms_max"] < 500
    assert out["frames_processed"] > 100 and out["frames_subscribed"] > 100


def _args(**kw: float) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args([f"--{k.replace('_', '-')}={v}" for k, v in kw.items()])


def _samples(fd_leak_per_min: float) -> list[dict]:
    return [{"t": 60.0 * i, "rss": {"output": 50.0}, "fds": {"output": 30 + fd_leak_per_min * i},
             "shm_mb": 3.7, "scrape_ms": 4.0} for i in range(10)]


def test_a_leak_above_its_bound_fails_the_soak_with_the_figure():
    summary = SimpleNamespace(sources=[SimpleNamespace(processed=100)], restarts={})
    ok = _result(_args(max_fds_per_h=50), _samples(0.0), 60.0, summary, 100)
    assert ok.summary["held"] and ok.summary["fds_per_h"] == 0.0
    leak = _result(_args(max_fds_per_h=50), _samples(1.0), 60.0, summary, 100)  # one fd a minute
    assert leak.failures == ["open fds grow 60.0/h (bound 50)"] and leak.summary["held"] is False
    assert leak.summary["rss_mb_series"] == {"output": [50.0] * 10}

