"""The track stage: one ByteTrack per source, frames of a source in order.

Replaces the frame's objects with the tracked ones (boxes, scores, class_ids,
track_ids (M,) int64 ≥ 1) and adds finished_ids (K,) int64: tracks that ended
on this frame, so later stages free their state.
"""

from __future__ import annotations

from pydantic import Field

from stream.config import Config, StrictModel, validate_section
from stream.messages import Frame
from stream.models.tracker import SourceTracker, TrackerParams
from stream.stage import StageBase


class TrackConfig(StrictModel):
    track_activation_threshold: float = Field(0.7, ge=0, le=1)
    high_conf_det_threshold: float = Field(0.6, ge=0, le=1)
    minimum_iou_threshold: float = Field(0.1, ge=0, le=1)
    lost_track_buffer: int = Field(30, ge=0)
    minimum_consecutive_frames: int = Field(2, ge=1)
    frame_rate: float = Field(30.0, gt=0)


def params(config: Config) -> TrackConfig:
    return validate_section(TrackConfig, config.track, "track")


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
