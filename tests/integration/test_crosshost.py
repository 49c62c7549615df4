"""A pipeline split across two real hosts: two network namespaces joined by a veth
pair, each running its own ``stream run`` (its own supervisor) on its part of the
same config, CURVE on the hop between them. Random weights: nothing here is
presented as a detection result."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.testing.netns import HostPair, NetnsError, python_cmd, unavailable_reason
from tests.conftest import REPO, make_video, wait_for

pytestmark = pytest.mark.timeout(600)
PORT = 5700


@pytest.fixture
def hosts() -> Iterator[HostPair]:
    why = unavailable_reason()
    if why:
        pytest.skip(why)
    try:
        pair = HostPair().__enter__()
    except NetnsError as exc:
        pytest.skip(f"cannot make network namespaces here: {exc}")
    try:
        yield pair
    finally:
        pair.close()  # kills what still runs in them and deletes both namespaces, even on failure


def keys(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    for name in ("gpu-host", "camera-host", "stranger"):
        subprocess.run(python_cmd("keys", "gen", "--out", str(d), "--name", name), check=True, capture_output=True)
    return d


def write_config(tmp_path: Path, hosts: HostPair, video: Path, **changes: Any) -> Path:
    k = tmp_path / "keys"
    cfg: dict[str, Any] = {
        "sources": [{"id": "cam1", "type": "file", "path": str(video)}],
        "pipeline": ["passthrough"],
        "transport": {"endpoints": "tcp", "pixels": "inline", "curve": True},  # CURVE on the local hops too
        "split": {
            "after": "passthrough", "address": f"tcp://{hosts.address('b')}:{PORT}", "bind": f"tcp://0.0.0.0:{PORT}",
            "pixels": "raw",
            "curve_server_secret_key_file": str(k / "gpu-host.key_secret"),
            "curve_allowed_keys": [str(k / "camera-host.key")],
            "curve_client_secret_key_file": str(k / "camera-host.key_secret"),
            "curve_server_public_key_file": str(k / "gpu-host.key"),
        },
        "sinks": {"jsonl": {"path": str(tmp_path / "b" / "frames.jsonl")}},
        "metrics": {"enabled": False},
    }
    for key, value in changes.items():
        node = cfg
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def start(hosts: HostPair, host: str, cfg: Path, part: str, tmp_path: Path, *extra: str,
          cache: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        hosts.cmd(host, python_cmd("run", str(cfg), "--part", part, "--summary-json",
                                   str(tmp_path / f"{part}.json"), *extra)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "STREAM_CACHE": str(cache or tmp_path / "cache")},
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        return -9, err
    return proc.returncode, err


def listening(hosts: HostPair) -> bool:
    out = subprocess.run(hosts.cmd("b", ["ss", "-Htln", f"sport = :{PORT}"]), capture_output=True, text=True).stdout
    return str(PORT) in out


def intrude(hosts: HostPair, tmp_path: Path) -> None:
    """From host a, without the allowed key: plaintext, and CURVE with a key not on the
    allow-list. Each sends a forged end of stream that would end the run at once."""
    script = tmp_path / "intruder.py"
    script.write_text(f"""
import time, zmq, zmq.auth
from stream.messages import EndOfStream, encode_message
ctx = zmq.Context()
forged = encode_message(EndOfStream("cam1", 0, "forged"))
plain = ctx.socket(zmq.PUSH)
plain.connect("tcp://{hosts.address('b')}:{PORT}")
curve = ctx.socket(zmq.PUSH)
pub, sec = zmq.auth.load_certificate("{tmp_path / 'keys' / 'stranger.key_secret'}")
server, _ = zmq.auth.load_certificate("{tmp_path / 'keys' / 'gpu-host.key'}")
curve.curve_publickey, curve.curve_secretkey, curve.curve_serverkey = pub, sec, server
curve.connect("tcp://{hosts.address('b')}:{PORT}")
for s in (plain, curve):
    s.send_multipart(forged, flags=zmq.NOBLOCK)
