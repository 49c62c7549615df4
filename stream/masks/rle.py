"""COCO run-length encoding of masks (pycocotools), the form masks are published in.

An RLE is ``{"size": [H, W], "counts": str}``: COCO's compressed counts of
alternating False/True runs in column-major order, as JSON/msgpack-safe text.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from stream.errors import ProtocolError
from stream.masks.crop import MaskCrop


def encode(mask: np.ndarray) -> dict[str, Any]:
    """mask: (H, W) bool (or 0/1 integers) → {"size": [H, W], "counts": str}."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    fortran = np.asfortranarray(mask.astype(np.uint8, copy=False))
    rle = mask_utils.encode(fortran)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle["counts"].decode("ascii")}


def encode_crop(crop: MaskCrop, height: int, width: int) -> dict[str, Any]:
    """RLE of ``crop`` pasted into a (height, width) frame."""
    return encode(crop.to_full(height, width))


def decode(rle: dict[str, Any]) -> np.ndarray:
    """{"size": [H, W], "counts": str | bytes} → (H, W) bool.

    Raises ProtocolError when the dict is not a COCO RLE (missing keys, bad size,
    counts that do not fill H × W)."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"not a COCO RLE (need 'size': [H, W] and 'counts'): {exc!r}") from exc
    if height < 0 or width < 0:
        raise ProtocolError(f"COCO RLE has a negative size {[height, width]}")
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    if not isinstance(counts, bytes):
        raise ProtocolError(f"COCO RLE counts must be str or bytes, got {type(counts).__name__}")
    if height * width == 0:
        return np.zeros((height, width), dtype=bool)
    compressed = {"size": [height, width], "counts": counts}
    if _runs_total(counts) != height * width:
        raise ProtocolError(f"COCO RLE counts do not cover its size {[height, width]}")
    return mask_utils.decode(compressed).astype(bool)


def _runs_total(counts: bytes) -> int:
    """Sum of the run lengths in COCO's compressed counts string (its LEB128-like code)."""
    runs: list[int] = []
    i, n = 0, len(counts)
    while i < n:
        x, shift, more = 0, 0, True
        while more:
            if i >= n:
                raise ProtocolError("COCO RLE counts end in the middle of a number")
            c = counts[i] - 48
            x |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            i += 1
            shift += 5
            if not more and (c & 0x10):
                x |= -1 << shift
        if len(runs) > 2:  # runs after the first two are coded as a difference
            x += runs[-2]
        if x < 0:
            raise ProtocolError("COCO RLE counts hold a negative run")
        runs.append(x)
    return sum(runs)
