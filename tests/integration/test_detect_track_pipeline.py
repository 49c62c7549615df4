"""Detection and tracking stages inside the real pipeline (random weights: nothing
here is presented as a detection result)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from stream.data import demo_clip_path
from tests.conftest import free_port, run_stream

pytestmark = pytest.mark.timeout(600)


def config(tmp_path: Path, sources: list[dict], pipeline: list[str], **sections: object) -> Path:
    cfg = {
        "sources": sources,
        "pipeline": pipeline,
        "sinks": {"jsonl": {"path": str(tmp_path / "f.jsonl")}},
        "metrics": {"port": free_port()},
        **sections,
    }
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_missing_weights_refuse_to_start_and_name_the_command(tmp_path):
    cfg = config(tmp_path, [{"id": "s", "type": "synthetic", "max_frames": 3}], ["detect"])
    r = run_stream("run", str(cfg), env={"STREAM_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 5
    assert "stream weights pull yolo_nas_s" in r.stderr and "--random-weights" in r.stderr
    assert not (tmp_path / "f.jsonl").exists()


def test_random_weights_run_detect_and_track_and_mark_every_output(tmp_path, artifact_cache):
    frames = 12
    cfg = config(
        tmp_path,
        [{"id": "street", "type": "file", "path": str(demo_clip_path()), "max_frames": frames}],
        ["detect", "track"],
        # random weights score about 0.0101; seed 2 puts most top boxes inside the frame (see bench pipeline)
        detect={"input_size": 320, "conf": 0.01, "max_detections": 20, "random_seed": 2, "max_batch": 4,
                "device": "cpu"},
        track={
            "frame_rate": 10,
            "track_activation_threshold": 0.0,
            "high_conf_det_threshold": 0.0,
            "minimum_consecutive_frames": 1,
        },
    )
    r = run_stream(
        "run",
        str(cfg),
        "--random-weights",
        "--summary-json",
        str(tmp_path / "s.json"),
        env={"STREAM_CACHE": str(artifact_cache)},
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(x) for x in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert [x["seq"] for x in records] == list(range(frames))
    assert all(x["random_weights"] for x in records)
    assert all([s[0] for s in x["stamps"]] == ["capture", "detect", "track", "output"] for x in records)
    assert "RANDOM WEIGHTS" in r.stdout and "RANDOM WEIGHTS" in r.stderr
    assert json.loads((tmp_path / "s.json").read_text())["sources"][0]["processed"] == frames
    # the detector really produced boxes and the tracker really followed them: an empty
    # detector, or a tracker that hands out fresh ids every frame, fails here
    assert sum(x["objects"] for x in records) >= frames, [x["objects"] for x in records]
    assert all(len(x["track_ids"]) == x["objects"] for x in records)
    first_seen: dict[int, int] = {}
    last_seen: dict[int, int] = {}
    for x in records:
        for t in x["track_ids"]:
            first_seen.setdefault(t, x["seq"])
            last_seen[t] = x["seq"]
    assert max(last_seen[t] - first_seen[t] for t in first_seen) >= 3, "no track lived 4 frames"


def test_mot_public_detections_are_tracked_without_a_detector(tmp_path):
    # confidences as MOT17's DPM publishes them (SVM margins, negative and > 1): mapped to
    # [0, 1] at the source with one warning; before, every frame failed in the tracker
    det = tmp_path / "det.txt"
    rows = []
    for f in range(1, 31):  # two people walking right, one left, and a weak false positive
        for i, (x0, dx) in enumerate(((10, 4), (60, 3), (300, -5))):
            rows.append(f"{f},-1,{x0 + dx * f},{50 + 40 * i},30,60,{2.0 + 0.5 * i},-1,-1,-1")
        rows.append(f"{f},-1,{(37 * f) % 300},200,20,20,-1.0,-1,-1,-1")
    det.write_text("\n".join(rows) + "\n")
    cfg = config(
        tmp_path,
        [{"id": "seq", "type": "mot", "path": str(det)}],
        ["track"],
        track={"minimum_consecutive_frames": 1},
    )
    r = run_stream("run", str(cfg))
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("outside [0, 1]") == 1, r.stderr  # one warning for the run, saying how
    assert "mapped linearly to [0, 1] as (conf - -1) / (3 - -1)" in r.stderr
    records = [json.loads(x) for x in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert len(records) == 30
    # the mapping kept the order: the three people (0.75-1.0) are tracked, the weak one (0.0) is not
    assert np.mean([x["objects"] for x in records[2:]]) == pytest.approx(3, abs=0.2)


def test_bench_detect_times_the_pipelines_own_cached_artifact(tmp_path, artifact_cache):
    """After the pipeline run above built its artifact (320 px, seed 2, CPU), the benchmark
    loads that same file from the cache instead of exporting its own."""
    artifacts = artifact_cache / "artifacts"
    if not any(artifacts.glob("*")):
        pytest.skip("needs the artifact of test_random_weights_run_detect_and_track_and_mark_every_output")
    before = {p.name: p.stat().st_mtime_ns for p in artifacts.iterdir()}
    r = run_stream(
        "bench", "detect", "--size", "320", "--seed", "2", "--device", "cpu", "--batch-sizes", "1",
        "--iters", "1", "--warmup", "0", "--frame-width", "320", "--frame-height", "240", "--json",
        env={"STREAM_CACHE": str(artifact_cache)}, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in artifacts.iterdir()} == before  # nothing exported
    assert "loaded yolo_nas_s from the cache" in r.stderr
    # --json: ONE strict JSON document alone on stdout (super-gradients prints there when imported)
    assert r.stdout.count("\n") == 1, "more than one line on stdout"
    report = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert isinstance(report.get("rows"), list) and report["artifact_load_s"] < 30
