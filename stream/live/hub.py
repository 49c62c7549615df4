"""The live view's shared state between the pipeline thread and the HTTP threads.

The output stage calls ``LiveHub.offer`` per frame on its hot path; it never
blocks on a client. Per source the hub keeps only the newest JPEG and the newest
object event. JPEG encoding happens on one encoder thread (OpenCV releases the
GIL while it encodes), at most ``max_fps`` times a second per source and only
while at least one client watches that source; object events are built only
while at least one event client is connected.

Clients (one HTTP thread each) wait on the hub's conditions and always take the
newest item, so a slow client skips frames instead of growing a queue. A camera
wall client watches many sources over one connection: ``next_updates`` hands it
every source's newest JPEG and object event that changed since its last call.
H.264 viewers take fragmented MP4 from ``self.video`` (``stream.live.video``) and
the same object events; a new fragment bumps the same update counter.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from stream.live.video import VideoFeed
from stream.messages import Frame
from stream.objects import COCO_CLASSES, MASK_KINDS, FrameObjects
from stream.rate import RateMeter
from stream.sinks.segments import objects_json

log = logging.getLogger(__name__)


@dataclass
class Jpeg:
    """One encoded picture. seq: the frame's seq; capture_ns: its capture time (time.time_ns)."""

    data: bytes
    seq: int
    capture_ns: int


@dataclass
class _Channel:
    """Per-source state; every field is guarded by ``cond`` except the ones only the
    pipeline thread touches (``next_due``, the rate meter)."""

    source: str
    cond: threading.Condition = field(default_factory=threading.Condition)
    viewers: int = 0
    jpeg: Jpeg | None = None
    jpeg_version: int = 0
    pending: tuple[np.ndarray, int, int] | None = None  # (image copy, seq, capture_ns) for the encoder
    next_due: float = 0.0  # monotonic s: earliest time of the next throttled update
    rate: RateMeter = field(default_factory=RateMeter)
    ended: bool = False
    state: str | None = None  # the supervisor's capture state, when the stage is told it


