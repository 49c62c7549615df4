"""``stream bench live`` as a user runs it: a real subprocess, a real pipeline (pattern →
passthrough → live view) and a real headless Chromium reading the capture time back from
the pictures it shows; tiny scale, so only the report's fields and plausibility are checked."""

from __future__ import annotations

import json
import math
import shutil

import cv2
import pytest

from stream.sources.pattern import PatternSource
from tests.conftest import run_stream

pytestmark = pytest.mark.timeout(180)

W, H, FPS = 320, 240, 30


def _strict(text: str) -> dict:
    def bad(constant: str) -> object:
        raise AssertionError(f"{constant} in --json output: not JSON")

    return json.loads(text, parse_constant=bad)


def _jpeg_bytes(quality: int) -> int:
    src = PatternSource(W, H, frames=1)
    src.open()
    image = next(iter(src.frames())).image
    return len(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1])


def test_a_short_run_reports_latency_bandwidth_and_cpu_per_viewer_and_the_wall():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Debian's chromium and chromium-driver are not installed: run scripts/browser-deps.sh")
    r = run_stream("bench", "live", "--resolution", f"{W}x{H}", "--viewers", "1", "--duration", "1.5",
                   "--fps", str(FPS), "--wall", "2", "--wall-resolution", f"{W}x{H}", "--json", timeout=170)
    assert r.returncode == 0, r.stderr[-3000:]
    report = _strict(r.stdout)
    rows = {row["check"]: row for row in report["rows"]}
    assert set(rows) == {"viewers", "wall"}
    one, wall = rows["viewers"], rows["wall"]
    assert (one["transport"], one["resolution"], one["viewers"], one["sources"]) == ("mjpeg", f"{W}x{H}", 1, 1)
    # capture → displayed: after capture, and not seconds late on loopback
    assert 0 < one["latency_p50_ms"] <= one["latency_p99_ms"] < 5000
    assert one["pictures"] >= 5 and one["fps_per_tile"] > 2
    assert one["unreadable"] <= one["pictures"] // 10  # the stamp reads back from the JPEGs
    # the server's bytes on the connection: about one JPEG of this picture per picture shown
    per_picture = one["bytes_per_s_per_viewer"] / one["fps_per_tile"]
    assert 0.5 * _jpeg_bytes(80) < per_picture < 3 * _jpeg_bytes(80), (per_picture, _jpeg_bytes(80))
    assert one["server_cpu_pct_per_viewer"] > 0 and one["browser_cpu_pct_per_viewer"] > 0
    assert wall["sources"] == 2 and wall["fps_worst_tile"] > 0  # every tile of the page updated
    assert wall["bytes_per_s_per_viewer"] > 0
    summary_keys = {"mjpeg_320x240_latency_p50_ms", "mjpeg_320x240_latency_p99_ms", "mjpeg_320x240_bytes_per_s",
                    "mjpeg_320x240_viewers_served", "mjpeg_wall_all_updating", "mjpeg_wall_worst_tile_fps",
                    "load_avg", "cpus"}
    assert summary_keys <= set(report)
    assert math.isfinite(report["mjpeg_320x240_latency_p50_ms"])
    assert report["mjpeg_320x240_viewers_served"] in (0, 1)


def test_a_bad_transport_is_refused_naming_the_option():
    r = run_stream("bench", "live", "--transports", "webrtc", timeout=60)
    assert r.returncode != 0
    assert "--transports 'webrtc'" in r.stderr and "mjpeg" in r.stderr
