"""Stages pay their one-time costs in ``start()``, not on a source's first frame.

A lazy import on the first frame held that frame (and every frame queued behind it)
for seconds on a CPU: ``trackers`` took ~3 s of CPU to import in the track stage,
inside the benchmark's measured window. Each check runs in a fresh interpreter, so
nothing another test imported hides a lazy import.
"""

from __future__ import annotations

import json
import subprocess
import sys

_TRACK = """
import json, sys
import numpy as np
from stream.messages import Frame, FrameHeader
from stream.models.tracker import TrackerParams
from stream.stages.track import TrackStage

stage = TrackStage(TrackerParams(track_activation_threshold=0.0, minimum_consecutive_frames=2))
stage.start()
before = set(sys.modules)
for seq in range(2):  # a track is born, then confirmed
    frame = Frame(FrameHeader("cam", seq, seq, (1, 10), 0)).evolve(
        boxes=np.array([[10, 10, 60, 90]], np.float32), scores=np.ones(1, np.float32),
        class_ids=np.zeros(1, np.int32))
    out = stage.process(frame)
print(json.dumps({"new": sorted(set(sys.modules) - before), "tracks": out.arrays["track_ids"].tolist()}))
"""

_SEGMENT = """
import json, sys
import numpy as np
from stream.messages import Frame, FrameHeader
from stream.models.sam import SamSegmenter, build_sam
from stream.sections.stages import SegmentConfig
from stream.stages.segment import SegmentStage

seg = SamSegmenter(build_sam("tiny", None, random_seed=0, device="cpu"))
stage = SegmentStage(seg, SegmentConfig(model="tiny", async_keyframes="never"))
stage.start()
before = set(sys.modules)
frame = Frame(FrameHeader("cam", 0, 0, (1, 10), 0), image=np.zeros((120, 160, 3), np.uint8)).evolve(
    boxes=np.array([[10, 10, 60, 90]], np.float32), scores=np.ones(1, np.float32),
    class_ids=np.zeros(1, np.int32), track_ids=np.array([1], np.int64))
out = stage.process(frame)
print(json.dumps({"new": sorted(set(sys.modules) - before), "kinds": out.arrays["mask_kind"].tolist()}))
"""


def _run(code: str) -> dict[str, list[object]]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_track_stage_imports_nothing_on_the_first_frames() -> None:
    got = _run(_TRACK)
    assert got["tracks"] == [1]  # the frames were really tracked
    assert got["new"] == [], f"imported on the first frames: {got['new']}"


def test_segment_stage_imports_nothing_on_the_first_keyframe() -> None:
    got = _run(_SEGMENT)
    assert got["kinds"] == [0]  # a keyframe mask: SAM ran on this frame
    assert got["new"] == [], f"imported on the first keyframe: {got['new']}"
