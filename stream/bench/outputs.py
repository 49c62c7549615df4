"""``stream bench outputs``: the cost of the output side per frame at 1080p.

- render: ``Annotator`` on a 1080p frame with ``--objects`` tracked objects and
  masks (crops of ``--min-crop``…``--max-crop`` px), boxes, labels, traces,
  status line; ms per frame.
- mask RLE: COCO RLE of every mask of a frame, pycocotools on full Fortran-order
  frames vs the publish sink's crop path (same counts, checked here).
- publish: ``PublishSink.write`` to a real PUB socket on loopback with a
  subscriber connected: ms per frame, records/s back to back, bytes per frame.
- record: the recorder's encode + mux + sidecar per frame (``stream.bench.record``).

Summary keys: render_ms_p50, publish_ms_p50, publish_records_s, bytes_per_frame,
render_plus_publish_ms (goal: under 10 ms on this CPU), mask_rle_full_ms,
mask_rle_crop_ms; *_cpu_ms_p50 are process CPU time per frame, steadier than
wall time when other work shares the CPU.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import cv2
import numpy as np
import zmq

from stream.bench import BenchResult, percentile
from stream.messages import Frame, FrameHeader
from stream.objects import ObjectMasks

HELP = "render and publish cost per 1080p frame with many masks"
GOAL_MS = 10.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--objects", type=int, default=20, help="tracked objects with masks per frame")
    p.add_argument("--min-crop", type=int, default=80, help="smallest mask crop side in pixels")
    p.add_argument("--max-crop", type=int, default=300, help="largest mask crop side in pixels")
    p.add_argument("--frames", type=int, default=200, help="frames per measurement")
    p.add_argument(
        "--full-rle-frames", type=int, default=5, help="frames for the (slow) full-frame RLE reference"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-record", action="store_true", help="skip the record sink's encode row")


def synthetic_frames(
    count: int,
    *,
    width: int = 1920,
    height: int = 1080,
    objects: int = 20,
    min_crop: int = 80,
    max_crop: int = 300,
    seed: int = 0,
    source: str = "bench",
    random_weights: bool = True,
) -> list[Frame]:
    """``count`` frames of one source: a textured H×W×3 uint8 BGR image (read-only,
    like a shared-memory view) and ``objects`` tracks moving a few px per frame,
    each with a box, score, class, track id and an elliptical mask crop
    (keyframe every 10th frame, propagated otherwise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    gradient = np.stack(
        [(xx * 255 // max(1, width - 1)), (yy * 255 // max(1, height - 1)), ((xx + yy) % 256)], axis=-1
    ).astype(np.uint8)
    base: np.ndarray = cv2.add(gradient, rng.integers(0, 32, gradient.shape, dtype=np.uint8))
    base.flags.writeable = False
    sizes = rng.integers(min_crop, max_crop + 1, (objects, 2))  # (w, h)
    pos = rng.uniform(0, 1, (objects, 2)) * (np.array([width, height]) - sizes)
    vel = rng.uniform(-4, 4, (objects, 2))
    track_ids = np.arange(1, objects + 1, dtype=np.int64)
    class_ids = rng.integers(0, 80, objects).astype(np.int32)
    scores = rng.uniform(0.3, 1.0, objects).astype(np.float32)
    crops = []
    for w, h in sizes:
        c = np.zeros((int(h), int(w)), np.uint8)
        cv2.ellipse(c, (int(w) // 2, int(h) // 2), (int(w) * 9 // 20, int(h) * 9 // 20), 0, 0, 360, 1, -1)
        crops.append(c.astype(bool))
    frames = []
    for seq in range(count):
        p = np.clip(pos + vel * seq, 0, np.array([width, height]) - sizes).astype(np.int32)
        crop_boxes = np.concatenate([p, p + sizes], axis=1).astype(np.int32)
        kind = np.full(objects, 0 if seq % 10 == 0 else 1, np.uint8)
        masks = ObjectMasks.pack(crops, crop_boxes, kind, np.full(objects, seq % 10, np.int32))
        header = FrameHeader(
            source=source,
            seq=seq,
            pts=seq * 3000,
            time_base=(1, 90000),
            capture_ns=time.time_ns(),
            random_weights=random_weights,
        )
        arrays: dict[str, Any] = {
            "boxes": crop_boxes.astype(np.float32),
            "scores": scores,
            "class_ids": class_ids,
            "track_ids": track_ids,
            **masks.to_arrays(),
        }
        frame = Frame(header, image=base).evolve(**arrays)
        frames.append(frame)
    return frames


def _timed(fn: Any, items: list[Any], cpu: list[float] | None = None) -> list[float]:
    """Wall ms per call; when ``cpu`` is given, also appends process CPU ms per call
    (steadier than wall time on a host shared with other work)."""
    times = []
    for item in items:
        c0, t0 = time.process_time(), time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - t0) * 1000)
        if cpu is not None:
            cpu.append((time.process_time() - c0) * 1000)
    return times


def _row(
    part: str, variant: str, times: list[float], cpu: list[float] | None = None, **extra: Any
) -> dict[str, Any]:
    p50 = percentile(times, 50)
    return {
        "part": part,
        "variant": variant,
        "frames": len(times),
        "p50_ms": p50,
        "p99_ms": percentile(times, 99),
        "cpu_p50_ms": percentile(cpu, 50) if cpu else None,
        "per_s": 1000.0 / p50 if p50 > 0 else float("nan"),
        **extra,
    }


def _bench_rle(frames: list[Frame], full_frames: int) -> tuple[list[dict[str, Any]], float, float]:
    from stream.masks import rle
    from stream.objects import FrameObjects
    from stream.sinks.publish import frame_size

    def masks_of(frame: Frame) -> tuple[ObjectMasks, int, int]:
        m = FrameObjects.from_arrays(frame.arrays).masks
        if m is None:
            raise ValueError("bench frame without masks")
        h, w = frame_size(frame)
        return m, h, w

    def full(frame: Frame) -> list[str]:
        m, h, w = masks_of(frame)
        return [rle.encode(m.full_mask(i, h, w))["counts"] for i in range(len(m))]

    def crop(frame: Frame) -> list[str]:
        m, h, w = masks_of(frame)
        return [
            rle.crop_counts(m.crop(i), int(m.crop_boxes[i, 0]), int(m.crop_boxes[i, 1]), h, w)
            for i in range(len(m))
        ]

    sample = frames[: max(1, full_frames)]
    same = all(full(f) == crop(f) for f in sample)
    c_full: list[float] = []
    c_crop: list[float] = []
    t_full = _timed(full, sample, c_full)
    t_crop = _timed(crop, frames, c_crop)
    rows = [
        _row("mask_rle", "full-frame pycocotools", t_full, c_full, identical=same),
        _row("mask_rle", "crop runs (used)", t_crop, c_crop, identical=same),
    ]
    return rows, percentile(t_full, 50), percentile(t_crop, 50)


def _bench_publish(frames: list[Frame]) -> tuple[dict[str, Any], float, float, float, float]:
    from stream import transport
    from stream.sinks.publish import PublishSink

    sink = PublishSink("tcp://127.0.0.1:0", hwm=1000)
    ctx: zmq.Context[Any] = zmq.Context()
    sub = transport.open_subscriber(ctx, sink.bound_endpoint, hwm=100_000)
    received = [0]
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            if transport.recv_parts(sub, 50) is not None:
                received[0] += 1

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5.0  # ZeroMQ's slow joiner: wait until the subscription is in
        while received[0] == 0 and time.monotonic() < deadline:
            sink.write(frames[0])
            time.sleep(0.01)
        warm_pub, warm_bytes = sink.published, sink.bytes_published
        received[0] = 0
        cpu: list[float] = []
        t0 = time.perf_counter()
        times = _timed(sink.write, frames, cpu)
        elapsed = time.perf_counter() - t0
        time.sleep(0.2)
        got = received[0]
        n = sink.published - warm_pub
        bytes_per_frame = (sink.bytes_published - warm_bytes) / max(1, n)
    finally:
        stop.set()
        thread.join(2.0)
        sub.close(linger=0)
        ctx.term()
        sink.close()
    records_s = len(frames) / elapsed
    row = _row(
        "publish",
        "PUB tcp loopback, RLE masks",
        times,
        cpu,
        records_s=records_s,
        bytes_per_frame=bytes_per_frame,
        received=got,
    )
    return row, percentile(times, 50), records_s, bytes_per_frame, percentile(cpu, 50)


def run(args: argparse.Namespace) -> BenchResult:
    from stream.render import Annotator

    frames = synthetic_frames(
        args.frames,
        width=args.width,
        height=args.height,
        objects=args.objects,
        min_crop=args.min_crop,
        max_crop=args.max_crop,
        seed=args.seed,
    )
    result = BenchResult()
    annotate = Annotator()
    annotate(frames[0])  # warm-up (OpenCV's first calls allocate)
    c_render: list[float] = []
    t_render = _timed(annotate, frames, c_render)
    result.rows.append(_row("render", f"{args.objects} masks+boxes+labels+traces", t_render, c_render))
    rle_rows, rle_full, rle_crop = _bench_rle(frames, args.full_rle_frames)
    result.rows.extend(rle_rows)
    pub_row, pub_p50, records_s, bytes_per_frame, pub_cpu = _bench_publish(frames)
    result.rows.append(pub_row)
    if not args.no_record:
        from stream.bench.record import bench_encode

        result.rows.append({"part": "record", "variant": "encode", **bench_encode(args)})
    render_p50 = percentile(t_render, 50)
    result.summary = {
        "render_ms_p50": render_p50,
        "publish_ms_p50": pub_p50,
        "publish_records_s": records_s,
        "bytes_per_frame": bytes_per_frame,
        "render_plus_publish_ms": render_p50 + pub_p50,
        "goal_ms": GOAL_MS,
        "meets_goal": render_p50 + pub_p50 < GOAL_MS,
        "render_cpu_ms_p50": percentile(c_render, 50),
        "publish_cpu_ms_p50": pub_cpu,
        "mask_rle_full_ms": rle_full,
        "mask_rle_crop_ms": rle_crop,
        "resolution": f"{args.width}x{args.height}",
        "objects": args.objects,
    }
    return result
