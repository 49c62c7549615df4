"""``stream bench detect``: our YOLO-NAS detector against super-gradients' eager forward.

Measured in one run, alternating ours and the reference so that load from other
processes on a shared host falls on both alike, per batch size:

- ours: ``YoloNasDetector.detect`` on BGR frames of ``--frame-width`` ×
  ``--frame-height`` through the cached TorchScript artifact (``load_yolo_nas``),
  **including** pre-processing (letterbox, upload) and post-processing (threshold,
  NMS, boxes back to frame pixels, copy to host);
- reference: ``models.get(arch)`` (un-fused, as a user gets it) called on the
  already letterboxed (B, 3, S, S) tensor: the network alone, no pre/post; fp32 on
  the CPU, fp16 on CUDA.

Rows: latency p50/p99 (ms per batch) and frames/s for each; ``ratio`` = ours p50 /
reference p50 (below 1: ours is faster). Summary keys ``ours_ms_bN``,
``ref_ms_bN``, ``ratio_bN``, ``ours_fps_bN``. Weights are seeded random ones
unless ``--checkpoint`` is given: timings are real, boxes are not.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from stream.bench import BenchResult, median, percentile, time_pair

log = logging.getLogger(__name__)

HELP = "YOLO-NAS detector (pre/post included) vs super-gradients' eager forward"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="yolo_nas_s", choices=["yolo_nas_s", "yolo_nas_m", "yolo_nas_l"])
    parser.add_argument("--size", type=int, default=640, help="square network input (multiple of 32)")
    parser.add_argument("--batch-sizes", default="1,4,8", help="comma-separated batch sizes")
    parser.add_argument("--iters", type=int, default=10, help="timed batches per figure")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches before each figure")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--checkpoint", type=Path, default=None, help="YOLO-NAS checkpoint (default: random)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--conf", type=float, default=0.25, help="confidence threshold of our detector")
    parser.add_argument("--frame-width", type=int, default=1280)
    parser.add_argument("--frame-height", type=int, default=720)
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="artifact cache (default: <cache>/artifacts, the pipeline's own)"
    )


def _frames(count: int, width: int, height: int) -> list[np.ndarray]:
    """BGR uint8 frames with blocks of colour and noise (a resize has real work to do)."""
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(count):
        small = rng.integers(0, 255, (max(height // 16, 1), max(width // 16, 1), 3), dtype=np.uint8)
        big = np.kron(small, np.ones((16, 16, 1), np.uint8))[:height, :width]
        frame = np.zeros((height, width, 3), np.uint8)
        frame[: big.shape[0], : big.shape[1]] = big
        frames.append(frame + rng.integers(0, 8, frame.shape, dtype=np.uint8))
    return frames


def run(args: argparse.Namespace) -> BenchResult:
    import torch

    from stream.models.yolo_nas import build_network, resolve_device
    from stream.models.yolo_nas_detector import YoloNasDetector
    from stream.models.yolo_nas_export import load_yolo_nas

    batch_sizes = [int(b) for b in str(args.batch_sizes).split(",") if b.strip()]
    device = resolve_device(args.device, "--device")
    cache = args.cache_dir
    if cache is None:
        from stream.models.weights import artifacts_dir

        cache = artifacts_dir(args.cache_root)
    seed = None if args.checkpoint else args.seed

    t0 = time.perf_counter()
    model = load_yolo_nas(
        args.arch,
        cache_dir=cache,
        checkpoint=args.checkpoint,
        random_seed=seed,
        device=str(device),
        input_size=args.size,
    )
    load_s = time.perf_counter() - t0
    detector = YoloNasDetector(model, conf=args.conf)

    ref_dtype = torch.float16 if device.type == "cuda" else torch.float32
    reference: Any = build_network(args.arch, model.num_classes, random_seed=args.seed)
    if args.checkpoint:
        from stream.models.checkpoint import load_state_dict

        reference.load_state_dict(load_state_dict(args.checkpoint))
    reference = reference.eval().to(device=device, dtype=ref_dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    frames = _frames(max(batch_sizes), args.frame_width, args.frame_height)
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {
        "arch": args.arch,
        "size": args.size,
        "device": str(device),
        "frame": f"{args.frame_width}x{args.frame_height}",
        "random_weights": model.random_weights,
        "torch_threads": torch.get_num_threads(),
        "artifact_load_s": round(load_s, 3),
    }
    for batch in batch_sizes:
        batch_frames = frames[:batch]
        x, _ = detector.preprocess(batch_frames)
        x_ref = x.to(dtype=ref_dtype).contiguous()
        boxes: list[int] = []

        def ours(batch_frames: list[np.ndarray] = batch_frames, boxes: list[int] = boxes) -> None:
            boxes.append(sum(len(d) for d in detector.detect(batch_frames)))

        def ref(x_ref: torch.Tensor = x_ref) -> None:
            with torch.no_grad():
                reference(x_ref)

        ours_ms, ref_ms = time_pair(ours, ref, args.iters, args.warmup, sync)
        o50, r50 = median(ours_ms), median(ref_ms)
        rows.append(
            {
                "batch": batch,
                "ours_ms_p50": o50,
                "ours_ms_p99": percentile(ours_ms, 99),
                "ours_fps": batch * 1000.0 / o50,
                "ref_ms_p50": r50,
                "ref_ms_p99": percentile(ref_ms, 99),
                "ref_fps": batch * 1000.0 / r50,
                "ratio": o50 / r50,
                "boxes_per_frame": median(boxes) / batch,
            }
        )
        summary[f"ours_ms_b{batch}"] = round(o50, 2)
        summary[f"ref_ms_b{batch}"] = round(r50, 2)
        summary[f"ratio_b{batch}"] = round(o50 / r50, 3)
        summary[f"ours_fps_b{batch}"] = round(batch * 1000.0 / o50, 2)
        log.info("batch %d: ours %.1f ms, reference %.1f ms", batch, o50, r50)
    return BenchResult(rows=rows, summary=summary)
