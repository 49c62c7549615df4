"""``stream bench segment``: SAM encoder and batched decoder, and mask propagation.

Measured in one run, on the same image, against segment-anything's own
``SamPredictor`` (``set_image`` + ``predict_torch``, eager):

- encoder ms per keyframe (ours: ``SamSegmenter.embed``; reference: ``set_image``);
- decoder ms for N boxes in one call (ours: ``segment``, crops inside the boxes;
  reference: ``predict_torch`` with the same boxes, full-frame masks);
- propagation ms per frame for ``--tracks`` tracks (box motion, optical flow),
  the work done on a frame that is not a keyframe; the reference for it is
  what SAM on every frame would cost (``set_image`` + ``predict_torch``).

Without ``--checkpoint`` the weights are random (seeded): timings are real,
masks are not.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stream.bench import BenchResult, median, time_pair

log = logging.getLogger(__name__)

HELP = "SAM encoder/decoder vs SamPredictor, and per-frame mask propagation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="vit_b", choices=["vit_b", "vit_l", "vit_h", "tiny"])
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="SAM checkpoint (default: random weights)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--boxes", default="1,16,64", help="box counts for the decoder")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before each figure")
    parser.add_argument("--tracks", type=int, default=32, help="tracks for the propagation figure")
    parser.add_argument("--frames", type=int, default=30, help="frames for the propagation figure")
    parser.add_argument("--flow-max-side", type=int, default=480, help="long side the flow is resolved at")
    parser.add_argument("--skip-sam", action="store_true", help="only the propagation figures")


def _time_pair(ours: Callable[[], object], reference: Callable[[], object], repeats: int, warmup: int,
               sync: Callable[[], None]) -> tuple[float, float]:
    """Median ms of ``ours`` and ``reference`` (see ``time_pair``)."""
    a, b = time_pair(ours, reference, repeats, warmup, sync)
    return median(a), median(b)


def _scene(width: int, height: int, tracks: int, frames: int):  # type: ignore[no-untyped-def]
    from stream.sources.synthetic import SyntheticParams, SyntheticScene

    params = SyntheticParams(
        width=width, height=height, num_objects=min(tracks, 64), frames=frames, churn=False, seed=0
    )
    return SyntheticScene(params)


def _sam_rows(args: argparse.Namespace, image: np.ndarray, boxes: np.ndarray) -> tuple[list[dict], dict]:
    import torch
    from segment_anything import SamPredictor

    from stream.models.sam import SamSegmenter, build_sam

    model = build_sam(
        args.arch, args.checkpoint, random_seed=0 if args.checkpoint is None else None, device=args.device
    )
    seg = SamSegmenter(model)
    predictor = SamPredictor(model.sam)
    cuda = model.device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    rows: list[dict] = []
    ours, ref = _time_pair(
        lambda: seg.embed(image), lambda: predictor.set_image(image, "BGR"), args.repeats, args.warmup, sync
    )
    rows.append({"figure": "encoder", "n": 1, "ours_ms": ours, "reference_ms": ref, "speedup": ref / ours})
    summary: dict[str, Any] = {"encoder_ms": ours, "reference_encoder_ms": ref}
    emb = seg.embed(image)
    predictor.set_image(image, "BGR")
    counts = sorted({int(v) for v in args.boxes.split(",") if v.strip()} | {args.tracks})
    for n in counts:
        b = np.resize(boxes, (n, 4)).astype(np.float32)
        tb = predictor.transform.apply_boxes_torch(torch.as_tensor(b, device=model.device), image.shape[:2])

        def reference(tb: torch.Tensor = tb) -> object:
            with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=cuda):
                return predictor.predict_torch(None, None, tb, multimask_output=False)

        def segment(b: np.ndarray = b) -> object:
            return seg.segment(emb, b)

        ours, ref = _time_pair(segment, reference, args.repeats, args.warmup, sync)
        rows.append(
            {"figure": "decoder", "n": n, "ours_ms": ours, "reference_ms": ref, "speedup": ref / ours}
        )
        summary[f"decoder_ms_{n}"] = ours
        summary[f"reference_decoder_ms_{n}"] = ref
    summary["device"] = str(model.device)
    summary["arch"] = args.arch
    summary["weights"] = "random (seed 0)" if model.random_weights else str(args.checkpoint)
    return rows, summary


def _propagation_ms(args: argparse.Namespace, frames: list, method: str) -> float:  # type: ignore[type-arg]
    from stream.masks.crop import MaskCrop
    from stream.masks.keyframes import KeyframePolicy
    from stream.masks.propagate import DenseFlow
    from stream.masks.store import MaskStore

    flow = DenseFlow(max_side=args.flow_max_side) if method == "flow" else None
    store = MaskStore("bench", KeyframePolicy(interval=None, drift_iou=None), method=method, flow=flow)  # type: ignore[arg-type]
    times = []
    for seq, (image, gt) in enumerate(frames):
        t0 = time.perf_counter()
        store.begin_frame(args.height, args.width, image if method == "flow" else None, seq=seq)
        plan = store.plan(gt.ids, gt.boxes)
        if seq == 0:
            crops = [MaskCrop.from_full(gt.masks[i]) for i in plan.keyframe]
            store.update_keyframe(gt.ids[plan.keyframe], plan.boxes[plan.keyframe], crops)
        store.propagate(gt.ids[plan.propagate], plan.boxes[plan.propagate])
        if seq > 1:  # frame 0 is the keyframe, frame 1 the first flow (warm-up)
            times.append((time.perf_counter() - t0) * 1000.0)
    return median(times)


def run(args: argparse.Namespace) -> BenchResult:
    scene = _scene(args.width, args.height, args.tracks, args.frames)
    frames = [scene.render_with_truth(i) for i in range(args.frames)]
    tracks = float(np.mean([len(gt) for _, gt in frames]))
    rows: list[dict] = []
    summary: dict[str, Any] = {}
    if not args.skip_sam:
        image, gt = frames[0]
        sam_rows, summary = _sam_rows(
            args, image, gt.boxes if len(gt) else np.array([[0, 0, 64, 64]], np.float32)
        )
        rows += sam_rows
    ref_frame = None
    if "reference_encoder_ms" in summary:  # SAM on every frame, all tracks as box prompts
        ref_frame = summary["reference_encoder_ms"] + summary[f"reference_decoder_ms_{args.tracks}"]
    for method in ("box", "flow"):
        ms = _propagation_ms(args, frames, method)
        rows.append(
            {
                "figure": f"propagate_{method}",
                "n": round(tracks, 1),
                "ours_ms": ms,
                "reference_ms": ref_frame,
                "speedup": ref_frame / ms if ref_frame else None,
            }
        )
        summary[f"propagate_{method}_ms"] = ms
    summary["tracks"] = tracks
    summary["frame"] = f"{args.width}x{args.height}"
    return BenchResult(rows=rows, summary=summary)
