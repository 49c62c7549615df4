"""Annotator: what it draws, where, in which colour, and that it never touches its input."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from stream.config import load_config
from stream.errors import ConfigError
from stream.messages import Frame, FrameHeader
from stream.objects import ObjectMasks
from stream.render import BANNER_BGR, Annotator, RenderConfig, banner_height, build_annotator

H, W = 360, 640
MASKS_ONLY = RenderConfig(boxes=False, labels=False, traces=False, status=False, mask_alpha=0.5)


def trace_count(annotator: Annotator, source: str) -> int:
    """Tracks of ``source`` whose trace the annotator keeps (bounded by trace_ttl_frames)."""
    state = annotator._sources.get(source)
    return len(state.traces) if state is not None else 0


def ellipse(h: int, w: int) -> np.ndarray:
    c = np.zeros((h, w), np.uint8)
    cv2.ellipse(c, (w // 2, h // 2), (max(1, w // 2 - 2), max(1, h // 2 - 2)), 0, 0, 360, 1, -1)
    return c.astype(bool)


def make_frame(
    objects: list[tuple[int, tuple[int, int, int, int]]],
    *,
    seq: int = 0,
    masks: bool = True,
    random_weights: bool = False,
    image: np.ndarray | None = None,
) -> Frame:
    """objects: (track id, crop box XYXY int) — the box is the crop, the mask an ellipse in it."""
    if image is None:
        image = np.full((H, W, 3), 128, np.uint8)
        image.flags.writeable = False  # like a shared-memory view
    header = FrameHeader(
        source="cam", seq=seq, pts=seq, time_base=(1, 25), capture_ns=0, random_weights=random_weights
    )
    n = len(objects)
    boxes = np.array([b for _, b in objects], np.float32).reshape(n, 4)
    arrays: dict[str, Any] = dict(
        boxes=boxes,
        scores=np.full(n, 0.9, np.float32),
        class_ids=np.zeros(n, np.int32),
        track_ids=np.array([t for t, _ in objects], np.int64),
    )
    if masks:
        crops = [ellipse(y2 - y1, x2 - x1) for _, (x1, y1, x2, y2) in objects]
        packed = ObjectMasks.pack(crops, boxes.astype(np.int32), np.zeros(n, np.uint8), np.zeros(n, np.int32))
        arrays.update(packed.to_arrays())
    return Frame(header, image=image).evolve(**arrays)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a != b).any(axis=2)


def test_masks_change_exactly_their_pixels_and_input_is_untouched() -> None:
    frame = make_frame([(1, (100, 50, 200, 170)), (2, (400, 200, 480, 300))])
    assert frame.image is not None
    before = frame.image.copy()
    out = Annotator(MASKS_ONLY)(frame)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert not np.shares_memory(out, frame.image)
    np.testing.assert_array_equal(frame.image, before)
    expected = np.zeros((H, W), bool)
    expected[50:170, 100:200] = ellipse(120, 100)
    expected[200:300, 400:480] = ellipse(100, 80)
    np.testing.assert_array_equal(changed(out, before), expected)


def test_boxes_labels_and_status_are_drawn_with_all_defaults() -> None:
    frame = make_frame([(5, (100, 100, 300, 250))], masks=False)
    out = Annotator()(frame)
    assert frame.image is not None
    diff = changed(out, frame.image)
    assert diff[100:251, 100].all() and diff[100:251, 300].all()  # left and right edges of the box
    assert diff[80:100, 100:160].any()  # the label above the box
    assert diff[:12, :200].any()  # the status line
    assert not diff[260:, 320:].any()  # nothing where there is no object
    np.testing.assert_array_equal(frame.image, np.full((H, W, 3), 128, np.uint8))


def mask_colour(out: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, ...]:
    x1, y1, x2, y2 = box
    return tuple(int(v) for v in out[(y1 + y2) // 2, (x1 + x2) // 2])


def test_a_track_keeps_its_colour_across_frames_and_runs() -> None:
    annotate = Annotator(MASKS_ONLY)
    a1, b1 = (50, 50, 150, 150), (300, 50, 400, 150)
    out1 = annotate(make_frame([(7, a1), (3, b1)], seq=0))
    a2, c2 = (400, 200, 520, 330), (100, 200, 200, 300)
    out2 = annotate(make_frame([(9, c2), (7, a2)], seq=1))  # moved, other neighbours, other index
    assert mask_colour(out1, a1) == mask_colour(out2, a2)
    assert mask_colour(out1, a1) != mask_colour(out1, b1)
    assert mask_colour(out2, c2) not in (mask_colour(out1, a1), mask_colour(out1, b1))
    again = Annotator(MASKS_ONLY)(make_frame([(7, a2)], seq=5))  # a new annotator, same colour
    assert mask_colour(again, a2) == mask_colour(out2, a2)


@pytest.mark.parametrize("flag", [True, False])
def test_random_weights_banner_only_when_flagged(flag: bool) -> None:
    annotate = Annotator()
    out = annotate(make_frame([], random_weights=flag))
    is_banner = (out == np.array(BANNER_BGR, np.uint8)).all(axis=2)
    rows = banner_height(annotate, H)
    if flag:
        assert 10 < rows < H // 4
        assert is_banner[H - rows :].mean() > 0.5  # a red band along the bottom (white text on it)
        assert not is_banner[: H - rows].any()
    else:
        assert not is_banner.any()


def test_no_crash_on_empty_maskless_and_out_of_frame_objects() -> None:
    annotate = Annotator()
    plain = np.full((H, W, 3), 128, np.uint8)
    assert annotate(Frame(FrameHeader("cam", 0, 0, (1, 25), 0), image=plain)).shape == (H, W, 3)  # no arrays
    assert annotate(make_frame([], seq=1)).shape == (H, W, 3)  # zero objects, empty mask arrays
    assert annotate(make_frame([(1, (10, 10, 50, 50))], seq=2, masks=False)).shape == (H, W, 3)
    outside = [
        (1, (-40, -30, 20, 25)),
        (2, (W - 10, H - 10, W + 50, H + 60)),
        (3, (W + 100, 10, W + 200, 90)),
    ]
    out = annotate(make_frame(outside, seq=3))  # crops partly or wholly outside the frame
    assert out.shape == (H, W, 3)
    assert changed(out, np.full((H, W, 3), 128, np.uint8))[H // 2 - 5 : H // 2 + 5, W - 6 :].sum() == 0
    frame = make_frame([(1, (10, 10, 50, 50))], seq=4, masks=False)
    wild = np.array([[np.nan, 0, 10, 10], [-1e12, 5, 1e12, 40], [np.inf, 0, np.inf, 9]], np.float32)
    frame = frame.evolve(
        boxes=wild,
        scores=np.ones(3, np.float32),
        class_ids=np.array([0, 500, -1], np.int32),
        track_ids=np.array([1, 2, 3], np.int64),
    )
    assert annotate(frame).shape == (H, W, 3)
    with pytest.raises(ValueError, match="no image"):
        annotate(Frame(FrameHeader("cam", 9, 0, (1, 25), 0)))


def test_traces_of_finished_tracks_are_freed() -> None:
    annotate = Annotator(RenderConfig(trace_ttl_frames=5))
    for seq in range(10):
        boxes = [(t, (20 + 5 * seq + 100 * t, 50, 60 + 5 * seq + 100 * t, 90)) for t in (1, 2, 3)]
        annotate(make_frame(boxes, seq=seq, masks=False))
    assert trace_count(annotate, "cam") == 3
    for seq in range(10, 16):
        annotate(make_frame([(1, (20 + 5 * seq, 50, 60 + 5 * seq, 90))], seq=seq, masks=False))
    assert trace_count(annotate, "cam") == 1
    out = annotate(make_frame([(1, (100, 50, 140, 90))], seq=16, masks=False))
    assert changed(out, np.full((H, W, 3), 128, np.uint8))[68:73, 60:100].any()  # the trace behind it
    annotate(make_frame([], seq=0))  # the source restarted (seq went back): its traces start over
    assert trace_count(annotate, "cam") == 0
    annotate.end_source("cam")
    assert trace_count(annotate, "cam") == 0


def test_build_annotator_reads_render_section_and_class_names() -> None:
    base = {
        "sources": [{"id": "cam", "type": "pattern"}],
        "detect": {"class_names": ["cone", "cup"]},
        "render": {"mask_alpha": 0.2, "traces": False},
    }
    annotate = build_annotator(load_config(None, base=base))
    assert annotate.class_names == ("cone", "cup")
    assert annotate.config.mask_alpha == 0.2 and not annotate.config.traces
    with pytest.raises(ConfigError, match=r"render\.mask_colour"):
        build_annotator(load_config(None, base={**base, "render": {"mask_colour": 1}}))
    with pytest.raises(ConfigError, match=r"render\.mask_alpha"):
        build_annotator(load_config(None, base={**base, "render": {"mask_alpha": 3}}))
