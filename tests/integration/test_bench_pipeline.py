"""``stream bench pipeline`` as a user runs it: a real subprocess, real worker processes,
tiny scale on the CPU (random weights: only the report is checked, not detections)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_stream

pytestmark = pytest.mark.timeout(600)

FPS, DURATION = 5, 4
CAPACITY_FRAMES = 4  # per stream, of the unpaced trial


def test_reports_per_stream_and_overall_figures_and_the_naive_ratio(artifact_cache):
    r = run_stream(
        "bench", "pipeline", "--streams", "2", "--resolution", "320x240", "--duration", str(DURATION),
        "--fps", str(FPS), "--input-size", "320", "--sam-model", "tiny", "--device", "cpu",
        "--naive-frames", "3", "--capacity-frames", str(CAPACITY_FRAMES),
        "--seed", "0", "--json",  # seed 0: the artifact other tests build
        env={"STREAM_CACHE": str(artifact_cache)}, timeout=480,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)  # stdout is the JSON object alone
    assert report["random_weights"] is True and "RANDOM WEIGHTS" in report["note"]
    assert report["sam_model"].startswith("tiny") and "not a released model" in report["sam_model"]
    assert report["resolution"] == "320x240" and report["streams"] == 2

    rows = report["rows"]
    assert sorted(row["stream"] for row in rows) == ["s000", "s001"]
    for row in rows:
        assert row["frames"] >= 1, row
        # every frame read is accounted for: published or counted as dropped
        assert row["frames"] + row["drops"] - row["drops_source"] == FPS * DURATION, row
        assert row["fps"] > 0
        assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"]
        assert 0 < row["age_p50_ms"] <= row["age_p99_ms"]
    assert report["drops_total"] == sum(row["drops"] for row in rows)
    if report["drops_total"] or report["latency_p99_ms"] > report["budget_ms"]:
        assert report["held"] is False

    assert 0 < report["cpu_util"] <= 1 and report["cpu_per_stage_cores"]["detect"] > 0
    assert report["gpu_util"] == "n/a" and report["gpu_mem_per_stream_mb"] == "n/a"

    assert report["naive_frames"] == 3 and report["naive_fps"] > 0 and report["naive_sam_calls"] >= 1
    assert report["ratio"] == pytest.approx(report["fps_total"] / report["naive_fps"])
    assert report["naive_fps_without_annotate"] >= report["naive_fps"]  # our pipeline draws only to record
    assert report["ratio_without_annotate"] <= report["ratio"]
    # CPU per frame, ours per stage and the naive loop's per step (load-robust figures)
    assert report["cpu_ms_per_frame"] == pytest.approx(sum(report["cpu_ms_per_frame_per_stage"].values()), rel=0.02)
    assert report["cpu_ms_per_frame_per_stage"]["detect"] > 0
    assert 0 < report["naive_cpu_ms_per_frame_without_annotate"] <= report["naive_cpu_ms_per_frame"]
    assert report["naive_cpu_ms_per_step"]["detect"] > 0
    assert report["cpu_ratio_without_annotate"] == pytest.approx(
        report["naive_cpu_ms_per_frame_without_annotate"] / report["cpu_ms_per_frame"]
    )
    assert report["cpu_threads"]["detect"] >= 1 and report["cpu_threads"]["segment"] >= 1

    # the capacity trial: the same sources not live, every frame published, none dropped
    assert report["capacity_streams"] == 2 and report["capacity_frames"] == CAPACITY_FRAMES
    assert report["capacity_frames_published"] == 2 * CAPACITY_FRAMES
    assert report["capacity_drops"] == 0 and report["capacity_drop_reasons"] == {}
    assert report["capacity_seconds"] > 0
    assert report["capacity_fps"] == pytest.approx((2 * CAPACITY_FRAMES - 1) / report["capacity_seconds"])
    assert report["capacity_cpu_ms_per_frame"] == pytest.approx(
        sum(report["capacity_cpu_ms_per_frame_per_stage"].values()), rel=0.02
    )
    assert report["capacity_cpu_ms_per_frame_per_stage"]["detect"] > 0
    assert report["capacity_cpu_ms_per_frame_per_stage"]["segment"] > 0
    assert report["ratio_capacity"] == pytest.approx(report["capacity_fps"] / report["naive_fps"])
    assert report["ratio_capacity_without_annotate"] == pytest.approx(
        report["capacity_fps"] / report["naive_fps_without_annotate"]
    )


def test_bad_resolution_is_refused_naming_the_option(tmp_path):
    r = run_stream(
        "bench",
        "pipeline",
        "--resolution",
        "huge",
        "--json",
        env={"STREAM_CACHE": str(tmp_path)},
        timeout=120,
    )
    assert r.returncode == 2
    assert "--resolution 'huge'" in r.stderr and "WxH" in r.stderr
    assert r.stdout == ""
