"""The track stage: one ByteTrack per source, frames of a source in order.

Replaces the frame's objects with the tracked ones (boxes, scores, class_ids,
track_ids (M,) int64 ≥ 1) and adds finished_ids (K,) int64: tracks that ended
on this frame, so later stages free their state.
"""

from __future__ import annotations

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
