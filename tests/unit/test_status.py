"""The periodic status line (stream.status) from real Heartbeat messages of the last stage."""

from __future__ import annotations

from stream.messages import AGE_BUCKETS_S, Heartbeat
from stream.status import StatusLine


def _hb(frames: int, age_sum_s: float, objects: tuple[int, int]) -> Heartbeat:
    buckets = (0,) * len(AGE_BUCKETS_S) + (frames,)  # cumulative: the +Inf bucket holds them all
    return Heartbeat(stage="output", pid=1, time_ns=0, state="running", age_buckets={"cam": buckets},
                     age_sum_s={"cam": age_sum_s}, objects={"cam": objects})  # fmt: skip


def test_one_line_per_source_each_interval_with_fps_age_objects_masks_and_drops():
    line = StatusLine(5.0, ("cam", "idle"), started=100.0)
    assert line.poll(101.0, None, {}) == []  # no frame at the end yet: nothing to say
    first = line.poll(130.0, _hb(10, 1.0, (3, 2)), {})
    assert first == ["first frames at the output 30.0 s after start"]
    assert line.poll(133.0, _hb(40, 4.0, (3, 2)), {}) == []  # within the interval
    lines = line.poll(135.0, _hb(60, 6.5, (4, 3)), {"cam": 7})
    # 50 frames in 5 s; their ages sum to 5.5 s: 110 ms on average
    assert lines == [
        "status cam: 10.0 fps, age 110 ms, 4 objects, 3 masks, 7 dropped",
        "status idle: 0.0 fps, age -, 0 objects, 0 masks, 0 dropped",
    ]


def test_interval_zero_turns_it_off():
    line = StatusLine(0.0, ("cam",))
    assert line.poll(10.0, _hb(10, 1.0, (1, 1)), {}) == []
    assert line.poll(100.0, _hb(20, 2.0, (1, 1)), {}) == []
