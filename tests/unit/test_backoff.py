"""The one retry schedule (``stream.backoff``) that live sources, supervisor restarts and the
re-stream sink all wait by."""

from __future__ import annotations

import random

from stream.backoff import Backoff, doubling


def test_the_wait_doubles_to_its_cap_and_never_overflows() -> None:
    assert [doubling(k, 0.5, 8.0) for k in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert doubling(100_000, 1.0, 30.0) == 30.0


def test_a_backoff_without_jitter_follows_the_schedule_and_starts_over_on_reset() -> None:
    b = Backoff(1.0, 30.0, jitter=0.0)
    assert [b.next() for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    b.reset()
    assert b.next() == 1.0


def test_jitter_only_shortens_a_wait_and_a_fast_start_caps_the_first_seconds() -> None:
    now = [0.0]
    b = Backoff(1.0, 8.0, jitter=0.5, rng=random.Random(1), fast_s=0.5, fast_for_s=10.0, clock=lambda: now[0])
    fast = [b.next() for _ in range(4)]
    assert all(0.25 <= w <= 0.5 for w in fast)
    now[0] = 11.0  # the outage outlasted the fast start: back to the doubling schedule (attempt 5: 8 s cap)
    assert 4.0 <= b.next() <= 8.0
