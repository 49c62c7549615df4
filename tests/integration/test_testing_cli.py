"""``stream testing rtsp-server``: a test camera a user can point the pipeline at."""

from __future__ import annotations

import re
import signal
import subprocess
import time

import av
import pytest

from stream.testing.rtsp_server import find_gi_python
from tests.conftest import REPO, stream_cmd

pytestmark = pytest.mark.timeout(120)


def test_rtsp_server_serves_a_live_camera_until_ctrl_c() -> None:
    if find_gi_python() is None:
        pytest.skip("no Python with GStreamer's RTSP server; run scripts/system-deps.sh")
    proc = subprocess.Popen(
        stream_cmd("testing", "rtsp-server", "--port", "0", "--size", "160x120", "--fps", "10"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.match(r"serving (rtsp://127\.0\.0\.1:(\d+)/cam)$", line.strip())
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        assert "stream run configs/rtsp.yaml" in proc.stdout.readline()
        with av.open(m.group(1), options={"rtsp_transport": "tcp"}, timeout=10) as f:
            frames = []
            for frame in f.decode(video=0):
                frames.append(frame)
                if len(frames) == 3:
                    break
        assert [(fr.width, fr.height) for fr in frames] == [(160, 120)] * 3
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_size_is_one_clear_line() -> None:
    r = subprocess.run(stream_cmd("testing", "rtsp-server", "--size", "big"), capture_output=True, text=True,
                       cwd=REPO, timeout=60)  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == "stream: --size 'big': expected WIDTHxHEIGHT, e.g. 640x360"
