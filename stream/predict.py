"""Still images: YOLO-NAS boxes and SAM masks per image, annotated copies and COCO JSON.

``stream predict PATH… --out DIR`` (stream.commands.predict) is a thin wrapper
around this module:

- ``collect_images`` expands files and folders (not recursive) into image files
  (JPEG, PNG, WebP, TIFF, BMP); a folder's other files are reported and skipped.
- ``read_image`` decodes one file to (H, W, 3) uint8 BGR (EXIF orientation applied,
  grayscale and alpha converted); SourceError names the file when it cannot.
- ``ImagePredictor`` runs the optional ``Preprocessor``, the detector on a batch
  (one forward for the batch) and, per image, one SAM embedding and one decoder call
  for all its boxes: every detection gets a mask (an empty one where SAM finds none).
- ``run_predict`` reads ahead in a thread while the models run, shows a progress bar,
  reports and skips files that cannot be read, and writes into the output folder:
  ``<name>`` (the annotated picture, same format as the input), ``results.json``
  (COCO results format: a list of {image_id, category_id, bbox [x, y, w, h] pixels,
  score, segmentation: COCO RLE} that ``COCO.loadRes`` and COCOeval read) and
  ``predictions.json`` (a COCO dataset file: info, images with file_name, width and
  height, categories, annotations with score; ``info.random_weights`` says whether
  the models were untrained). Category ids are COCO's official ids for the 80 COCO
  classes (see stream.eval.coco_data.category_ids).

Boxes are XYXY float32 in source-image pixels internally and [x, y, w, h] in the
JSON; masks are full-image COCO RLE. Annotations are drawn on the image the models
saw (after preprocessing), as the video pipeline does.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from stream import __version__
from stream.errors import SourceError
from stream.imageio import IMAGE_EXTENSIONS, read_image  # noqa: F401  (read_image: part of this module's API)
from stream.masks.crop import MaskCrop
from stream.objects import category_ids

if TYPE_CHECKING:
    from stream.models.detections import Detections
    from stream.preprocess import Preprocessor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skipped:
    """A file that was not processed, and why (shown to the user)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class PredictOptions:
    """Models and thresholds for image mode (the ``stream predict`` options).

    model: YOLO-NAS size; weights: registry name or checkpoint path (default: the
    official weights of ``model``). sam_model: SAM size ('tiny' is a small untrained
    test model); masks: False skips SAM. conf: keep scores above this; iou: NMS IoU;
    max_det: detections per image; input_size: detector input side in pixels
    (multiple of 32); batch: images per detector forward; random_weights: untrained
    models (outputs are marked, they are not detections); seed: their seed.
    """

    model: str = "yolo_nas_s"
    weights: str | None = None
    sam_model: str = "vit_b"
    sam_weights: str | None = None
    masks: bool = True
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    input_size: int = 640
    device: str = "auto"
    batch: int = 8
    random_weights: bool = False
    seed: int = 0


def resolve_checkpoints(opts: PredictOptions, cache: Path) -> tuple[Path | None, Path | None]:
    """(detector checkpoint, SAM checkpoint), None where weights are random.

    Called before anything is built, so that missing weights fail at once with a
    WeightsError naming ``stream weights pull NAME``. SAM 'tiny' has no released
    weights: it is always random (and marks the outputs)."""
    from stream.models.weights import resolve_weights

    det = None if opts.random_weights else resolve_weights(opts.weights or opts.model, cache)
    sam = None
    if opts.masks and not opts.random_weights and opts.sam_model != "tiny":
        sam = resolve_weights(opts.sam_weights or f"sam_{opts.sam_model}", cache)
    return det, sam


def load_detector(opts: PredictOptions, cache: Path, checkpoint: Path | None) -> Any:
    """A ``YoloNasDetector`` through the exported-artifact cache in ``cache/artifacts``."""
    from stream.models.weights import artifacts_dir
    from stream.models.yolo_nas_detector import YoloNasDetector
    from stream.models.yolo_nas_export import load_yolo_nas

    model = load_yolo_nas(
        opts.model, cache_dir=artifacts_dir(cache), checkpoint=checkpoint,
        random_seed=opts.seed if checkpoint is None else None, device=opts.device, input_size=opts.input_size,
    )  # fmt: skip
    if checkpoint is None:
        log.warning(
            "detector: RANDOM WEIGHTS (%s, seed %d): outputs are not detections", opts.model, opts.seed
        )
    return YoloNasDetector(model, conf=opts.conf, iou=opts.iou, max_detections=opts.max_det)


def load_segmenter(opts: PredictOptions, checkpoint: Path | None) -> Any:
    """A ``SamSegmenter`` (random weights, seeded, when ``checkpoint`` is None)."""
    from stream.models.sam import SamSegmenter, build_sam

    model = build_sam(
        opts.sam_model, checkpoint, random_seed=opts.seed if checkpoint is None else None, device=opts.device
    )
    return SamSegmenter(model)


# --- input ---------------------------------------------------------------------------------------


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS


def collect_images(paths: Iterable[Path]) -> tuple[list[Path], list[Skipped]]:
    """Files to process, in the order given (a folder's images sorted by name), and
    what was left out: missing paths, and a folder's files that are not images by
    name. Hidden files (starting with '.') are left out silently. A file named on
    the command line is always tried, whatever its extension."""
    files: list[Path] = []
    skipped: list[Skipped] = []
    seen: set[Path] = set()
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            entries = sorted(e for e in p.iterdir() if e.is_file() and not e.name.startswith("."))
            images = [e for e in entries if _is_image_name(e)]
            for e in entries:
                if not _is_image_name(e):
                    skipped.append(Skipped(e, f"not an image file ({e.suffix or 'no extension'})"))
            if not images:
                skipped.append(Skipped(p, "folder holds no images (" + ", ".join(IMAGE_EXTENSIONS) + ")"))
        elif p.is_file():
            images = [p]
        else:
            skipped.append(Skipped(p, "no such file or folder"))
            continue
        for e in images:
            key = e.resolve()
            if key not in seen:
                seen.add(key)
                files.append(e)
    return files, skipped


# --- models --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePrediction:
    """One image's objects: detections (boxes (N,4) float32 XYXY pixels of ``image``,
    scores, class_ids), masks (N MaskCrop in the same pixels; None without SAM), and
    ``image``: the (H, W, 3) uint8 BGR picture the models saw (after preprocessing)."""

    image: np.ndarray
    detections: Detections
    masks: list[MaskCrop] | None


class ImagePredictor:
    """Preprocess → detect (one batch) → SAM per image, for lists of BGR images.

    detector: ``YoloNasDetector`` (or anything with ``detect(images)``), segmenter:
    ``SamSegmenter`` or None (no masks), preprocessor: applied first when given and enabled.
    """

    def __init__(
        self, detector: Any, segmenter: Any | None = None, preprocessor: Preprocessor | None = None
    ) -> None:
        self.detector = detector
        self.segmenter = segmenter
        self.preprocessor = preprocessor if preprocessor is not None and preprocessor.enabled else None
        self.seconds = {"preprocess": 0.0, "detect": 0.0, "segment": 0.0}

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.detector.class_names)

    @property
    def random_weights(self) -> bool:
        seg = self.segmenter
        return bool(getattr(self.detector, "random_weights", False)) or bool(
            seg is not None and seg.model.random_weights
        )

    def __call__(self, images: Sequence[np.ndarray]) -> list[ImagePrediction]:
        t0 = time.perf_counter()
        if self.preprocessor is not None:
            images = [self.preprocessor(im) for im in images]
        t1 = time.perf_counter()
        dets = self.detector.detect(list(images))
        t2 = time.perf_counter()
        out = []
        for image, det in zip(images, dets, strict=True):
            masks = None
            if self.segmenter is not None:
                masks = [MaskCrop.empty() for _ in range(len(det.boxes))]
                if len(det.boxes):
                    emb = self.segmenter.embed(image)
                    masks = list(self.segmenter.segment(emb, det.boxes).crops)
            out.append(ImagePrediction(image, det, masks))
        t3 = time.perf_counter()
        self.seconds["preprocess"] += t1 - t0
        self.seconds["detect"] += t2 - t1
        self.seconds["segment"] += t3 - t2
        return out


# --- output --------------------------------------------------------------------------------------


@dataclass
class PredictReport:
    """What a run did. processed: images with results; skipped: files left out and why;
    detections / masks: totals; seconds: wall time of the whole run; paths written."""

    processed: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    detections: int = 0
    masks: int = 0
    seconds: float = 0.0
    random_weights: bool = False
    out_dir: Path = Path()
    results_path: Path = Path()
    predictions_path: Path = Path()
    stage_seconds: dict[str, float] = field(default_factory=dict)


def _annotate(annotator: Any, pred: ImagePrediction, seq: int, random_weights: bool) -> np.ndarray:
    from stream.messages import Frame, FrameHeader
    from stream.objects import ObjectMasks

    det = pred.detections
    arrays: dict[str, np.ndarray] = {"boxes": det.boxes, "scores": det.scores, "class_ids": det.class_ids}
    if pred.masks is not None:
        rects = np.array([m.rect if not m.is_empty else (0, 0, 0, 0) for m in pred.masks], np.int32).reshape(
            -1, 4
        )
        n = len(pred.masks)
        packed = ObjectMasks.pack(
            [m.mask for m in pred.masks], rects, np.zeros(n, np.uint8), np.zeros(n, np.int32)
        )
        arrays.update(packed.to_arrays())
    header = FrameHeader("predict", seq, 0, (1, 1), 0, random_weights=random_weights)
    return np.asarray(annotator(Frame(header, arrays, pred.image)))


def _unique_name(path: Path, used: set[str]) -> str:
    name, k = path.name, 1
    while name.lower() in used:
        name = f"{path.stem}_{k}{path.suffix}"
        k += 1
    used.add(name.lower())
    return name


