"""Shared fixtures: run the real CLI as a subprocess, make small real videos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.transport import free_port  # noqa: F401  (re-exported: the suite's one free-port helper)

REPO = Path(__file__).resolve().parents[1]


def stream_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream.cli", *args]


def run_stream(
    *args: str, timeout: float = 120, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        stream_cmd(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def start_stream(*args: str, cwd: Path = REPO) -> subprocess.Popen[str]:
    return subprocess.Popen(
        stream_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd
    )


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())
    except OSError:
        return None


def make_video(path: Path, frames: int = 30, width: int = 160, height: int = 120, fps: int = 10) -> list[int]:
    """An H.264 file whose frame i shows i in its pixels; returns the pts of each frame in order."""
    import av

    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        st.options = {"preset": "ultrafast", "bf": "0"}
        for i in range(frames):
            img = np.full((height, width, 3), (i * 7) % 256, np.uint8)
            img[: height // 2, : width // 2] = (i * 37) % 256
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts = i
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    with av.open(str(path)) as inp:
        return [int(f.pts) for f in inp.decode(video=0)]


@pytest.fixture
def video(tmp_path: Path) -> tuple[Path, list[int]]:
    path = tmp_path / "clip.mp4"
    return path, make_video(path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked gpu run only where CUDA is present."""
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def artifact_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session: the exported YOLO-NAS artifact is built once."""
    return tmp_path_factory.mktemp("stream-cache")
