"""transport.curve: with tcp endpoints, a local process outside the run cannot send
to a stage (every stage port is CURVE-authenticated with keys made for the run)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
import zmq

from stream.messages import EndOfStream, encode_message
from tests.conftest import free_port, start_stream, wait_for

pytestmark = pytest.mark.timeout(300)
FRAMES = 40


def free_base_port() -> int:
    """A port p with p..p+3 free (the run binds heartbeat, control and two stage inputs)."""
    for _ in range(50):
        base = free_port()
        if base + 4 > 65000:
            continue
        try:
            for port in range(base, base + 4):
                with socket.socket() as t:
                    t.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise AssertionError("no 4 consecutive free ports")


def run_with_intruder(tmp_path: Path, curve: bool) -> list[dict[str, Any]]:
    base = free_base_port()
    out = tmp_path / "frames.jsonl"
    cfg = {
        "sources": [{"id": "cam", "type": "pattern", "max_frames": FRAMES, "synthetic": {"width": 64, "height": 48}}],
        "pipeline": ["passthrough"],
        "passthrough": {"delay_ms": 50},  # a file-like source, slowed: the run lasts about 2 s
        "transport": {"endpoints": "tcp", "tcp_base_port": base, "curve": curve},
        "sinks": {"jsonl": {"path": str(out)}},
        "metrics": {"enabled": False},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = start_stream("run", str(tmp_path / "c.yaml"))
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        wait_for(lambda: out.exists() and out.read_text().count("\n") >= 1 or proc.poll() is not None, 120,
                 "the first frame")
        forged = encode_message(EndOfStream("cam", 1, "forged"))
        # ports: base heartbeat, base+1 control, base+2 passthrough input, base+3 output input
        for port in (base + 2, base + 3):
            sock = ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 2000)
            sock.connect(f"tcp://127.0.0.1:{port}")
            sock.send_multipart(forged)
            sock.close()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        ctx.term()
    assert proc.returncode == 0, err[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_with_curve_a_forged_end_of_stream_from_a_local_process_is_refused(tmp_path: Path) -> None:
    records = run_with_intruder(tmp_path, curve=True)
    assert [r["seq"] for r in records] == list(range(FRAMES))


def test_without_curve_the_same_forgery_ends_the_stream_early(tmp_path: Path) -> None:
    """What transport.curve prevents: plain tcp stage ports take anyone's messages."""
    records = run_with_intruder(tmp_path, curve=False)
    assert len(records) < FRAMES
