"""``stream eval detect``: COCO mAP, per-class AP, precision/recall, PR curves and a confusion matrix.

Ground truth: a COCO annotations file (``--data instances_val2017.json``, images
under ``--images`` or the sibling folder named after the split) or a YOLO-format
folder or data.yaml (see stream.eval.coco_data). Predictions: an existing COCO
results file (``--pred``; a results list using the ground truth's ids, or a COCO
dataset-form file such as ``stream predict``'s predictions.json, matched by file
name and category name), else the detector runs over the images (official
weights, or ``--random-weights`` for a smoke run whose numbers mean nothing).

For mAP the detector keeps every box scoring above ``--min-score`` (0.01, as
super-gradients' own COCO validation does); precision, recall and the confusion
matrix are taken at ``--conf``. Metric definitions: stream.eval.detect_metrics.

Writes into ``--out``: summary.json, pr_curve.png, confusion_matrix.png and, when
the detector ran, results.json (its detections, COCO results format). Prints a
table, or with ``--json`` the summary. Bad input (unreadable images, labels of
unknown classes or images, boxes outside their image, predictions for unknown
images) is reported item by item, with the file named, and only that item is
dropped or clipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from stream.errors import ModelError, SourceError
from stream.eval.coco_data import DetectionDataset, load_dataset

log = logging.getLogger(__name__)

HELP = "score detection (COCO mAP, per-class AP, precision/recall, PR curves, confusion matrix)"
DEFAULT_OUT = Path("out/eval-detect")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        help="COCO annotations .json, or a YOLO dataset folder / data.yaml",
    )
    parser.add_argument("--images", type=Path, help="image folder (default: found next to --data)")
    parser.add_argument("--split", default="val", help="YOLO data.yaml split to read (default val)")
    parser.add_argument(
        "--pred", type=Path, help="score this COCO results file instead of running a detector"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON summary instead of a table")
    parser.add_argument(
        "--conf",
        type=float,
        default=0.25,
        help="threshold of precision, recall and the confusion matrix (default 0.25)",
    )
    d = parser.add_argument_group("detector (without --pred)")
    d.add_argument("--model", default="yolo_nas_s", choices=["yolo_nas_s", "yolo_nas_m", "yolo_nas_l"])
    d.add_argument("--weights", help="registry name or checkpoint path (default: --model's official weights)")
    d.add_argument("--min-score", type=float, default=0.01, help="lowest score kept for mAP (default 0.01)")
    d.add_argument("--iou", type=float, default=0.7, help="NMS IoU (default 0.7)")
    d.add_argument("--max-det", type=int, default=300, help="detections per image (default 300)")
    d.add_argument("--input-size", type=int, default=640, help="detector input side (default 640)")
    d.add_argument("--device", default="auto")
    d.add_argument("--batch", type=int, default=8)
    d.add_argument(
        "--preprocess",
        action="append",
        default=[],
        metavar="KEY=VALUE[,…]",
        help="preprocess images before detection (as stream predict)",
    )
    d.add_argument("--preprocess-config", type=Path, metavar="YAML")
    d.add_argument(
        "--random-weights",
        action="store_true",
        help="untrained detector (smoke test: the numbers are NOT a model's accuracy)",
    )
    d.add_argument("--seed", type=int, default=0)  # fmt: skip


# --- predictions ---------------------------------------------------------------------------------


def _valid_result(r: Any, where: str, ds: DetectionDataset) -> bool:
    try:
        ok = len(r["bbox"]) == 4 and all(math.isfinite(float(v)) for v in (*r["bbox"], r["score"]))
        int(r["image_id"]), int(r["category_id"])
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        ds.problem(f"{where}: needs image_id, category_id, bbox [x, y, w, h] and score; ignored")
    return ok


def load_predictions(path: Path, ds: DetectionDataset) -> list[dict[str, Any]]:
    """COCO results in ``ds``'s image and category ids (see module doc); one problem per bad item."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"cannot read predictions {path}: {exc}") from exc
    image_map: dict[int, int] | None = None
    cat_map: dict[int, int] | None = None
    if isinstance(raw, dict) and isinstance(raw.get("annotations"), list):
        image_map = _match_images(raw.get("images") or [], ds, path)
        cat_map = _match_categories(raw.get("categories") or [], ds, path)
        items = raw["annotations"]
    elif isinstance(raw, list):
        items = raw
    else:
        raise SourceError(f"{path} is neither a COCO results list nor a COCO file with 'annotations'")
    image_ids = {im["id"] for im in ds.coco["images"]}
    cat_ids = {c for c, _ in ds.categories}
    out = []
    for i, r in enumerate(items):
        where = f"{path}: prediction #{i}"
        if not isinstance(r, dict) or not _valid_result(r, where, ds):
            continue
        iid, cid = int(r["image_id"]), int(r["category_id"])
        iid = image_map.get(iid, -1) if image_map is not None else iid
        cid = cat_map.get(cid, -1) if cat_map is not None else cid
        if iid not in image_ids:
            ds.problem(f"{where}: image_id {r['image_id']} is not an image of the dataset; ignored")
            continue
        if cid not in cat_ids:
            ds.problem(f"{where}: category_id {r['category_id']} is not a category of the dataset; ignored")
            continue
        out.append({"image_id": iid, "category_id": cid, "bbox": [float(v) for v in r["bbox"]],
                    "score": float(r["score"])})  # fmt: skip
    return out


