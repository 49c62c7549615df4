"""MOTChallenge files: a det.txt / gt.txt / result reader, a writer, and ``MotSource``.

One line per box: ``frame,id,bb_left,bb_top,bb_width,bb_height,conf[,class,visibility | ,x,y,z]``
with 1-based frame numbers and boxes as top-left + size in image pixels. Public
detections have id -1; MOT15-style files (TUD-Campus, …) carry ``x,y,z`` world
coordinates (-1) where MOT16/17 have ``class,visibility``; both are accepted.
Columns are comma separated (whitespace around values, or whitespace alone, is
accepted). A malformed line raises ``SourceError`` naming the file and line.

``MotSource`` plays a sequence's public detections as a source: per frame the
sequence image when an ``img1`` folder exists (``seqinfo.ini``), else a gray
frame of the sequence's size, with ``extra["detections"] = (boxes, scores,
class_ids)`` so the pipeline can skip the detector.
"""

from __future__ import annotations

import configparser
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from stream.errors import SourceError
from stream.sources.base import SourceFrame, SourceInfo

log = logging.getLogger(__name__)

GRAY = 114  # the letterbox gray detectors are trained with; obviously not a camera image


@dataclass(frozen=True)
class MotTable:
    """All rows of one MOT file, sorted by frame (stable: file order within a frame).

    frames: (R,) int64, 1-based. ids: (R,) int64 (-1 for public detections).
    tlwh: (R, 4) float64 top-left x, top-left y, width, height in image pixels.
    conf: (R,) float64 (detection score, 1 when absent; in gt files 0 means "ignore this row").
    classes: (R,) int64, -1 for rows without a class (7-column rows, and 10-column MOT15 /
        det rows whose last three columns are world x,y,z).
    visibility: (R,) float64, -1 when absent.
    """

    path: Path
    frames: np.ndarray
    ids: np.ndarray
    tlwh: np.ndarray
    conf: np.ndarray
    classes: np.ndarray
    visibility: np.ndarray

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def last_frame(self) -> int:
        """The largest frame number (0 for an empty table)."""
        return int(self.frames.max()) if len(self) else 0

    @property
    def xyxy(self) -> np.ndarray:
        """(R, 4) float64 boxes as XYXY pixels."""
        out = self.tlwh.copy()
        out[:, 2:] += out[:, :2]
        return out

    def frame_slices(self) -> dict[int, slice]:
        """frame number → slice of the rows of that frame (frames without rows are absent)."""
        if not len(self):
            return {}
        values, starts = np.unique(self.frames, return_index=True)
        ends = np.append(starts[1:], len(self))
        return {int(f): slice(int(a), int(b)) for f, a, b in zip(values, starts, ends, strict=True)}

    def has_classes(self) -> bool:
        """False when no row has a class (MOT15-style ground truth: every row is a pedestrian)."""
        return bool((self.classes != -1).any())


def _parse_line(text: str, path: Path, lineno: int) -> list[float] | None:
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    parts = [p.strip() for p in stripped.split(",")] if "," in stripped else stripped.split()
    while parts and parts[-1] == "":
        parts.pop()
    if len(parts) < 6:
        raise SourceError(
            f"{path}:{lineno}: expected at least 6 comma-separated columns "
            f"(frame,id,x,y,w,h[,conf,...]), got {len(parts)}: {stripped[:80]!r}"
        )
    values: list[float] = []
    for col, part in enumerate(parts[:10]):
        try:
            value = float(part)
        except ValueError:
            raise SourceError(f"{path}:{lineno}: column {col + 1} is not a number: {part!r}") from None
        if not math.isfinite(value):
            raise SourceError(f"{path}:{lineno}: column {col + 1} is not finite: {part!r}")
        values.append(value)
    frame = values[0]
    if frame != int(frame) or frame < 1:
        raise SourceError(
            f"{path}:{lineno}: frame must be an integer >= 1 (MOT frames are 1-based), got {parts[0]!r}"
        )
    if values[4] < 0 or values[5] < 0:
        raise SourceError(
            f"{path}:{lineno}: box width and height must be >= 0, got {parts[4]!r}, {parts[5]!r}"
        )
    return values


