"""Which tracks need a fresh SAM mask on this frame.

A track gets a keyframe mask when it is new (has no mask), when it was
re-found after being lost, when its mask is ``interval`` frames old, when
its box drifted from the box its mask was made for (IoU below ``drift_iou``),
or (optional) when what its box shows no longer looks like its keyframe
(``appearance_ncc``: normalised cross-correlation of the object's pixels,
sampled through the box motion, below the threshold; this sees rotation,
deformation and occlusion inside a box that did not change).
Everything else is propagated. The segment stage embeds a frame once if any
track on it needs a mask, and decodes all those tracks' boxes in one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

from stream.masks.crop import MaskCrop
from stream.masks.geometry import box_iou


class KeyframeReason(StrEnum):
    NEW = "new"
    REFOUND = "refound"
    INTERVAL = "interval"
    DRIFT = "drift"
    APPEARANCE = "appearance"


@dataclass(frozen=True)
class TrackView:
    """What the policy sees of one track on the current frame.

    box: (4,) float32 XYXY source pixels, the track's box now.
    has_mask: the store holds a mask for the track.
    age: frames since its last keyframe mask (0 on that keyframe).
    key_box: (4,) float32 XYXY, the box its last keyframe mask was made for (None without a mask).
    missed: frames the track was absent just before this one (0: seen on the previous frame).
    appearance: NCC in [-1, 1] of the box content now vs at the keyframe (None: not measured).
    """

    box: np.ndarray
    has_mask: bool
    age: int = 0
    key_box: np.ndarray | None = None
    missed: int = 0
    appearance: float | None = None


@dataclass(frozen=True)
class KeyframePolicy:
    """interval: refresh a mask this many frames after its keyframe (None: never by age).
    drift_iou: refresh when IoU(box now, box at keyframe) falls below this (None: off).
    refind_after: a track absent for at least this many frames is re-found when it comes back.
    appearance_ncc: refresh when the box content correlates less than this with
        the keyframe's (None: off; needs the frame's pixels in MaskStore.begin_frame).
    """

    interval: int | None = 30
    drift_iou: float | None = 0.5
    refind_after: int = 1
    appearance_ncc: float | None = None

    def __post_init__(self) -> None:
        if self.interval is not None and self.interval < 1:
            raise ValueError(f"keyframe interval must be ≥ 1 frame or None, got {self.interval}")
        if self.drift_iou is not None and not 0.0 < self.drift_iou <= 1.0:
            raise ValueError(f"keyframe drift_iou must be in (0, 1] or None, got {self.drift_iou}")
        if self.appearance_ncc is not None and not -1.0 <= self.appearance_ncc <= 1.0:
            raise ValueError(f"keyframe appearance_ncc must be in [-1, 1] or None, got {self.appearance_ncc}")
        if self.refind_after < 1:
            raise ValueError(f"keyframe refind_after must be ≥ 1 frame, got {self.refind_after}")

    def needs_mask(self, view: TrackView) -> KeyframeReason | None:
        """The reason ``view``'s track needs a SAM mask now, or None to propagate its mask."""
        if not view.has_mask:
            return KeyframeReason.NEW
        if view.missed >= self.refind_after:
            return KeyframeReason.REFOUND
        if self.interval is not None and view.age >= self.interval:
            return KeyframeReason.INTERVAL
        if (
            self.drift_iou is not None
            and view.key_box is not None
            and box_iou(view.box, view.key_box) < self.drift_iou
        ):
            return KeyframeReason.DRIFT
        if (
            self.appearance_ncc is not None
            and view.appearance is not None
            and view.appearance < self.appearance_ncc
        ):
            return KeyframeReason.APPEARANCE
        return None


THUMB = 24  # side of the appearance thumbnails, pixels


def box_thumbnail(image: np.ndarray, box: np.ndarray, side: int = THUMB) -> np.ndarray:
    """The box's content resampled to (side, side) float32 (area averaging).

    image: (H, W) uint8 or float32; box: (4,) XYXY source px inside the image, positive area.
    Sampling the box (not a fixed window) makes the thumbnail follow the box's
    translation and scale, so a rigid object keeps the same thumbnail.
    """
    height, width = image.shape[:2]
    x0, y0 = min(max(int(box[0]), 0), width - 1), min(max(int(box[1]), 0), height - 1)
    x1, y1 = max(min(int(np.ceil(box[2])), width), x0 + 1), max(min(int(np.ceil(box[3])), height), y0 + 1)
    return cv2.resize(image[y0:y1, x0:x1], (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)


def key_thumbnail(gray: np.ndarray, box: np.ndarray, crop: MaskCrop) -> np.ndarray:
    """(2, T, T) float32: the box's gray thumbnail and, as weights, the share of
    each thumbnail pixel covered by the mask (plus a small floor for the background).

    gray: (H, W) uint8 frame; box: (4,) XYXY source px; crop: the mask made for it.
    """
    height, width = gray.shape[:2]
    x0, y0 = min(max(int(box[0]), 0), width - 1), min(max(int(box[1]), 0), height - 1)
    x1, y1 = max(min(int(np.ceil(box[2])), width), x0 + 1), max(min(int(np.ceil(box[3])), height), y0 + 1)
    inside = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    if not crop.is_empty:
        MaskCrop(crop.mask, crop.x0 - x0, crop.y0 - y0).paste_into(inside)
    region = np.array([0, 0, x1 - x0, y1 - y0], np.float32)
    weight = box_thumbnail(inside.astype(np.float32), region) + 0.05
    return np.stack([box_thumbnail(gray, box), weight])


def masked_ncc(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> float:
    """Normalised cross-correlation of thumbnails a and b with per-pixel weights (same shapes);
    1.0 when either is flat (nothing to compare)."""
    w = weight / max(float(weight.sum()), 1e-6)
    da = a - float((a * w).sum())
    db = b - float((b * w).sum())
    va, vb = float((w * da * da).sum()), float((w * db * db).sum())
    if va < 1e-3 or vb < 1e-3:
        return 1.0
    return float((w * da * db).sum()) / float(np.sqrt(va * vb))
