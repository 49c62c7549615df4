"""Moving a mask from its keyframe to the current frame.

Two methods:

- box motion (``warp_by_box``): the keyframe mask is scaled and translated
  with its track, from the box it was made for to the box now. Always starts
  from the keyframe crop, so resampling error does not accumulate.
- dense optical flow (``DenseFlow`` + ``warp_by_flow``): OpenCV DIS flow from
  the current frame back to the previous one is computed once per frame (on a
  frame scaled so its long side is at most ``max_side``), and each track's
  previous soft mask (``SoftCrop``) is pulled along it, then limited to the
  track's box grown by a margin. Follows outlines that deform and objects
  that become occluded, at the cost of drifting slowly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from stream.masks.crop import MaskCrop
from stream.masks.geometry import expand_rect

PropagationMethod = Literal["box", "flow"]
PROPAGATION_METHODS: tuple[PropagationMethod, ...] = ("box", "flow")

_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def warp_by_box(key: MaskCrop, key_box: np.ndarray, box: np.ndarray, height: int, width: int) -> MaskCrop:
    """The keyframe mask moved from ``key_box`` to ``box`` (translation and per-axis scale).

    key: the mask at its keyframe; key_box, box: (4,) XYXY source pixels with
    positive area. Returns a crop in a (height, width) frame (empty if it left it).
    """
    if key.is_empty:
        return key
    sx = float(box[2] - box[0]) / float(key_box[2] - key_box[0])
    sy = float(box[3] - box[1]) / float(key_box[3] - key_box[1])
    if not (math.isfinite(sx) and math.isfinite(sy)) or sx <= 0 or sy <= 0:
        return MaskCrop.empty()
    kx0, ky0, kx1, ky1 = key.rect
    # u' = box0 + (u - key_box0) * s, u in continuous pixel coordinates (pixel i spans [i, i+1)).
    fx0 = float(box[0]) + (kx0 - float(key_box[0])) * sx
    fy0 = float(box[1]) + (ky0 - float(key_box[1])) * sy
    fx1 = float(box[0]) + (kx1 - float(key_box[0])) * sx
    fy1 = float(box[1]) + (ky1 - float(key_box[1])) * sy
    x0, y0 = max(math.floor(fx0), 0), max(math.floor(fy0), 0)
    x1, y1 = min(math.ceil(fx1), width), min(math.ceil(fy1), height)
    if x1 <= x0 or y1 <= y0:
        return MaskCrop.empty()
    # Source index i (centre i + 0.5) → destination index j (centre j + 0.5).
    matrix = np.array(
        [[sx, 0.0, fx0 - x0 + 0.5 * sx - 0.5], [0.0, sy, fy0 - y0 + 0.5 * sy - 0.5]], dtype=np.float64
    )
    src = key.mask.astype(np.uint8) * np.uint8(255)
    out = cv2.warpAffine(
        src,
        matrix,
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return _trim(out >= 128, x0, y0)


@dataclass(frozen=True)
class SoftCrop:
    """A soft mask carried between frames by flow: values (h, w) uint8, 255 = object,
    threshold at 128; x0, y0: source pixel of values[0, 0]. Warping the soft values
    instead of a thresholded mask keeps edges from eroding frame after frame."""

    values: np.ndarray
    x0: int
    y0: int

    @staticmethod
    def from_crop(crop: MaskCrop) -> SoftCrop:
        return SoftCrop(crop.mask.astype(np.uint8) * np.uint8(255), crop.x0, crop.y0)

    def to_crop(self) -> MaskCrop:
        return _trim(self.values >= 128, self.x0, self.y0)


@dataclass(frozen=True)
class FlowField:
    """Backward flow of one frame, sampled on a grid ``scale`` times the source's:
    the source pixel at grid cell q came from source position p(q) + flow[q] in
    the previous frame.

    flow: (h, w, 2) float32, (dx, dy) in SOURCE pixels; scale: grid px per source px.
    """

    flow: np.ndarray
    scale: float


class DenseFlow:
    """OpenCV DIS optical flow, resolved down to frames scaled to a long side of at most ``max_side``.

    preset: "ultrafast" | "fast" | "medium" (DIS presets). The finest DIS scale is
    set to 0 (the scaled frame itself): on the synthetic evaluation, resolving
    flow at full resolution mattered far more than the preset, and the
    variational refinement of "fast"/"medium" blurs flow across object edges.
    """

    def __init__(self, preset: str = "ultrafast", max_side: int = 480) -> None:
        if preset not in _PRESETS:
            raise ValueError(f"DIS preset must be one of {', '.join(_PRESETS)}, got {preset!r}")
        if max_side < 16:
            raise ValueError(f"flow max_side must be ≥ 16 pixels, got {max_side}")
        self.preset = preset
        self.max_side = max_side
        self._dis = cv2.DISOpticalFlow.create(_PRESETS[preset])
        self._dis.setFinestScale(0)

    def prepare(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """(H, W) uint8 gray or (H, W, 3) uint8 BGR → (scaled gray uint8, scale)."""
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        if gray.dtype != np.uint8 or gray.ndim != 2:
            raise ValueError(f"frame must be (H, W) or (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        height, width = gray.shape
        scale = min(1.0, self.max_side / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
            scale = size[0] / width
        return np.ascontiguousarray(gray), scale

    def backward(self, current: np.ndarray, previous: np.ndarray, scale: float) -> FlowField:
        """Flow from ``current`` back to ``previous`` (both from ``prepare``, same size)."""
        if current.shape != previous.shape:
            raise ValueError(f"flow frames differ in size: {current.shape} vs {previous.shape}")
        flow = np.asarray(
            self._dis.calc(current, previous, np.zeros((*current.shape, 2), np.float32)), dtype=np.float32
        )
        if scale != 1.0:
            flow *= np.float32(1.0 / scale)
        return FlowField(flow=flow, scale=scale)


def warp_by_flow(
    prev: SoftCrop,
    field: FlowField,
    box: np.ndarray,
    height: int,
    width: int,
    margin: float = 0.05,
) -> SoftCrop:
    """The previous frame's soft mask pulled along backward flow onto the current
    frame, kept inside ``box`` ((4,) XYXY source px) grown by ``margin``.

    Backward warping cannot tell background uncovered behind a moving object
    from the object itself (both pull from where the object was), so the box
    is what cuts the trailing edge off; the margin allows for loose boxes."""
    x0, y0, x1, y1 = expand_rect(box, margin, 2.0, height, width)
    if x1 <= x0 or y1 <= y0 or prev.values.size == 0:
        return SoftCrop(np.zeros((0, 0), np.uint8), 0, 0)
    s = field.scale
    # Flow at each crop pixel: crop index j ↔ grid coordinate (x0 + j + 0.5)·s − 0.5.
    to_grid = np.array([[s, 0.0, (x0 + 0.5) * s - 0.5], [0.0, s, (y0 + 0.5) * s - 0.5]])
    flow = cv2.warpAffine(
        field.flow,
        to_grid,
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    # Source position of each current pixel in the previous soft crop (pixel-index coordinates).
    px = flow[..., 0] + np.arange(x0 - prev.x0, x1 - prev.x0, dtype=np.float32)[None, :]
    py = flow[..., 1] + np.arange(y0 - prev.y0, y1 - prev.y0, dtype=np.float32)[:, None]
    out = cv2.remap(prev.values, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return SoftCrop(out, x0, y0)


def _trim(mask: np.ndarray, x0: int, y0: int) -> MaskCrop:
    tight = MaskCrop.from_full(mask)
    return tight if tight.is_empty else MaskCrop(tight.mask, tight.x0 + x0, tight.y0 + y0)
