"""SourceTracker: ids, track life cycle, bad input and bounded state, on synthetic moving boxes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from stream.errors import ConfigError, FrameDropped
from stream.models.tracker import SourceTracker, TrackedObjects, TrackerParams

CLS = np.zeros(2, np.int32)
SCORES = np.array([0.9, 0.85], np.float32)


def held_tracks(tracker: SourceTracker) -> int:
    """Tracks the tracker holds in memory (confirmed, lost and tentative) plus the wrapper's own
    bookkeeping: at most about ``2 × detections per frame × (max_frames_lost + 2)``."""
    return len(tracker._tracker.tracks) + len(tracker._held_confirmed)


def last_track_id(tracker: SourceTracker) -> int:
    """The largest track id the tracker reported so far (0 before the first)."""
    return tracker._max_reported


def two_walkers(t: int) -> np.ndarray:
    """Two 40×80 boxes walking towards each other's side on separate rows, 3 px/frame."""
    return np.array([[10 + 3 * t, 50, 50 + 3 * t, 130], [600 - 3 * t, 300, 640 - 3 * t, 380]], np.float32)


def run(tracker: SourceTracker, frames: int, start: int = 0) -> list[TrackedObjects]:
    return [tracker.update(two_walkers(t), SCORES, CLS) for t in range(start, start + frames)]


def test_ids_are_stable_distinct_and_start_at_one() -> None:
    out = run(SourceTracker(TrackerParams(minimum_consecutive_frames=2)), 30)
    assert len(out[0]) == 0  # not confirmed after one frame
    assert out[1].track_ids.tolist() == [1, 2]
    assert out[1].is_new.all()
    for objs in out[2:]:
        by_row = dict(zip(objs.boxes[:, 1].tolist(), objs.track_ids.tolist(), strict=True))
        assert by_row == {50.0: 1, 300.0: 2}  # each walker keeps its id
        assert not objs.is_new.any()
        assert objs.boxes.dtype == np.float32 and objs.track_ids.dtype == np.int64
    last = out[-1]
    np.testing.assert_allclose(np.sort(last.boxes, axis=0), np.sort(two_walkers(29), axis=0))
    with pytest.raises(ValueError):
        last.boxes[0, 0] = 1.0  # results are read-only


def test_matches_raw_bytetrack_on_the_same_detections() -> None:
    """The wrapper changes numbering (+1) and drops unconfirmed boxes, nothing else."""
    import supervision as sv
    from trackers import ByteTrackTracker

    params = TrackerParams()
    ours = SourceTracker(params)
    raw = ByteTrackTracker(
        lost_track_buffer=params.lost_track_buffer,
        frame_rate=params.frame_rate,
        track_activation_threshold=params.track_activation_threshold,
        minimum_consecutive_frames=params.minimum_consecutive_frames,
        minimum_iou_threshold=params.minimum_iou_threshold,
        high_conf_det_threshold=params.high_conf_det_threshold,
    )
    rng = np.random.default_rng(3)
    for t in range(120):
        boxes = two_walkers(t) + rng.normal(0, 2, (2, 4)).astype(np.float32)
        scores = rng.uniform(0.3, 1.0, 2).astype(np.float32)
        visible = rng.random(2) > 0.15
        b, s, c = boxes[visible], scores[visible], CLS[visible]
        got = ours.update(b, s, c)
        want = raw.update(sv.Detections(xyxy=b, confidence=s, class_id=c))
        want_ids = np.asarray(want.tracker_id)
        confirmed = want_ids >= 0
        assert got.track_ids.tolist() == (want_ids[confirmed] + 1).tolist()
        np.testing.assert_array_equal(got.boxes, want.xyxy[confirmed])


def test_long_gap_ends_tracks_and_later_ids_keep_increasing() -> None:
    params = TrackerParams(lost_track_buffer=10)
    tracker = SourceTracker(params)
    run(tracker, 10)
    assert last_track_id(tracker) == 2
    lost_seen, finished = [], []
    empty = np.zeros((0, 4), np.float32)
    for _ in range(500):  # no detections for a long stretch
        objs = tracker.update(empty, np.zeros(0, np.float32), np.zeros(0, np.int32))
        assert len(objs) == 0
        lost_seen.append(objs.lost_ids.tolist())
        finished.extend(objs.finished_ids.tolist())
    assert lost_seen[0] == [1, 2]  # held for re-association first…
    assert sorted(finished) == [1, 2]  # …then each ends exactly once
    assert sum(1 for ids in lost_seen if ids) == params.max_frames_lost
    assert held_tracks(tracker) == 0
    # the same walkers come back: new ids, above every id issued before
    out = run(tracker, 5, start=200)
    assert out[-1].track_ids.tolist() == [3, 4]


def test_reacquired_track_keeps_its_id_within_the_buffer() -> None:
    tracker = SourceTracker(TrackerParams(lost_track_buffer=30))
    run(tracker, 10)
    for t in range(10, 15):  # walker 2 missed for 5 frames
        objs = tracker.update(two_walkers(t)[:1], SCORES[:1], CLS[:1])
        assert objs.lost_ids.tolist() == [2]
    objs = run(tracker, 3, start=15)[-1]
    assert sorted(objs.track_ids.tolist()) == [1, 2]
    assert len(objs.lost_ids) == 0 and len(objs.finished_ids) == 0


def test_empty_frames_in_any_form() -> None:
    tracker = SourceTracker()
    for boxes, scores, classes in [
        (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)),
        ([], [], []),
        (np.zeros((0, 4)), np.zeros((0,)), np.zeros((0,), np.int64)),
    ]:
        objs = tracker.update(boxes, scores, classes)
        assert len(objs) == 0 and objs.boxes.shape == (0, 4)


