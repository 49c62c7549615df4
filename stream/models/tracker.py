"""Per-source multi-object tracking: a thin, validated wrapper over ``trackers.ByteTrackTracker``.

One ``SourceTracker`` per source; frames of a source must be fed in order. Input
is one frame's detections as three parallel arrays (boxes (N,4) float32 XYXY in
source-image pixels, scores (N,) float32 in [0, 1], class_ids (N,) int32);
output is a frozen ``TrackedObjects`` holding only detections assigned to a
*confirmed* track, each with a track id ≥ 1 that is unique for the source for
the whole run (it keeps increasing across ``reset()``), plus the ids of tracks
that are lost this frame (held for re-association) and of tracks that ended
this frame (they never come back: a consumer frees per-track state such as
masks for them).

ByteTrack is class-agnostic: a track may be matched to detections of different
classes; ``class_ids`` reports the class of the detection matched this frame.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.errors import FrameDropped

if TYPE_CHECKING:
    from stream.models.detections import Detections

log = logging.getLogger(__name__)

_EMPTY_BOXES = np.zeros((0, 4), dtype=np.float32)


@dataclass(frozen=True)
class TrackerParams:
    """ByteTrack thresholds for one source (the ``trackers`` package's names and defaults).

    track_activation_threshold: minimum score for a detection to start a new track.
    high_conf_det_threshold: scores at or above this take part in the first
        association stage; lower ones may only extend existing tracks.
    minimum_iou_threshold: minimum IoU between a track's predicted box and a
        detection for them to be matched (IoU similarity, not a cost).
    lost_track_buffer: frames a lost track is kept for re-association, counted at
        30 fps and scaled by ``frame_rate / 30`` (so a value tuned at 30 fps keeps
        the same duration in seconds at other rates); 0 ends a track on its first miss.
    minimum_consecutive_frames: consecutive matched frames before a track is
        confirmed and gets an id; its detections are left out until then.
    frame_rate: the source's nominal frames per second (> 0).
    """

    track_activation_threshold: float = 0.7
    high_conf_det_threshold: float = 0.6
    minimum_iou_threshold: float = 0.1
    lost_track_buffer: int = 30
    minimum_consecutive_frames: int = 2
    frame_rate: float = 30.0

    def __post_init__(self) -> None:
        """The rules are the ``track`` section's (``stream.sections.stages.TrackConfig``), kept
        once there; a bad value raises ConfigError naming the field."""
        from stream.config import validate_section
        from stream.sections.stages import TrackConfig

        validate_section(TrackConfig, dataclasses.asdict(self), "TrackerParams")

    @property
    def max_frames_lost(self) -> int:
        """Frames a confirmed track survives without a match (the scaled lost_track_buffer)."""
        if self.lost_track_buffer == 0:
            return 0
        return max(1, int(np.ceil(self.frame_rate / 30.0 * self.lost_track_buffer)))


def new_bytetrack(p: TrackerParams) -> Any:
    """A ``trackers.ByteTrackTracker`` with these parameters (the wrapper's, and the bench's reference)."""
    from trackers import ByteTrackTracker

    return ByteTrackTracker(
        lost_track_buffer=p.lost_track_buffer,
        frame_rate=float(p.frame_rate),
        track_activation_threshold=p.track_activation_threshold,
        minimum_consecutive_frames=p.minimum_consecutive_frames,
        minimum_iou_threshold=p.minimum_iou_threshold,
        high_conf_det_threshold=p.high_conf_det_threshold,
    )


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class TrackedObjects:
    """The tracked objects of one frame (arrays are read-only).

    boxes: (M, 4) float32 XYXY, source-image pixels: the matched detection's box
        (not the Kalman estimate).
    scores: (M,) float32 detection scores.
    class_ids: (M,) int32 class of the matched detection.
    track_ids: (M,) int64, each ≥ 1, unique within the frame.
    is_new: (M,) bool, True on the first frame a track id is reported.
    lost_ids: (K,) int64 confirmed tracks not matched this frame but still held
        (they may come back with the same id).
    finished_ids: (F,) int64 tracks that ended this frame; their ids are never reused.
    """

    boxes: np.ndarray = field(default_factory=lambda: _EMPTY_BOXES.copy())
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    track_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    is_new: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    lost_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    finished_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        for name in ("boxes", "scores", "class_ids", "track_ids", "is_new", "lost_ids", "finished_ids"):
            _frozen(getattr(self, name))

    def __len__(self) -> int:
        return int(self.track_ids.shape[0])


def validate_detections(boxes: Any, scores: Any, class_ids: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check and convert one frame's detections; returns (boxes float32 (N,4), scores float32 (N,),
    class_ids int32 (N,)).

    Raises FrameDropped naming the field when a shape, dtype or value is wrong (non-finite
    numbers, x2 < x1 or y2 < y1, scores outside [0, 1], non-integral class ids).
    """
    b = np.asarray(boxes, dtype=np.float32)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise FrameDropped(f"tracker input: boxes must have shape (N, 4) XYXY, got {b.shape}")
    n = b.shape[0]
    s = np.asarray(scores, dtype=np.float32).reshape(-1) if np.size(scores) else np.zeros(0, np.float32)
    if s.shape != (n,):
        raise FrameDropped(f"tracker input: scores must have shape ({n},) to match boxes, got {s.shape}")
    c_raw = np.asarray(class_ids)
    if c_raw.size == 0:
        c_raw = c_raw.reshape(0)
    if c_raw.shape != (n,):
        raise FrameDropped(
            f"tracker input: class_ids must have shape ({n},) to match boxes, got {c_raw.shape}"
        )
    if not np.isfinite(b).all():
        row = int(np.flatnonzero(~np.isfinite(b).all(axis=1))[0])
        raise FrameDropped(f"tracker input: boxes[{row}] is not finite: {b[row].tolist()}")
    if not np.isfinite(s).all():
        row = int(np.flatnonzero(~np.isfinite(s))[0])
        raise FrameDropped(f"tracker input: scores[{row}] is not finite: {float(s[row])}")
    bad = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise FrameDropped(
            f"tracker input: boxes[{row}] = {b[row].tolist()} has x2 < x1 or y2 < y1 "
            "(expected XYXY pixels, not XYWH)"
        )
    if n and (s.min() < 0.0 or s.max() > 1.0):
        row = int(np.flatnonzero((s < 0.0) | (s > 1.0))[0])
        raise FrameDropped(f"tracker input: scores[{row}] = {float(s[row])} is outside [0, 1]")
    if c_raw.dtype.kind in "iu":
        c = c_raw.astype(np.int32, copy=False)
    else:
        cf = c_raw.astype(np.float64)
        if not (np.isfinite(cf).all() and (cf == np.round(cf)).all()):
            raise FrameDropped(f"tracker input: class_ids must be integers, got {c_raw[:5].tolist()}…")
        c = cf.astype(np.int32)
    return b, s, c


class SourceTracker:
    """ByteTrack for one source. Not thread-safe; feed the source's frames in order.

    The wrapped ``trackers.ByteTrackTracker`` numbers tracks per instance from 0;
    ids reported here are that number + 1 + an offset that grows on each
    ``reset()``, so they never repeat for this ``SourceTracker``.
    """

    def __init__(self, params: TrackerParams | None = None, source: str = "") -> None:
        self.params = params if params is not None else TrackerParams()
        self.source = source
        self._id_offset = 0
        self._max_reported = 0
        self._held_confirmed: set[int] = set()  # ids of confirmed tracks the tracker held after last update
        self._empty = TrackedObjects()
        self._tracker = self._new_tracker()

    def _new_tracker(self) -> Any:
        return new_bytetrack(self.params)

    def update(
        self, boxes: Any, scores: Any, class_ids: Any, timestamp: float | None = None
    ) -> TrackedObjects:
        """Track one frame.

        boxes: (N, 4) XYXY in source-image pixels; scores: (N,) in [0, 1];
        class_ids: (N,) integers. N may be 0 (tracks age and eventually end).
        timestamp: capture time in seconds for sources that drop frames (the
            Kalman step and the lost budget then follow real time); use it for
            every frame of a source or for none.

        Raises FrameDropped (the tracker state is unchanged) when the input is malformed.
        """
        import supervision as sv

        b, s, c = validate_detections(boxes, scores, class_ids)
        if b.shape[0] == 0 and not self._tracker.tracks and timestamp is None:
            return self._empty  # an empty scene: nothing to predict, nothing can start or end
        dets = sv.Detections(xyxy=b, confidence=s, class_id=c)
        out = self._tracker.update(dets, timestamp=timestamp)

        offset = self._id_offset
        raw_ids = np.asarray(out.tracker_id, dtype=np.int64)
        keep = raw_ids >= 0
        track_ids = raw_ids[keep] + (offset + 1)
        new_threshold = self._max_reported
        is_new = track_ids > new_threshold
        if track_ids.size:
            self._max_reported = max(self._max_reported, int(track_ids.max()))

        held_now = {t.tracker_id + offset + 1 for t in self._tracker.tracks if t.tracker_id >= 0}
        finished = self._held_confirmed - held_now
        matched = set(track_ids.tolist())
        lost = held_now - matched
        self._held_confirmed = held_now

        if not keep.any():
            xyxy, conf, cls = _EMPTY_BOXES.copy(), np.zeros(0, np.float32), np.zeros(0, np.int32)
        else:
            xyxy = np.asarray(out.xyxy[keep], dtype=np.float32)
            conf = np.asarray(out.confidence[keep], dtype=np.float32)
            cls = np.asarray(out.class_id[keep], dtype=np.int32)
        return TrackedObjects(
            boxes=xyxy,
            scores=conf,
            class_ids=cls,
            track_ids=track_ids,
            is_new=is_new,
            lost_ids=np.array(sorted(lost), dtype=np.int64),
            finished_ids=np.array(sorted(finished), dtype=np.int64),
        )

    def update_detections(self, detections: Detections, timestamp: float | None = None) -> TrackedObjects:
        """``update`` for a ``stream.models.detections.Detections`` (same contract)."""
        return self.update(detections.boxes, detections.scores, detections.class_ids, timestamp=timestamp)

    def reset(self) -> np.ndarray:
        """Start afresh (the source reconnected or jumped). Returns the ids of the confirmed
        tracks that ended with the reset ((F,) int64); later ids continue above every id issued."""
        ended = np.array(sorted(self._held_confirmed), dtype=np.int64)
        # every id the old tracker allocated was reported in the update that allocated it
        self._id_offset = self._max_reported
        self._held_confirmed = set()
        self._tracker = self._new_tracker()
        log.info("source %s: tracker reset, %d tracks ended", self.source, ended.size)
        return ended
