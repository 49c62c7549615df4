"""``stream eval masks``: propagation quality on synthetic videos with ground-truth masks.

Keyframe masks are the ground truth (no SAM weights here), boxes are the
ground-truth boxes; what is measured is the propagation and the keyframe policy.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from stream.eval.masks import TruthFrame, compare_adaptive, mixed_truth, run_many, synthetic_truth
from stream.masks.keyframes import KeyframePolicy
from stream.sources.synthetic import SyntheticParams
from tests.conftest import run_stream

SMALL = SyntheticParams(width=320, height=240, frames=90, num_objects=6, seed=0)


@pytest.fixture(scope="module")
def rigid() -> list[TruthFrame]:
    return synthetic_truth(replace(SMALL, motion="rigid"))


@pytest.fixture(scope="module")
def nonrigid() -> list[TruthFrame]:
    return synthetic_truth(replace(SMALL, motion="nonrigid"))


def test_box_motion_keeps_rigid_masks_at_interval_10(rigid: list[TruthFrame]) -> None:
    every, ten = run_many(rigid, [(KeyframePolicy(interval=1, drift_iou=None), "box"),
                                  (KeyframePolicy(interval=10, drift_iou=None), "box")])  # fmt: skip
    assert every.mean_iou == pytest.approx(1.0)  # keyframes are the ground truth itself
    assert ten.mean_iou >= 0.9
    assert ten.keyframe_masks < every.keyframe_masks / 5
    # the score measures propagation: the objects move, so propagated masks are not perfect ...
    assert 0.85 <= ten.propagated_iou < 0.995
    # ... and masks left where the keyframe put them (boxes frozen between keyframes) score clearly lower
    (frozen,) = run_many(frozen_boxes(rigid, 10), [(KeyframePolicy(interval=10, drift_iou=None), "box")])
    assert frozen.keyframe_masks == ten.keyframe_masks
    assert frozen.propagated_iou < ten.propagated_iou - 0.1, (frozen, ten)


def frozen_boxes(frames: list[TruthFrame], interval: int) -> list[TruthFrame]:
    """The frames with each track's box held at its value on the last keyframe (every ``interval``
    frames, or the track's first frame): what a propagation that ignores motion would do."""
    held: dict[int, np.ndarray] = {}
    out = []
    for i, fr in enumerate(frames):
        for track_id, box in zip(fr.ids.tolist(), fr.boxes, strict=True):
            if i % interval == 0 or track_id not in held:
                held[track_id] = box
        boxes = np.array([held[t] for t in fr.ids.tolist()], np.float32).reshape(-1, 4)
        out.append(replace(fr, boxes=boxes))
    return out


def test_optical_flow_beats_box_motion_on_nonrigid_motion(nonrigid: list[TruthFrame]) -> None:
    configs = [(KeyframePolicy(interval=n, drift_iou=None), m) for n in (5, 10) for m in ("box", "flow")]
    box5, flow5, box10, flow10 = run_many(nonrigid, configs)  # type: ignore[arg-type]
    assert flow5.keyframe_masks == box5.keyframe_masks  # same SAM budget
    assert flow5.mean_iou > box5.mean_iou + 0.01
    assert flow10.mean_iou > box10.mean_iou + 0.02


@pytest.mark.parametrize("method", ["box", "flow"])
@pytest.mark.parametrize("motion", ["rigid", "nonrigid"])
def test_adaptive_policy_beats_fixed_interval_at_equal_sam_masks(motion: str, method: str) -> None:
    # Half the objects stand still, half move: a fixed interval spends SAM masks on masks that
    # cannot go stale, the drift trigger spends them where boxes move. (With every object moving
    # alike, as in the plain synthetic videos, both come within ±1 % IoU of each other.)
    frames = mixed_truth(replace(SMALL, width=320, frames=60, num_objects=4, motion=motion))  # type: ignore[arg-type]
    cmp = compare_adaptive(frames, KeyframePolicy(interval=30, drift_iou=0.5), method, max_interval=30)  # type: ignore[arg-type]
    hi, lo = cmp.fixed_intervals
    assert cmp.fixed[hi].keyframe_masks >= cmp.adaptive.keyframe_masks >= cmp.fixed[lo].keyframe_masks
    assert cmp.adaptive.mean_iou > cmp.fixed_iou + 0.001, (cmp.adaptive, cmp.fixed_iou)


def test_cli_json_shape() -> None:
    proc = run_stream(
        "eval", "masks", "--json", "--width", "160", "--height", "120", "--frames", "20",
        "--intervals", "1,10", "--no-adaptive",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    table = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(table) == {"rigid", "nonrigid"}
    for by_method in table.values():
        assert set(by_method) == {"box", "flow"}
        for by_interval in by_method.values():
            assert set(by_interval) == {"1", "10"}
            assert by_interval["1"] == pytest.approx(1.0)
            assert 0.0 < by_interval["10"] < 1.0  # objects move between keyframes
