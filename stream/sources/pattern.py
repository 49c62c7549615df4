"""A test-pattern source: a few pre-rendered frames cycled, each stamped with its
seq in the top-left 8×64 block (bit pattern), so a reader can check it got the
frame it was sent. Costs one memcpy per frame: what the transport benchmark needs
to measure the pipeline rather than a decoder."""

from __future__ import annotations

import time
from collections.abc import Iterator
from fractions import Fraction

import numpy as np

from stream.sources.base import SourceFrame, SourceInfo

_VARIANTS = 4


def stamp_seq(image: np.ndarray, seq: int) -> None:
    """Write seq's 32 bits as 8×8-pixel black/white cells into the first row band (in place)."""
    for bit in range(32):
        image[:8, bit * 8:(bit + 1) * 8] = 255 if (seq >> bit) & 1 else 0


def read_seq(image: np.ndarray) -> int:
    return sum(1 << bit for bit in range(32) if image[4, bit * 8 + 4, 0] > 127)


class PatternSource:
    def __init__(self, width: int, height: int, *, fps: float = 30.0, frames: int | None = 300,
                 live: bool = False) -> None:
        self.width, self.height, self.fps, self.count, self.live = width, height, fps, frames, live
        self._frames: list[np.ndarray] = []

    def open(self) -> SourceInfo:
        h, w = self.height, self.width
        yy, xx = np.mgrid[0:h, 0:w]
        for k in range(_VARIANTS):
            img = np.empty((h, w, 3), np.uint8)
            img[..., 0] = (xx * 255 // max(1, w - 1) + 40 * k) % 256
            img[..., 1] = (yy * 255 // max(1, h - 1)) % 256
            img[..., 2] = ((xx // 32 + yy // 32 + k) % 2) * 255
            self._frames.append(img)
        return SourceInfo(w, h, self.fps, Fraction(1, 90000), self.live, self.count)

    def frames(self, start: int = 0) -> Iterator[SourceFrame]:
        seq = start
        period = 1.0 / self.fps
        t_next = time.monotonic()
        while self.count is None or seq < self.count:
            if self.live:
                t_next += period
                delay = t_next - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            img = self._frames[seq % _VARIANTS]
            stamp_seq(img, seq)
            yield SourceFrame(img, pts=int(seq * 90000 / self.fps))
            seq += 1

    def close(self) -> None:
        self._frames.clear()
