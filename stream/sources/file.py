"""Video files (anything FFmpeg reads) decoded with PyAV.

Frames come out as BGR uint8 (H×W×3, C-contiguous) with their presentation
timestamp in the video stream's ``time_base``. The frame *index* used by
``frames(start)`` is 0-based from the start of the file and, when the stream has
timestamps and a frame rate, derived from the pts (``(pts - first pts) · fps ·
time_base``), so it survives a seek and a lost frame leaves a gap instead of
shifting every later index. On a variable-frame-rate file it is kept strictly
increasing, and ``frames(start)`` resumes near the frame whose timestamp is
``start / fps`` seconds into the file.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Generator, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stream.errors import SourceError
from stream.sources.base import SourceFrame, SourceInfo
from stream.sources.pacing import Pacer

logger = logging.getLogger(__name__)

# A run of this many undecodable packets in a row ends the file with a SourceError.
_MAX_CONSECUTIVE_ERRORS = 100


def _is_still_image_format(name: str) -> bool:
    return name in ("image2", "image2pipe") or name.endswith("_pipe")


class FileSource:
    """A video file, decoded once through (``live=False``) or played as a camera (``live=True``).

    path: the file. live: release frames at the file's frame rate in wall-clock time
    and drop frames a slow reader is more than one frame period late for (counted
    in ``dropped``). loop: start again at the end, pts continuing to increase
    (the next pass is offset by the duration of the previous one).
    clock, sleep: injectable for tests of the pacing.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        live: bool = False,
        loop: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = Path(path).expanduser()
        self.live = live
        self.loop = loop
        self._clock = clock
        self._sleep = sleep
        self._info: SourceInfo | None = None
        self._first_pts = 0
        self._frame_dur = 0.0  # one frame period in time_base units, 0 when fps is unknown
        self._pts_from_index = False  # the stream has no timestamps: pts = frame index
        self._pacer: Pacer | None = None
        self._iterators: weakref.WeakSet[Generator[SourceFrame, None, None]] = weakref.WeakSet()
        self._file_size = 0
        self.end_reason: str | None = None  # why the last pass ended early ("truncated: …"), else None

    @property
    def dropped(self) -> int:
        """Frames not released because the reader was too late (live mode only)."""
        return self._pacer.dropped if self._pacer is not None else 0

    def _container(self) -> av.container.InputContainer:
        try:
            return av.open(str(self.path), mode="r")
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(
                f"cannot open {self.path} as a video ({exc}): it is not in a format FFmpeg reads, "
                "or it is truncated or damaged"
            ) from exc

    def open(self) -> SourceInfo:
        """Probe the file: its video stream, size, rate, first frame, and that its end is readable.

        Raises SourceError (naming the path) for a missing file, a directory, a file
        with no video stream (a text file, a still image), or a truncated or
        undecodable file.
        """
        path = self.path
        if not path.exists():
            raise SourceError(f"video file {path} does not exist; check the path")
        if path.is_dir():
            raise SourceError(f"{path} is a directory, not a video file; use a folder source for images")
        with self._container() as container:
            fmt = container.format.name
            if not container.streams.video:
                if not container.streams:
                    raise SourceError(
                        f"{path} has no video stream: FFmpeg ({fmt}) finds no streams at all; the file is "
                        "probably truncated (an MP4 whose index was never written) or not a video"
                    )
                kinds = ", ".join(sorted({s.type for s in container.streams}))
                raise SourceError(f"{path} has no video stream (only {kinds}); give a video file")
            if _is_still_image_format(fmt):
                raise SourceError(
                    f"{path} has no video stream: FFmpeg reads it as a still image ({fmt}); "
                    "use a folder source for images"
                )
            stream = container.streams.video[0]
            cc = stream.codec_context
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            first = self._first_frame(container, stream)
            width, height = cc.width or first.width, cc.height or first.height
            time_base = stream.time_base
            if first.pts is None or time_base is None:
                self._pts_from_index = True
                time_base = Fraction(1) / Fraction(rate) if rate else Fraction(1, 1)
                self._first_pts = 0
            else:
                self._first_pts = first.pts
            self._frame_dur = float(1 / (Fraction(rate) * time_base)) if rate else 0.0
            frame_count = stream.frames or None
        self._check_end(fmt)
        self._info = SourceInfo(
            width=width,
            height=height,
            fps=fps,
            time_base=Fraction(time_base),
            live=self.live,
            frame_count=frame_count,
        )
        logger.info(
            "opened %s: %dx%d, %.3f fps, %s frames, format %s",
            path,
            width,
            height,
            fps,
            frame_count if frame_count is not None else "unknown",
            fmt,
        )
        return self._info

    def _first_frame(self, container: av.container.InputContainer, stream: av.VideoStream) -> av.VideoFrame:
        try:
            for frame in container.decode(stream):
                return frame
        except av.FFmpegError as exc:
            raise SourceError(
                f"cannot decode the first frame of {self.path} ({exc}); the file may be truncated "
                "or use a codec this FFmpeg build lacks"
            ) from exc
        raise SourceError(f"{self.path} has a video stream but no decodable frame; the file may be truncated")

    def _check_end(self, fmt: str) -> None:
        """Read the packets of the last GOP: an indexed file cut short (an MP4 with its index
        at the front, copied or recorded only in part) is found here, warned about, and its
        decodable part is played; its end is reported as a truncation (``end_reason``).

        Only for containers whose index states the duration exactly (MP4/MOV, Matroska,
        AVI); elsewhere (MPEG-TS, raw streams) the duration is an estimate and a
        truncation shows up as an early end with a warning.
        """
        self._file_size = self.path.stat().st_size
        if not any(name in fmt for name in ("mov", "matroska", "avi")):
            return
        with self._container() as container:
            stream = container.streams.video[0]
            if stream.duration is None or stream.time_base is None:
                return
            end = (stream.start_time or 0) + stream.duration
            try:
                container.seek(end, stream=stream, backward=True)
            except av.FFmpegError:
                return
            last_pts = None
            why = ""
            try:
                for packet in container.demux(stream):
                    if packet.pos is not None and packet.pos + packet.size > self._file_size:
                        why = "its index lists frames past the end of the file"
                        break
                    if packet.size and packet.pts is not None:
                        last_pts = packet.pts if last_pts is None else max(last_pts, packet.pts)
            except av.FFmpegError as exc:
                why = f"reading its last frames failed ({exc})"
            # In MP4/MOV the last frame starts one frame period before the stated end.
            short = "mov" in fmt and self._frame_dur and last_pts is not None
            if not why and (last_pts is None or (short and last_pts + 1.5 * self._frame_dur < end)):
                why = "its index lists frames past the end of the file"
            if why:
                logger.warning("%s is truncated: %s; playing the part that decodes (re-copy or re-encode the "
                               "file for the rest)", self.path, why)

    def _index(self, pts: int) -> int:
        return round((pts - self._first_pts) / self._frame_dur)

    def frames(self, start: int = 0) -> Generator[SourceFrame, None, None]:
        """Frames from index ``start`` on; with ``loop`` an endless sequence, else until the end.

        Each SourceFrame: image (H,W,3) uint8 BGR, pts in ``info.time_base`` (continuing
        to increase across loop passes), extra ``{"index": frame index}``. Opens the
        source first if ``open()`` was not called. Close the returned generator (or call
        ``close()``) to release the file early.
        """
        info = self._info or self.open()
        if start < 0:
            raise SourceError(f"frames(start={start}) for {self.path}: start must be >= 0")
        iterator = self._frames(info, start)
        self._iterators.add(iterator)
        return iterator

    def _frames(self, info: SourceInfo, start: int) -> Generator[SourceFrame, None, None]:
        if self.live:
            late = 1.0 / info.fps if info.fps > 0 else 0.1
            self._pacer = Pacer(late, clock=self._clock, sleep=self._sleep)
        n = info.frame_count
        offset = 0  # pts added to this pass (loop)
        pass_index = 0
        if self.loop and n and start >= n and self._frame_dur:
            passes = start // n
            start -= passes * n
            offset = round(passes * n * self._frame_dur)
            pass_index = passes * n
        while True:
            emitted = 0
            last_pts = None
            last_index = -1
            with contextlib.closing(self._decode_pass(info, start)) as decoded:
                for index, pts, image in decoded:
                    emitted += 1
                    last_pts, last_index = pts, index
                    out_pts = pts + offset
                    if self._pacer is not None:
                        media_s = float((out_pts - self._first_pts) * info.time_base)
                        if not self._pacer.wait(media_s):
                            continue
                    yield SourceFrame(image=image, pts=out_pts, extra={"index": pass_index + index})
            if not self.loop:
                if n and last_index + 1 < n:
                    logger.warning(
                        "%s ended after frame %d of the %d its header announces; the file may be truncated",
                        self.path,
                        last_index,
                        n,
                    )
                    self.end_reason = f"truncated: ended after frame {last_index} of the {n} its index lists"
                return
            if emitted == 0 and start == 0:
                raise SourceError(f"{self.path} decoded no frames; cannot loop it")
            if emitted == 0:  # start was past the end of an unindexed file: find out how long a pass is
                count = sum(1 for _ in self._decode_pass(info, 0))
                start -= count
                pass_index += count
                offset += round(count * self._frame_dur) if self._frame_dur else count
                continue
            if last_pts is not None:
                step = round(self._frame_dur) if self._frame_dur else 1
                offset += last_pts - self._first_pts + step
            pass_index += last_index + 1
            start = 0

    def _decode_pass(
        self, info: SourceInfo, start: int, *, seek: bool = True
    ) -> Generator[tuple[int, int, np.ndarray], None, None]:
        """(index, pts, BGR image) for frames ``start``… of one pass through the file."""
        overshot = False
        container = self._container()
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            by_pts = False
            if seek and start > 0 and self._frame_dur and not self._pts_from_index:
                target = round(self._first_pts + start * self._frame_dur)
                try:
                    container.seek(target, stream=stream, backward=True)
                    by_pts = True
                except av.FFmpegError as exc:
                    logger.debug("seek in %s failed (%s); decoding from the start", self.path, exc)
            index = -1
            errors = 0
            for frame in self._decode(container, stream):
                if isinstance(frame, Exception):
                    errors += 1
                    logger.warning(
                        "%s: skipped an undecodable packet after frame %d (%s)", self.path, index, frame
                    )
                    if errors >= _MAX_CONSECUTIVE_ERRORS:
                        raise SourceError(
                            f"{self.path}: {errors} undecodable packets in a row; the file is damaged"
                        )
                    continue
                errors = 0
                first = index < 0
                # The pts says which frame this is (a lost or corrupt frame leaves a gap);
                # max() keeps indices increasing on a variable-frame-rate file.
                pts = frame.pts
                if pts is not None and self._frame_dur and not self._pts_from_index:
                    index = max(index + 1, self._index(pts))
                else:
                    index += 1
                if by_pts and first and index > start:
                    overshot = True  # no keyframe at or before the target: decode from the start
                    break
                if index < start:
                    continue
                if pts is None or self._pts_from_index:
                    pts = index if self._pts_from_index else round(self._first_pts + index * self._frame_dur)
                yield index, pts, self._to_bgr(frame, info)
        finally:
            container.close()
        if overshot:
            logger.debug("seek in %s overshot frame %d; decoding from the start", self.path, start)
            yield from self._decode_pass(info, start, seek=False)

    def _decode(
        self, container: av.container.InputContainer, stream: av.VideoStream
    ) -> Iterator[av.VideoFrame | Exception]:
        """Decoded frames in presentation order; a packet that fails to decode yields its exception."""
        try:
            for packet in container.demux(stream):
                if packet.pos is not None and self._file_size and packet.pos + packet.size > self._file_size:
                    # the index points past the end of the data: the file was cut here
                    self.end_reason = f"truncated: {self.path} ends within frame data its index lists"
                    return
                try:
                    yield from packet.decode()
                except av.FFmpegError as exc:
                    yield exc
        except av.FFmpegError as exc:
            logger.warning("%s: reading stopped early (%s); the file may be truncated", self.path, exc)

    @staticmethod
    def _to_bgr(frame: av.VideoFrame, info: SourceInfo) -> np.ndarray:
        if frame.width != info.width or frame.height != info.height:
            # A mid-stream resolution change: keep the opened size (the ring is sized for it).
            image = frame.to_ndarray(format="bgr24", width=info.width, height=info.height)
        else:
            image = frame.to_ndarray(format="bgr24")
        return np.ascontiguousarray(image)

    def close(self) -> None:
        """Stop every ``frames()`` generator of this source, closing the file it holds open.

        Call it from the thread that iterates (or once iteration has stopped): a generator
        running in another thread at that moment is left to finish on its own.
        """
        for iterator in list(self._iterators):
            try:
                iterator.close()
            except ValueError:  # executing right now in another thread
                logger.debug("%s: a frames() iterator is running elsewhere; not closed", self.path)