def _match_images(images: list[Any], ds: DetectionDataset, path: Path) -> dict[int, int]:
    by_name = {im["file_name"]: im["id"] for im in ds.coco["images"]}
    by_base: dict[str, int | None] = {}
    for name, iid in by_name.items():
        base = Path(name).name
        by_base[base] = None if base in by_base else iid  # None: ambiguous
    out = {}
    for im in images:
        name = str(im.get("file_name", ""))
        iid = by_name.get(name)
        if iid is None:
            iid = by_base.get(Path(name).name)
        if iid is None:
            ds.problem(
                f"{path}: image {name!r} is not in the dataset (matched by file name); its predictions are ignored"
            )
        else:
            out[int(im["id"])] = iid
    return out


def _match_categories(cats: list[Any], ds: DetectionDataset, path: Path) -> dict[int, int]:
    by_name = {name: cid for cid, name in ds.categories}
    out = {}
    for c in cats:
        if c.get("name") in by_name:
            out[int(c["id"])] = by_name[c["name"]]
        else:
            ds.problem(
                f"{path}: category {c.get('name')!r} is not a dataset category; its predictions are ignored"
            )
    return out


def class_mapping(class_names: tuple[str, ...], ds: DetectionDataset) -> dict[int, int]:
    """Detector class index → dataset category id, by name (by position when no name is
    shared and the counts agree). ModelError when the two cannot be matched."""
    by_name = {name: cid for cid, name in ds.categories}
    mapping = {i: by_name[n] for i, n in enumerate(class_names) if n in by_name}
    if mapping:
        missing = [n for _, n in ds.categories if n not in class_names]
        if missing:
            log.warning(
                "dataset classes the detector does not know (scored as missed): %s", ", ".join(missing)
            )
        return mapping
    if len(class_names) == len(ds.categories):
        log.warning("no class name is shared between the detector and the dataset; matching them by position")
        return {i: cid for i, (cid, _) in enumerate(ds.categories)}
    raise ModelError(
        f"the detector's {len(class_names)} classes ({', '.join(class_names[:5])} …) and the dataset's "
        f"{len(ds.categories)} ({', '.join(n for _, n in ds.categories[:5])} …) share no names; "
        "use a checkpoint trained on these classes"
    )


