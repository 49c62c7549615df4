"""Per-source mask state: one compact mask per track, bounded.

Use per frame, in this order::

    store.begin_frame(height, width, frame=image_or_gray, seq=seq)
    plan = store.plan(track_ids, boxes)            # who needs SAM now, who is propagated
    if plan.keyframe.size:                          # one embedding, one decoder call
        batch = segmenter.segment(segmenter.embed(image), plan.boxes[plan.keyframe])
        store.update_keyframe(track_ids[plan.keyframe], plan.boxes[plan.keyframe],
                              batch.crops, batch.scores, plan.reasons)
    store.propagate(track_ids[plan.propagate], plan.boxes[plan.propagate])

Each mask is a crop (``MaskCrop``) plus the box and crop of its keyframe, its
kind ("keyframe" on the frame SAM made it, "propagated" after) and its age in
frames. A track absent for more than ``max_missed`` frames, or passed to
``free``, gives its mask back; at most ``max_masks`` tracks hold a mask, and
new tracks beyond that are refused and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from stream.masks.crop import MaskCrop
from stream.masks.geometry import as_boxes, clip_boxes
from stream.masks.keyframes import (
    KeyframePolicy,
    KeyframeReason,
    TrackView,
    box_thumbnail,
    key_thumbnail,
    masked_ncc,
)
from stream.masks.propagate import (
    PROPAGATION_METHODS,
    DenseFlow,
    FlowField,
    PropagationMethod,
    SoftCrop,
    warp_by_box,
    warp_by_flow,
)

log = logging.getLogger(__name__)

MaskKind = Literal["keyframe", "propagated"]


@dataclass(frozen=True)
class TrackMask:
    """One track's current mask (read-only snapshot).

    crop: the mask now, source pixels. kind: "keyframe" | "propagated".
    age: frames since the keyframe that made it (0 on that frame).
    score: SAM's predicted IoU at the keyframe (nan when not given).
    box, key_box: (4,) float32 XYXY source pixels, now and at the keyframe.
    key_crop: the mask as SAM made it. key_index, last_seen: store frame indices.
    soft: the soft mask flow propagation carries from frame to frame (None otherwise).
    key_thumb: (2, T, T) float32, the keyframe box's gray thumbnail and its mask
        weights, for the appearance trigger (None when not used).
    """

    track_id: int
    crop: MaskCrop
    kind: MaskKind
    age: int
    score: float
    box: np.ndarray
    key_box: np.ndarray
    key_crop: MaskCrop
    key_index: int
    last_seen: int
    soft: SoftCrop | None = None
    key_thumb: np.ndarray | None = None


@dataclass(frozen=True)
class FramePlan:
    """What to do with each track of a frame; indices into the arrays given to ``plan``.

    boxes: (N, 4) float32 XYXY, the input boxes clipped to the frame.
    keyframe: (K,) int64 tracks that need a SAM mask now; reasons: their K reasons.
    propagate: (M,) int64 tracks whose mask follows them.
    refused: (R,) int64 new tracks over the mask cap (no mask).
    skipped: (S,) int64 boxes with no area inside the frame, and repeated track ids.
    """

    boxes: np.ndarray
    keyframe: np.ndarray
    reasons: list[KeyframeReason]
    propagate: np.ndarray
    refused: np.ndarray
    skipped: np.ndarray


@dataclass
class StoreStats:
    """Counters since construction; ``reasons`` counts keyframe masks by reason."""

    frames: int = 0
    keyframe_masks: int = 0
    propagated: int = 0
    flow_fallbacks: int = 0
    refused: int = 0
    skipped_boxes: int = 0
    freed: int = 0
    expired: int = 0
    reasons: dict[str, int] = field(default_factory=lambda: {r.value: 0 for r in KeyframeReason})


def _empty_idx() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


class MaskStore:
    """Masks of one source's tracks.

    policy: when a track needs a SAM mask. method: default propagation ("box" | "flow").
    max_masks: cap on tracks holding a mask. max_missed: frames a track may be
    absent before its mask is freed. flow: the optical-flow estimator (built
    with defaults when ``method`` is "flow" and none is given).
    flow_margin: a flow-propagated mask is kept inside its box grown by this fraction.
    """

    def __init__(
        self,
        source: str,
        policy: KeyframePolicy | None = None,
        *,
        method: PropagationMethod = "box",
        max_masks: int = 256,
        max_missed: int = 30,
        flow: DenseFlow | None = None,
        flow_margin: float = 0.05,
    ) -> None:
        if method not in PROPAGATION_METHODS:
            raise ValueError(f"propagation method must be one of {PROPAGATION_METHODS}, got {method!r}")
        if max_masks < 1:
            raise ValueError(f"max_masks must be ≥ 1, got {max_masks}")
        self.source = source
        self.policy = policy or KeyframePolicy()
        self.method: PropagationMethod = method
        self.max_masks = max_masks
        self.max_missed = max_missed
        self.flow = flow if flow is not None else (DenseFlow() if method == "flow" else None)
        self.flow_margin = flow_margin
        self.stats = StoreStats()
        self.frame_index = -1
        self.seq: int | None = None
        self.size = (0, 0)
        self._masks: dict[int, TrackMask] = {}
        self._gray: np.ndarray | None = None
        self._prev_gray: np.ndarray | None = None
        self._scale = 1.0
        self._field: FlowField | None = None
        self._frame_gray: np.ndarray | None = None

    # --- frame lifecycle -------------------------------------------------------------

    def begin_frame(
        self,
        height: int,
        width: int,
        frame: np.ndarray | None = None,
        seq: int | None = None,
        flow: FlowField | None = None,
    ) -> None:
        """Start a frame of (height, width) pixels. Frees masks of tracks gone too long.

        frame: its (H, W, 3) BGR or (H, W) gray uint8 pixels, needed only for flow
        propagation (the store keeps a scaled gray copy until the next frame).
        flow: a backward flow field for this frame computed elsewhere (then ``frame``
        is not needed); seq: the frame's sequence number, for log records.
        """
        self.frame_index += 1
        self.stats.frames += 1
        self.seq = seq
        if (height, width) != self.size:
            self._prev_gray = self._gray = None
        self.size = (height, width)
        self._field = flow
        self._prev_gray = self._gray
        self._gray = None
        if frame is not None and self.flow is not None and flow is None:
            self._gray, self._scale = self.flow.prepare(frame)
        self._frame_gray = None
        if frame is not None and self.policy.appearance_ncc is not None:
            self._frame_gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        stale = [t for t, m in self._masks.items() if self.frame_index - m.last_seen > self.max_missed]
        for track_id in stale:
            del self._masks[track_id]
        self.stats.expired += len(stale)

    def plan(self, track_ids: np.ndarray | Sequence[int], boxes: np.ndarray) -> FramePlan:
        """Split a frame's tracks into keyframe / propagate / refused / skipped.

        track_ids: (N,) int; boxes: (N, 4) float32 XYXY source pixels.
        """
        ids, arr = self._check(track_ids, boxes)
        height, width = self.size
        clipped, valid, _ = clip_boxes(arr, height, width)
        keyframe: list[int] = []
        reasons: list[KeyframeReason] = []
        propagate: list[int] = []
        skipped: list[int] = []
        new: list[int] = []
        seen: set[int] = set()
        for i, track_id in enumerate(ids.tolist()):
            if not valid[i] or track_id in seen:
                skipped.append(i)
                continue
            seen.add(track_id)
            mask = self._masks.get(track_id)
            view = TrackView(
                box=clipped[i],
                has_mask=mask is not None,
                age=self.frame_index - mask.key_index if mask else 0,
                key_box=mask.key_box if mask else None,
                missed=self.frame_index - mask.last_seen - 1 if mask else 0,
                appearance=self._appearance(mask, clipped[i]) if mask else None,
            )
            reason = self.policy.needs_mask(view)
            if reason is None:
                propagate.append(i)
            elif reason is KeyframeReason.NEW:
                new.append(i)
            else:
                keyframe.append(i)
                reasons.append(reason)
        # Over the cap, the largest new tracks get the free slots.
        free_slots = max(0, self.max_masks - len(self._masks))
        areas = [(clipped[i, 2] - clipped[i, 0]) * (clipped[i, 3] - clipped[i, 1]) for i in new]
        ranked = [new[k] for k in np.argsort(-np.asarray(areas, dtype=np.float64), kind="stable")]
        admitted, refused = sorted(ranked[:free_slots]), ranked[free_slots:]
        pairs = sorted([*zip(keyframe, reasons, strict=True), *((i, KeyframeReason.NEW) for i in admitted)])
        keyframe, reasons = [i for i, _ in pairs], [r for _, r in pairs]
        self.stats.skipped_boxes += len(skipped)
        if refused:
            self.stats.refused += len(refused)
            log.debug(
                "source %s seq %s: %d new tracks refused a mask (cap %d)",
                self.source,
                self.seq,
                len(refused),
                self.max_masks,
            )
        return FramePlan(
            boxes=clipped,
            keyframe=np.asarray(keyframe, dtype=np.int64),
            reasons=reasons,
            propagate=np.asarray(propagate, dtype=np.int64),
            refused=np.asarray(sorted(refused), dtype=np.int64) if refused else _empty_idx(),
            skipped=np.asarray(skipped, dtype=np.int64) if skipped else _empty_idx(),
        )

    def update_keyframe(
        self,
        track_ids: np.ndarray | Sequence[int],
        boxes: np.ndarray,
        crops: Sequence[MaskCrop],
        scores: np.ndarray | Sequence[float] | None = None,
        reasons: Sequence[KeyframeReason] | None = None,
    ) -> None:
        """Store fresh masks: crops[i] for track_ids[i], made for boxes[i] ((N, 4) XYXY).

        scores: (N,) SAM predicted IoU; reasons: why each was made (for the counters).
        A new track over the cap is refused and counted; a box without area is skipped.
        """
        ids, arr = self._check(track_ids, boxes)
        if len(crops) != len(ids):
            raise ValueError(f"{len(ids)} track ids but {len(crops)} crops")
        clipped, valid, _ = clip_boxes(arr, *self.size)
        score_arr = (
            np.full(len(ids), np.nan, np.float32) if scores is None else np.asarray(scores, np.float32)
        )
        for i, track_id in enumerate(ids.tolist()):
            if not valid[i]:
                self.stats.skipped_boxes += 1
                continue
            if track_id not in self._masks and len(self._masks) >= self.max_masks:
                self.stats.refused += 1
                continue
            self._masks[track_id] = TrackMask(
                track_id=track_id,
                crop=crops[i],
                kind="keyframe",
                age=0,
                score=float(score_arr[i]),
                box=clipped[i].copy(),
                key_box=clipped[i].copy(),
                key_crop=crops[i],
                key_index=self.frame_index,
                last_seen=self.frame_index,
                key_thumb=self._key_thumb(clipped[i], crops[i]),
            )
            self.stats.keyframe_masks += 1
            reason = reasons[i].value if reasons is not None else KeyframeReason.NEW.value
            self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + 1

    def propagate(
        self,
        track_ids: np.ndarray | Sequence[int],
        boxes: np.ndarray,
        method: PropagationMethod | None = None,
    ) -> None:
        """Move the masks of ``track_ids`` to their current boxes ((N, 4) XYXY source px).

        method: "box" or "flow" (default: the store's). Flow falls back to box
        motion on a frame with no previous frame to compare with. Tracks without
        a mask and boxes without area are skipped.
        """
        ids, arr = self._check(track_ids, boxes)
        method = method or self.method
        if method not in PROPAGATION_METHODS:
            raise ValueError(f"propagation method must be one of {PROPAGATION_METHODS}, got {method!r}")
        height, width = self.size
        clipped, valid, _ = clip_boxes(arr, height, width)
        field = self._flow_field() if method == "flow" and ids.size else None
        if method == "flow" and field is None and ids.size:
            self.stats.flow_fallbacks += 1
        for i, track_id in enumerate(ids.tolist()):
            mask = self._masks.get(track_id)
            if mask is None or not valid[i]:
                self.stats.skipped_boxes += int(not valid[i])
                continue
            if mask.last_seen == self.frame_index:
                continue  # already updated on this frame
            box = clipped[i]
            soft = None
            if field is not None and mask.last_seen == self.frame_index - 1:
                prev = mask.soft if mask.soft is not None else SoftCrop.from_crop(mask.crop)
                soft = warp_by_flow(prev, field, box, height, width, self.flow_margin)
                crop = soft.to_crop()
            else:  # box motion, or flow with no previous frame of this track to follow
                crop = warp_by_box(mask.key_crop, mask.key_box, box, height, width)
            self._masks[track_id] = TrackMask(
                track_id=track_id,
                crop=crop,
                kind="propagated",
                age=self.frame_index - mask.key_index,
                score=mask.score,
                box=box.copy(),
                key_box=mask.key_box,
                key_crop=mask.key_crop,
                key_index=mask.key_index,
                last_seen=self.frame_index,
                soft=soft,
                key_thumb=mask.key_thumb,
            )
            self.stats.propagated += 1

    def _key_thumb(self, box: np.ndarray, crop: MaskCrop) -> np.ndarray | None:
        return None if self._frame_gray is None else key_thumbnail(self._frame_gray, box, crop)

    def _appearance(self, mask: TrackMask, box: np.ndarray) -> float | None:
        if self._frame_gray is None or mask.key_thumb is None:
            return None
        return masked_ncc(box_thumbnail(self._frame_gray, box), mask.key_thumb[0], mask.key_thumb[1])

    def _flow_field(self) -> FlowField | None:
        if self._field is None and self.flow is not None and self._gray is not None:
            if self._prev_gray is not None and self._prev_gray.shape == self._gray.shape:
                self._field = self.flow.backward(self._gray, self._prev_gray, self._scale)
        return self._field

    # --- access ----------------------------------------------------------------------

    def get(self, track_id: int) -> TrackMask | None:
        return self._masks.get(int(track_id))

    def __len__(self) -> int:
        return len(self._masks)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self._masks

    def __iter__(self) -> Iterator[TrackMask]:
        return iter(list(self._masks.values()))

    def full_mask(
        self, track_id: int, height: int | None = None, width: int | None = None
    ) -> np.ndarray | None:
        """The track's mask as a (H, W) bool frame (default: the current frame size), or None."""
        mask = self._masks.get(int(track_id))
        if mask is None:
            return None
        h, w = (height, width) if height is not None and width is not None else self.size
        return mask.crop.to_full(h, w)

    def free(self, track_ids: np.ndarray | Sequence[int]) -> int:
        """Drop the masks of finished tracks; returns how many were held."""
        freed = sum(self._masks.pop(int(t), None) is not None for t in np.asarray(track_ids).ravel())
        self.stats.freed += freed
        return freed

    def nbytes(self) -> int:
        """Bytes held by mask crops (current and keyframe)."""
        total = 0
        for m in self._masks.values():
            total += m.crop.mask.nbytes + (m.key_crop.mask.nbytes if m.key_crop is not m.crop else 0)
            total += m.soft.values.nbytes if m.soft is not None else 0
        return total

    def _check(
        self, track_ids: np.ndarray | Sequence[int], boxes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.frame_index < 0:
            raise RuntimeError("MaskStore.begin_frame must be called before the first plan/update/propagate")
        ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
        arr = as_boxes(boxes)
        if arr.shape[0] != ids.shape[0]:
            raise ValueError(f"{ids.shape[0]} track ids but {arr.shape[0]} boxes")
        return ids, arr
