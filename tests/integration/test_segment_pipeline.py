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