def read_mot(path: str | Path) -> MotTable:
    """Read a MOTChallenge det, gt or result file.

    Raises SourceError when the file is missing or unreadable, or a line is
    malformed (the message gives ``path:line``). An empty file gives an empty table.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"MOT file not found: {path} (expected a det.txt, gt.txt or result file)")
    rows: list[list[float]] = []
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, text in enumerate(fh, start=1):
                values = _parse_line(text, path, lineno)
                if values is None:
                    continue
                if len(values) == 6:
                    values.append(1.0)  # no conf column: every row counts
                if len(values) >= 10:
                    # MOT15 rows (and MOT17 det rows) end in world x,y,z: no class, no visibility.
                    values[7:10] = [-1.0, -1.0, -1.0]
                rows.append(values + [-1.0] * (10 - len(values)))
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read MOT file {path}: {exc}") from exc
    data = np.asarray(rows, dtype=np.float64).reshape(-1, 10)
    data = data[np.argsort(data[:, 0], kind="stable")]
    return MotTable(
        path=path,
        frames=data[:, 0].astype(np.int64),
        ids=data[:, 1].astype(np.int64),
        tlwh=data[:, 2:6].copy(),
        conf=data[:, 6].copy(),
        classes=data[:, 7].astype(np.int64),
        visibility=data[:, 8].copy(),
    )


def write_mot(
    path: str | Path, frames: np.ndarray, ids: np.ndarray, xyxy: np.ndarray, scores: np.ndarray
) -> None:
    """Write a MOT result file (``frame,id,x,y,w,h,conf,-1,-1,-1``), frames 1-based, boxes XYXY pixels."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for f, i, box, s in zip(frames.tolist(), ids.tolist(), xyxy.tolist(), scores.tolist(), strict=True):
            x1, y1, x2, y2 = box
            fh.write(f"{f},{i},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{s:.4f},-1,-1,-1\n")


@dataclass(frozen=True)
class SeqInfo:
    """The fields of a MOTChallenge ``seqinfo.ini`` that a source needs (None when absent)."""

    name: str | None = None
    im_dir: str = "img1"
    im_ext: str = ".jpg"
    frame_rate: float | None = None
    length: int | None = None
    width: int | None = None
    height: int | None = None


def read_seqinfo(path: str | Path) -> SeqInfo:
    """Parse ``seqinfo.ini``; raises SourceError naming the key when a value is not a number."""
    path = Path(path)
    parser = configparser.ConfigParser()
    try:
        parser.read_string(path.read_text(encoding="utf-8"))
    except (OSError, configparser.Error) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
    if not parser.has_section("Sequence"):
        raise SourceError(f"{path}: no [Sequence] section (is this a MOTChallenge seqinfo.ini?)")
    sec = parser["Sequence"]

    def number(key: str, kind: type) -> float | int | None:
        raw = sec.get(key)
        if raw is None:
            return None
        try:
            value = kind(raw)
        except ValueError:
            raise SourceError(f"{path}: {key}={raw!r} is not a number") from None
        if value <= 0:
            raise SourceError(f"{path}: {key}={raw!r} must be > 0")
        return value

    return SeqInfo(
        name=sec.get("name"),
        im_dir=sec.get("imDir", "img1"),
        im_ext=sec.get("imExt", ".jpg"),
        frame_rate=number("frameRate", float),
        length=number("seqLength", int),  # type: ignore[arg-type]
        width=number("imWidth", int),  # type: ignore[arg-type]
        height=number("imHeight", int),  # type: ignore[arg-type]
    )


def scores_in_unit_range(conf: np.ndarray, path: Path) -> np.ndarray:
    """Detection confidences as scores in [0, 1], as the tracker needs them.

    Published MOTChallenge detections are not probabilities: MOT17's DPM gives negative
    and > 1 values, MOT15 files carry -1. Scores already in [0, 1] are kept as they are;
    otherwise they are mapped linearly, (conf - min) / (max - min), which keeps their
    order (all equal: 1.0), with one warning saying so. conf: (R,) float64; returns (R,).
    """
    if not conf.size or (conf.min() >= 0.0 and conf.max() <= 1.0):
        return conf
    lo, hi = float(conf.min()), float(conf.max())
    if hi > lo:
        mapped = (conf - lo) / (hi - lo)
        how = f"mapped linearly to [0, 1] as (conf - {lo:g}) / ({hi:g} - {lo:g}), order kept"
    else:
        mapped = np.ones_like(conf)
        how = "all equal, so every detection gets score 1.0"
    log.warning("%s: detection confidences span [%g, %g], outside [0, 1]; %s (tracker thresholds "
                "apply to the mapped scores)", path, lo, hi, how)
    return mapped


