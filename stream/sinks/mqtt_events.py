"""Per-object events and per-source object counts from tracked frames, for the MQTT sink.

``SourceEvents`` follows one source's tracks and turns each frame into events
(plain dicts, JSON-ready; the schema is in docs/mqtt.md):

- ``new``: the first frame a track id is seen;
- ``update``: the track's class changed, or its score moved by at least
  ``min_score_change`` since the last event, and ``update_interval_s`` has passed
  since the track's last event (frame time: the frames' capture clock), so at
  most one update per track per interval;
- ``end``: the tracker says the track finished (``finished_ids``), the track was
  not seen for ``end_after_s`` of frame time (its end was lost, e.g. with a
  dropped frame), or the source ended or was reset (``end_reason``).

Objects without a track id (no track stage) make no events. Times are Unix
seconds from the frames' ``capture_ns``; boxes are XYXY in source-image pixels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stream.masks.rle import crop_counts
from stream.messages import Frame
from stream.objects import FrameObjects
from stream.sinks.publish import frame_size

EVENT_SCHEMA_VERSION = 1
END_REASONS = ("tracker", "timeout", "end_of_stream", "reset", "stopped")


@dataclass
class _Track:
    track_id: int
    class_id: int
    score: float
    top_score: float
    box: list[float]
    first_ns: int
    last_ns: int
    last_seq: int
    sent_class_id: int
    sent_score: float
    sent_ns: int


class SourceEvents:
    """Track bookkeeping for one source. Not thread-safe: called from the output stage only.

    class_names: index → name for class ids. include_masks: put the object's mask
    (COCO RLE of the full frame) in new/update events when the frame carries one.
    """

    def __init__(
        self,
        source: str,
        class_names: Sequence[str],
        *,
        update_interval_s: float = 1.0,
        min_score_change: float = 0.05,
        end_after_s: float = 30.0,
        include_masks: bool = False,
    ) -> None:
        self.source = source
        self.class_names = tuple(class_names)
        self.update_interval_ns = int(update_interval_s * 1e9)
        self.min_score_change = min_score_change
        self.end_after_ns = int(end_after_s * 1e9)
        self.include_masks = include_masks
        self.tracks: dict[int, _Track] = {}
        self.counts: dict[str, int] = {}  # tracked objects in the latest frame, by class name
        self.random_weights = False
        self._size: tuple[int, int] = (0, 0)  # (height, width)
        self._seq = -1

    def class_name(self, class_id: int) -> str:
        return self.class_names[class_id] if 0 <= class_id < len(self.class_names) else str(class_id)

    def frame(self, frame: Frame) -> list[dict[str, Any]]:
        """The events caused by ``frame`` (in order: ends, then new and update events)."""
        h = frame.header
        now = h.capture_ns
        self._seq = h.seq
        self.random_weights = h.random_weights
        height, width = frame_size(frame)
        if height and width:
            self._size = (height, width)
        objs = FrameObjects.from_arrays(frame.arrays)
        events: list[dict[str, Any]] = []
        finished = frame.arrays.get("finished_ids")
        if finished is not None:
            for tid in finished.tolist():
                track = self.tracks.pop(int(tid), None)
                if track is not None:
                    events.append(self._event("end", track, h.seq, end_reason="tracker"))
        if objs.track_ids is None:
            self.counts = {}
            return events
        boxes = objs.boxes.reshape(-1, 4).tolist()
        scores = objs.scores.tolist()
        class_ids = objs.class_ids.tolist()
        counts: Counter[str] = Counter()
        masks = objs.masks
        for i, tid in enumerate(objs.track_ids.tolist()):
            cid, score = int(class_ids[i]), float(scores[i])
            counts[self.class_name(cid)] += 1
            track = self.tracks.get(tid)
            if track is None:
                track = _Track(tid, cid, score, score, boxes[i], now, now, h.seq, cid, score, now)
                self.tracks[tid] = track
                events.append(self._event("new", track, h.seq, mask=self._mask(masks, i, height, width)))
                continue
            track.class_id, track.score, track.box = cid, score, boxes[i]
            track.top_score = max(track.top_score, score)
            track.last_ns, track.last_seq = now, h.seq
            changed = cid != track.sent_class_id or abs(score - track.sent_score) >= self.min_score_change
            if changed and now - track.sent_ns >= self.update_interval_ns:
                track.sent_class_id, track.sent_score, track.sent_ns = cid, score, now
                events.append(self._event("update", track, h.seq, mask=self._mask(masks, i, height, width)))
        stale = [t for t in self.tracks.values() if now - t.last_ns >= self.end_after_ns]
        for track in stale:
            del self.tracks[track.track_id]
            events.append(self._event("end", track, h.seq, end_reason="timeout"))
        self.counts = dict(sorted(counts.items()))
        return events

    def end_all(self, reason: str) -> list[dict[str, Any]]:
        """``end`` events for every track still open (the source ended, reset or stopped)."""
        events = [self._event("end", t, self._seq, end_reason=reason) for t in self.tracks.values()]
        self.tracks.clear()
        self.counts = {}
        return events

    def state(self, time_ns: int) -> dict[str, Any]:
        """The retained state record: tracked objects in the latest frame, by class."""
        return {
            "v": EVENT_SCHEMA_VERSION,
            "source": self.source,
            "counts": dict(self.counts),
            "total": sum(self.counts.values()),
            "active_tracks": len(self.tracks),
            "seq": self._seq,
            "time": time_ns / 1e9,
            "random_weights": self.random_weights,
        }

    def _mask(self, masks: Any, i: int, height: int, width: int) -> dict[str, Any] | None:
        if not self.include_masks or masks is None or i >= len(masks) or int(masks.kind[i]) >= 2:
            return None
        if not (height and width):
            return None
        x1, y1, _, _ = (int(v) for v in masks.crop_boxes[i])
        return {"size": [height, width], "counts": crop_counts(masks.crop(i), x1, y1, height, width)}

    def _event(
        self, kind: str, t: _Track, seq: int, *, mask: dict[str, Any] | None = None, end_reason: str | None = None
    ) -> dict[str, Any]:
        height, width = self._size
        event: dict[str, Any] = {
            "v": EVENT_SCHEMA_VERSION,
            "type": kind,
            "source": self.source,
            "id": t.track_id,
            "class": self.class_name(t.class_id),
            "class_id": t.class_id,
            "score": round(t.score, 4),
            "top_score": round(t.top_score, 4),
            "box": [round(v, 1) for v in t.box],
            "frame_width": width,
            "frame_height": height,
            "first_seen": t.first_ns / 1e9,
            "last_seen": t.last_ns / 1e9,
            "seq": seq,
            "random_weights": self.random_weights,
        }
        if end_reason is not None:
            event["end_reason"] = end_reason
        if mask is not None:
            event["mask"] = mask
        return event