time.sleep(1.0)  # give the handshakes time to be refused
""")
    r = subprocess.run(hosts.cmd("a", [sys.executable, str(script)]), capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_frame_of_a_file_crosses_the_curve_hop_in_order_with_pts_and_unknown_peers_are_refused(
        hosts: HostPair, tmp_path: Path) -> None:
    frames, w, h = 30, 160, 120
    video = tmp_path / "clip.mp4"
    pts = make_video(video, frames=frames, width=w, height=h)
    keys(tmp_path)
    cfg = write_config(tmp_path, hosts, video)
    down = start(hosts, "b", cfg, "downstream", tmp_path)
    up = None
    try:
        wait_for(lambda: listening(hosts) or down.poll() is not None, 60, "host b to bind the hop")
        assert down.poll() is None, down.communicate()[1][-3000:]
        intrude(hosts, tmp_path)
        rx0 = hosts.rx_bytes("b")
        up = start(hosts, "a", cfg, "upstream", tmp_path)
        up_rc, up_err = finish(up, 120)
        down_rc, down_err = finish(down, 60)
    finally:
        for p in (down, up):
            if p is not None and p.poll() is None:
                p.kill()
    assert up_rc == 0, up_err[-3000:]
    assert down_rc == 0, down_err[-3000:]
    got = records(tmp_path / "b" / "frames.jsonl")
    assert [r["seq"] for r in got] == list(range(frames))  # the forged end of stream never arrived
    assert [r["pts"] for r in got] == pts
    assert all([s[0] for s in r["stamps"]] == ["capture", "passthrough", "output"] for r in got)
    down_summary = json.loads((tmp_path / "downstream.json").read_text())["sources"][0]
    up_summary = json.loads((tmp_path / "upstream.json").read_text())["sources"][0]
    assert (down_summary["processed"], down_summary["read"], down_summary["dropped"]) == (frames, frames, {})
    assert (up_summary["read"], up_summary["processed"]) == (frames, frames)  # handed to host b
    # raw pixels crossed the link: at least the frames' bytes, measured by the kernel on host b
    assert hosts.rx_bytes("b") - rx0 >= frames * w * h * 3


@pytest.mark.slow  # YOLO-NAS is exported once per session (artifact_cache): the first user pays for it
def test_a_detect_host_feeds_a_track_and_segment_host_with_jpeg_pixels(
        hosts: HostPair, tmp_path: Path, artifact_cache: Path) -> None:
    import av
    import numpy as np

    frames, w, h = 12, 160, 120
    video = tmp_path / "clip.mp4"
    pts = make_video(video, frames=frames, width=w, height=h)
    keys(tmp_path)
    cfg = write_config(
        tmp_path, hosts, video, pipeline=["detect", "track", "segment"], **{"split.after": "detect"},
        **{"split.pixels": "jpeg"},
        detect={"input_size": 320, "conf": 0.01, "max_batch": 4, "device": "cpu"},
        track={"track_activation_threshold": 0.01, "high_conf_det_threshold": 0.01,
               "minimum_consecutive_frames": 1},
        segment={"model": "tiny", "interval": 5, "device": "cpu"},
        sinks={"jsonl": {"path": str(tmp_path / "b" / "frames.jsonl")},
               "record": {"root": str(tmp_path / "b" / "rec"), "annotated": False}},
    )
    down = start(hosts, "b", cfg, "downstream", tmp_path, "--random-weights", cache=artifact_cache)
    up = start(hosts, "a", cfg, "upstream", tmp_path, "--random-weights", cache=artifact_cache)
    try:
        up_rc, up_err = finish(up, 400)
        down_rc, down_err = finish(down, 120)
    finally:
        for p in (down, up):
            if p.poll() is None:
                p.kill()
    assert up_rc == 0, up_err[-3000:]
    assert down_rc == 0, down_err[-3000:]
    got = records(tmp_path / "b" / "frames.jsonl")
    assert [r["seq"] for r in got] == list(range(frames))
    assert [r["pts"] for r in got] == pts
    assert all([s[0] for s in r["stamps"]] == ["capture", "detect", "track", "segment", "output"] for r in got)
    assert all(r["random_weights"] for r in got)
    # the pixels host b recorded are host a's frames (JPEG, then H.264: close, not equal)
    [mp4] = glob.glob(str(tmp_path / "b" / "rec" / "cam1" / "*.mp4"))
    with av.open(mp4) as c:
        decoded = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(decoded) == frames
    for i in (0, frames - 1):
        assert abs(int(np.median(decoded[i][h // 2 :, w // 2 :])) - (i * 7) % 256) <= 12
        assert abs(int(np.median(decoded[i][: h // 2, : w // 2])) - (i * 37) % 256) <= 12


def test_stopping_host_a_ends_both_runs_and_every_frame_it_sent_arrives(hosts: HostPair, tmp_path: Path) -> None:
    import signal

    keys(tmp_path)
    live = {"id": "cam1", "type": "pattern", "live": True, "fps": 20, "synthetic": {"width": 96, "height": 64}}
    cfg = write_config(tmp_path, hosts, tmp_path / "unused.mp4", sources=[live], **{"split.pixels": "jpeg"})
    out = tmp_path / "b" / "frames.jsonl"
    down = start(hosts, "b", cfg, "downstream", tmp_path)
    up = start(hosts, "a", cfg, "upstream", tmp_path)
    try:
        wait_for(lambda: out.exists() and out.read_text().count("\n") >= 10 or up.poll() is not None, 120,
                 "frames at host b")
        up.send_signal(signal.SIGINT)  # Ctrl-C on host A: its sources stop, the end of stream crosses the hop
        up_rc, up_err = finish(up, 60)
        down_rc, down_err = finish(down, 60)
    finally:
        for p in (down, up):
            if p.poll() is None:
                p.kill()
    assert up_rc == 0, up_err[-3000:]
    assert down_rc == 0, down_err[-3000:]
    seqs = [r["seq"] for r in records(out)]
    assert len(seqs) >= 10 and seqs == sorted(set(seqs))
    sent = json.loads((tmp_path / "upstream.json").read_text())["sources"][0]["processed"]
    assert len(seqs) == sent  # nothing handed to the hop was lost on the way out


def test_stopping_host_b_first_still_lets_host_a_stop_and_report_what_it_handed_over(
        hosts: HostPair, tmp_path: Path) -> None:
    """Host B goes first: A's hop stage is then blocked sending; the drain must still reach
    it, so A ends with a report of what it sent instead of being killed at its deadline."""
    import signal

    keys(tmp_path)
    live = {"id": "cam1", "type": "pattern", "live": True, "fps": 20, "synthetic": {"width": 96, "height": 64}}
    cfg = write_config(tmp_path, hosts, tmp_path / "unused.mp4", sources=[live])
    out = tmp_path / "b" / "frames.jsonl"
    down = start(hosts, "b", cfg, "downstream", tmp_path)
    up = start(hosts, "a", cfg, "upstream", tmp_path)
    try:
        wait_for(lambda: out.exists() and out.read_text().count("\n") >= 10 or up.poll() is not None, 120,
                 "frames at host b")
        down.send_signal(signal.SIGINT)
        down_rc, down_err = finish(down, 60)
        up.send_signal(signal.SIGINT)
        up_rc, up_err = finish(up, 60)
    finally:
        for p in (down, up):
            if p.poll() is None:
                p.kill()
    assert down_rc == 0, down_err[-3000:]
    assert up_rc == 0, up_err[-3000:]
    got = len(records(out))
    down_summary = json.loads((tmp_path / "downstream.json").read_text())["sources"][0]
    assert down_summary["processed"] == got and down_summary["read"] == got  # B counts what it received
    sent = json.loads((tmp_path / "upstream.json").read_text())["sources"][0]["processed"]
    assert sent >= got, up_err[-4000:]  # A's report came through (what B had queued when it stopped is the difference)
