"""``stream bench crosshost``: frames/s and bytes per frame across a host-to-host
hop, pixels raw vs JPEG, CURVE on, in the same run.

Two real hosts on this machine (``stream.testing.netns``: two network namespaces
joined by a veth pair; needs root). Host a runs the capture and one pass-through
stage, host b the output: two ``stream run`` processes, one per host, on their
parts of one split config. The source is file-like (backpressure, nothing
dropped) and as fast as the chain goes: ``pattern`` (pre-rendered gradients and a
checkerboard, one memcpy per frame) or ``street`` (the bundled street clip scaled
to the benchmark size and decoded by PyAV: a camera-like picture for JPEG).

Rows: raw and JPEG with CURVE on, and raw in plaintext (what CURVE costs).
fps: host b's output, first to last frame. bytes_per_frame: what host b's end of
the link received during the run (the kernel's counter: IP, TCP and CURVE
overhead included) divided by the frames received.
Summary keys: raw_fps, jpeg_fps, raw_plaintext_fps, raw_bytes_per_frame, jpeg_bytes_per_frame, jpeg_ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from stream.bench import BenchResult
from stream.errors import StreamError

HELP = "frames/s and bytes/frame across a CURVE hop between two hosts (network namespaces), raw vs JPEG"
PORT = 5700


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--frames", type=int, default=300, help="frames per run")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--source", choices=["pattern", "street"], default="pattern")
    p.add_argument("--hwm", type=int, default=4)


def _street_clip(path: Path, frames: int, width: int, height: int) -> None:
    """The bundled street clip, scaled to width×height, looped to ``frames`` frames."""
    import av
    import cv2
    import numpy as np

    from stream.data import demo_clip_path

    with av.open(str(demo_clip_path())) as inp:
        clip = [f.to_ndarray(format="bgr24") for f in inp.decode(video=0)]
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=10)
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        st.options = {"preset": "ultrafast", "crf": "18", "bf": "0"}
        for i in range(frames):
            img = np.ascontiguousarray(cv2.resize(clip[i % len(clip)], (width, height)), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts = i
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


def _config(args: argparse.Namespace, hosts: Any, work: Path, codec: str, curve: bool) -> Path:
    if args.source == "street":
        source: dict[str, Any] = {"id": "cam", "type": "file", "path": str(work / "street.mp4")}
    else:
        source = {"id": "cam", "type": "pattern", "fps": 1000.0, "max_frames": args.frames,
                  "synthetic": {"width": args.width, "height": args.height}}
    keys = work / "keys"
    split: dict[str, Any] = {
        "after": "passthrough", "address": f"tcp://{hosts.address('b')}:{PORT}",
        "bind": f"tcp://0.0.0.0:{PORT}", "pixels": codec, "jpeg_quality": args.jpeg_quality,
    }
    if curve:
        split.update(curve_server_secret_key_file=str(keys / "b.key_secret"), curve_allowed_keys=[str(keys / "a.key")],
                     curve_client_secret_key_file=str(keys / "a.key_secret"),
                     curve_server_public_key_file=str(keys / "b.key"))
    else:
        split["allow_plaintext"] = True
    cfg = {
        "name": f"bench-crosshost-{codec}",
        "sources": [source],
        "pipeline": ["passthrough"],
        "transport": {"endpoints": "tcp", "pixels": "inline", "hwm": args.hwm},
        "split": split,
        "metrics": {"enabled": False},
    }
    path = work / f"{codec}-{'curve' if curve else 'plain'}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run_pair(hosts: Any, cfg: Path, work: Path, codec: str) -> tuple[dict[str, Any], int]:
    from stream.testing.netns import python_cmd

    def start(host: str, part: str) -> subprocess.Popen[bytes]:
        argv = python_cmd("--log-level", "warning", "run", str(cfg), "--part", part,
                          "--summary-json", str(work / f"{codec}-{part}.json"))
        return subprocess.Popen(hosts.cmd(host, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    down = start("b", "downstream")
    up = None
    try:
        deadline = time.monotonic() + 120
        while not _listening(hosts):
            if down.poll() is not None or time.monotonic() > deadline:
                raise StreamError(f"host b did not bind the hop: {down.communicate()[1].decode()[-2000:]}")
            time.sleep(0.1)
        rx0 = hosts.rx_bytes("b")
        up = start("a", "upstream")
        for proc, part in ((up, "upstream"), (down, "downstream")):
            _, err = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise StreamError(f"{part} host failed ({proc.returncode}): {err.decode()[-2000:]}")
        rx = hosts.rx_bytes("b") - rx0
    finally:
        for left in (down, up):
            if left is not None and left.poll() is None:
                left.kill()
                left.wait()
    summary = json.loads((work / f"{codec}-downstream.json").read_text())["sources"][0]
    return summary, rx


def _listening(hosts: Any) -> bool:
    out = subprocess.run(hosts.cmd("b", ["ss", "-Htln", f"sport = :{PORT}"]), capture_output=True, text=True)
    return str(PORT) in out.stdout


def run(args: argparse.Namespace) -> BenchResult:
    from stream.testing.netns import HostPair
    from stream.transport.keys import generate_curve_keypair

    result = BenchResult()
    figures: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="stream-bench-crosshost-") as tmp, HostPair() as hosts:
        work = Path(tmp)
        for name in ("a", "b"):
            generate_curve_keypair(work / "keys", name)
        if args.source == "street":
            _street_clip(work / "street.mp4", args.frames, args.width, args.height)
        for codec, curve in (("raw", True), ("jpeg", True), ("raw", False)):
            label = codec if curve else f"{codec}-plaintext"
            summary, rx = _run_pair(hosts, _config(args, hosts, work, codec, curve), work, label)
            frames = summary["processed"]
            if frames != args.frames or summary["dropped"]:
                raise StreamError(f"{codec}: {frames} of {args.frames} frames arrived, dropped {summary['dropped']}")
            per_frame = rx / frames
            figures[label] = (summary["fps"], per_frame)
            result.rows.append({
                "pixels": codec, "curve": curve, "frames": frames, "fps": summary["fps"], "bytes_per_frame": round(per_frame),
                "MB_per_s": per_frame * summary["fps"] / 1e6, "e2e_p50_ms": summary["latency_p50_ms"],
                "e2e_p99_ms": summary["latency_p99_ms"],
            })
    raw, jpeg = figures["raw"], figures["jpeg"]
    result.summary = {
        "raw_fps": raw[0], "jpeg_fps": jpeg[0], "raw_plaintext_fps": figures["raw-plaintext"][0],
        "raw_bytes_per_frame": round(raw[1]), "jpeg_bytes_per_frame": round(jpeg[1]),
        "jpeg_ratio": jpeg[1] / raw[1] if raw[1] else float("nan"),
        "resolution": f"{args.width}x{args.height}", "source": args.source, "jpeg_quality": args.jpeg_quality,
    }
    return result
