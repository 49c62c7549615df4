"""Bytes per second of the live view's camera wall (one /wall connection) for N synthetic
sources, against what SSE with base64 JPEGs would carry and what N MJPEG connections carry.

    uv run python scripts/live-wall-bytes.py --sources 12 --width 320 --height 240 --fps 10

The pictures are test_live_view's moving squares on a gradient; real scenes compress worse.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from stream.config import Config  # noqa: E402
from stream.messages import Frame, FrameHeader  # noqa: E402
from stream.sinks.live import build  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sources", type=int, default=12)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    ids = [f"cam{i:02d}" for i in range(args.sources)]
    config = Config.model_validate({"sources": [{"id": s, "type": "pattern"} for s in ids]})
    sink = build({"port": 0, "max_fps": args.fps}, config)
    w, h = args.width, args.height
    base = np.empty((h, w, 3), np.uint8)
    base[..., 0] = np.linspace(40, 200, w, dtype=np.uint8)[None, :]
    base[..., 1] = np.linspace(30, 120, h, dtype=np.uint8)[:, None]
    base[..., 2] = 60
    import threading

    stop = threading.Event()

    def feed() -> None:
        seq = 0
        while not stop.wait(1.0 / args.fps):
            for s in ids:
                img = base.copy()
                x = (seq * 4) % (w - 60)
                cv2.rectangle(img, (x, h // 3), (x + w // 6, h // 3 + h // 5), (0, 220, 255), -1)
                sink.write(Frame(FrameHeader(s, seq, seq * 3000, (1, 90000), time.time_ns()), {}, img))
            seq += 1

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    jpeg_bytes = parts = total = 0
    with urllib.request.urlopen(sink.url + "wall", timeout=10) as r:
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.seconds:
            line = r.readline()
            total += len(line)
            if line != b"--liveframe\r\n":
                continue
            headers = {}
            while (hl := r.readline()) != b"\r\n":
                total += len(hl)
                k, _, v = hl.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            body = r.read(int(headers["content-length"]) + 2)
            total += len(body) + 2
            if headers["content-type"] == "image/jpeg":
                jpeg_bytes += len(body) - 2
                parts += 1
        elapsed = time.monotonic() - t0
    stop.set()
    t.join()
    sink.close()
    b64 = len(base64.b64encode(b"\0" * 3)) / 3
    print(
        json.dumps(
            {
                "sources": args.sources,
                "size": [w, h],
                "fps_per_source": args.fps,
                "jpegs_per_s": round(parts / elapsed, 1),
                "mean_jpeg_bytes": round(jpeg_bytes / max(parts, 1)),
                "wall_bytes_per_s": round(total / elapsed),
                "sse_base64_bytes_per_s_estimate": round(jpeg_bytes * b64 / elapsed),
                "mjpeg_connections_needed": args.sources,
            }
        )
    )


if __name__ == "__main__":
    main()
