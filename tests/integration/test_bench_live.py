"""``stream bench live`` as a user runs it: a real subprocess, a real pipeline (pattern →
passthrough → live view) and a real headless Chromium reading the capture time back from
the pictures it shows, over MJPEG and H.264; tiny scale, so only the report's fields and
plausibility are checked."""

from __future__ import annotations

import json
import math
import shutil

import cv2
import pytest

from stream.config import Config
from stream.messages import Frame, FrameHeader
from stream.render import build_annotator
from stream.sources.pattern import PatternSource
from tests.conftest import run_stream

pytestmark = pytest.mark.timeout(180)

W, H, FPS = 320, 240, 30


def _strict(text: str) -> dict:
    def bad(constant: str) -> object:
        raise AssertionError(f"{constant} in --json output: not JSON")

    return json.loads(text, parse_constant=bad)


def _jpeg_bytes(quality: int) -> int:
    """One JPEG of the picture the live view sends: the pattern with the status line drawn."""
    src = PatternSource(W, H, frames=1, moving=True)
    src.open()
    first = next(iter(src.frames()))
    header = FrameHeader("cam00", 0, 0, (1, 90000), first.extra["stamped_ns"])
    config = Config.model_validate({"sources": [{"id": "cam00", "type": "pattern"}]})
    image = build_annotator(config)(Frame(header, {}, first.image))
    return len(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1])


def test_a_short_run_reports_latency_bandwidth_and_cpu_per_viewer_and_the_wall_per_transport():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Debian's chromium and chromium-driver are not installed: run scripts/browser-deps.sh")
    r = run_stream("bench", "live", "--resolution", f"{W}x{H}", "--transports", "mjpeg,h264", "--viewers", "1",
                   "--duration", "2", "--fps", str(FPS), "--wall", "2", "--wall-resolution", f"{W}x{H}",
                   "--json", timeout=170)
    assert r.returncode == 0, r.stderr[-3000:]
    report = _strict(r.stdout)
    rows = {(row["check"], row["transport"]): row for row in report["rows"]}
    assert set(rows) == {(c, t) for c in ("viewers", "wall") for t in ("mjpeg", "h264")}
    for (check, _), row in rows.items():
        # capture → displayed: after capture, and not seconds late on loopback
        assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"] < 5000, row
        assert row["fps_worst_tile"] > 0, row  # every tile kept updating
        assert row["unreadable"] <= row["pictures"] // 10, row  # the stamp reads back after compression
        assert row["bytes_per_s_per_viewer"] > 0 and row["server_cpu_pct_per_viewer"] > 0, row
        assert row["browser_cpu_pct_per_viewer"] > 0, row
        assert row["sources"] == (2 if check == "wall" else 1) and row["viewers"] == 1
    # MJPEG: the server sent about one JPEG of this picture per picture: at least one per picture
    # shown, at most one per frame of the source
    mjpeg, jpeg = rows[("viewers", "mjpeg")], _jpeg_bytes(80)
    assert 0.7 * jpeg * mjpeg["fps_per_tile"] < mjpeg["bytes_per_s_per_viewer"] < 1.5 * jpeg * FPS, (mjpeg, jpeg)
    # H.264 codes what changed: a still picture with a sliding box costs far less than JPEGs
    assert report[f"h264_over_mjpeg_bytes_{W}x{H}"] < 0.5
    for t in ("mjpeg", "h264"):
        for key in ("latency_p50_ms", "latency_p99_ms", "bytes_per_s", "viewers_served"):
            assert math.isfinite(report[f"{t}_{W}x{H}_{key}"])
        assert isinstance(report[f"{t}_wall_all_updating"], bool) and report[f"{t}_wall_worst_tile_fps"] > 0
    assert report["pattern"] == "moving" and report["cpus"] >= 1 and report["load_avg"] >= 0
