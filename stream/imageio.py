"""Reading image files: the formats image mode and evaluation accept, and one decoder for both."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from stream.errors import SourceError

IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp")


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 BGR pixels of an image file. SourceError naming the file when it
    cannot be read or decoded (corrupt, truncated, not an image)."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)  # also for non-ASCII paths, unlike cv2.imread
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None or image.ndim != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise SourceError(f"{path}: not a readable image (corrupt, truncated or not an image format)")
    return image
