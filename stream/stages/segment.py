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
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from stream.config import Config, StrictModel, validate_section
from stream.messages import Frame
from stream.objects import ObjectMasks
from stream.stage import StageBase

log = logging.getLogger(__name__)

KIND_CODES = {"keyframe": 0, "propagated": 1}
NO_MASK = 2


class SegmentConfig(StrictModel):
    """model: SAM size ('tiny' is a small SAM for tests). weights: registry name
    (e.g. sam_vit_b) or a checkpoint path; default the official weights of ``model``.
    interval: frames between keyframes per track; drift_iou: refresh when the box's
    IoU with its keyframe box falls below this; appearance_ncc: refresh when the box's
    content correlates less than this with the keyframe's; method: propagation between keyframes."""

    model: Literal["vit_b", "vit_l", "vit_h", "tiny"] = "vit_b"
    weights: str | None = None
    device: str = "auto"
    interval: int | None = Field(10, ge=1)
    drift_iou: float | None = Field(0.5, gt=0, le=1)
    appearance_ncc: float | None = Field(0.7, ge=-1, le=1)
    method: Literal["box", "flow"] = "box"
    max_masks: int = Field(64, ge=1)
    max_missed: int = Field(30, ge=0)
    multimask: bool = False
    random_seed: int = 0


def params(config: Config) -> SegmentConfig:
    return validate_section(SegmentConfig, config.segment, "segment")


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

    def __init__(self, segmenter: object, params: SegmentConfig, *, random_weights: bool = False) -> None:
        self.segmenter = segmenter
        self.params = params
        self.random_weights = random_weights
        self.stores: dict[str, object] = {}

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
        store.begin_frame(height, width, frame=frame.image, seq=frame.seq)
        plan = store.plan(ids, boxes)
        if plan.keyframe.size:
            emb = self.segmenter.embed(frame.image)  # type: ignore[attr-defined]
            batch = self.segmenter.segment(emb, plan.boxes[plan.keyframe],  # type: ignore[attr-defined]
                                           multimask=self.params.multimask)
            store.update_keyframe(ids[plan.keyframe], plan.boxes[plan.keyframe], batch.crops, batch.scores,
                                  plan.reasons)
            log.debug("source=%s seq=%d keyframe: %d masks", frame.source, frame.seq, plan.keyframe.size)
        if plan.propagate.size:
            store.propagate(ids[plan.propagate], plan.boxes[plan.propagate])
        crops, rects, kinds, ages = [], [], [], []
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
                ages.append(tm.age)
        packed = ObjectMasks.pack(crops, np.array(rects, np.int32).reshape(-1, 4), np.array(kinds), np.array(ages))
        out = frame.evolve(**packed.to_arrays())
        if self.random_weights and not out.header.random_weights:
            out = out.with_header(random_weights=True)
        return out

    def end_source(self, source: str) -> None:
        self.stores.pop(source, None)


def build(config: Config) -> SegmentStage:
    from stream.models.sam import SamSegmenter, build_sam

    p = params(config)
    ckpt = checkpoint_path(config)
    model = build_sam(p.model, ckpt, random_seed=p.random_seed if ckpt is None else None, device=p.device)
    if ckpt is None:
        log.warning("segment: RANDOM WEIGHTS (SAM %s, seed %d): masks are not segmentations", p.model, p.random_seed)
    return SegmentStage(SamSegmenter(model), p, random_weights=ckpt is None)
