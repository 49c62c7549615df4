"""The synthetic video: deterministic, exact ground truth, occlusion, churn, nonrigid motion."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Literal

import cv2
import numpy as np
import pytest

from stream.errors import ConfigError
from stream.sources.synthetic import (
    CLASS_NAMES,
    GroundTruth,
    SyntheticParams,
    SyntheticScene,
    SyntheticSource,
)


def small(**kw: Any) -> SyntheticParams:
    """320x180: geometry scales with the frame, so the same scene, cheaper."""
    return SyntheticParams(width=320, height=180, **kw)


def clip_truth(params: SyntheticParams, step: int = 1) -> list[GroundTruth]:
    scene = SyntheticScene(params)
    return [scene.ground_truth(i) for i in range(0, params.frames or 0, step)]


def assert_truth_equal(a: GroundTruth, b: GroundTruth) -> None:
    for name in ("ids", "class_ids", "boxes", "visibility", "masks", "full_masks"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_same_seed_gives_the_same_video_in_any_order() -> None:
    params = small(motion="nonrigid")
    a, b = SyntheticScene(params), SyntheticScene(params)
    indices = [0, 57, 123, 299]
    first = {i: a.render_with_truth(i) for i in indices}
    for i in reversed(indices):  # no state carried between calls
        image, gt = first[i]
        np.testing.assert_array_equal(b.render(i), image)
        assert_truth_equal(b.ground_truth(i), gt)


def test_different_seeds_differ() -> None:
    a = SyntheticScene(small(seed=0))
    b = SyntheticScene(small(seed=1))
    assert not np.array_equal(a.background(), b.background())
    ga, gb = a.ground_truth(10), b.ground_truth(10)
    assert len(ga) != len(gb) or not np.array_equal(ga.boxes, gb.boxes)


def test_truth_is_consistent_with_itself_and_the_pixels() -> None:
    params = small()
    scene = SyntheticScene(params)
    for index in (0, 80, 160, 240):
        image, gt = scene.render_with_truth(index)
        n = len(gt)
        assert image.shape == (180, 320, 3) and image.dtype == np.uint8 and image.flags["C_CONTIGUOUS"]
        assert gt.ids.dtype == np.int64 and gt.class_ids.dtype == np.int32 and gt.boxes.dtype == np.float32
        assert gt.masks.shape == gt.full_masks.shape == (n, 180, 320) and gt.masks.dtype == bool
        assert len(set(gt.ids.tolist())) == n and (gt.ids >= 1).all()
        assert ((gt.class_ids >= 0) & (gt.class_ids < len(CLASS_NAMES))).all()
        for box, mask, full, vis in zip(gt.boxes, gt.masks, gt.full_masks, gt.visibility, strict=True):
            ys, xs = np.nonzero(mask)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # tight, pixel edges
            assert not (mask & ~full).any()
            assert vis == pytest.approx(mask.sum() / full.sum())
        # visible masks do not overlap; a back row is hidden exactly where a front row's shape is
        assert (gt.masks.sum(axis=0) <= 1).all()
        for i in range(n):
            np.testing.assert_array_equal(gt.masks[i], gt.full_masks[i] & ~gt.full_masks[i + 1 :].any(axis=0))
        # outside every object the frame is the background, untouched
        outside = ~gt.full_masks.any(axis=0)
        np.testing.assert_array_equal(image[outside], scene.background()[outside])


def test_occlusion_happens_in_a_default_clip() -> None:
    truths = clip_truth(small(), step=3)
    partly_hidden = [(gt.index, float(v)) for gt in truths for v in gt.visibility if v < 0.9]
    assert len(partly_hidden) >= 5, partly_hidden
    # and with occlusion=False nothing is ever hidden (every object keeps its lane)
    for gt in clip_truth(small(occlusion=False, motion="nonrigid"), step=10):
        assert (gt.visibility == 1.0).all()


def test_churn_brings_new_ids_and_never_reuses_one() -> None:
    params = small(num_objects=4)
    truths = clip_truth(params, step=2)
    seen: dict[int, list[int]] = defaultdict(list)
    classes: dict[int, set[int]] = defaultdict(set)
    for gt in truths:
        for oid, cid in zip(gt.ids.tolist(), gt.class_ids.tolist(), strict=True):
            seen[oid].append(gt.index)
            classes[oid].add(cid)
    assert len(seen) >= params.num_objects + 3  # objects left and new ones came
    assert all(len(c) == 1 for c in classes.values())  # an id always names the same object
    first = {oid: frames[0] for oid, frames in seen.items()}
    assert sum(f > 0 for f in first.values()) >= 3
    # an endless video keeps minting fresh ids: nothing an hour in was seen at the start
    endless = SyntheticScene(small(num_objects=4, frames=None))
    late = endless.ground_truth(30 * 3600)
    assert len(late) > 0 and not set(late.ids.tolist()) & set(seen)
    # without churn the objects are 1..num_objects for the whole clip
    fixed = clip_truth(small(num_objects=4, churn=False), step=30)
    assert set().union(*(gt.ids.tolist() for gt in fixed)) <= {1, 2, 3, 4}


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def mask_moved_with_box(mask: np.ndarray, box: np.ndarray, new_box: np.ndarray) -> np.ndarray:
    """What a tracker that only follows boxes predicts: the old mask stretched into the new box."""
    x0, y0, x1, y1 = box.astype(int)
    nx0, ny0, nx1, ny1 = new_box.astype(int)
    crop = mask[y0:y1, x0:x1].astype(np.uint8)
    out = np.zeros_like(mask)
    out[ny0:ny1, nx0:nx1] = cv2.resize(crop, (nx1 - nx0, ny1 - ny0), interpolation=cv2.INTER_NEAREST) > 0
    return out


def box_follow_errors(motion: Literal["rigid", "nonrigid"], seed: int = 0) -> list[tuple[float, float]]:
    """(box IoU, mask IoU of the box-moved mask) for each object between frames 6 apart."""
    params = SyntheticParams(
        width=1280, height=720, seed=seed, motion=motion, occlusion=False, churn=False, frames=120
    )
    truths = clip_truth(params, step=6)
    pairs = []
    for a, b in zip(truths, truths[1:], strict=False):
        for i, oid in enumerate(a.ids):
            (j,) = np.flatnonzero(b.ids == oid)
            guess = mask_moved_with_box(a.masks[i], a.boxes[i], b.boxes[j])
            iou = (guess & b.masks[j]).sum() / (guess | b.masks[j]).sum()
            pairs.append((box_iou(a.boxes[i], b.boxes[j]), float(iou)))
    return pairs


def test_nonrigid_changes_the_mask_inside_a_nearly_constant_box() -> None:
    rigid = np.array(box_follow_errors("rigid"))
    # rigid: the box carries the mask (up to rasterisation of small shapes)
    assert np.percentile(rigid[:, 1], 5) > 0.85 and np.median(rigid[:, 1]) > 0.9
    nonrigid = np.array(box_follow_errors("nonrigid"))
    assert np.percentile(nonrigid[:, 1], 5) < 0.75
    still_box_wrong_mask = nonrigid[(nonrigid[:, 0] > 0.85) & (nonrigid[:, 1] < 0.7)]
    assert len(still_box_wrong_mask) >= 1, nonrigid


def test_source_yields_frames_with_truth_and_resumes() -> None:
    params = small(frames=12, fps=25)
    src = SyntheticSource(params)
    info = src.open()
    assert (info.width, info.height, info.fps, info.frame_count, info.live) == (320, 180, 25.0, 12, False)
    assert info.time_base == pytest.approx(1 / 25)
    frames = list(src.frames())
    assert [f.pts for f in frames] == list(range(12))
    scene = SyntheticScene(params)
    np.testing.assert_array_equal(frames[5].image, scene.render(5))
    assert_truth_equal(frames[5].extra["ground_truth"], scene.ground_truth(5))
    assert [f.pts for f in src.frames(9)] == [9, 10, 11]


def test_live_source_paces_and_skips_frames_a_slow_reader_missed() -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    src = SyntheticSource(small(fps=10, live=True, frames=None), clock=lambda: now[0], sleep=sleep)
    assert src.open().live
    gen = src.frames(3)
    got = []
    for _ in range(3):
        got.append((next(gen).pts, now[0]))
    assert got == [(3, 0.0), (4, pytest.approx(0.1)), (5, pytest.approx(0.2))]
    now[0] += 0.55  # the reader was busy for 5.5 frame periods
    assert next(gen).pts == 10 and src.dropped == 4


@pytest.mark.parametrize(
    ("field", "value"),
    [("width", 0), ("fps", 0.0), ("num_objects", -1), ("frames", -5), ("motion", "wobbly")],
)
def test_bad_params_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"synthetic.{field}"):
        SyntheticParams(**{field: value})  # type: ignore[arg-type]


def test_render_speed_1080p(record_property: Callable[[str, object], None]) -> None:
    """Measured and reported (-s or the JUnit XML), not asserted: CI machines vary."""
    scene = SyntheticScene(SyntheticParams(width=1920, height=1080))
    scene.render_with_truth(0)  # background and textures
    t0 = time.perf_counter()
    for i in range(1, 31):
        image = scene.render(i)
    render_ms = (time.perf_counter() - t0) / 30 * 1e3
    t0 = time.perf_counter()
    for i in range(1, 31):
        scene.ground_truth(i)
    truth_ms = (time.perf_counter() - t0) / 30 * 1e3
    record_property("render_1080p_ms", round(render_ms, 2))
    record_property("ground_truth_1080p_ms", round(truth_ms, 2))
    print(f"synthetic 1080p: render {render_ms:.2f} ms/frame, ground_truth {truth_ms:.2f} ms/frame")
    assert image.shape == (1080, 1920, 3)
