"""``stream demo`` as a user runs it: a real subprocess on the bundled clip, random weights,
the live page read over HTTP (its event stream: the object list the browser shows).

Asserts what a user sees: the URL first, one plain RANDOM WEIGHTS banner with the settings
chosen and why, progress lines while models load, a periodic status line with objects and
masks, objects with masks on the live page, the clip still playing after its 200 frames
(it loops as a live camera), and a clean stop with a summary on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, free_port, stream_cmd

pytestmark = pytest.mark.timeout(1500)


class Stderr:
    """Collects a process's stderr lines without blocking."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []

    def pump(self) -> None:
        assert self.proc.stderr is not None
        while select.select([self.proc.stderr], [], [], 0)[0]:
            line = self.proc.stderr.readline()
            if not line:
                return
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, predicate: Any, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            hit = next((line for line in self.lines if predicate(line)), None)
            if hit is not None:
                return hit
            if self.proc.poll() is not None:
                self.pump()
                raise AssertionError(f"demo exited ({self.proc.returncode}) before {what}:\n" + self.text()[-4000:])
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}:\n" + self.text()[-4000:])

    def text(self) -> str:
        return "\n".join(self.lines)


def _events(url: str, timeout: float) -> list[dict[str, Any]]:
    """The live page's per-frame object-list events received within ``timeout`` seconds."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            while time.monotonic() < deadline:
                line = r.readline().decode()
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    if "seq" not in event:  # a capture-state change, not a frame's object list
                        continue
                    out.append(event)
                    if len(out) >= 5:
                        break
    except OSError:
        pass
    return out


def test_demo_on_random_weights_shows_boxes_and_masks_live_until_ctrl_c(artifact_cache: Path, tmp_path: Path):
    port = free_port()
    proc = subprocess.Popen(
        stream_cmd(
            "demo", "--random-weights",
            "--set", f"sinks.live.port={port}", "--set", "metrics.port=0",
            "--set", f"sinks.publish.endpoint=tcp://127.0.0.1:{free_port()}",
            "--set", f"sinks.record.root={tmp_path / 'rec'}", "--set", f"sinks.jsonl.path={tmp_path / 'f.jsonl'}",
            "--set", "supervisor.status_interval_s=2",
            # building YOLO-NAS through super-gradients sends no heartbeat; on a machine under heavy
            # load it took over the default 300 s (measured at load average 20 on 2 cores)
            "--set", "supervisor.startup_timeout_s=1200",
        ),  # fmt: skip
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "STREAM_CACHE": str(artifact_cache)},
    )  # fmt: skip
    err = Stderr(proc)
    try:
        err.wait_for(lambda s: "live view:" in s and f":{port}/" in s, 30, "the live view URL")
        err.wait_for(lambda s: "stream.supervisor: every stage is ready" in s, 1200, "the models to be ready")
        status = err.wait_for(lambda s: "status street:" in s and " 0 objects" not in s, 120,
                              "a status line with objects")  # fmt: skip
        events = _events(f"http://127.0.0.1:{port}/events", 30)
        assert events, "the live page sent no object list"
        objects = events[-1]["objects"]
        assert events[-1]["random_weights"] is True
        assert objects and any(o["mask_kind"] in ("keyframe", "propagated") for o in objects), events[-1]
        # the 200-frame clip loops as a live camera: frames keep coming past its end
        deadline = time.monotonic() + 120
        while max((e["seq"] for e in events), default=0) < 200 and time.monotonic() < deadline:
            assert proc.poll() is None, err.text()[-4000:]
            events = _events(f"http://127.0.0.1:{port}/events", 10)
        assert max(e["seq"] for e in events) >= 200, "the clip did not loop"
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err.lines += rest.splitlines()
    text = err.text()
    assert proc.returncode == 0, text[-4000:]

    # the URL comes before anything slow; the banner says RANDOM WEIGHTS once, with the choices and why
    first_slow = next(i for i, s in enumerate(err.lines) if "loading and warming up" in s)
    assert any("live view:" in s for s in err.lines[:first_slow])
    banners = [s for s in err.lines if s.startswith("stream demo: RANDOM WEIGHTS")]
    assert len(banners) == 1 and "NOT detections" in banners[0]
    assert "detect.conf" in text and "= 0.01" in text and "segment.async_keyframes" in text
    # progress while the models load
    assert "detect: warming up" in text and "detect: warm in" in text and "SAM tiny" in text
    assert "first frames at the output" in text
    fields = status.split(": ", 2)[-1]
    assert "fps" in fields and "age" in fields and "masks" in fields
    # Ctrl-C: a summary on stdout, marked
    assert "RANDOM WEIGHTS" in out and "street" in out and "SIGINT" in out
