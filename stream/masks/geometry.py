"""Box helpers shared by the segmenter, the keyframe policy and the mask store.

Boxes are float XYXY in source-image pixels, exclusive end: a box
(x0, y0, x1, y1) covers columns x0 ≤ x < x1 and rows y0 ≤ y < y1.
"""

from __future__ import annotations

import numpy as np


def as_boxes(boxes: np.ndarray | list[list[float]], name: str = "boxes") -> np.ndarray:
    """Validate and convert to (N, 4) float32; an empty input gives (0, 4)."""
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must be (N, 4) XYXY, got shape {arr.shape}")
    return arr


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip boxes to a (height, width) frame.

    boxes: (N, 4) float XYXY source pixels (NaN and inf allowed: such a box is invalid).
    Returns (clipped (N, 4) float32, valid (N,) bool, changed (N,) bool): a box is
    invalid when, after clipping, it has no area (fully outside, degenerate,
    inverted or not finite); ``changed`` marks valid boxes that clipping altered.
    """
    arr = as_boxes(boxes)
    finite = np.isfinite(arr).all(axis=1)
    safe = np.where(np.isfinite(arr), arr, 0.0)
    clipped = np.empty_like(safe)
    clipped[:, [0, 2]] = np.clip(safe[:, [0, 2]], 0.0, float(width))
    clipped[:, [1, 3]] = np.clip(safe[:, [1, 3]], 0.0, float(height))
    valid = finite & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    changed = valid & (np.abs(clipped - safe) > 1e-3).any(axis=1)
    return clipped.astype(np.float32), valid, changed


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (4,) XYXY boxes; 0.0 when both are empty."""
    ix = max(0.0, min(float(a[2]), float(b[2])) - max(float(a[0]), float(b[0])))
    iy = max(0.0, min(float(a[3]), float(b[3])) - max(float(a[1]), float(b[1])))
    inter = ix * iy
    area_a = max(0.0, float(a[2] - a[0])) * max(0.0, float(a[3] - a[1]))
    area_b = max(0.0, float(b[2] - b[0])) * max(0.0, float(b[3] - b[1]))
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def expand_rect(
    box: np.ndarray, margin: float, min_margin: float, height: int, width: int
) -> tuple[int, int, int, int]:
    """Integer rect (x0, y0, x1, y1), exclusive end, around ``box`` grown by
    ``margin`` × its side (at least ``min_margin`` pixels) on each side, clipped to the frame."""
    x0, y0, x1, y1 = (float(v) for v in box)
    mx = max(margin * (x1 - x0), min_margin)
    my = max(margin * (y1 - y0), min_margin)
    rx0 = int(np.clip(np.floor(x0 - mx), 0, width))
    ry0 = int(np.clip(np.floor(y0 - my), 0, height))
    rx1 = int(np.clip(np.ceil(x1 + mx), 0, width))
    ry1 = int(np.clip(np.ceil(y1 + my), 0, height))
    return rx0, ry0, rx1, ry1
