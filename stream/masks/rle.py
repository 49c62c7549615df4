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
    """RLE of ``crop`` pasted into a (height, width) frame, computed from the crop alone
    (no full-frame mask is built): the one path for publish, record and predict."""
    return {"size": [int(height), int(width)], "counts": crop_counts(crop.mask, crop.x0, crop.y0, height, width)}


def crop_counts(crop: np.ndarray, x0: int, y0: int, height: int, width: int) -> str:
    """COCO RLE counts of a (height, width) frame that is False except for ``crop``.

    crop: (h, w) bool, crop[0, 0] at source-image pixel (x0, y0); parts outside
    the frame are clipped. Equal (same counts string) to pycocotools' encoding of
    the full mask, computed from the crop's runs: COCO counts are column-major, so
    a run in crop column c at row r starts at full index (x0 + c) * height + y0 + r.
    """
    h, w = crop.shape
    cx0, cy0 = max(0, -x0), max(0, -y0)
    cx1, cy1 = min(w, width - x0), min(h, height - y0)
    if cx1 <= cx0 or cy1 <= cy0:
        return _compress([height * width], height, width)
    crop = crop[cy0:cy1, cx0:cx1]
    x0, y0 = x0 + cx0, y0 + cy0
    h, w = crop.shape
    # a False row above and below, so that no run crosses from one column to the next;
    # transitions found row-major (contiguous, fast), then put in column-major order
    padded = np.zeros((h + 2, w), np.uint8)
    padded[1:-1] = crop
    edges = np.flatnonzero(padded[1:] != padded[:-1])  # run starts and ends, alternating per column
    if edges.size == 0:
        return _compress([height * width], height, width)
    rows, cols = np.divmod(edges, w)
    full = (cols + x0) * height + (rows + y0)
    full.sort()
    if full.size > 2:  # a run ending at the bottom edge and one starting at the top of the next column
        touching = np.flatnonzero(full[1:-1:2] == full[2::2])
        if touching.size:
            keep = np.ones(full.size, bool)
            keep[2 * touching + 1] = False
            keep[2 * touching + 2] = False
            full = full[keep]
    bounds = np.empty(full.size + 2, np.int64)
    bounds[0], bounds[1:-1], bounds[-1] = 0, full, height * width
    counts = np.diff(bounds)
    if counts[-1] == 0:  # the last pixel is set: no trailing empty run, as pycocotools writes it
        counts = counts[:-1]
    return _compress(counts.tolist(), height, width)


def _compress(counts: list[int], height: int, width: int) -> str:
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return rle["counts"].decode("ascii")  # type: ignore[no-any-return]


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
