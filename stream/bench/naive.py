"""The naive reference of ``stream bench pipeline``: the loop a user would write with the
same packages, one frame at a time, in one process.

Per frame: take the next decoded frame (BGR uint8 (H, W, 3)), convert it to RGB,
super-gradients ``model.predict()`` (YOLO-NAS with processing params set through
``set_dataset_processing_params``), ``trackers.ByteTrackTracker`` on
``supervision.Detections``, and every ``keyframe_interval``-th frame (from the first
frame with tracked boxes) segment-anything's ``SamPredictor``: ``set_image`` then one
batched ``predict_torch`` for all tracked boxes, full-frame masks copied to the host;
between keyframes the last masks are drawn as they are. Finally the frame is
annotated with OpenCV (masks painted and blended once at 50 %, as supervision's
``MaskAnnotator`` does; boxes; ids).

Where the naive loop is given the benefit of the doubt (so the ratio against it is
conservative):

- ``predict()`` re-fuses a copy of the model on every call in super-gradients 3.7.1
  (the copy's ``eval()`` clears the class-level pipeline cache), seconds per frame on
  a CPU; the reference fuses once (``prep_model_for_conversion``, what predict's
  fusing does) and calls ``predict(..., fuse_model=False)``.
- all boxes of a keyframe go to SAM in one ``predict_torch`` call, not one call each.
- synthetic frames are rendered before timing (no decode cost); a file is decoded
  with ``cv2.VideoCapture`` inside the timed loop.

Boxes are clipped to the frame as our detector does (``predict()`` leaves them
overhanging), so that both pipelines track and segment the same boxes: random
weights put some boxes wholly in the letterbox padding, and those, clipped to zero
area, are never tracked on either side.

Weights are seeded random ones (nothing here is a detection or a segmentation).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stream.errors import SourceError

log = logging.getLogger(__name__)

_COLORS = np.array(
    [
        (56, 56, 255),
        (151, 157, 255),
        (31, 112, 255),
        (29, 178, 255),
        (49, 210, 207),
        (10, 249, 72),
        (23, 204, 146),
        (134, 219, 61),
        (52, 147, 26),
        (187, 212, 0),
    ],
    np.uint8,
)


@dataclass(frozen=True)
class NaiveConfig:
    """What the naive loop runs. input_size: YOLO-NAS square input S (the frame is
    scaled to S-4 on its longest side and padded, as the COCO params do). conf and
    max_detections: predict()'s threshold and cap. tracker: keyword arguments of
    ``trackers.ByteTrackTracker``. sam_model: 'vit_b' | 'vit_l' | 'vit_h' | 'tiny'."""

    arch: str = "yolo_nas_s"
    input_size: int = 640
    conf: float = 0.01
    max_detections: int = 20
    sam_model: str = "vit_b"
    keyframe_interval: int = 10
    device: str = "auto"
    seed: int = 0
    tracker: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NaiveResult:
    """frames timed, their wall time (s) and frames/s; mean detections and tracked
    boxes per frame; SAM keyframes run; ms spent per step (summed over the frames);
    cpu_s: CPU seconds of this process (every thread) over the timed frames, and
    cpu_step_ms the CPU ms per step (summed): far less sensitive to other load than fps."""

    frames: int
    seconds: float
    fps: float
    mean_boxes: float
    mean_tracks: float
    sam_calls: int
    step_ms: dict[str, float]
    cpu_s: float = 0.0
    cpu_step_ms: dict[str, float] = field(default_factory=dict)


class NaiveLoop:
    """The naive per-frame loop (see the module docstring). Building it imports
    super-gradients (about 25 s here) and builds both models with random weights."""

    def __init__(self, cfg: NaiveConfig) -> None:
        import torch
        from segment_anything import SamPredictor

        from stream.models.sam import build_sam
        from stream.models.sg_env import import_super_gradients
        from stream.models.yolo_nas import build_network, resolve_device

        # quiet: nothing on stdout (--json must stay clean), no ~/sg_logs
        processing = import_super_gradients("super_gradients.training.processing.processing")
        ComposeProcessing = processing.ComposeProcessing
        DetectionCenterPadding = processing.DetectionCenterPadding
        DetectionLongestMaxSizeRescale = processing.DetectionLongestMaxSizeRescale
        ImagePermute = processing.ImagePermute
        StandardizeImage = processing.StandardizeImage
        default_yolo_nas_coco_processing_params = processing.default_yolo_nas_coco_processing_params

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        s = cfg.input_size
        net = build_network(cfg.arch, 80, random_seed=cfg.seed)  # models.get(arch, num_classes=80), seeded
        params = default_yolo_nas_coco_processing_params()
        params["image_processor"] = ComposeProcessing(
            [
                DetectionLongestMaxSizeRescale(output_shape=(s - 4, s - 4)),
                DetectionCenterPadding(output_shape=(s, s), pad_value=114),
                StandardizeImage(max_value=255.0),
                ImagePermute(permutation=(2, 0, 1)),
            ]
        )
        net.set_dataset_processing_params(**params, max_predictions=cfg.max_detections)
        net = net.to(self.device).eval()
        net.prep_model_for_conversion(input_size=(s, s))  # fuse once (see the module docstring)
        self.net = net
        sam = build_sam(cfg.sam_model, None, random_seed=cfg.seed, device=str(self.device))  # type: ignore[arg-type]
        self.predictor = SamPredictor(sam.sam)
        self._torch = torch
        self.reset()

    def reset(self) -> None:
        """A fresh tracker and no masks: the next frame is the first of a video."""
        from trackers import ByteTrackTracker

        self.tracker = ByteTrackTracker(**self.cfg.tracker)
        self.masks: dict[int, np.ndarray] = {}
        self.since_keyframe = 0
        self.sam_calls = 0

    def step(
        self, frame: np.ndarray, times: dict[str, float] | None = None, cpu: dict[str, float] | None = None
    ) -> tuple[np.ndarray, int, int]:
        """One frame: frame (H, W, 3) uint8 BGR → (annotated BGR copy, detections, tracked boxes).
        ``times`` accumulates seconds per step (detect, track, sam, annotate), ``cpu`` CPU seconds."""
        import supervision as sv

        torch = self._torch
        t = times if times is not None else {}
        c = cpu if cpu is not None else {}
        c0 = time.process_time()
        t0 = time.perf_counter()
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        pred = self.net.predict(rgb, conf=self.cfg.conf, fuse_model=False).prediction
        h, w = frame.shape[:2]
        xyxy = np.asarray(pred.bboxes_xyxy, np.float32).reshape(-1, 4)
        dets = sv.Detections(
            xyxy=np.clip(xyxy, 0, np.array([w, h, w, h], np.float32)),  # as our detector does
            confidence=np.asarray(pred.confidence, np.float32),
            class_id=np.asarray(pred.labels).astype(int),
        )
        t1, c1 = time.perf_counter(), time.process_time()
        out_dets = self.tracker.update(dets)
        ids = np.asarray(out_dets.tracker_id, np.int64).reshape(-1)
        keep = ids >= 0  # unconfirmed tracks come back with id -1
        ids, xyxy = ids[keep], np.asarray(out_dets.xyxy, np.float32).reshape(-1, 4)[keep]
        t2, c2 = time.perf_counter(), time.process_time()
        self.since_keyframe += 1
        if len(ids) and (not self.masks or self.since_keyframe >= self.cfg.keyframe_interval):
            self.predictor.set_image(rgb)
            boxes = torch.as_tensor(xyxy, device=self.predictor.device)
            boxes = self.predictor.transform.apply_boxes_torch(boxes, frame.shape[:2])
            masks, _, _ = self.predictor.predict_torch(None, None, boxes, multimask_output=False)
            host = masks[:, 0].cpu().numpy()
            self.masks = {int(tid): host[i] for i, tid in enumerate(ids)}
            self.since_keyframe = 0
            self.sam_calls += 1
        t3, c3 = time.perf_counter(), time.process_time()
        # masks as supervision's MaskAnnotator draws them: paint each, then one 50 % blend
        painted = frame.copy()
        for tid in ids:
            mask = self.masks.get(int(tid))
            if mask is not None:
                painted[mask] = _COLORS[int(tid) % len(_COLORS)]
        out = cv2.addWeighted(painted, 0.5, frame, 0.5, 0.0)
        for tid, (x0, y0, x1, y1) in zip(ids, xyxy.astype(int), strict=True):
            color = _COLORS[int(tid) % len(_COLORS)].tolist()
            cv2.rectangle(out, (int(x0), int(y0)), (int(x1), int(y1)), color, 2)
            cv2.putText(
                out, f"#{tid}", (int(x0), max(int(y0) - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1
            )
        t4, c4 = time.perf_counter(), time.process_time()
        for name, a, b in (("detect", t0, t1), ("track", t1, t2), ("sam", t2, t3), ("annotate", t3, t4)):
            t[name] = t.get(name, 0.0) + (b - a)
        for name, a, b in (("detect", c0, c1), ("track", c1, c2), ("sam", c2, c3), ("annotate", c3, c4)):
            c[name] = c.get(name, 0.0) + (b - a)
        return out, len(dets), len(ids)

    def run(self, frames: Iterator[np.ndarray], count: int, warmup: int = 1) -> NaiveResult:
        """Time ``count`` frames taken from ``frames`` (after ``warmup`` untimed ones, which
        also pay one SAM call; the tracker and masks start fresh for the timed part)."""
        for _ in range(warmup):
            frame = next(frames)
            self.net.predict(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), conf=self.cfg.conf, fuse_model=False)
            self.predictor.set_image(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        self.reset()
        times: dict[str, float] = {"decode": 0.0}
        cpu: dict[str, float] = {"decode": 0.0}
        boxes = tracks = 0
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(count):
            t0, c0 = time.perf_counter(), time.process_time()
            frame = next(frames)
            times["decode"] += time.perf_counter() - t0
            cpu["decode"] += time.process_time() - c0
            _, n_boxes, n_tracks = self.step(frame, times, cpu)
            boxes += n_boxes
            tracks += n_tracks
        seconds = time.perf_counter() - start
        cpu_s = time.process_time() - cpu_start
        return NaiveResult(
            frames=count,
            seconds=seconds,
            fps=count / seconds if seconds > 0 else float("nan"),
            mean_boxes=boxes / max(count, 1),
            mean_tracks=tracks / max(count, 1),
            sam_calls=self.sam_calls,
            step_ms={k: v * 1000.0 for k, v in times.items()},
            cpu_s=cpu_s,
            cpu_step_ms={k: v * 1000.0 for k, v in cpu.items()},
        )


def combine(parts: Sequence[NaiveResult]) -> NaiveResult:
    """One result from several timed runs (e.g. before and after the pipeline, so that
    the host's load during the pipeline run is bracketed)."""
    frames = sum(p.frames for p in parts)
    seconds = sum(p.seconds for p in parts)
    steps: dict[str, float] = {}
    cpu_steps: dict[str, float] = {}
    for p in parts:
        for k, v in p.step_ms.items():
            steps[k] = steps.get(k, 0.0) + v
        for k, v in p.cpu_step_ms.items():
            cpu_steps[k] = cpu_steps.get(k, 0.0) + v
    return NaiveResult(
        frames=frames,
        seconds=seconds,
        fps=frames / seconds if seconds > 0 else float("nan"),
        mean_boxes=sum(p.mean_boxes * p.frames for p in parts) / max(frames, 1),
        mean_tracks=sum(p.mean_tracks * p.frames for p in parts) / max(frames, 1),
        sam_calls=sum(p.sam_calls for p in parts),
        step_ms=steps,
        cpu_s=sum(p.cpu_s for p in parts),
        cpu_step_ms=cpu_steps,
    )


def figures(parts: Sequence[NaiveResult]) -> dict[str, Any]:
    """The summary keys of ``stream bench pipeline`` for the naive loop (naive_fps, …)."""
    r = combine(parts)
    out: dict[str, Any] = {
        "naive_fps": r.fps,
        "naive_fps_before_after": [p.fps for p in parts],
        "naive_frames": r.frames,
        "naive_sam_calls": r.sam_calls,
        "naive_boxes_per_frame": r.mean_boxes,
        "naive_tracks_per_frame": r.mean_tracks,
    }
    out.update({f"naive_{k}_ms_per_frame": v / max(r.frames, 1) for k, v in r.step_ms.items()})
    # our pipeline renders only for a sink that shows pixels (record, live): without that step
    without = r.seconds - r.step_ms.get("annotate", 0.0) / 1000.0
    out["naive_fps_without_annotate"] = r.frames / without if without > 0 else float("nan")
    frames = max(r.frames, 1)
    out["naive_cpu_ms_per_frame"] = r.cpu_s * 1000.0 / frames
    out["naive_cpu_ms_per_frame_without_annotate"] = (
        r.cpu_s * 1000.0 - r.cpu_step_ms.get("annotate", 0.0)
    ) / frames
    out["naive_cpu_ms_per_step"] = {k: v / frames for k, v in r.cpu_step_ms.items()}
    return out


def reference_frames(
    kind: str, size: tuple[int, int], fps: float, path: str | None, count: int
) -> Iterator[np.ndarray]:
    """Endless BGR frames for the naive loop. kind 'file': ``path`` decoded with
    cv2.VideoCapture as the loop asks for them (starting over at the end); 'synthetic' or
    'pattern': ``count`` frames of that source (seed 0, ``size`` = (width, height)) rendered
    now and cycled, so that rendering is not timed."""
    if kind == "file":
        return decode_file(Path(path or ""))
    from stream.config import SourceConfig
    from stream.sources import open_source

    w, h = size
    cfg = {
        "id": "naive",
        "type": kind,
        "fps": fps,
        "max_frames": count,
        "synthetic": {"width": w, "height": h},
    }
    src = open_source(SourceConfig.model_validate(cfg))
    try:
        src.open()
        frames = [f.image for f in src.frames()]
    finally:
        src.close()
    return cycle(frames)


def decode_file(path: Path) -> Iterator[np.ndarray]:
    """Endless BGR frames of the video at ``path`` with cv2.VideoCapture, starting over at its end."""
    while True:
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise SourceError(f"naive reference: OpenCV cannot open {path}; give a video file FFmpeg reads")
        n = 0
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                n += 1
                yield frame
        finally:
            cap.release()
        if n == 0:
            raise SourceError(f"naive reference: {path} has no decodable frames")


def cycle(frames: list[np.ndarray]) -> Iterator[np.ndarray]:
    """Endless iteration over pre-rendered frames (no decode cost)."""
    while True:
        yield from frames
