"""The preprocess stage in a real pipeline: processed pixels reach the next stages and sinks,
with pixels in shared memory (written back into the frame's slot) and inline."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from stream.sources.synthetic import SyntheticParams, SyntheticScene
from tests.conftest import free_port, run_stream

pytestmark = pytest.mark.timeout(180)

W, H, FRAMES = 160, 120, 8


def recorded_means(root: Path, source: str) -> list[float]:
    files = sorted((root / source).glob("*.mp4"))
    assert files, f"nothing recorded for {source} under {root}"
    means = []
    for f in files:
        with av.open(str(f)) as c:
            means += [float(fr.to_ndarray(format="gray").mean()) for fr in c.decode(video=0)]
    return means


@pytest.mark.parametrize("pixels", ["shm", "inline"])
def test_processed_pixels_reach_the_sinks_for_the_configured_source_only(tmp_path, pixels):
    synth = {"width": W, "height": H, "num_objects": 3}
    cfg = {
        "sources": [
            {"id": "night", "type": "synthetic", "synthetic": synth, "max_frames": FRAMES},
            {"id": "day", "type": "synthetic", "synthetic": synth, "max_frames": FRAMES},
        ],
        "pipeline": ["preprocess", "passthrough"],
        "preprocess": {"night": {"gamma": 2.5, "brightness": 20}},
        "transport": {"pixels": pixels},
        "sinks": {"record": {"root": str(tmp_path / "rec"), "annotated": False, "segment_s": 600}},
        "metrics": {"port": free_port()},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = run_stream("run", str(path), timeout=150)
    assert r.returncode == 0, r.stderr[-3000:]
    scene = SyntheticScene(SyntheticParams(width=W, height=H, num_objects=3, seed=0))
    source_means = [float(np.mean(scene.render(i).mean(axis=2))) for i in range(FRAMES)]
    night, day = recorded_means(tmp_path / "rec", "night"), recorded_means(tmp_path / "rec", "day")
    assert len(night) == len(day) == FRAMES
    # H.264 moves a frame's mean by a level or two; gamma 2.5 + 20 lifts it by far more
    assert all(abs(d - s) < 4 for d, s in zip(day, source_means, strict=True)), (day, source_means)
    assert all(n > s + 25 for n, s in zip(night, source_means, strict=True)), (night, source_means)