class MotSource:
    """Public detections of a MOTChallenge sequence as a ``Source`` (a file source: never drops).

    det_path: the det.txt. seq_dir: the sequence folder holding ``seqinfo.ini`` and
        ``img1/`` (default: two levels above det_path when a seqinfo.ini is there).
    width, height, fps: override seqinfo.ini; without either, the size is taken from
        the first image, else from the largest box extent, and fps defaults to 30.
    class_id: COCO class given to every public detection (0, person: MOT detections
        are pedestrians).
    images: False serves gray frames even when the sequence has images (scoring a
        tracker needs only the detections).
    Frames: one per MOT frame 1..frame_count (seqLength, else the last frame with a
    detection); pts = frame index from 0, time_base = 1/fps.
    extra: {"detections": (boxes (N,4) float32 XYXY pixels, scores (N,) float32,
    class_ids (N,) int32), "mot_frame": the 1-based MOT frame number}. Confidences
    outside [0, 1] (MOT15, MOT17 DPM) are mapped to [0, 1] (``scores_in_unit_range``).
    """

    def __init__(
        self,
        det_path: str | Path,
        *,
        seq_dir: str | Path | None = None,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        class_id: int = 0,
        images: bool = True,
    ) -> None:
        self.det_path = Path(det_path)
        if seq_dir is None and (self.det_path.parent.parent / "seqinfo.ini").is_file():
            seq_dir = self.det_path.parent.parent
        self.seq_dir = Path(seq_dir) if seq_dir is not None else None
        self._width, self._height, self._fps = width, height, fps
        self.class_id = int(class_id)
        self.images = images
        self._table: MotTable | None = None
        self._slices: dict[int, slice] = {}
        self._info: SourceInfo | None = None
        self._image_dir: Path | None = None
        self._im_ext = ".jpg"
        self._blank: np.ndarray | None = None
        self._scores = np.zeros(0, np.float64)

    def open(self) -> SourceInfo:
        seq = SeqInfo()
        if self.seq_dir is not None:
            ini = self.seq_dir / "seqinfo.ini"
            if ini.is_file():
                seq = read_seqinfo(ini)
            elif not self.seq_dir.is_dir():
                raise SourceError(f"MOT sequence folder not found: {self.seq_dir}")
            image_dir = self.seq_dir / seq.im_dir
            self._image_dir = image_dir if self.images and image_dir.is_dir() else None
            self._im_ext = seq.im_ext
        table = read_mot(self.det_path)
        self._table = table
        self._scores = scores_in_unit_range(table.conf, self.det_path)
        self._slices = table.frame_slices()
        frame_count = seq.length or table.last_frame
        if frame_count == 0:
            raise SourceError(
                f"{self.det_path}: no detections and no seqLength in seqinfo.ini; cannot tell how many frames"
            )
        width = self._width or seq.width
        height = self._height or seq.height
        if (width is None or height is None) and self._image_dir is not None:
            first = self._read_image(self._image_dir, 1)
            height, width = first.shape[:2]
        if width is None or height is None:
            if not len(table):
                raise SourceError(
                    f"{self.det_path}: no detections to infer the frame size from; give width/height"
                )
            xyxy = table.xyxy
            width = width or max(2, int(math.ceil(float(xyxy[:, 2].max()))))
            height = height or max(2, int(math.ceil(float(xyxy[:, 3].max()))))
            log.info(
                "source %s: no seqinfo.ini or images; frame size %dx%d inferred from boxes",
                self.det_path,
                width,
                height,
            )
        fps = float(self._fps or seq.frame_rate or 30.0)
        if self._image_dir is None:
            blank = np.full((height, width, 3), GRAY, dtype=np.uint8)
            blank.flags.writeable = False  # shared by every frame
            self._blank = blank
        self._info = SourceInfo(
            width=int(width),
            height=int(height),
            fps=fps,
            time_base=Fraction(1, 1) / Fraction(fps).limit_denominator(1001),
            live=False,
            frame_count=int(frame_count),
        )
        return self._info

    def _read_image(self, image_dir: Path, frame: int) -> np.ndarray:
        import cv2

        path = image_dir / f"{frame:06d}{self._im_ext}"
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"MOT image missing or unreadable: {path} (frame {frame} of {image_dir})")
        return np.ascontiguousarray(image)

    def detections(self, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Public detections of a 1-based MOT frame: (boxes (N,4) float32 XYXY px, scores (N,) float32,
        class_ids (N,) int32)."""
        if self._table is None:
            raise SourceError(f"MotSource({self.det_path}) is not open; call open() first")
        sl = self._slices.get(frame)
        if sl is None:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)
        tlwh = self._table.tlwh[sl]
        boxes = np.concatenate([tlwh[:, :2], tlwh[:, :2] + tlwh[:, 2:]], axis=1).astype(np.float32)
        scores = self._scores[sl].astype(np.float32)
        return boxes, scores, np.full(len(boxes), self.class_id, np.int32)

    def frames(self, start: int = 0) -> Iterator[SourceFrame]:
        """Frames from 0-based index ``start`` on (MOT frame ``start + 1``); opens the source if needed."""
        info = self._info if self._info is not None else self.open()
        count = info.frame_count or 0
        for index in range(max(0, start), count):
            frame = index + 1
            if self._image_dir is not None:
                image = self._read_image(self._image_dir, frame)
            elif self._blank is not None:
                image = self._blank
            else:
                raise SourceError(f"MotSource({self.det_path}) was closed while iterating")
            yield SourceFrame(
                image=image, pts=index, extra={"detections": self.detections(frame), "mot_frame": frame}
            )

    def close(self) -> None:
        self._table = None
        self._slices = {}
        self._blank = None
        self._info = None
