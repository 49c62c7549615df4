"""The segment stage in the real pipeline with a tiny SAM built from
segment-anything's own classes (random weights: masks are not segmentations;
what is checked is the keyframe/propagation machinery and the wire format)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from stream.client import FrameRecord, Subscriber
from tests.conftest import free_port, start_stream

pytestmark = pytest.mark.timeout(600)


def test_mot_boxes_tracked_and_segmented_then_published(tmp_path: Path):
    det = tmp_path / "det.txt"
    rows = []
    for f in range(1, 41):
        for i, (x0, dx) in enumerate(((20, 3), (150, 2))):
            rows.append(f"{f},-1,{x0 + dx * f},{40 + 60 * i},40,50,0.9,-1,-1,-1")
    det.write_text("\n".join(rows) + "\n")
    pub_port = free_port()
    cfg = {
        "sources": [{"id": "seq", "type": "mot", "path": str(det)}],
        "pipeline": ["track", "segment"],
        "track": {"minimum_consecutive_frames": 1},
        "segment": {"model": "tiny", "interval": 10, "device": "cpu"},
        "sinks": {"jsonl": {"path": str(tmp_path / "f.jsonl")},
                  "publish": {"endpoint": f"tcp://127.0.0.1:{pub_port}"}},
        "metrics": {"port": free_port()},
        "supervisor": {"drain_idle_s": 30},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    sub = Subscriber(f"tcp://127.0.0.1:{pub_port}")
    proc = start_stream("run", str(tmp_path / "c.yaml"), "--random-weights")
    records = []
    try:
        while len(records) < 30:
            rec = sub.recv(timeout_s=120)
            if rec is None:
                break
            if isinstance(rec, FrameRecord):
                records.append(rec)
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
        sub.close()
    assert proc.returncode == 0, err[-3000:]
    assert len(records) >= 30, err[-3000:]
    assert all(r.random_weights for r in records)
    kinds = [o.mask_kind for r in records for o in r.objects]
    ages = [o.mask_age for r in records for o in r.objects if o.mask_kind == "propagated"]
    # new tracks get keyframe masks, then masks are carried; refreshed every 10 frames
    assert kinds.count("keyframe") >= 4 and kinds.count("propagated") > kinds.count("keyframe")
    assert max(ages) <= 10
    for r in records:
        for o in r.objects:
            if o.rle is not None:
                assert o.mask().shape == (r.height, r.width)
    lines = [json.loads(x) for x in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert len(lines) == 40 and np.mean([x["objects"] for x in lines]) == pytest.approx(2, abs=0.2)


class _SlowSegmenter:
    """A real tiny SAM behind a delay: what a big SAM on a slow device looks like."""

    def __init__(self, inner, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s

    def embed(self, image):
        import time

        time.sleep(self.delay_s)
        return self.inner.embed(image)

    def segment(self, emb, boxes, multimask=False):
        return self.inner.segment(emb, boxes, multimask=multimask)


def _live_frames(stage, n_max: int, stop_after_mask: int | None = 5):
    """Feed a moving box at ~30 fps; returns (kinds, ages, worst wait in s)."""
    import time

    from stream.messages import Frame, FrameHeader

    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    kinds, ages, worst = [], [], 0.0
    for seq in range(n_max):
        box = np.array([[40 + seq % 100, 50, 120 + seq % 100, 150]], np.float32)
        f = Frame(FrameHeader("cam", seq, seq, (1, 30), 0), image=image).evolve(
            boxes=box, scores=np.ones(1, np.float32), class_ids=np.zeros(1, np.int32),
            track_ids=np.array([1], np.int64))
        t0 = time.perf_counter()
        out = stage.process(f)
        worst = max(worst, time.perf_counter() - t0)
        kinds.append(int(out.arrays["mask_kind"][0]))
        ages.append(int(out.arrays["mask_age"][0]))
        if stop_after_mask is not None and kinds.count(1) >= stop_after_mask:
            break
        time.sleep(1 / 30)
    return kinds, ages, worst


def _slow_stage(max_lag_frames: int):
    from stream.models.sam import SamSegmenter, build_sam
    from stream.stages.segment import SegmentConfig, SegmentStage

    seg = _SlowSegmenter(SamSegmenter(build_sam("tiny", None, random_seed=0, device="cpu")), delay_s=0.5)
    return SegmentStage(seg, SegmentConfig(model="tiny", interval=1000, max_lag_frames=max_lag_frames),
                        live_sources=frozenset({"cam"}))


def test_on_a_live_source_sam_never_holds_a_frame_back():
    stage = _slow_stage(max_lag_frames=10_000)
    kinds, ages, worst = _live_frames(stage, n_max=600)
    stage.close()
    assert worst < 0.25, f"a frame waited {worst:.2f} s for SAM"
    assert kinds[0] == 2  # no mask yet: SAM is still working on the first keyframe
    first_mask = next(i for i, k in enumerate(kinds) if k != 2)
    assert first_mask >= 5  # SAM took ≥ 0.5 s: the frames in between went on without it
    assert kinds[first_mask] == 1 and ages[first_mask] >= first_mask  # moved to this frame; aged from SAM's frame
    assert all(k == 1 for k in kinds[first_mask:])  # carried on every frame since


def test_a_keyframe_later_than_the_lag_budget_is_discarded():
    stage = _slow_stage(max_lag_frames=2)
    kinds, _, worst = _live_frames(stage, n_max=90, stop_after_mask=None)
    stage.close()
    assert worst < 0.25
    assert set(kinds) == {2} and stage.stale_keyframes >= 1
