"""Record sink: annotated (or raw) video in fragmented MP4 segments with JSONL sidecars.

Config (``sinks.record``)::

    record:
      root: recordings        # every file stays under this directory
      annotated: true         # the rendered picture (false: the raw source pixels)
      segment_s: 60           # a new segment every segment_s seconds of video
      fragment_s: 1.0         # keyframe + fragment interval: the most a crash loses
      max_age_s: 86400        # retention: delete segments older than this (optional)
      max_size_mb: 50000      # retention: keep the root under this size (optional)
      queue_size: 64          # frames waiting for the encoder before new ones are dropped
      masks: true             # mask RLEs in the sidecar
      sources: [cam0]         # record only these sources (default: all)
      encoder: {codec: auto, preset: ultrafast, crf: 23}

Files: ``<root>/<source>/<UTC start>_<first seq>.mp4`` + ``.jsonl`` (see
``stream.sinks.segments`` for the sidecar format and the crash guarantees,
``stream.sinks.retention`` for confinement and retention).

Encoding never stalls the pipeline: ``write`` copies the picture into a bounded
queue per source, drained by one encoder thread per source; when the queue is
full the frame is dropped for the recording (counted, logged once a second). A
new segment starts after ``segment_s``, on a change of picture size, after
``reset(source)`` and after ``end_source``. A frame whose pts repeats or goes
backwards (broken AVI timestamps) is re-stamped one frame interval after the previous
one, inside the same segment (its sidecar line keeps the source pts and says
``"restamped": true``; ``t`` is its time in the video).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from stream.config import Config, validate_section
from stream.errors import StreamError
from stream.messages import Frame, FrameHeader
from stream.sections.sinks import RecordConfig, SinksConfig, check_sink_sources
from stream.sinks import FAILED, NO_PIXELS, WRITTEN
from stream.sinks.background import QUEUE_FULL, BackgroundWorker
from stream.sinks.h264 import check_image, even_size, resolve_codec
from stream.sinks.retention import apply_retention, new_segment_paths, source_dir
from stream.sinks.segments import Segment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Item:
    header: FrameHeader
    arrays: Mapping[str, np.ndarray]
    image: np.ndarray  # a private copy


_RESET = "reset"
_END = "end"


class _SourceRecorder:
    """The segments of one source; every method but ``__init__`` runs on its worker thread."""

    def __init__(self, sink: RecordSink, source: str, directory: Path) -> None:
        self.sink, self.source, self.directory = sink, source, directory
        self.segment: Segment | None = None
        self.frames = 0
        self.segments = 0
        self.errors = 0
        self.skipped = 0  # frames without pixels
        self.restamped = 0
        self._offset = 0  # added to source pts in this segment, grown at each backward step
        self._steps: deque[int] = deque(maxlen=16)  # the source's recent forward pts steps
        self._last_src: int | None = None
        self._last_error_log = -1e9
        self.worker = BackgroundWorker(
            f"record {source}", self.handle, maxsize=sink.config.queue_size, on_stop=self.finish
        )

    def handle(self, item: _Item | str) -> None:
        if isinstance(item, str):  # reset / end of source
            self.finish()
            return
        h, seg, cfg = item.header, self.segment, self.sink.config
        width, height = even_size(item.image.shape[1], item.image.shape[0])
        tb = Fraction(*h.time_base)
        pts, restamped = h.pts, False
        if seg is not None:
            pts, restamped = self._video_pts(h.pts, seg.last_pts, tb)
            why = (
                "picture size changed"
                if (width, height) != (seg.width, seg.height) or tb != seg.time_base
                else "segment length reached"
                if float((pts - seg.pts0) * tb) >= cfg.segment_s
                else ""
            )
            if why:
                log.debug("source=%s seq=%d record: new segment (%s)", h.source, h.seq, why)
                self.finish()
                pts, restamped = h.pts, False
        if self.segment is None:
            self._offset = 0
        if self._last_src is not None and h.pts > self._last_src:
            self._steps.append(h.pts - self._last_src)  # the source's own frame intervals
        self._last_src = h.pts
        record = {
            "source": h.source,
            "seq": h.seq,
            "pts": h.pts,
            "time_base": list(h.time_base),
            "capture_ns": h.capture_ns,
        }
        if restamped:
            record["restamped"] = True
        try:
            if self.segment is None:
                self.segment = self.open(item, width, height, tb)
            self.segment.add(item.image, pts, record, item.arrays)
            self.frames += 1
        except (StreamError, av.FFmpegError, OSError, ValueError) as exc:
            self.failed(h, exc)
        self.sink.maybe_retain()

    def _video_pts(self, src_pts: int, last_pts: int, tb: Fraction) -> tuple[int, bool]:
        """The pts this frame gets in the open segment's video: the source's pts plus the
        segment's offset; when that does not move forward (the source's pts repeated or went
        backwards), the frame is re-stamped one frame interval after the previous one and the
        offset grows, so the frames after it keep their spacing. Nothing is dropped and no
        segment is cut."""
        pts = src_pts + self._offset
        if pts > last_pts:
            return pts, False
        # one frame interval: the median of the source's recent forward steps (unknown yet: 1/30 s)
        step = int(np.median(self._steps)) if self._steps else max(1, round(1 / (30 * tb)))
        self._offset += last_pts + step - pts
        self.restamped += 1
        return last_pts + step, True

    def failed(self, h: FrameHeader, exc: BaseException) -> None:
        """A frame could not be recorded: log (at most every 10 s), drop the segment, go on."""
        self.errors += 1
        now = time.monotonic()
        if now - self._last_error_log >= 10.0:
            log.error(
                "source=%s seq=%d record: cannot record into %s: %s (%d frame(s) failed so far); "
                "the next frame starts a new segment",
                h.source,
                h.seq,
                self.segment.mp4 if self.segment else self.directory,
                exc,
                self.errors,
            )
            self._last_error_log = now
        try:
            self.finish()
        except (StreamError, av.FFmpegError, OSError, ValueError) as close_exc:
            log.debug("source=%s record: closing the failed segment: %s", h.source, close_exc)

    def open(self, item: _Item, width: int, height: int, time_base: Fraction) -> Segment:
        h, cfg = item.header, self.sink.config
        mp4, jsonl = new_segment_paths(self.directory, self.sink.root, h.capture_ns, h.seq)
        seg = Segment(
            mp4,
            jsonl,
            codec=self.sink.codec,
            width=width,
            height=height,
            time_base=time_base,
            pts0=h.pts,
            fragment_s=cfg.fragment_s,
            encoder=cfg.encoder,
            masks=cfg.masks,
        )
        self.sink.set_open(self.source, mp4)
        self.segments += 1
        log.info(
            "source=%s seq=%d record: new segment %s (%dx%d, %s)",
            h.source,
            h.seq,
            mp4,
            width,
            height,
            self.sink.codec,
        )
        return seg

    def finish(self) -> None:
        seg, self.segment = self.segment, None
        if seg is None:
            return
        try:
            seg.close()
            log.info(
                "source=%s record: closed %s (%d frames, %.1f s)",
                self.source,
                seg.mp4,
                seg.frames,
                seg.duration_s,
            )
        finally:
            self.sink.set_open(self.source, None)
            self.sink.maybe_retain(force=True)


class RecordSink:
    """Writes each source's frames into segments under ``config.root`` (see module doc).

    codec: encoder name to use; None resolves ``config.encoder.codec`` ('auto'
    probes NVENC once). Frames without pixels are skipped (counted in ``skipped``)."""

    name = "record"

    def __init__(self, config: RecordConfig, *, codec: str | None = None) -> None:
        self.config = config
        self.wants_annotated = config.annotated
        self.root = Path(config.root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root = self.root.resolve()
        self.codec = codec or resolve_codec(config.encoder.codec, "record")
        self.skipped = 0
        self._recorders: dict[str, _SourceRecorder] = {}
        self._lock = threading.Lock()  # guards _open and retention (encoder threads share them)
        self._open: dict[str, Path] = {}
        self._last_retention = 0.0
        self.maybe_retain(force=True)

    # -- called by the output stage (pipeline thread); never blocks on encoding

    def needs_picture(self, source: str) -> bool:
        """False for a source this sink does not record, or whose encoder queue is full (the
        frame would be dropped): no picture is drawn for it."""
        if self.config.sources is not None and source not in self.config.sources:
            return False
        rec = self._recorders.get(source)
        return rec is None or not rec.worker.would_drop()

    def write(self, frame: Frame) -> None:
        if self.config.sources is not None and frame.source not in self.config.sources:
            return
        rec = self._recorders.get(frame.source)
        if rec is None:
            rec = self._recorders[frame.source] = _SourceRecorder(
                self, frame.source, source_dir(self.root, frame.source)
            )
        if frame.image is None:
            self.skipped += 1
            rec.skipped += 1
            if self.skipped == 1:
                log.warning(
                    "source=%s seq=%d record: frame has no pixels; frames without pixels are not recorded",
                    frame.source,
                    frame.seq,
                )
            return
        check_image(frame.image, self.name, frame.source, frame.seq)
        if rec.worker.would_drop():  # don't copy pixels only to drop them
            rec.worker.count_drop(frame.source, frame.seq, "queue full, the encoder is behind", reason=QUEUE_FULL)
            return
        rec.worker.offer(
            _Item(frame.header, frame.arrays, np.array(frame.image, copy=True)), frame.source, frame.seq
        )

    def reset(self, source: str) -> None:
        """The source restarted (new geometry): its next frame starts a new segment."""
        if source in self._recorders:
            self._recorders[source].worker.put_control(_RESET)

    def end_source(self, source: str) -> None:
        if source in self._recorders:
            self._recorders[source].worker.put_control(_END)

    def close(self) -> None:
        for rec in self._recorders.values():
            rec.worker.close()
        self.maybe_retain(force=True)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per source: frames encoded, frames dropped, segments started."""
        return {
            s: {"frames": r.frames, "dropped": r.worker.dropped, "segments": r.segments}
            for s, r in self._recorders.items()
        }

    def outcomes(self) -> dict[str, dict[str, int]]:
        """Per source: frames in the recording ("written"), dropped by reason ("queue full";
        "failed": the encoder or the file refused them; "no pixels"), see ``stream.sinks``."""
        out: dict[str, dict[str, int]] = {}
        for s, r in list(self._recorders.items()):
            row = {WRITTEN: r.frames, **r.worker.drops}
            if r.errors:
                row[FAILED] = r.errors
            if r.skipped:
                row[NO_PIXELS] = r.skipped
            out[s] = row
        return out

    # -- called from encoder threads

    def set_open(self, source: str, mp4: Path | None) -> None:
        with self._lock:
            if mp4 is None:
                self._open.pop(source, None)
            else:
                self._open[source] = mp4

    def maybe_retain(self, force: bool = False) -> None:
        cfg = self.config
        if cfg.max_age_s is None and cfg.max_size_mb is None:
            return
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last_retention < cfg.retention_interval_s:
                return
            self._last_retention = now
            max_bytes = int(cfg.max_size_mb * 1e6) if cfg.max_size_mb is not None else None
            apply_retention(self.root, max_age_s=cfg.max_age_s, max_bytes=max_bytes, keep=self._open.values())


def build(section: RecordConfig | dict[str, Any], config: Config) -> RecordSink:
    """The record sink from ``sinks.record`` (validated here; errors name the key). Each
    recorded source's directory is created and checked to be inside the root (SourceError)."""
    cfg = validate_section(RecordConfig, section, "sinks.record")
    known = [s.id for s in config.sources]
    check_sink_sources(SinksConfig(record=cfg), known)
    sink = RecordSink(cfg)
    for source in cfg.sources if cfg.sources is not None else known:
        source_dir(sink.root, source)  # refuse a directory that escapes the root now, not mid-run
    return sink
