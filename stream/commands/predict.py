"""``stream predict PATH… [--out DIR]``: YOLO-NAS boxes and SAM masks on still images.

Writes annotated copies and COCO JSON (see stream.predict). Weights follow the
pipeline's rules: missing weights stop the command with the ``stream weights
pull`` line to run; ``--random-weights`` runs untrained models and marks every
output (a banner on the pictures, ``"random_weights": true`` in the JSON info).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("out/predict")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="detect and segment objects in images and folders (annotated images + COCO JSON)",
        description="YOLO-NAS boxes and SAM masks for each image (JPEG, PNG, WebP, TIFF, BMP); folders are "
        "read without recursion. Writes annotated images, results.json (COCO results) and predictions.json "
        "(COCO dataset form with info) into --out.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files and folders of images")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--model", default="yolo_nas_s", choices=["yolo_nas_s", "yolo_nas_m", "yolo_nas_l"])
    p.add_argument(
        "--weights", help="detector weights: a registry name or a checkpoint path (default: --model's)"
    )
    p.add_argument(
        "--sam-model",
        default="vit_b",
        choices=["vit_b", "vit_l", "vit_h", "tiny"],
        help="SAM size (default vit_b; 'tiny' is an untrained test model)",
    )
    p.add_argument("--sam-weights", help="SAM weights: a registry name or a checkpoint path")
    p.add_argument("--no-masks", action="store_true", help="boxes only: do not run SAM")
    p.add_argument(
        "--conf", type=float, default=0.25, help="keep detections scoring above this (default 0.25)"
    )
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default 0.7)")
    p.add_argument("--max-det", type=int, default=300, help="detections kept per image (default 300)")
    p.add_argument(
        "--input-size", type=int, default=640, help="detector input side, multiple of 32 (default 640)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--batch", type=int, default=8, help="images per detector forward (default 8)")
    p.add_argument(
        "--preprocess",
        action="append",
        default=[],
        metavar="KEY=VALUE[,…]",
        help="preprocess before detection, e.g. denoise=bilateral,gamma=1.8,clahe=true "
        "(keys of stream.preprocess.PreprocessConfig; repeatable)",
    )
    p.add_argument(
        "--preprocess-config",
        type=Path,
        metavar="YAML",
        help="preprocess settings from a YAML mapping (--preprocess items override it)",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="run untrained models (no download; outputs are NOT detections and are marked so)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --random-weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_predict)


def _check_args(args: argparse.Namespace) -> None:
    from stream.errors import ConfigError

    if not 0.0 <= args.conf < 1.0:
        raise ConfigError(f"--conf must be in [0, 1), got {args.conf}")
    if not 0.0 < args.iou <= 1.0:
        raise ConfigError(f"--iou must be in (0, 1], got {args.iou}")
    if args.batch < 1 or args.max_det < 1:
        raise ConfigError(f"--batch and --max-det must be ≥ 1, got {args.batch} and {args.max_det}")
    if args.input_size < 64 or args.input_size % 32:
        raise ConfigError(
            f"--input-size must be a multiple of 32, at least 64 (e.g. 320, 640); got {args.input_size}"
        )


def cmd_predict(args: argparse.Namespace) -> int:
    from stream.models.weights import cache_dir
    from stream.predict import (
        ImagePredictor,
        PredictOptions,
        collect_images,
        load_detector,
        load_segmenter,
        run_predict,
    )
    from stream.preprocess import Preprocessor, load_preprocess_file, parse_preprocess_options

    _check_args(args)
    base = load_preprocess_file(args.preprocess_config) if args.preprocess_config else None
    pre_cfg = parse_preprocess_options(args.preprocess, base)
    opts = PredictOptions(
        model=args.model, weights=args.weights, sam_model=args.sam_model, sam_weights=args.sam_weights,
        masks=not args.no_masks, conf=args.conf, iou=args.iou, max_det=args.max_det, input_size=args.input_size,
        device=args.device, batch=args.batch, random_weights=args.random_weights, seed=args.seed,
    )  # fmt: skip
    cache = cache_dir(os.environ)
    from stream.predict import resolve_checkpoints

    det_ckpt, sam_ckpt = resolve_checkpoints(opts, cache)  # missing weights: stop before any work
    files, skipped = collect_images(args.paths)
    for s in skipped:
        print(f"stream predict: skipping {s.path}: {s.reason}", file=sys.stderr)
    if not files:
        from stream.errors import SourceError

        raise SourceError("no images to process in " + ", ".join(str(p) for p in args.paths))
    detector = load_detector(opts, cache, det_ckpt)
    segmenter = load_segmenter(opts, sam_ckpt) if opts.masks else None
    predictor = ImagePredictor(detector, segmenter, Preprocessor(pre_cfg))
    info = {
        "model": opts.model,
        "weights": str(det_ckpt) if det_ckpt else f"random (seed {opts.seed})",
        "sam_model": opts.sam_model if opts.masks else None,
        "sam_weights": (str(sam_ckpt) if sam_ckpt else f"random (seed {opts.seed})") if opts.masks else None,
        "conf": opts.conf,
        "iou": opts.iou,
        "input_size": opts.input_size,
        "preprocess": pre_cfg.model_dump() if pre_cfg.enabled else None,
    }
    report = run_predict(
        files,
        args.out,
        predictor,
        batch=opts.batch,
        info=info,
        skipped=(),
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    warn = "  RANDOM WEIGHTS: these are NOT detections" if report.random_weights else ""
    rate = report.processed / report.seconds if report.seconds > 0 else 0.0
    print(
        f"processed {report.processed} image(s) in {report.seconds:.1f} s ({rate:.2f} img/s): "
        f"{report.detections} detections, {report.masks} masks{warn}"
    )
    bad = [s for s in report.skipped]
    if bad or skipped:
        print(f"skipped {len(bad) + len(skipped)} file(s):")
        for s in [*skipped, *bad]:
            print(f"  {s.path}: {s.reason}")
    print(f"annotated images: {report.out_dir}")
    print(f"COCO results: {report.results_path}  (dataset form with info: {report.predictions_path})")
    return 0