class _CocoWriter:
    """Collects images and objects into COCO results and dataset form."""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = tuple(class_names)
        self.cat_ids = category_ids(self.class_names)
        self.images: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.areas: list[float] = []  # per result: mask area in pixels (box area without masks)

    def add(self, path: Path, annotated: str, pred: ImagePrediction) -> int:
        from stream.masks.rle import encode_crop

        image_id = len(self.images) + 1
        height, width = pred.image.shape[:2]
        self.images.append(
            {"id": image_id, "file_name": path.name, "width": width, "height": height, "path": str(path),
             "annotated": annotated}
        )  # fmt: skip
        det = pred.detections
        for i in range(len(det.boxes)):
            x0, y0, x1, y1 = (float(v) for v in det.boxes[i])
            r: dict[str, Any] = {
                "image_id": image_id,
                "category_id": int(self.cat_ids[int(det.class_ids[i])]),
                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                "score": round(float(det.scores[i]), 5),
            }
            if pred.masks is not None:
                crop = pred.masks[i]
                r["segmentation"] = encode_crop(crop, height, width)
                self.areas.append(float(crop.area))
            else:
                self.areas.append(round((x1 - x0) * (y1 - y0), 2))
            self.results.append(r)
        return image_id

    def dataset(self, info: dict[str, Any]) -> dict[str, Any]:
        annotations = []
        for k, (r, area) in enumerate(zip(self.results, self.areas, strict=True), start=1):
            annotations.append({"id": k, **r, "area": area, "iscrowd": 0})
        return {
            "info": info,
            "images": self.images,
            "categories": [
                {"id": c, "name": n, "supercategory": ""}
                for c, n in zip(self.cat_ids, self.class_names, strict=True)
            ],
            "annotations": annotations,
        }


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    tmp.replace(path)


def run_predict(
    files: Sequence[Path],
    out_dir: Path,
    predictor: ImagePredictor,
    *,
    batch: int = 8,
    info: dict[str, Any] | None = None,
    skipped: Sequence[Skipped] = (),
    progress: bool = True,
) -> PredictReport:
    """Process ``files`` in batches of ``batch`` and write the outputs (see module doc).

    A file that cannot be read is logged (warning, with its name and the reason),
    added to ``report.skipped`` and the run goes on. Raises SourceError when no file
    at all could be read (nothing would be written)."""
    from tqdm import tqdm

    from stream.render import Annotator, RenderConfig

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    random_weights = predictor.random_weights
    report = PredictReport(skipped=list(skipped), random_weights=random_weights, out_dir=out_dir)
    annotator = Annotator(
        RenderConfig.model_validate({"status": False, "traces": False}), predictor.class_names
    )
    writer = _CocoWriter(predictor.class_names)
    used: set[str] = set()
    batch = max(1, int(batch))
    chunks = [list(files[i : i + batch]) for i in range(0, len(files), batch)]
    bar = tqdm(total=len(files), unit="img", desc="predict", file=sys.stderr, disable=not progress)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode") as pool, bar:
        pending: list[Future[np.ndarray]] = [pool.submit(read_image, f) for f in chunks[0]] if chunks else []
        for k, chunk in enumerate(chunks):
            current = pending
            pending = [pool.submit(read_image, f) for f in chunks[k + 1]] if k + 1 < len(chunks) else []
            images, paths = [], []
            for path, fut in zip(chunk, current, strict=True):
                try:
                    images.append(fut.result())
                    paths.append(path)
                except SourceError as exc:
                    log.warning("skipped %s", exc)
                    report.skipped.append(Skipped(path, str(exc).removeprefix(f"{path}: ")))
            for path, pred in zip(paths, predictor(images) if images else [], strict=True):
                name = _unique_name(path, used)
                picture = _annotate(annotator, pred, report.processed, random_weights)
                ok, buf = cv2.imencode(Path(name).suffix or ".png", picture)
                if not ok:
                    name = _unique_name(path.with_suffix(".png"), used)
                    ok, buf = cv2.imencode(".png", picture)
                buf.tofile(str(out_dir / name))
                writer.add(path, name, pred)
                report.processed += 1
                report.detections += len(pred.detections.boxes)
                report.masks += sum(1 for m in pred.masks or [] if not m.is_empty)
            bar.update(len(chunk))
    if report.processed == 0:
        raise SourceError(
            "no image could be read; " + "; ".join(f"{s.path}: {s.reason}" for s in report.skipped[:5])
        )
    meta = {
        "description": "stream predict",
        "version": __version__,
        "date_created": datetime.now(UTC).isoformat(timespec="seconds"),
        "random_weights": random_weights,
        **(info or {}),
    }
    meta["random_weights"] = random_weights
    report.results_path = out_dir / "results.json"
    report.predictions_path = out_dir / "predictions.json"
    _write_json(report.results_path, writer.results)
    _write_json(report.predictions_path, writer.dataset(meta))
    report.seconds = time.perf_counter() - started
    report.stage_seconds = dict(predictor.seconds)
    return report
