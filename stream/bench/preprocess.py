"""``stream bench preprocess``: what each preprocessing option costs per frame, and what it does
to a synthetic low-light, noisy clip with known boxes.

The clip: ``SyntheticScene`` frames (default 1920×1080) scaled to ``--darken`` of their
brightness plus Gaussian noise of ``--noise`` gray levels. For each option the
table gives the median and p90 time per frame (one thread of work per frame, as the
stage does it), the PSNR of the processed frame against the clean (well-lit,
noise-free) frame, the mean luma, and ``noise_left``: the standard deviation of the
difference between the processed noisy frame and the same processing of the
low-light frame without noise (how much of the added noise survives, in output
gray levels, after the tone curve has amplified it). With ``--detector`` the detector also runs on
the processed frames and the class-agnostic recall at IoU 0.5 against the synthetic
ground-truth boxes is given (conf ``--conf``). The synthetic shapes are not COCO
classes and random weights score every anchor alike, so that recall says nothing
about a real model unless real weights are loaded and the scene holds the
model's classes; see docs/predict.md for how to measure it on your own images.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from stream.bench import BenchResult, median, percentile
from stream.preprocess import PreprocessConfig, Preprocessor

HELP = "cost per frame of each preprocessing option, and its effect on a synthetic low-light clip"

OPTIONS: dict[str, dict[str, Any]] = {
    "off": {},
    "gamma 2.2": {"gamma": 2.2},
    "clahe": {"clahe": True},
    "bilateral": {"denoise": "bilateral", "strength": 10},
    "nlmeans": {"denoise": "nlmeans", "strength": 10},
    "bilateral+gamma+clahe": {"denoise": "bilateral", "strength": 10, "gamma": 2.2, "clahe": True},
    "nlmeans+gamma+clahe": {"denoise": "nlmeans", "strength": 10, "gamma": 2.2, "clahe": True},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--frames", type=int, default=5, help="clip length (frames timed per option)")
    parser.add_argument("--darken", type=float, default=0.25, help="brightness factor of the low-light clip")
    parser.add_argument("--noise", type=float, default=10.0, help="noise standard deviation, gray levels")
    parser.add_argument("--options", nargs="*", choices=list(OPTIONS), help="only these options")
    parser.add_argument(
        "--detector", action="store_true", help="also run YOLO-NAS and report recall (see HELP)"
    )
    parser.add_argument("--random-weights", action="store_true", help="with --detector: untrained detector")
    parser.add_argument("--input-size", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--device", default="auto")


def low_light_clip(
    width: int, height: int, frames: int, darken: float, noise: float, seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per frame: clean, low-light without noise, low-light with noise (H, W, 3) uint8 BGR,
    and the ground-truth boxes (N, 4) float32 XYXY pixels."""
    from stream.sources.synthetic import SyntheticParams, SyntheticScene

    scene = SyntheticScene(SyntheticParams(width=width, height=height, num_objects=6, seed=seed))
    rng = np.random.default_rng(seed)
    clean, quiet, dark, boxes = [], [], [], []
    for i in range(frames):
        img, gt = scene.render_with_truth(i * 7)
        dim = img.astype(np.float32) * darken
        noisy = dim + rng.normal(0.0, noise, img.shape).astype(np.float32)
        clean.append(img)
        quiet.append(np.clip(np.rint(dim), 0, 255).astype(np.uint8))
        dark.append(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
        boxes.append(np.asarray(gt.boxes, np.float32).reshape(-1, 4))
    return clean, quiet, dark, boxes


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def _recall(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """(ground-truth boxes matched by any prediction at IoU ≥ 0.5, ground-truth boxes)."""
    if len(truth) == 0 or len(pred) == 0:
        return 0, len(truth)
    x0 = np.maximum(truth[:, None, 0], pred[None, :, 0])
    y0 = np.maximum(truth[:, None, 1], pred[None, :, 1])
    x1 = np.minimum(truth[:, None, 2], pred[None, :, 2])
    y1 = np.minimum(truth[:, None, 3], pred[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_t = (truth[:, 2] - truth[:, 0]) * (truth[:, 3] - truth[:, 1])
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    iou = inter / np.maximum(area_t[:, None] + area_p[None, :] - inter, 1e-9)
    return int((iou.max(axis=1) >= 0.5).sum()), len(truth)


def run(args: argparse.Namespace) -> BenchResult:
    import cv2

    clean, quiet, dark, truth = low_light_clip(args.width, args.height, args.frames, args.darken, args.noise)
    detector = None
    if args.detector:
        from pathlib import Path

        from stream.predict import PredictOptions, load_detector, resolve_checkpoints

        opts = PredictOptions(masks=False, conf=args.conf, input_size=args.input_size, device=args.device,
                              random_weights=args.random_weights)  # fmt: skip
        cache = Path(args.cache_root)
        ckpt, _ = resolve_checkpoints(opts, cache)
        detector = load_detector(opts, cache, ckpt)
    result = BenchResult()
    for name in args.options or list(OPTIONS):
        pre = Preprocessor(PreprocessConfig(**OPTIONS[name]))
        pre(dark[0])  # warm-up (CLAHE and NL-means allocate on first use)
        times, psnrs, lumas, noise, outs = [], [], [], [], []
        for c, q, d in zip(clean, quiet, dark, strict=True):
            t0 = time.perf_counter()
            out = pre(d)
            times.append((time.perf_counter() - t0) * 1000.0)
            psnrs.append(_psnr(out, c))
            noise.append(float(np.std(out.astype(np.float32) - pre(q).astype(np.float32))))
            lumas.append(float(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY).mean()))
            outs.append(out)
        row: dict[str, Any] = {
            "option": name,
            "ms_per_frame": median(times),
            "p90_ms": percentile(times, 90),
            "psnr_db": float(np.mean(psnrs)),
            "mean_luma": float(np.mean(lumas)),
            "noise_left": float(np.mean(noise)),
        }
        if detector is not None:
            hit = total = 0
            for out, boxes in zip(outs, truth, strict=True):
                (det,) = detector.detect([out])
                h, n = _recall(det.boxes, boxes)
                hit, total = hit + h, total + n
            row["recall_iou50"] = hit / total if total else 0.0
        result.rows.append(row)
    clean_luma = float(np.mean([cv2.cvtColor(c, cv2.COLOR_BGR2GRAY).mean() for c in clean]))
    result.summary = {
        "frame": f"{args.width}x{args.height}",
        "clean_mean_luma": clean_luma,
        "darken": args.darken,
        "noise": args.noise,
        "cv2_threads": cv2.getNumThreads(),
    }
    if detector is not None:
        result.summary["detector_random_weights"] = bool(detector.random_weights)
    return result