@pytest.mark.parametrize(
    ("boxes", "scores", "classes", "field"),
    [
        ([[0, 0, 10, 10], [5, np.nan, 20, 20]], [0.9, 0.9], [0, 0], "boxes[1]"),
        ([[0, 0, 10, 10]], [np.inf], [0], "scores[0]"),
        ([[0, 0, 10, 10]], [0.9, 0.8], [0], "scores must have shape (1,)"),
        ([[0, 0, 10]], [0.9], [0], "boxes must have shape (N, 4)"),
        ([[0, 0, 10, 10]], [0.9], [0, 1], "class_ids must have shape (1,)"),
        ([[50, 0, 10, 10]], [0.9], [0], "x2 < x1"),
        ([[0, 0, 10, 10]], [1.5], [0], "scores[0] = 1.5"),
        ([[0, 0, 10, 10]], [0.9], [0.5], "class_ids must be integers"),
    ],
)
def test_bad_input_names_the_field_and_leaves_state_alone(boxes, scores, classes, field) -> None:
    tracker = SourceTracker()
    run(tracker, 5)
    with pytest.raises(FrameDropped) as exc:
        tracker.update(boxes, scores, classes)
    assert field in str(exc.value)
    objs = run(tracker, 1, start=5)[0]  # the rejected frame did not age or move any track
    assert objs.track_ids.tolist() == [1, 2] and len(objs.lost_ids) == 0


def test_accepts_the_project_detections_type() -> None:
    from stream.models.detections import Detections

    tracker = SourceTracker()
    for t in range(3):
        objs = tracker.update_detections(Detections(two_walkers(t), SCORES.copy(), CLS.copy()))
    assert objs.track_ids.tolist() == [1, 2]


def test_reset_returns_ended_ids_and_never_reuses_ids() -> None:
    tracker = SourceTracker()
    run(tracker, 5)
    ended = tracker.reset()
    assert ended.tolist() == [1, 2]
    assert held_tracks(tracker) == 0
    out = run(tracker, 5)
    assert sorted(out[-1].track_ids.tolist()) == [3, 4]
    assert out[1].is_new.all()


def test_ids_are_per_source() -> None:
    a, b = SourceTracker(source="a"), SourceTracker(source="b")
    run(a, 5)
    assert run(b, 5)[-1].track_ids.tolist() == [1, 2]
    assert run(a, 1, start=5)[0].track_ids.tolist() == [1, 2]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"lost_track_buffer": -1}, "lost_track_buffer"),
        ({"track_activation_threshold": 1.5}, "track_activation_threshold"),
        ({"frame_rate": 0.0}, "frame_rate"),
        ({"minimum_consecutive_frames": 0}, "minimum_consecutive_frames"),
    ],
)
def test_bad_params_name_the_field(kwargs, field) -> None:
    with pytest.raises(ConfigError, match=field):
        TrackerParams(**kwargs)


def test_lost_buffer_scales_with_frame_rate() -> None:
    assert TrackerParams(lost_track_buffer=30, frame_rate=30).max_frames_lost == 30
    assert TrackerParams(lost_track_buffer=30, frame_rate=60).max_frames_lost == 60
    assert TrackerParams(lost_track_buffer=0, frame_rate=60).max_frames_lost == 0


def churn(frames: int, slots: int = 3, seed: int = 0) -> tuple[int, int, int]:
    """Objects appear (random place, 5–30 frames), vanish (1–20 frames), and a new one takes the slot.
    Returns (largest held_tracks seen, tracks ended, last id)."""
    params = TrackerParams(lost_track_buffer=5, minimum_consecutive_frames=1, track_activation_threshold=0.5)
    tracker = SourceTracker(params)
    rng = np.random.default_rng(seed)
    alive = np.zeros(slots, bool)
    timer = rng.integers(1, 20, slots)
    pos, vel = np.zeros((slots, 2)), np.zeros((slots, 2))
    scores, classes = np.full(slots, 0.9, np.float32), np.zeros(slots, np.int32)
    bound = 2 * slots * (params.max_frames_lost + 2)  # the tracker's lists + this wrapper's id set
    most, ended = 0, 0
    for _ in range(frames):
        timer -= 1
        for k in np.flatnonzero(timer <= 0):
            alive[k] = not alive[k]
            timer[k] = rng.integers(5, 30) if alive[k] else rng.integers(1, 20)
            pos[k], vel[k] = rng.uniform(0, 1000, 2), rng.uniform(-3, 3, 2)
        pos += vel
        boxes = np.concatenate([pos, pos + 50], axis=1)[alive]
        objs = tracker.update(boxes, scores[alive], classes[alive])
        ended += len(objs.finished_ids)
        most = max(most, held_tracks(tracker))
        assert held_tracks(tracker) <= bound
    return most, ended, last_track_id(tracker)


@pytest.mark.parametrize("frames", [10_000])  # longer churn: `stream bench track` / `stream bench soak`
def test_state_stays_bounded_under_constant_churn(frames: int) -> None:
    start = time.perf_counter()
    most, ended, last_id = churn(frames)
    # about one new object per slot every ~28 frames: thousands of tracks came and went
    assert last_id > frames * 3 // 40
    assert ended >= last_id - 2 * 3 * 7  # all but those still held have ended
    assert most <= 2 * 3 * 7
    print(f"{frames} frames: {1e3 * (time.perf_counter() - start) / frames:.3f} ms/frame, held ≤ {most}")