class LiveHub:
    """Newest JPEG and object event per source, handed from the pipeline to HTTP clients.

    sources: the configured source ids (the only ones ever served).
    max_fps: at most this many JPEGs and object events per second per source.
    jpeg_quality: OpenCV JPEG quality, 1..100.
    class_names: names indexed by class id (default COCO's 80).
    """

    def __init__(
        self,
        sources: Sequence[str],
        *,
        max_fps: float,
        jpeg_quality: int,
        class_names: Sequence[str] = COCO_CLASSES,
    ) -> None:
        self.sources = tuple(sources)
        self.max_fps = float(max_fps)
        self.jpeg_quality = int(jpeg_quality)
        self.class_names = tuple(class_names)
        self._channels = {s: _Channel(s) for s in self.sources}
        self._events_cond = threading.Condition()
        self._events: dict[str, tuple[int, bytes]] = {}  # source -> (version, JSON)
        self._events_version = 0
        self._event_clients = 0
        self._updates = threading.Condition()  # notified on every new JPEG or event (wall clients)
        self._updates_version = 0
        self._detail: dict[str, int] = {}  # source -> clients that want boxes and masks in its events
        self._work = threading.Condition()
        self._closing = False
        self._warned: set[str] = set()
        self.encoded = 0  # JPEGs encoded since start (all sources)
        self.video = VideoFeed(self.sources, self._bump_updates)  # H.264 viewers (fMP4 over /live)
        self._encoder = threading.Thread(target=self._encode_loop, name="live-encoder", daemon=True)
        self._encoder.start()

    # ---- pipeline side (hot path) -------------------------------------------------

    def offer(self, frame: Frame) -> None:
        """Take what clients need from ``frame``; returns at once. ``frame.image``
        (H×W×3 uint8 BGR, possibly a read-only shared-memory view) is copied only
        when a client watches the source and the source is due (max_fps)."""
        ch = self._channels.get(frame.source)
        if ch is None:
            if frame.source not in self._warned:
                self._warned.add(frame.source)
                log.warning(
                    "source=%s seq=%d not in the configured sources; the live view ignores it",
                    frame.source,
                    frame.seq,
                )
            return
        now = time.monotonic()
        ch.ended = False
        ch.rate.tick(now)
        if now < ch.next_due:
            return
        ch.next_due = max(ch.next_due + 1.0 / self.max_fps, now)
        if self._event_clients > 0:
            self._publish_event(ch.source, self._event(ch, frame))
        if ch.viewers > 0 and frame.image is not None:
            pending = (np.array(frame.image, dtype=np.uint8, copy=True), frame.seq, frame.header.capture_ns)
            with self._work:
                ch.pending = pending
                self._work.notify()

    def set_source_states(self, states: dict[str, str]) -> None:
        """Capture states from the supervisor (source id → connecting/streaming/stalled/
        failed/done); a change is pushed to event clients at once, frames or not (rare: only
        on changes, so it is published whether or not a client listens)."""
        for source, state in states.items():
            ch = self._channels.get(source)
            if ch is None or ch.state == state:
                continue
            ch.state = state  # kept as the source's newest event: a wall opened later sees it too
            self._publish_event(source, {"source": source, "source_state": state})

    def set_sources(self, sources: Sequence[str]) -> None:
        """The run's sources changed at runtime (the control API): a new one is served from
        now on; a removed one is no longer listed or served (a client already on it keeps
        its channel until it leaves)."""
        channels = dict(self._channels)
        for source in sources:
            channels.setdefault(source, _Channel(source))
        self._channels = channels  # swapped whole: HTTP threads read it without a lock
        self.video.set_sources(sources)  # H.264 viewers can watch a new one (the encoder feeds it)
        self.sources = tuple(sources)
        self._bump_updates()

    def end_source(self, source: str) -> None:
        ch = self._channels.get(source)
        if ch is None:
            return
        ch.ended = True
        if self._event_clients > 0:
            self._publish_event(source, {"source": source, "ended": True})

    def _event(self, ch: _Channel, frame: Frame) -> dict[str, Any]:
        h = frame.header
        objs = FrameObjects.from_arrays(frame.arrays)
        n = len(objs)
        tids = objs.track_ids.tolist() if objs.track_ids is not None else [None] * n
        cids = objs.class_ids.tolist()
        scores = objs.scores.tolist()
        ages: list[int | None] = [None] * n
        kinds: list[str | None] = [None] * n
        if objs.masks is not None and len(objs.masks) == n:
            ages = objs.masks.age.tolist()
            kinds = [MASK_KINDS[k] if k < len(MASK_KINDS) else str(k) for k in objs.masks.kind.tolist()]
        boxes = [[round(float(v), 1) for v in b] for b in objs.boxes.tolist()]
        rles: list[dict[str, Any] | None] = [None] * n
        if self._detail.get(ch.source) and frame.image is not None:
            height, width = frame.image.shape[:2]
            rles = [o.get("mask") for o in objects_json(frame.arrays, height, width, masks=True)]
        names = self.class_names
        objects = [
            {
                "track_id": tids[i],
                "class_id": cids[i],
                "class": names[cids[i]] if 0 <= cids[i] < len(names) else str(cids[i]),
                "score": round(float(scores[i]), 3),
                "mask_age": ages[i],
                "mask_kind": kinds[i],
                "box": boxes[i],
                **({"mask": rles[i]} if rles[i] is not None else {}),
            }
            for i in range(n)
        ]
        return {
            "source": h.source,
            "seq": h.seq,
            "pts": h.pts,
            "fps": round(ch.rate.fps(), 1),
            "latency_ms": round((time.time_ns() - h.capture_ns) / 1e6, 1),
            "random_weights": h.random_weights,
            "ended": False,
            "source_state": ch.state,
            "objects": objects,
        }

    def _publish_event(self, source: str, event: dict[str, Any]) -> None:
        data = json.dumps(event, separators=(",", ":")).encode()
        with self._events_cond:
            self._events_version += 1
            self._events[source] = (self._events_version, data)
            self._events_cond.notify_all()
        self._bump_updates()

    def _bump_updates(self) -> None:
        with self._updates:
            self._updates_version += 1
            self._updates.notify_all()

    # ---- encoder thread ---------------------------------------------------------------

    def _encode_loop(self) -> None:
        params = [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]
        while True:
            with self._work:
                work = self._take_pending()
                while not work and not self._closing:
                    self._work.wait()
                    work = self._take_pending()
                if self._closing:
                    return
            for ch, (image, seq, capture_ns) in work:
                ok, buf = cv2.imencode(".jpg", image, params)
                if not ok:
                    log.error("source=%s seq=%d live view could not JPEG-encode the frame", ch.source, seq)
                    continue
                self.encoded += 1
                with ch.cond:
                    ch.jpeg = Jpeg(buf.tobytes(), seq, capture_ns)
                    ch.jpeg_version += 1
                    ch.cond.notify_all()
                self._bump_updates()

    def _take_pending(self) -> list[tuple[_Channel, tuple[np.ndarray, int, int]]]:
        out = []
        for ch in self._channels.values():
            if ch.pending is not None:
                out.append((ch, ch.pending))
                ch.pending = None
        return out

    # ---- client side (HTTP threads) -------------------------------------------------

    @property
    def closing(self) -> bool:
        return self._closing

    def has_source(self, source: str) -> bool:
        return source in self.sources

    def viewers(self, source: str) -> int:
        return self._channels[source].viewers

    def watched(self, source: str) -> bool:
        """True while a client watches ``source``'s pictures (unknown sources: False)."""
        ch = self._channels.get(source)
        return ch is not None and ch.viewers > 0

    def watch(self, source: str) -> None:
        """A client started watching ``source``'s pictures (pair with ``unwatch``)."""
        ch = self._channels[source]
        with ch.cond:
            ch.viewers += 1
        ch.next_due = 0.0  # the next frame is encoded at once: a new viewer waits one frame, not 1/max_fps

    def unwatch(self, source: str) -> None:
        ch = self._channels[source]
        with ch.cond:
            ch.viewers -= 1

    def next_jpeg(self, source: str, after_version: int, timeout: float) -> tuple[int, Jpeg | None]:
        """Wait up to ``timeout`` s for a JPEG newer than ``after_version``; returns
        (version, jpeg) — the same version and None when nothing new came or the hub closes."""
        ch = self._channels[source]
        with ch.cond:
            ch.cond.wait_for(lambda: ch.jpeg_version != after_version or self._closing, timeout)
            if ch.jpeg_version == after_version or self._closing:
                return after_version, None
            return ch.jpeg_version, ch.jpeg

    def want_detail(self, source: str, on: bool) -> None:
        """A camera page opened (on) or closed (off) for ``source``: while any is open, its
        events carry each object's mask as COCO RLE of the picture's size."""
        with self._events_cond:
            self._detail[source] = self._detail.get(source, 0) + (1 if on else -1)

    def next_updates(
        self, sources: Sequence[str], sent: dict[str, int], events_after: int, seen: int, timeout: float
    ) -> tuple[int, int, list[tuple[str, Jpeg]], list[bytes]]:
        """For a wall client: wait up to ``timeout`` s for anything newer than ``seen``
        (the hub's update counter), then return (update counter, newest event version,
        [(source, newest JPEG)] of ``sources`` whose JPEG version differs from ``sent``
        (``sent`` is updated in place), [newest JSON event of each of ``sources`` newer
        than ``events_after``])."""
        seen = self.wait_updates(seen, timeout)
        pictures: list[tuple[str, Jpeg]] = []
        for source in sources:
            ch = self._channels.get(source)
            if ch is None:
                continue
            with ch.cond:
                if ch.jpeg is not None and ch.jpeg_version != sent.get(source, 0):
                    sent[source] = ch.jpeg_version
                    pictures.append((source, ch.jpeg))
        version, events = self.events_since(events_after, sources)
        return seen, version, pictures, events

    def wait_updates(self, seen: int, timeout: float) -> int:
        """Wait up to ``timeout`` s for a new JPEG, event or H.264 fragment after update
        counter ``seen``; returns the current counter."""
        with self._updates:
            self._updates.wait_for(lambda: self._updates_version != seen or self._closing, timeout)
            return self._updates_version

    def events_since(self, after: int, sources: Sequence[str]) -> tuple[int, list[bytes]]:
        """(newest event version, the newest JSON event of each of ``sources`` newer than ``after``)."""
        with self._events_cond:
            wanted = set(sources)
            events = [d for s, (v, d) in self._events.items() if v > after and s in wanted]
            return self._events_version, events

    def subscribe_events(self) -> None:
        with self._events_cond:
            self._event_clients += 1
        for ch in self._channels.values():
            ch.next_due = 0.0

    def unsubscribe_events(self) -> None:
        with self._events_cond:
            self._event_clients -= 1

    def next_events(self, after_version: int, timeout: float) -> tuple[int, list[bytes]]:
        """Wait up to ``timeout`` s for events newer than ``after_version``; returns
        (newest version, the newest JSON event of each source that changed)."""
        with self._events_cond:
            self._events_cond.wait_for(
                lambda: self._events_version != after_version or self._closing, timeout
            )
            fresh = [data for version, data in self._events.values() if version > after_version]
            return self._events_version, fresh

    def summary(self) -> list[dict[str, Any]]:
        """Per source: id, MJPEG path, measured input fps, viewers (MJPEG and wall),
        h264_viewers (over /live), whether it ended, and the
        supervisor's capture state (None until the stage is told)."""
        return [
            {
                "id": ch.source,
                "stream": f"/stream/{ch.source}.mjpg",
                "fps": round(ch.rate.fps(), 1),
                "viewers": ch.viewers,
                "h264_viewers": self.video.viewers(ch.source),
                "ended": ch.ended,
                "state": ch.state,
            }
            for ch in (self._channels[s] for s in self.sources)
        ]

    def close(self) -> None:
        """Wake every waiting client and stop the encoder thread."""
        self._closing = True
        with self._work:
            self._work.notify_all()
        with self._events_cond:
            self._events_cond.notify_all()
        self._bump_updates()
        for ch in self._channels.values():
            with ch.cond:
                ch.cond.notify_all()
        self._encoder.join(timeout=5.0)