def run_detector(args: argparse.Namespace, ds: DetectionDataset) -> tuple[list[dict[str, Any]], bool]:
    """The detector over every dataset image: (COCO results, random_weights). An image that
    cannot be read, or whose size differs from its annotation, is reported and left out."""
    from tqdm import tqdm

    from stream.predict import ImagePredictor, PredictOptions, load_detector, read_image, resolve_checkpoints
    from stream.preprocess import Preprocessor, load_preprocess_file, parse_preprocess_options

    base = load_preprocess_file(args.preprocess_config) if args.preprocess_config else None
    pre = Preprocessor(parse_preprocess_options(args.preprocess, base))
    opts = PredictOptions(
        model=args.model, weights=args.weights, masks=False, conf=args.min_score, iou=args.iou,
        max_det=args.max_det, input_size=args.input_size, device=args.device, batch=args.batch,
        random_weights=args.random_weights, seed=args.seed,
    )  # fmt: skip
    cache = args.cache_root
    ckpt, _ = resolve_checkpoints(opts, cache)
    predictor = ImagePredictor(load_detector(opts, cache, ckpt), None, pre)
    mapping = class_mapping(predictor.class_names, ds)
    images = list(ds.coco["images"])
    results: list[dict[str, Any]] = []
    bad: set[int] = set()
    batch = max(1, args.batch)
    with tqdm(
        total=len(images), unit="img", desc="eval", file=sys.stderr, disable=not sys.stderr.isatty()
    ) as bar:
        for start in range(0, len(images), batch):
            chunk, pixels = [], []
            for im in images[start : start + batch]:
                path = ds.image_paths[im["id"]]
                try:
                    img = read_image(path)
                except SourceError as exc:
                    ds.problem(f"{exc}; image left out of the evaluation")
                    bad.add(im["id"])
                    continue
                if (img.shape[1], img.shape[0]) != (im["width"], im["height"]):
                    ds.problem(f"{path}: the image is {img.shape[1]}x{img.shape[0]} but its annotations say "
                               f"{im['width']}x{im['height']}; image left out of the evaluation")  # fmt: skip
                    bad.add(im["id"])
                    continue
                chunk.append(im)
                pixels.append(img)
            for im, pred in zip(chunk, predictor(pixels) if pixels else [], strict=True):
                det = pred.detections
                for box, score, cls in zip(
                    det.boxes.tolist(), det.scores.tolist(), det.class_ids.tolist(), strict=True
                ):
                    if int(cls) in mapping:
                        x0, y0, x1, y1 = box
                        results.append({"image_id": im["id"], "category_id": mapping[int(cls)],
                                        "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                                        "score": round(float(score), 5)})  # fmt: skip
            bar.update(len(images[start : start + batch]))
    if bad:
        ds.drop_images(bad)
    if not ds.coco["images"]:
        raise SourceError("no image of the dataset could be read; nothing to evaluate")
    return results, predictor.random_weights


# --- report --------------------------------------------------------------------------------------


def _num(v: float) -> float | None:
    return None if v is None or math.isnan(float(v)) else float(v)


def summary(m: Any, ds: DetectionDataset, args: argparse.Namespace, n_pred: int, random_weights: bool,
            plots: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """The JSON summary (written to summary.json; printed with --json)."""
    return {
        "data": str(args.data),
        "format": ds.kind,
        "predictions_from": str(args.pred) if args.pred else f"model {args.model}",
        "random_weights": random_weights,
        "images": len(ds.coco["images"]),
        "ground_truth_boxes": m.gt,
        "predictions": n_pred,
        "mAP": _num(m.map),
        "mAP50": _num(m.map50),
        "mAP75": _num(m.stats["AP75"]),
        "coco_stats": {k: _num(v) for k, v in m.stats.items()},
        "conf": m.conf,
        "match_iou": 0.5,
        "precision": _num(m.precision),
        "recall": _num(m.recall),
        "tp": m.tp,
        "fp": m.fp,
        "per_class": [
            {
                "id": c.id,
                "name": c.name,
                "gt": c.gt,
                "ap": _num(c.ap),
                "ap50": _num(c.ap50),
                "precision": _num(c.precision),
                "recall": _num(c.recall),
                "tp": c.tp,
                "fp": c.fp,
            }
            for c in m.classes
        ],  # fmt: skip
        "confusion_matrix": {
            "labels": [c.name for c in m.classes] + ["background"],
            "rows": "true class",
            "columns": "predicted class",
            "counts": m.confusion.tolist(),
        },
        "plots": plots,
        "problems": list(ds.problems),
    }


def _print_report(s: dict[str, Any]) -> None:
    from stream.report import format_table

    if s["random_weights"]:
        print("RANDOM WEIGHTS: the detector is untrained; these numbers are NOT its accuracy")
    print(f"{s['data']} ({s['format']}): {s['images']} images, {s['ground_truth_boxes']} boxes; "
          f"{s['predictions']} predictions from {s['predictions_from']}")  # fmt: skip
    rows = [{"class": c["name"], "gt": c["gt"], "AP": c["ap"], "AP50": c["ap50"], "P": c["precision"],
             "R": c["recall"]} for c in s["per_class"]]  # fmt: skip
    print(format_table(rows))
    print(f"mAP@[.5:.95] {s['mAP']:.4f}   mAP@.5 {s['mAP50']:.4f}   mAP@.75 {s['mAP75']:.4f}")
    print(f"at conf ≥ {s['conf']:g} (IoU 0.5): precision {s['precision']:.4f}  recall {s['recall']:.4f}  "
          f"(TP {s['tp']}, FP {s['fp']})")  # fmt: skip
    if s["problems"]:
        print(f"{len(s['problems'])} input problem(s) (each logged above; all in summary.json)")
    for name, path in s["plots"].items():
        print(f"{name}: {path}")


def run(args: argparse.Namespace) -> int:
    from stream.eval.detect_metrics import evaluate, plot_confusion, plot_pr_curves

    if not 0.0 <= args.conf < 1.0:
        raise SourceError(f"--conf must be in [0, 1), got {args.conf}")
    ds = load_dataset(args.data, images=args.images, split=args.split)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.pred:
        results, random_weights = load_predictions(args.pred, ds), False
    else:
        results, random_weights = run_detector(args, ds)
        (out / "results.json").write_text(json.dumps(results, separators=(",", ":")))
    m = evaluate(ds.coco, results, args.conf)
    tag = " — RANDOM WEIGHTS" if random_weights else ""
    plots = {
        "pr_curve": str(plot_pr_curves(m, out / "pr_curve.png", f"precision–recall per class (IoU 0.5){tag}")),
        "confusion_matrix": str(plot_confusion(m, out / "confusion_matrix.png",
                                               f"confusion matrix (conf ≥ {m.conf:g}, IoU 0.5){tag}")),
    }  # fmt: skip
    s = summary(m, ds, args, len(results), random_weights, plots)
    (out / "summary.json").write_text(json.dumps(s, indent=1))
    if args.json:
        from stream.jsonout import emit_json

        emit_json(args, s)
    else:
        _print_report(s)
        print(f"summary: {out / 'summary.json'}")
    return 0
