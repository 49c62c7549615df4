"""Mask state: crops, RLE, keyframe policy, box and flow propagation, the bounded store."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.errors import ProtocolError
from stream.masks.crop import MaskCrop
from stream.masks.geometry import box_iou, clip_boxes
from stream.masks.keyframes import KeyframePolicy, KeyframeReason, TrackView
from stream.masks.propagate import DenseFlow, SoftCrop, warp_by_box, warp_by_flow
from stream.masks.rle import decode, encode, encode_crop
from stream.masks.store import MaskStore


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _disc(height: int, width: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r


# --- RLE -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (240, 320), (3, 1000)])
def test_rle_round_trip(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    for mask in (rng.random(shape) < 0.3, np.zeros(shape, bool), np.ones(shape, bool)):
        rle = encode(mask)
        assert rle["size"] == list(shape) and isinstance(rle["counts"], str)
        out = decode(rle)
        assert out.dtype == bool and out.shape == shape
        np.testing.assert_array_equal(out, mask)
    assert decode({"size": rle["size"], "counts": rle["counts"].encode()}).shape == shape


def test_rle_of_a_crop_equals_rle_of_its_frame() -> None:
    full = _disc(120, 160, 60, 50, 20)
    crop = MaskCrop.from_full(full)
    assert encode_crop(crop, 120, 160) == encode(full)


@pytest.mark.parametrize(
    "bad",
    [
        {"counts": "abc"},
        {"size": [10, 10]},
        {"size": [10, 10], "counts": "0"},
        {"size": [4, 4], "counts": 5},
        None,
    ],
)
def test_rle_decode_rejects_what_is_not_an_rle(bad: object) -> None:
    with pytest.raises(ProtocolError):
        decode(bad)  # type: ignore[arg-type]


def test_rle_decode_rejects_counts_of_another_size() -> None:
    rle = encode(np.ones((10, 10), bool))
    with pytest.raises(ProtocolError, match="do not cover"):
        decode({"size": [20, 20], "counts": rle["counts"]})


# --- crops and boxes -------------------------------------------------------------------


def test_crop_round_trip_and_clipping() -> None:
    full = _disc(100, 120, 40, 30, 15)
    crop = MaskCrop.from_full(full)
    assert crop.mask.shape == (30, 30) and crop.area == full.sum()
    np.testing.assert_array_equal(crop.to_full(100, 120), full)
    np.testing.assert_array_equal(crop.bbox(), [25, 15, 55, 45])
    moved = MaskCrop(crop.mask, -10, 90)  # partly outside: pasted clipped, no error
    assert moved.to_full(100, 120).sum() < crop.area
    assert MaskCrop.from_full(np.zeros((5, 5), bool)).is_empty


def test_clip_boxes() -> None:
    boxes = np.array([[-5, -5, 50, 50], [10, 10, 10, 20], [np.inf, 0, 5, 5], [200, 0, 300, 10], [1, 2, 3, 4]])
    clipped, valid, changed = clip_boxes(boxes, 100, 150)
    assert valid.tolist() == [True, False, False, False, True]
    assert changed.tolist() == [True, False, False, False, False]
    np.testing.assert_array_equal(clipped[0], [0, 0, 50, 50])


# --- keyframe policy -------------------------------------------------------------------


def test_keyframe_reasons() -> None:
    policy = KeyframePolicy(interval=10, drift_iou=0.5, appearance_ncc=0.6)
    box = np.array([0, 0, 10, 10], np.float32)
    assert policy.needs_mask(TrackView(box, has_mask=False)) is KeyframeReason.NEW
    assert (
        policy.needs_mask(TrackView(box, age=3, missed=2, has_mask=True, key_box=box))
        is KeyframeReason.REFOUND
    )
    assert policy.needs_mask(TrackView(box, age=10, has_mask=True, key_box=box)) is KeyframeReason.INTERVAL
    assert policy.needs_mask(TrackView(box + 6, age=3, has_mask=True, key_box=box)) is KeyframeReason.DRIFT
    assert (
        policy.needs_mask(TrackView(box + 1, age=3, appearance=0.2, has_mask=True, key_box=box))
        is KeyframeReason.APPEARANCE
    )
    assert policy.needs_mask(TrackView(box + 1, age=9, appearance=0.9, has_mask=True, key_box=box)) is None
    assert (
        KeyframePolicy(interval=None, drift_iou=None).needs_mask(
            TrackView(box + 9, age=999, has_mask=True, key_box=box)
        )
        is None
    )
    with pytest.raises(ValueError, match="interval"):
        KeyframePolicy(interval=0)
    with pytest.raises(ValueError, match="drift_iou"):
        KeyframePolicy(drift_iou=1.5)


# --- propagation -----------------------------------------------------------------------


def test_box_motion_follows_translation_and_scale() -> None:
    key = _disc(480, 640, 200, 150, 40)
    key_box = MaskCrop.from_full(key).bbox()
    want = _disc(480, 640, 420, 300, 60)  # moved and 1.5× larger
    box = MaskCrop.from_full(want).bbox()
    assert key_box is not None and box is not None
    out = warp_by_box(MaskCrop.from_full(key), key_box, box, 480, 640)
    assert _iou(out.to_full(480, 640), want) > 0.97
    gone = warp_by_box(MaskCrop.from_full(key), key_box, np.array([700, 500, 760, 560], np.float32), 480, 640)
    assert gone.is_empty


def _textured(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(height // 8, width // 8)).astype(np.float32)
    return np.clip(
        128 + 40 * cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC), 0, 255
    ).astype(np.uint8)


def test_flow_follows_a_textured_object() -> None:
    h, w = 240, 320
    background, texture = _textured(h, w, 1), _textured(h, w, 2)
    frames, masks = [], []
    for t in range(6):  # a disc of its own texture sliding right 4 px per frame over a static background
        mask = _disc(h, w, 100 + 4 * t, 120, 40)
        frame = background.copy()
        frame[mask] = np.roll(texture, 4 * t, axis=1)[mask]
        frames.append(frame)
        masks.append(mask)
    flow = DenseFlow(max_side=320)
    soft = SoftCrop.from_crop(MaskCrop.from_full(masks[0]))
    prev, _ = flow.prepare(frames[0])
    for t in range(1, 6):
        cur, scale = flow.prepare(frames[t])
        box = MaskCrop.from_full(masks[t]).bbox()
        assert box is not None
        soft = warp_by_flow(soft, flow.backward(cur, prev, scale), box, h, w)
        prev = cur
    out = soft.to_crop().to_full(h, w)
    assert _iou(out, masks[5]) > 0.88
    ys, xs = np.nonzero(out)
    # The disc moved 20 px; the mask's centre follows it (the trailing edge lags inside the box margin).
    assert 115 < xs.mean() + 0.5 <= 121 and abs(ys.mean() + 0.5 - 120) < 1


# --- store -----------------------------------------------------------------------------


def _frame(store: MaskStore, ids: list[int], boxes: np.ndarray, masks: list[MaskCrop] | None = None):  # type: ignore[no-untyped-def]
    """One frame with keyframe masks made by ``masks`` (or a full box when None)."""
    store.begin_frame(240, 320)
    plan = store.plan(ids, boxes)
    idx = plan.keyframe
    crops = [
        masks[i]
        if masks is not None
        else MaskCrop(np.ones((int(b[3] - b[1]), int(b[2] - b[0])), bool), int(b[0]), int(b[1]))
        for i, b in zip(idx, plan.boxes[idx], strict=True)
    ]
    store.update_keyframe(np.asarray(ids)[idx], plan.boxes[idx], crops, reasons=plan.reasons)
    store.propagate(np.asarray(ids)[plan.propagate], plan.boxes[plan.propagate])
    return plan


def test_store_kind_age_and_interval() -> None:
    store = MaskStore("cam0", KeyframePolicy(interval=3, drift_iou=None))
    box = np.array([[10, 10, 50, 40]], np.float32)
    kinds = []
    for t in range(7):
        _frame(store, [5], box + [t, 0, t, 0])
        held = store.get(5)
        assert held is not None
        kinds.append((held.kind, held.age))
    assert kinds == [("keyframe", 0), ("propagated", 1), ("propagated", 2), ("keyframe", 0),
                     ("propagated", 1), ("propagated", 2), ("keyframe", 0)]  # fmt: skip
    assert store.stats.reasons["new"] == 1 and store.stats.reasons["interval"] == 2
    full = store.full_mask(5)
    assert full is not None and full.shape == (240, 320) and full[10:40, 16:56].all()


def test_store_drift_and_refound_triggers() -> None:
    store = MaskStore("cam0", KeyframePolicy(interval=100, drift_iou=0.5))
    box = np.array([[10, 10, 50, 50]], np.float32)
    _frame(store, [1], box)
    assert _frame(store, [1], box + 5).keyframe.size == 0  # IoU 0.6: propagated
    plan = _frame(store, [1], box + 30)  # IoU with the keyframe box < 0.5
    assert plan.reasons == [KeyframeReason.DRIFT]
    store.begin_frame(240, 320)  # the track is absent for a frame
    plan = _frame(store, [1], box + 30)
    assert plan.reasons == [KeyframeReason.REFOUND]


def test_finished_tracks_free_their_masks() -> None:
    store = MaskStore("cam0", KeyframePolicy(), max_missed=2)
    boxes = np.array([[10, 10, 50, 50], [100, 100, 150, 150]], np.float32)
    _frame(store, [1, 2], boxes)
    assert len(store) == 2
    assert store.free([2, 99]) == 1 and 2 not in store
    for _ in range(3):
        _frame(store, [], np.zeros((0, 4), np.float32))  # frames without tracks
    assert len(store) == 0 and store.stats.expired == 1


def test_thousands_of_tracks_hit_the_cap_and_are_counted() -> None:
    store = MaskStore("cam0", KeyframePolicy(), max_masks=64)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 300, size=(3000, 2)).astype(np.float32)
    wh = rng.uniform(2, 20, size=(3000, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], axis=1)
    t0 = time.perf_counter()
    plan = _frame(store, list(range(3000)), boxes)
    _frame(store, list(range(3000)), boxes)
    assert time.perf_counter() - t0 < 10
    assert len(store) == 64 and plan.keyframe.size == 64
    areas = (plan.boxes[:, 2] - plan.boxes[:, 0]) * (plan.boxes[:, 3] - plan.boxes[:, 1])
    assert areas[plan.keyframe].min() >= np.sort(areas)[-64]  # the largest new tracks got the slots
    assert plan.refused.size + plan.skipped.size == 3000 - 64
    assert store.stats.refused >= 2 * plan.refused.size


def test_bad_boxes_are_skipped_and_counted() -> None:
    store = MaskStore("cam0", KeyframePolicy())
    boxes = np.array([[10, 10, 50, 50], [400, 300, 500, 400], [5, 5, 5, 30], [-20, -20, 30, 30]], np.float32)
    plan = _frame(store, [1, 2, 3, 4], boxes)
    assert sorted(plan.skipped.tolist()) == [1, 2] and store.stats.skipped_boxes == 2
    np.testing.assert_array_equal(plan.boxes[3], [0, 0, 30, 30])
    assert 1 in store and 4 in store and 2 not in store
    plan = _frame(store, [1, 1], boxes[:2])  # a repeated id is skipped, not a crash
    assert plan.skipped.tolist() == [1]


def test_flow_store_falls_back_to_box_motion_on_its_first_frame() -> None:
    store = MaskStore("cam0", KeyframePolicy(interval=None, drift_iou=None), method="flow")
    image = np.dstack([_textured(240, 320, 3)] * 3)
    box = np.array([[50, 50, 100, 100]], np.float32)
    store.begin_frame(240, 320)  # no pixels: nothing to take flow from later
    plan = store.plan([1], box)
    store.update_keyframe([1], plan.boxes, [MaskCrop(np.ones((50, 50), bool), 50, 50)])
    store.begin_frame(240, 320, image)
    store.propagate([1], box + 2)
    assert store.stats.flow_fallbacks == 1
    held = store.get(1)
    assert held is not None and held.kind == "propagated" and held.crop.rect == (52, 52, 102, 102)
    store.begin_frame(240, 320, image)  # same pixels: zero flow, the mask stays
    store.propagate([1], box + 2)
    held = store.get(1)
    assert held is not None and held.soft is not None and store.stats.flow_fallbacks == 1
    assert box_iou(held.crop.bbox(), box[0] + 2) > 0.9  # type: ignore[arg-type]


def test_appearance_trigger_sees_change_inside_an_unchanged_box() -> None:
    store = MaskStore("cam0", KeyframePolicy(interval=None, drift_iou=None, appearance_ncc=0.6))
    h, w = 240, 320
    background, texture, other = _textured(h, w, 4), _textured(h, w, 5), _textured(h, w, 6)
    mask = _disc(h, w, 160, 120, 50)
    box = MaskCrop.from_full(mask).bbox()
    assert box is not None

    def frame(tex: np.ndarray, shift: int = 0) -> np.ndarray:
        img = background.copy()
        moved = np.roll(mask, shift, axis=1)
        img[moved] = np.roll(tex, shift, axis=1)[moved]
        return img

    reasons = []
    for img, b in [
        (frame(texture), box),
        (frame(texture, 6), box + [6, 0, 6, 0]),
        (frame(other, 6), box + [6, 0, 6, 0]),
    ]:
        store.begin_frame(h, w, img)
        plan = store.plan([1], b[None])
        reasons.append([r.value for r in plan.reasons])
        store.update_keyframe(
            np.array([1])[plan.keyframe],
            plan.boxes[plan.keyframe],
            [MaskCrop.from_full(mask)] * plan.keyframe.size,
        )
        store.propagate(np.array([1])[plan.propagate], plan.boxes[plan.propagate])
    # same object moved with its box: propagated; another object in the same box: a new mask
    assert reasons == [["new"], [], ["appearance"]]


def test_record_sidecar_and_predict_encode_masks_from_crops_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """One RLE path (crop → counts) for publish, record and predict: equal to pycocotools on the
    full mask, and no (H, W) mask is ever built for it (48 ms per 1080p frame with 20 masks)."""
    from stream.objects import ObjectMasks
    from stream.sinks.segments import objects_json

    rng = np.random.default_rng(3)
    height, width = 1080, 1920
    crops, boxes = [], []
    for x0, y0, w, h in ((10, 20, 200, 300), (1800, 900, 200, 250), (-30, -10, 80, 60), (500, 400, 1, 1)):
        crops.append(rng.random((h, w)) > 0.4)
        boxes.append((x0, y0, x0 + w, y0 + h))
    masks = ObjectMasks.pack(crops, np.array(boxes), np.zeros(4, np.uint8), np.zeros(4, np.int32))
    expected = [encode(masks.full_mask(i, height, width)) for i in range(4)]
    arrays = {"boxes": np.array(boxes, np.float32), "scores": np.full(4, 0.5, np.float32),
              "class_ids": np.zeros(4, np.int32), "track_ids": np.arange(4), **masks.to_arrays()}

    def no_full_frame(*args: object, **kwargs: object) -> None:
        raise AssertionError("a full-frame mask was built")

    monkeypatch.setattr(ObjectMasks, "full_mask", no_full_frame)
    monkeypatch.setattr(MaskCrop, "to_full", no_full_frame)
    got = [o["mask"] for o in objects_json(arrays, height, width, masks=True)]  # the record sidecar
    assert got == expected
    assert [encode_crop(MaskCrop(c, b[0], b[1]), height, width) for c, b in zip(crops, boxes, strict=True)] == expected

    # the publish sink's records
    from types import MappingProxyType

    from stream.messages import Frame, FrameHeader
    from stream.sinks.publish import frame_record

    frame = Frame(FrameHeader("cam", 0, 0, (1, 30), 0), MappingProxyType(arrays), np.zeros((height, width, 3), np.uint8))
    record = frame_record(frame, 0, ["thing"])
    assert [{"size": list(o.rle.size), "counts": o.rle.counts} for o in record.objects if o.rle] == expected

    # predict's COCO results
    from stream.models.detections import Detections
    from stream.predict import ImagePrediction, _CocoWriter

    writer = _CocoWriter(["thing"])
    det = Detections(np.array(boxes, np.float32), np.full(4, 0.5, np.float32), np.zeros(4, np.int32))
    writer.add(Path("a.jpg"), "a.jpg", ImagePrediction(np.zeros((height, width, 3), np.uint8), det,
                                                        [MaskCrop(c, b[0], b[1]) for c, b in zip(crops, boxes, strict=True)]))
    assert [r["segmentation"] for r in writer.results] == expected
