"""A folder of still images played as a video, in file-name order.

Frame index ``i`` is the ``i``-th image of the sorted listing (taken once, at
``open()``); its pts is ``i`` in a time base of ``1/fps`` s. An image that
cannot be read when its turn comes is logged (file name and index) and
skipped, so the pts sequence has a gap where it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterable
from pathlib import Path

import cv2
import imagesize
import numpy as np

from stream.errors import SourceError
from stream.sources.base import SourceFrame, SourceInfo
from stream.sources.pacing import Pacer, fps_time_base

logger = logging.getLogger(__name__)

DEFAULT_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp")


class FolderSource:
    """Images ``*.jpg``, ``*.png``, … (case-insensitive) directly inside ``path``, sorted by name.

    fps: frames per second the sequence represents (sets the time base 1/fps).
    extensions: file extensions to include, without dots.
    live: release images at ``fps`` in wall-clock time, dropping those a slow reader
        is more than one period late for (counted in ``dropped``).

    ``SourceInfo.width``/``height`` are the largest image width and height found
    (read from the file headers); images may differ in size, each frame keeps its own.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        fps: float = 10.0,
        extensions: Iterable[str] = DEFAULT_EXTENSIONS,
        live: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not fps > 0:
            raise SourceError(f"folder source {path}: fps must be > 0, got {fps}")
        self.path = Path(path).expanduser()
        self.fps = float(fps)
        self.extensions = tuple(e.lower().lstrip(".") for e in extensions)
        self.live = live
        self._clock = clock
        self._sleep = sleep
        self._files: list[Path] = []
        self._info: SourceInfo | None = None
        self._pacer: Pacer | None = None

    @property
    def files(self) -> list[Path]:
        """The sorted image paths found by ``open()``; index ``i`` is frame ``i``."""
        return list(self._files)

    @property
    def dropped(self) -> int:
        """Images not released because the reader was too late (live mode only)."""
        return self._pacer.dropped if self._pacer is not None else 0

    def open(self) -> SourceInfo:
        """List the images and read their sizes from the headers (no decoding).

        Raises SourceError for a missing path, a path that is not a folder, or a folder
        without images (or whose images all have unreadable headers).
        """
        path = self.path
        if not path.exists():
            raise SourceError(f"image folder {path} does not exist; check the path")
        if not path.is_dir():
            raise SourceError(f"{path} is not a folder; give a folder of images (or use a file source)")
        wanted = {f".{e}" for e in self.extensions}
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in wanted and p.is_file())
        patterns = " ".join(f"*.{e}" for e in self.extensions)
        if not files:
            raise SourceError(f"no images in {path} (looked for {patterns})")
        width = height = 0
        for f in files:
            try:
                w, h = imagesize.get(f)
            except (OSError, ValueError) as exc:
                logger.warning("folder %s: cannot read the size of %s (%s)", path, f.name, exc)
                continue
            if w <= 0 or h <= 0:
                logger.warning("folder %s: %s has no readable image header; it will be skipped", path, f.name)
                continue
            width, height = max(width, w), max(height, h)
        if width == 0:
            raise SourceError(f"none of the {len(files)} images in {path} has a readable header ({patterns})")
        self._files = files
        self._info = SourceInfo(
            width=width,
            height=height,
            fps=self.fps,
            time_base=fps_time_base(self.fps),
            live=self.live,
            frame_count=len(files),
        )
        logger.info("opened folder %s: %d images, up to %dx%d", path, len(files), width, height)
        return self._info

    def frames(self, start: int = 0) -> Generator[SourceFrame, None, None]:
        """Images from index ``start`` on: BGR uint8 H×W×3, pts = index (time base 1/fps).

        extra: ``{"index": i, "path": Path}``.
        """
        info = self._info or self.open()
        if start < 0:
            raise SourceError(f"frames(start={start}) for {self.path}: start must be >= 0")
        pacer = None
        if self.live:
            pacer = self._pacer = Pacer(1.0 / self.fps, clock=self._clock, sleep=self._sleep)
        for index in range(start, len(self._files)):
            f = self._files[index]
            if pacer is not None and not pacer.wait(index / self.fps):
                continue
            image = self._read(f, index, info)
            if image is not None:
                yield SourceFrame(image=image, pts=index, extra={"index": index, "path": f})

    def _read(self, f: Path, index: int, info: SourceInfo) -> np.ndarray | None:
        # cv2.imread returns None (no exception) for a missing, truncated or non-image file.
        # IMREAD_COLOR: 3-channel 8-bit BGR, EXIF orientation applied (as imagesize reports sizes).
        image = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if image is None:
            logger.warning("folder %s seq %d: skipped %s, which cannot be decoded", self.path, index, f.name)
            return None
        h, w = image.shape[:2]
        if w > info.width or h > info.height:
            logger.warning(
                "folder %s seq %d: skipped %s: %dx%d is larger than the %dx%d found at open "
                "(the file changed since)",
                self.path,
                index,
                f.name,
                w,
                h,
                info.width,
                info.height,
            )
            return None
        return np.ascontiguousarray(image)

    def close(self) -> None:
        """Nothing is held open between images."""
