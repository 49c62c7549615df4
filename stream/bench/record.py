"""The recorder's per-frame cost: the shared encode + fragmented MP4 mux + sidecar on the encoder thread
(one row of ``stream bench outputs``)."""

from __future__ import annotations

import argparse
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from stream.messages import Frame, FrameHeader
from stream.sinks.encode import EncodedPacket, EncoderPool
from stream.sinks.h264 import EncoderConfig, resolve_codec
from stream.sinks.segments import Segment


class _SegmentMuxer:
    """The record sink's work per packet, into one segment (a PacketConsumer)."""

    def __init__(self, root: Path, fragment_s: float, frames: int) -> None:
        self.root, self.key_interval_s, self.queue_size = root, fragment_s, frames
        self.segment: Segment | None = None

    def wants_packets(self, source: str) -> bool:
        return True

    def keyframe_due(self, source: str, pts: int, time_base: Fraction) -> bool:
        return False

    def on_packet(self, packet: EncodedPacket) -> None:
        if self.segment is None:
            self.segment = Segment(
                self.root / "bench.mp4", self.root / "bench.jsonl", info=packet.info, pts0=packet.pts,
                fragment_s=self.key_interval_s,
            )
        self.segment.add(packet, {"seq": packet.header.seq, "pts": packet.header.pts})

    def on_stream_end(self, source: str, why: str) -> None:
        if self.segment is not None:
            self.segment.close()


def bench_encode(args: argparse.Namespace) -> dict[str, Any]:
    """Encode synthetic moving frames into a real segment (encode + fragmented MP4 mux +
    sidecar, the recorder's whole per-frame path on its thread) and time it.

    args (all optional): width (1920), height (1080), frames (120), codec
    ('libx264'; 'auto' probes NVENC), preset ('ultrafast'), crf (23), fragment_s (1.0).
    Returns {"encoder", "preset", "width", "height", "frames", "fps", "ms_per_frame",
    "mbit_per_s" (at 25 fps)}."""
    width, height = int(getattr(args, "width", 1920)), int(getattr(args, "height", 1080))
    n = int(getattr(args, "frames", 120))
    enc = EncoderConfig(  # type: ignore[call-arg]
        codec=getattr(args, "codec", "libx264"),
        preset=getattr(args, "preset", "ultrafast"),
        crf=int(getattr(args, "crf", 23)),
    )
    codec = resolve_codec(enc.codec, "bench record")
    import cv2

    rng = np.random.default_rng(0)  # a smooth random scene scrolling 8 px a frame
    coarse = rng.integers(0, 256, (height // 16, (width + 64 * 8) // 16, 3), dtype=np.uint8)
    texture = cv2.resize(coarse, (width + 64 * 8, height), interpolation=cv2.INTER_CUBIC)
    images = [np.ascontiguousarray(texture[:, 8 * (i % 64) : 8 * (i % 64) + width]) for i in range(16)]
    fragment_s = float(getattr(args, "fragment_s", 1.0))
    with tempfile.TemporaryDirectory() as tmp:
        muxer = _SegmentMuxer(Path(tmp), fragment_s, n)
        pool = EncoderPool(annotated=False, encoder=enc, codec=codec)
        pool.add_consumer(muxer)
        t0 = time.perf_counter()
        for i in range(n):
            header = FrameHeader("bench", i, i, (1, 25), time.time_ns())
            pool.write(Frame(header, MappingProxyType({}), images[i % len(images)]))
        pool.close()  # encodes and muxes what is queued, then closes the segment
        elapsed = time.perf_counter() - t0
        size = (Path(tmp) / "bench.mp4").stat().st_size
    return {
        "encoder": codec,
        "preset": enc.preset if codec == "libx264" else enc.nvenc_preset,
        "width": width,
        "height": height,
        "frames": n,
        "fps": n / elapsed,
        "ms_per_frame": 1000 * elapsed / n,
        "mbit_per_s": size * 8 / (n / 25) / 1e6,
    }
