"""The segment stage: SAM masks on keyframes, carried between keyframes.

Per source, a ``MaskStore`` decides which tracks need a fresh mask (new track,
N frames old, box drifted, re-found); a frame where any does gets ONE image
embedding and ONE batched decoder call for all of them; every other track's
mask follows its box (or the optical flow). Adds to each frame the packed mask
crops of stream.objects (mask_boxes, mask_bits, mask_offsets, mask_kind,
mask_age), parallel to the tracked boxes; an object without a mask (over the
cap, or a box with no area) has an empty crop and kind 2 ("none").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.config import Config
from stream.messages import Frame, RosterEntry
from stream.objects import ObjectMasks
from stream.sections.stages import SegmentConfig
from stream.stage import StageBase

log = logging.getLogger(__name__)

KIND_CODES = {"keyframe": 0, "propagated": 1}
NO_MASK = 2


def params(config: Config) -> SegmentConfig:
    return config.segment


def checkpoint_path(config: Config) -> Path | None:
    p = params(config)
    if config.random_weights or p.model == "tiny":
        return None
    from stream.models.weights import resolve_weights

    return resolve_weights(p.weights or f"sam_{p.model}", Path(config.cache_dir))


def preflight(config: Config) -> None:
    params(config)
    checkpoint_path(config)


class SegmentStage(StageBase):
    name = "segment"

    def __init__(self, segmenter: object, params: SegmentConfig, *, random_weights: bool = False,
                 live_sources: frozenset[str] = frozenset()) -> None:
        self.segmenter = segmenter
        self.params = params
        self.random_weights = random_weights
        self.stores: dict[str, object] = {}
        self.live_sources = live_sources
        self._jobs: dict[str, _KeyframeJob] = {}
        self._late: dict[str, dict[int, tuple[int, int]]] = {}  # source -> track -> (key_index, extra age)
        self._pool: ThreadPoolExecutor | None = None
        self.stale_keyframes = 0

    def start(self) -> None:
        """Warm up: SAM's first embedding and decoder call pay one-time costs (lazy imports,
        oneDNN kernel selection); pay them now, not on a source's first keyframe."""
        if not hasattr(self.segmenter, "embed"):
            return
        blank = np.zeros((240, 320, 3), np.uint8)
        self._sam(blank, np.array([[8.0, 8.0, 120.0, 200.0]], np.float32))

    def _is_async(self, source: str) -> bool:
        mode = self.params.async_keyframes
        return mode == "always" or (mode == "auto" and source in self.live_sources)

    def _sam(self, image: np.ndarray, boxes: np.ndarray) -> tuple[list, np.ndarray]:  # type: ignore[type-arg]
        emb = self.segmenter.embed(image)  # type: ignore[attr-defined]
        batch = self.segmenter.segment(emb, boxes, multimask=self.params.multimask)  # type: ignore[attr-defined]
        return batch.crops, batch.scores

    def _store(self, source: str):  # type: ignore[no-untyped-def]
        from stream.masks.keyframes import KeyframePolicy
        from stream.masks.store import MaskStore

        store = self.stores.get(source)
        if store is None:
            p = self.params
            store = self.stores[source] = MaskStore(
                source, KeyframePolicy(interval=p.interval, drift_iou=p.drift_iou, appearance_ncc=p.appearance_ncc),
                method=p.method,
                max_masks=p.max_masks, max_missed=p.max_missed)
        return store

    def process(self, frame: Frame) -> Frame | None:
        if frame.image is None:
            raise ValueError("frame has no pixels")
        a = frame.arrays
        if "track_ids" not in a:
            raise ValueError("frame has no track_ids: put 'track' before 'segment'")
        store = self._store(frame.source)
        height, width = frame.image.shape[:2]
        ids = np.asarray(a["track_ids"], np.int64)
        boxes = np.asarray(a["boxes"], np.float32).reshape(-1, 4)
        if "finished_ids" in a and len(a["finished_ids"]):
            store.free(a["finished_ids"])
            late_ids = self._late.get(frame.source, {})
            for tid in a["finished_ids"].tolist():
                late_ids.pop(int(tid), None)
        if self._is_async(frame.source):
            self._apply_finished_job(frame, store, ids)  # as of the previous frame: this one moves it
        store.begin_frame(height, width, frame=frame.image, seq=frame.seq)
        if self._is_async(frame.source):
            self._keyframes_async(frame, store, ids, boxes)
        else:
            plan = store.plan(ids, boxes)
            if plan.keyframe.size:
                crops, scores = self._sam(frame.image, plan.boxes[plan.keyframe])
                store.update_keyframe(ids[plan.keyframe], plan.boxes[plan.keyframe], crops, scores, plan.reasons)
                log.debug("source=%s seq=%d keyframe: %d masks", frame.source, frame.seq, plan.keyframe.size)
            if plan.propagate.size:
                store.propagate(ids[plan.propagate], plan.boxes[plan.propagate])
        crops, rects, kinds, ages = [], [], [], []
        late = self._late.get(frame.source, {})
        for tid in ids:
            tm = store.get(int(tid))
            if tm is None or tm.crop.is_empty:
                crops.append(np.zeros((0, 0), bool))
                rects.append((0, 0, 0, 0))
                kinds.append(NO_MASK)
                ages.append(0)
            else:
                crops.append(tm.crop.mask)
                rects.append(tm.crop.rect)
                kinds.append(KIND_CODES[tm.kind])
                key_index, extra = late.get(int(tid), (-1, 0))
                ages.append(tm.age + (extra if key_index == tm.key_index else 0))
        packed = ObjectMasks.pack(crops, np.array(rects, np.int32).reshape(-1, 4), np.array(kinds), np.array(ages))
        out = frame.evolve(stamp=None, **packed.to_arrays())
        if self.random_weights and not out.header.random_weights:
            out = out.with_header(random_weights=True)
        return out

    def _apply_finished_job(self, frame: Frame, store, ids: np.ndarray) -> None:  # type: ignore[no-untyped-def]
        job = self._jobs.get(frame.source)
        if job is not None and job.future.done():
            del self._jobs[frame.source]
            lag = frame.seq - job.seq
            if lag <= self.params.max_lag_frames:
                crops, scores = job.future.result()
                live = np.isin(job.ids, ids)  # tracks that ended meanwhile get nothing
                store.update_keyframe(job.ids[live], job.boxes[live], [c for c, k in zip(crops, live, strict=True) if k],
                                      np.asarray(scores)[live], [r for r, k in zip(job.reasons, live, strict=True) if k])
                late = self._late.setdefault(frame.source, {})
                for tid in job.ids[live].tolist():  # ages count from the frame SAM saw, not from now
                    late[int(tid)] = (store.get(int(tid)).key_index, lag - 1)
                log.debug("source=%s seq=%d keyframe from seq %d applied (%d frames late)",
                          frame.source, frame.seq, job.seq, lag)
            else:
                self.stale_keyframes += 1
                log.warning("source=%s seq=%d: keyframe of seq %d came %d frames late (> %d); discarded",
                            frame.source, frame.seq, job.seq, lag, self.params.max_lag_frames)

    def _keyframes_async(self, frame: Frame, store, ids: np.ndarray, boxes: np.ndarray) -> None:  # type: ignore[no-untyped-def]
        """SAM runs in a worker thread; this frame goes on with the masks there are."""
        plan = store.plan(ids, boxes)
        if plan.keyframe.size and frame.source not in self._jobs:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sam")
            image = np.array(frame.image)  # the ring slot may be reused while SAM runs
            kboxes = plan.boxes[plan.keyframe].copy()
            self._jobs[frame.source] = _KeyframeJob(
                frame.seq, ids[plan.keyframe].copy(), kboxes, list(plan.reasons),
                self._pool.submit(self._sam, image, kboxes))
        # every track that already has a mask follows its box meanwhile (fresh keyframes included:
        # they move from the box of the frame SAM saw to this frame's box)
        held = np.array([i for i, t in enumerate(ids) if store.get(int(t)) is not None], np.int64)
        if held.size:
            store.propagate(ids[held], plan.boxes[held])

    def set_sources(self, roster: Sequence[RosterEntry]) -> None:
        """Sources added at runtime: async keyframes ('auto') follow which are live."""
        self.live_sources = frozenset(e.source for e in roster if e.live)

    def end_source(self, source: str) -> None:
        self.stores.pop(source, None)
        self._jobs.pop(source, None)
        self._late.pop(source, None)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class _KeyframeJob:
    seq: int
    ids: np.ndarray
    boxes: np.ndarray
    reasons: list
    future: Future  # type: ignore[type-arg]


