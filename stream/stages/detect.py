"""The detect stage: YOLO-NAS on batches of frames gathered across sources.

Adds to each frame: boxes (N,4) float32 XYXY source pixels, scores (N,) float32,
class_ids (N,) int32. Batches up to ``max_batch`` frames, waiting at most
``max_wait_ms`` after the first one. The model loads from the exported-artifact
cache (about a second) and is built through super-gradients only on a miss.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from stream.config import Config
from stream.messages import Frame
from stream.sections.stages import DetectConfig
from stream.stage import StageBase

log = logging.getLogger(__name__)


def params(config: Config) -> DetectConfig:
    return config.detect


def checkpoint_path(config: Config) -> Path | None:
    """The checkpoint to load, or None with --random-weights. Raises WeightsError
    naming ``stream weights pull`` when the weights are not in the cache."""
    if config.random_weights:
        return None
    from stream.models.weights import resolve_weights

    p = params(config)
    return resolve_weights(p.weights or p.model, Path(config.cache_dir))


def preflight(config: Config) -> None:
    """Called by the supervisor before anything starts: refuse to run without weights."""
    params(config)
    checkpoint_path(config)


class DetectStage(StageBase):
    name = "detect"

    def __init__(self, detector: object, *, max_batch: int = 8, max_wait_ms: float = 5.0) -> None:
        self.detector = detector
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self.random_weights = bool(getattr(detector, "random_weights", False))

    def start(self) -> None:
        """Warm up: a TorchScript module optimises itself on its first calls (seconds
        on a CPU); do that now, not on the first live frame."""
        import time

        import numpy as np

        t0 = time.perf_counter()
        log.info("detect: warming up (2 passes on a blank frame)")
        blank = np.zeros((480, 640, 3), np.uint8)
        for _ in range(2):
            self.detector.detect([blank])  # type: ignore[attr-defined]
        log.info("detect: warm in %.1f s", time.perf_counter() - t0)

    def process_batch(self, frames: Sequence[Frame]) -> list[Frame | None]:
        images = [f.image for f in frames]
        missing = [f for f in frames if f.image is None]
        if missing:
            raise ValueError(f"frame source={missing[0].source} seq={missing[0].seq} has no pixels")
        results = self.detector.detect(images)  # type: ignore[attr-defined]
        out: list[Frame | None] = []
        for frame, det in zip(frames, results, strict=True):
            f = frame.evolve(boxes=det.boxes, scores=det.scores, class_ids=det.class_ids)
            if self.random_weights and not f.header.random_weights:
                f = f.with_header(random_weights=True)
            out.append(f)
        return out


def build(config: Config) -> DetectStage:
    from stream.models.weights import artifacts_dir
    from stream.models.yolo_nas_detector import YoloNasDetector
    from stream.models.yolo_nas_export import load_yolo_nas
    from stream.threads import apply, resolve

    p = params(config)
    ckpt = checkpoint_path(config)
    threads = resolve("detect", p.threads)
    apply(threads)
    model = load_yolo_nas(
        p.model, cache_dir=artifacts_dir(config.cache_dir), checkpoint=ckpt, num_classes=p.num_classes,
        class_names=p.class_names, random_seed=p.random_seed if ckpt is None else None, device=p.device,
        input_size=p.input_size, runtime=p.runtime, threads=threads,
    )
    if ckpt is None:
        log.warning("detect: RANDOM WEIGHTS (seed %d): outputs are not detections", p.random_seed)
    detector = YoloNasDetector(model, conf=p.conf, iou=p.iou, max_detections=p.max_detections, classes=p.classes)
    return DetectStage(detector, max_batch=p.max_batch, max_wait_ms=p.max_wait_ms)
