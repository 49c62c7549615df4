"""A test-pattern source: a few pre-rendered frames cycled (or one still picture with a
moving box, ``moving``), each stamped with its
seq in the top-left 8×256 band (bit pattern), so a reader can check it got the
frame it was sent. Costs one memcpy per frame: what the transport benchmark needs
to measure the pipeline rather than a decoder.

Each frame also carries its capture time, drawn so that it survives lossy
compression (JPEG, H.264) and scaling: ``stamp_time`` writes the wall-clock time
(``time.time_ns()``; a live pattern's ``capture_ns``) in ms modulo 2**24 (about 4.7 h)
as 24 big black/white cells, and under them the same bits inverted, so a reader
can tell a clean read from a damaged one (``time_stamp_geometry``: where the
cells are). ``stream bench live`` reads it back from the picture a browser
displays to measure capture → displayed latency.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from stream.sources.base import SourceFrame, SourceInfo

_VARIANTS = 4
TIME_BITS = 24  # the capture time in ms modulo 2**24


@dataclass(frozen=True)
class StampGeometry:
    """Where ``stamp_time`` draws, in pixels of the source picture: TIME_BITS square cells
    of side ``cell`` from (x0, y0) rightwards (bit 0 first, white = 1), and the inverted
    bits in the row of cells below. Cells sit on multiples of 8 (JPEG blocks) and below the
    render stage's status line (top-left, about 25 px high)."""

    x0: int
    y0: int
    cell: int

    def to_dict(self) -> dict[str, int]:
        return {"x0": self.x0, "y0": self.y0, "cell": self.cell, "bits": TIME_BITS}


def time_stamp_geometry(width: int, height: int) -> StampGeometry | None:
    """The capture-time stamp's place in a width×height picture; None when it does not fit
    (narrower than 200 or lower than 64 pixels). Cells: 8 px below 640 wide, 16 below
    1280, else 32 (720p and 1080p: 768×64 pixels at (32, 64))."""
    cell = 8 if width < 640 else 16 if width < 1280 else 32
    x0, y0 = cell, max(48, 2 * cell)
    if x0 + TIME_BITS * cell > width or y0 + 2 * cell > height:
        return None
    return StampGeometry(x0, y0, cell)


def stamp_time(image: np.ndarray, ms: int, geometry: StampGeometry) -> None:
    """Write ``ms % 2**24`` and its complement as cells (in place; see StampGeometry)."""
    g, c = geometry, geometry.cell
    for bit in range(TIME_BITS):
        on = (ms >> bit) & 1
        x = g.x0 + bit * c
        image[g.y0:g.y0 + c, x:x + c] = 255 if on else 0
        image[g.y0 + c:g.y0 + 2 * c, x:x + c] = 0 if on else 255


def read_time(image: np.ndarray, geometry: StampGeometry) -> int | None:
    """The ms stamped by ``stamp_time`` in a picture of the source's size (BGR or grey),
    read at each cell's centre; None when any cell and its complement do not clearly
    differ (the picture is damaged, or carries no stamp)."""
    g, c = geometry, geometry.cell
    lo, hi = c // 4, c - c // 4
    grey = image if image.ndim == 2 else image.mean(axis=2)
    ms = 0
    for bit in range(TIME_BITS):
        x = g.x0 + bit * c
        on = float(grey[g.y0 + lo:g.y0 + hi, x + lo:x + hi].mean())
        off = float(grey[g.y0 + c + lo:g.y0 + c + hi, x + lo:x + hi].mean())
        if abs(on - off) < 96:
            return None
        ms |= (on > off) << bit
    return ms


def stamp_seq(image: np.ndarray, seq: int) -> None:
    """Write seq's 32 bits as 8×8-pixel black/white cells into the first row band (in place)."""
    for bit in range(32):
        image[:8, bit * 8:(bit + 1) * 8] = 255 if (seq >> bit) & 1 else 0


def read_seq(image: np.ndarray) -> int:
    return sum(1 << bit for bit in range(32) if image[4, bit * 8 + 4, 0] > 127)


class PatternSource:
    """width×height BGR frames at ``fps`` (paced in real time when ``live``), ``frames`` of them
    (None: endless). Pictures: 4 gradient/checkerboard variants in turn, or with ``moving`` the
    first variant still and a box (a quarter of the height) sliding right at a quarter of the
    width per second. ``extra['stamped_ns']`` is the time stamped into each frame; a live
    pattern also gives it as the frame's ``capture_ns`` (a file-like one is timed by the
    capture once a ring slot is free, as files are, so backpressure is not latency)."""

    def __init__(self, width: int, height: int, *, fps: float = 30.0, frames: int | None = 300,
                 live: bool = False, moving: bool = False) -> None:
        self.width, self.height, self.fps, self.count, self.live = width, height, fps, frames, live
        self.moving = moving
        self._frames: list[np.ndarray] = []
        self._still: np.ndarray | None = None
        self._geometry: StampGeometry | None = None

    def open(self) -> SourceInfo:
        h, w = self.height, self.width
        yy, xx = np.mgrid[0:h, 0:w]
        for k in range(_VARIANTS):
            img = np.empty((h, w, 3), np.uint8)
            img[..., 0] = (xx * 255 // max(1, w - 1) + 40 * k) % 256
            img[..., 1] = (yy * 255 // max(1, h - 1)) % 256
            img[..., 2] = ((xx // 32 + yy // 32 + k) % 2) * 255
            self._frames.append(img)
        if self.moving:
            self._still = self._frames[0].copy()
        self._geometry = time_stamp_geometry(w, h)
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
            if self._still is not None:
                self._draw_moving(img, self._still, seq)
            stamp_seq(img, seq)
            now = time.time_ns()
            if self._geometry is not None:
                stamp_time(img, now // 1_000_000, self._geometry)
            extra = {"stamped_ns": now, "capture_ns": now} if self.live else {"stamped_ns": now}
            yield SourceFrame(img, pts=int(seq * 90000 / self.fps), extra=extra)
            seq += 1

    def _draw_moving(self, img: np.ndarray, still: np.ndarray, seq: int) -> None:
        np.copyto(img, still)
        h, w = self.height, self.width
        side = max(1, h // 4)
        x = int(seq / self.fps * w / 4) % max(1, w - side)
        img[h // 2:h // 2 + side, x:x + side] = (0, 200, 255)

    def close(self) -> None:
        self._frames.clear()