def build(config: Config) -> SegmentStage:
    from stream.models.sam import SamSegmenter, build_sam
    from stream.models.sam_onnx import OrtSamDecoder, resolve_runtime
    from stream.threads import apply, resolve

    p = params(config)
    ckpt = checkpoint_path(config)
    threads = resolve("segment", p.threads)
    apply(threads)
    model = build_sam(p.model, ckpt, random_seed=p.random_seed if ckpt is None else None, device=p.device)
    if ckpt is None:
        log.warning("segment: RANDOM WEIGHTS (SAM %s, seed %d): masks are not segmentations", p.model, p.random_seed)
    decoder = None
    if resolve_runtime(p.runtime, model.device) == "onnxruntime":
        from stream.models.weights import artifacts_dir

        decoder = OrtSamDecoder.load(model, artifacts_dir(config.cache_dir), threads=threads)
    return stage_for(config, SamSegmenter(model, decoder=decoder), random_weights=ckpt is None)


def stage_for(config: Config, segmenter: object, *, random_weights: bool) -> SegmentStage:
    """The stage for ``config`` around a ready segmenter: SAM runs beside the stream for every
    live source (``SourceConfig.is_live``) when ``async_keyframes`` is 'auto'."""
    live = frozenset(s.id for s in config.sources if s.is_live)
    return SegmentStage(segmenter, params(config), random_weights=random_weights, live_sources=live)
