"""The track stage: one ByteTrack per source, frames of a source in order.

Replaces the frame's objects with the tracked ones (boxes, scores, class_ids,
track_ids (M,) int64 ≥ 1) and adds finished_ids (K,) int64: tracks that ended
on this frame, so later stages free their state.
"""

from __future__ import annotations

import numpy as np

from stream.config import Config
from stream.messages import Frame
from stream.models.tracker import SourceTracker, TrackerParams
from stream.sections.stages import TrackConfig
from stream.stage import StageBase


def params(config: Config) -> TrackConfig:
    return config.track


def preflight(config: Config) -> None:
    params(config)


class TrackStage(StageBase):
    name = "track"

    def __init__(self, params: TrackerParams) -> None:
        self.params = params
        self.trackers: dict[str, SourceTracker] = {}

    def start(self) -> None:
        """Warm up: the first ``SourceTracker`` imports ``trackers`` (and scipy's assignment
        solver through it), seconds of CPU here; pay that now, not on a source's first frame
        (where it held the frame, and every frame queued behind it, for as long)."""
        warm = SourceTracker(self.params, source="warm-up")
        box = np.array([[0.0, 0.0, 16.0, 16.0]], np.float32)
        for _ in range(2):  # a track is born, then matched: both association paths run
            warm.update(box, np.ones(1, np.float32), np.zeros(1, np.int32))

    def process(self, frame: Frame) -> Frame | None:
        tracker = self.trackers.get(frame.source)
        if tracker is None:
            tracker = self.trackers[frame.source] = SourceTracker(self.params, source=frame.source)
        a = frame.arrays
        if "boxes" not in a:
            raise ValueError("frame has no boxes: put 'detect' before 'track' or use a mot source")
        t = tracker.update(a["boxes"], a["scores"], a["class_ids"])
        return frame.evolve(boxes=t.boxes, scores=t.scores, class_ids=t.class_ids, track_ids=t.track_ids,
                            finished_ids=t.finished_ids)

    def end_source(self, source: str) -> None:
        self.trackers.pop(source, None)


def build(config: Config) -> TrackStage:
    return TrackStage(TrackerParams(**params(config).model_dump()))
