"""A compact mask: a boolean crop plus where it sits in the frame.

Masks live as crops around their object (a few KiB each) and are expanded to a
full frame only when something (render, publish) needs one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MaskCrop:
    """mask: (h, w) bool, True on the object; x0, y0: int, the source-image
    pixel of mask[0, 0] (column, row). The crop always lies inside the frame it
    was made for. An empty crop (h or w == 0) means "no mask"."""

    mask: np.ndarray
    x0: int
    y0: int

    @staticmethod
    def empty() -> MaskCrop:
        return MaskCrop(np.zeros((0, 0), dtype=bool), 0, 0)

    @staticmethod
    def from_full(mask: np.ndarray) -> MaskCrop:
        """Crop a full-frame (H, W) bool mask to the bounding box of its True pixels."""
        if mask.ndim != 2:
            raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return MaskCrop.empty()
        cols = np.flatnonzero(mask.any(axis=0))
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        return MaskCrop(np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=bool), x0, y0)

    @property
    def is_empty(self) -> bool:
        return self.mask.size == 0

    @property
    def area(self) -> int:
        """Number of True pixels."""
        return int(np.count_nonzero(self.mask))

    @property
    def rect(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) int, exclusive end, source-image pixels."""
        h, w = self.mask.shape
        return self.x0, self.y0, self.x0 + w, self.y0 + h

    def bbox(self) -> np.ndarray | None:
        """Tight box of the True pixels, (4,) float32 XYXY (exclusive end), or None if empty."""
        if self.is_empty:
            return None
        rows = np.flatnonzero(self.mask.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(self.mask.any(axis=0))
        return np.array(
            [self.x0 + cols[0], self.y0 + rows[0], self.x0 + cols[-1] + 1, self.y0 + rows[-1] + 1],
            dtype=np.float32,
        )

    def to_full(self, height: int, width: int) -> np.ndarray:
        """The mask pasted into an all-False (height, width) bool frame (clipped to it)."""
        out = np.zeros((height, width), dtype=bool)
        self.paste_into(out)
        return out

    def paste_into(self, out: np.ndarray) -> None:
        """OR the mask into ``out`` ((H, W) bool), clipping to its bounds."""
        if self.is_empty:
            return
        height, width = out.shape[:2]
        x0, y0, x1, y1 = self.rect
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if cx1 <= cx0 or cy1 <= cy0:
            return
        out[cy0:cy1, cx0:cx1] |= self.mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
