"""``stream bench track``: ms/frame of ``SourceTracker`` against raw ``trackers.ByteTrackTracker``.

Synthetic scene: N boxes (30–120 px) moving at constant velocity with 1 px
jitter in a 1920×1080 frame, bouncing off the edges; each frame 5 % of boxes
are missed; scores U(0.5, 1). The reference is ``ByteTrackTracker.update`` on
prebuilt ``sv.Detections`` of the same boxes, timed in the same run and
interleaved frame by frame (alternating which goes first), so the ratio is the
wrapper's whole cost: validation, conversion and the life-cycle bookkeeping.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from stream.bench import BenchResult, percentile
from stream.errors import ConfigError
from stream.models.tracker import SourceTracker, TrackerParams, new_bytetrack

HELP = "tracker ms/frame at 10/50/200 detections, against raw trackers.ByteTrackTracker"

WIDTH, HEIGHT = 1920, 1080


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="10,50,200", help="detections per frame, comma separated")
    parser.add_argument("--frames", type=int, default=300, help="timed frames per size")
    parser.add_argument("--warmup", type=int, default=20, help="untimed frames first")
    parser.add_argument("--seed", type=int, default=0)


def synthetic_frames(n: int, frames: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per frame (boxes (k,4) float32 XYXY px, scores (k,) float32, class_ids (k,) int32), k ≈ 0.95 n."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(30, 120, (n, 2))
    pos = rng.uniform(0, 1, (n, 2)) * ([WIDTH, HEIGHT] - size)
    vel = rng.uniform(-4, 4, (n, 2))
    classes = rng.integers(0, 3, n).astype(np.int32)
    out = []
    for _ in range(frames):
        pos += vel
        limit = [WIDTH, HEIGHT] - size
        bounce = (pos < 0) | (pos > limit)
        vel[bounce] *= -1
        pos = np.clip(pos, 0, limit)
        xy = pos + rng.normal(0, 1, (n, 2))
        boxes = np.concatenate([xy, xy + size], axis=1).astype(np.float32)
        seen = rng.random(n) >= 0.05
        scores = rng.uniform(0.5, 1.0, n).astype(np.float32)
        out.append((boxes[seen], scores[seen], classes[seen]))
    return out


def measure(n: int, frames: int, warmup: int, seed: int) -> dict[str, Any]:
    """One row: p50/p99/mean ms per frame for ours and the reference at n detections per frame."""
    import supervision as sv

    data = synthetic_frames(n, warmup + frames, seed)
    ref_input = [sv.Detections(xyxy=b, confidence=s, class_id=c) for b, s, c in data]
    params = TrackerParams()
    ours, ref = SourceTracker(params, source="bench"), new_bytetrack(params)
    ours_ms: list[float] = []
    ref_ms: list[float] = []
    tracked = 0
    for i, ((b, s, c), dets) in enumerate(zip(data, ref_input, strict=True)):
        if i % 2:
            t0 = time.perf_counter()
            ref.update(dets)
            t1 = time.perf_counter()
            objs = ours.update(b, s, c)
            t2 = time.perf_counter()
            ref_t, ours_t = t1 - t0, t2 - t1
        else:
            t0 = time.perf_counter()
            objs = ours.update(b, s, c)
            t1 = time.perf_counter()
            ref.update(dets)
            t2 = time.perf_counter()
            ours_t, ref_t = t1 - t0, t2 - t1
        if i >= warmup:
            ours_ms.append(1e3 * ours_t)
            ref_ms.append(1e3 * ref_t)
            tracked += len(objs)
    ours_p50, ref_p50 = percentile(ours_ms, 50), percentile(ref_ms, 50)
    return {
        "detections": n,
        "frames": frames,
        "tracked_per_frame": tracked / max(1, frames),
        "ours_p50_ms": ours_p50,
        "ours_p99_ms": percentile(ours_ms, 99),
        "ours_mean_ms": float(np.mean(ours_ms)),
        "ref_p50_ms": ref_p50,
        "ref_p99_ms": percentile(ref_ms, 99),
        "ref_mean_ms": float(np.mean(ref_ms)),
        "ratio_p50": ours_p50 / ref_p50 if ref_p50 > 0 else float("nan"),
    }


def run(args: argparse.Namespace) -> BenchResult:
    try:
        sizes = [int(v) for v in str(args.sizes).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--sizes must be comma-separated integers, got {args.sizes!r}") from None
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"--sizes must be integers >= 1, got {args.sizes!r}")
    if args.frames < 1 or args.warmup < 0:
        raise ConfigError(f"--frames must be >= 1 and --warmup >= 0, got {args.frames}, {args.warmup}")
    rows = [measure(n, args.frames, args.warmup, args.seed) for n in sizes]
    head = next((r for r in rows if r["detections"] == 50), rows[0])
    summary = {
        "detections": head["detections"],
        "ms_per_frame": head["ours_p50_ms"],
        "ms_per_frame_p99": head["ours_p99_ms"],
        "reference_ms_per_frame": head["ref_p50_ms"],
        "ratio": head["ratio_p50"],
        "reference": "trackers.ByteTrackTracker.update on prebuilt sv.Detections, same frames, same run",
    }
    return BenchResult(rows=rows, summary=summary)
