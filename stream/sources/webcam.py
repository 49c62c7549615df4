"""USB / V4L2 webcams through OpenCV, as reconnecting live sources (``stream.sources.live``).

``device`` is an index (``0`` → /dev/video0) or a path: ``/dev/videoN`` or a stable
symlink to one (``/dev/v4l/by-id/…``), opened with the V4L2 backend; any other
existing path (a video file, a FIFO) is opened with OpenCV's default backend, which
lets tests and demos stand a file in for a camera. The capture format asked for
(``webcam.width``/``height``/``fourcc`` and ``fps``) is passed at open time; the camera
may choose the nearest it supports, and the format it gave is logged.

A device that does not exist (unplugged, wrong index) is a failed attempt like any
other: the source retries with backoff and says so in one log line, the rest of the run
goes on. ``LiveSource.probe()`` (``stream check``) reports it as an error.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stream.config import SourceConfig
from stream.errors import SourceError
from stream.sources.connection import Decoded
from stream.sources.live import LiveSource

log = logging.getLogger(__name__)

_VIDEO_NODE = re.compile(r"^/dev/video(\d+)$")


def resolve_device(device: int | str) -> tuple[int | str, bool]:
    """(what to give cv2.VideoCapture, whether it is a V4L2 device). Raises SourceError
    when the device does not exist, saying what to check."""
    text = str(device).strip()
    if text.isdigit():
        node = Path(f"/dev/video{int(text)}")
        if not node.exists():
            raise SourceError(
                f"webcam {text}: {node} does not exist; is the camera plugged in? "
                "(list them with `ls /dev/video*`)"
            )
        return int(text), True
    path = Path(text).expanduser()
    if not path.exists():
        raise SourceError(
            f"webcam {text} does not exist; check the path or plug the camera in "
            "(list them with `ls /dev/video*`)"
        )
    match = _VIDEO_NODE.match(os.path.realpath(path))
    if match:
        return int(match.group(1)), True
    return str(path), False


def check_device(device: int | str | None) -> None:
    """Offline check of the device's form (existence is checked at each connection)."""
    text = str(device).strip() if device is not None else ""
    if not text or (not text.isdigit() and not text.startswith(("/", "~", "."))):
        raise SourceError(f"webcam device {device!r}: give an index (0) or a path (/dev/video0)")


class WebcamConnection:
    """An open cv2.VideoCapture; frames as BGR uint8 (H,W,3)."""

    def __init__(self, capture: Any, label: str) -> None:
        import cv2

        self._cv2 = cv2
        self._cap = capture
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        code = int(capture.get(cv2.CAP_PROP_FOURCC))
        fourcc = code.to_bytes(4, "little").decode("ascii", "replace").strip("\x00 ") if code > 0 else "?"
        self.description = f"{fourcc} {width}x{height}" + (f" @ {self.fps:g} fps" if self.fps else "")
        self.label = label

    @classmethod
    def open(
        cls,
        device: int | str,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        fourcc: str | None = None,
        open_timeout_s: float = 4.0,
        read_timeout_s: float = 2.0,
        factory: Callable[..., Any] | None = None,
    ) -> WebcamConnection:
        """Open the camera asking for this format; raises SourceError when it cannot be opened."""
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our own lines say it better
        target, v4l2 = resolve_device(device)
        make = factory or cv2.VideoCapture
        if v4l2:
            # Format properties are set after opening, in this order (fourcc first, as V4L2
            # needs): an unsupported one is ignored, where an open() parameter would fail.
            capture = make(target, cv2.CAP_V4L2)
            props = [
                (cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*fourcc) if fourcc else None),
                (cv2.CAP_PROP_FRAME_WIDTH, width),
                (cv2.CAP_PROP_FRAME_HEIGHT, height),
                (cv2.CAP_PROP_FPS, round(fps) if fps else None),
                (cv2.CAP_PROP_BUFFERSIZE, 1),  # the newest frame, not a queue of old ones
                (cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000)),
            ]
            if capture.isOpened():
                for prop, value in props:
                    if value is not None:
                        capture.set(prop, value)
        else:  # a file or stream standing in for a camera: FFmpeg honours the timeouts
            timeouts = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                int(open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                int(read_timeout_s * 1000),
            ]
            capture = make(target, cv2.CAP_FFMPEG, timeouts)
        if not capture.isOpened():
            capture.release()
            raise SourceError(
                f"webcam {device}: the device exists but cannot be opened (busy in another "
                "program, no permission — is the user in the 'video' group? — or not a camera)"
            )
        conn = cls(capture, f"webcam {device}")
        asked = f"{width or '?'}x{height or '?'}" + (f" {fourcc}" if fourcc else "")
        log.info("webcam %s: asked for %s, got %s", device, asked, conn.description)
        return conn

    def frames(self) -> Iterator[Decoded]:
        cv2 = self._cv2
        last_ms = -1.0
        while True:
            ok, image = self._cap.read()
            if not ok or image is None:
                return  # unplugged, or the end of a file standing in for a camera
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            pos_ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
            # A timestamp that does not advance (a driver that reports none) is no timestamp.
            media_s = pos_ms / 1000.0 if pos_ms > last_ms else None
            last_ms = max(last_ms, pos_ms)
            h, w = image.shape[:2]
            yield Decoded("frame", w, h, media_s, _resizer(image))

    def close(self) -> None:
        self._cap.release()


def _resizer(image: Any) -> Callable[[int, int], Any]:
    def fit(width: int, height: int) -> Any:
        if (height, width) == image.shape[:2]:
            return image
        import cv2

        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)

    return fit


def webcam_source(cfg: SourceConfig) -> LiveSource:
    """A reconnecting live source for ``cfg.device``. Nothing is opened yet. Ring slots are
    sized for webcam.width×height when given, else max_width×max_height."""
    device = cfg.device if cfg.device is not None else ""
    w = cfg.webcam

    def connect(stall_s: float) -> WebcamConnection:
        return WebcamConnection.open(
            device,
            width=w.width,
            height=w.height,
            fps=cfg.fps,
            fourcc=w.fourcc,
            open_timeout_s=cfg.open_timeout_s,
            read_timeout_s=stall_s,
        )

    size = (w.width, w.height) if w.width and w.height else None
    return LiveSource.from_config(
        cfg, connect, label=f"webcam {device}", max_size=size, check=lambda: check_device(device)
    )
