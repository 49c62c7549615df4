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

The sink does not encode: it muxes the packets of the output stage's shared H.264
encode of the source (``stream.sinks.encode``; the same packets feed the re-stream
and the live view), so recording costs no second encode. Encoding never stalls
the pipeline: pictures wait in the encoder's bounded queue (``queue_size``) and are
dropped when it is full (counted, logged once a second). A segment starts on a
keyframe: the sink tells the encoder that one is due when the open segment reaches
``segment_s``; a change of picture size, ``reset(source)`` and ``end_source`` end the
encoder's stream and so the segment. A frame whose pts repeats or goes backwards
(broken AVI timestamps) is re-stamped by the encoder one frame interval after the
previous one, inside the same segment (its sidecar line keeps the source pts and
says ``"restamped": true``; ``t`` is its time in the video).
"""

from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from stream.config import Config, validate_section
from stream.errors import StreamError
from stream.messages import Frame, FrameHeader
from stream.sections.sinks import RecordConfig, SinksConfig, check_sink_sources
from stream.sinks import FAILED, NO_PIXELS, WRITTEN
from stream.sinks.encode import EncodedPacket, EncoderPool, EncoderPools
from stream.sinks.retention import apply_retention, new_segment_paths, source_dir
from stream.sinks.segments import Segment

log = logging.getLogger(__name__)

WAITING_FOR_KEYFRAME = "waiting for a keyframe"


class _SourceRecorder:
    """The segments of one source; every method but ``__init__`` runs on the source's
    encoder thread (``stream.sinks.encode``), in packet order."""

    def __init__(self, sink: RecordSink, source: str, directory: Path) -> None:
        self.sink, self.source, self.directory = sink, source, directory
        self.segment: Segment | None = None
        self.frames = 0
        self.segments = 0
        self.errors = 0
        self.skipped = 0  # frames without pixels
        self.restamped = 0
        self.waiting = 0  # packets dropped while waiting for a keyframe to start a segment on
        self._last_error_log = -1e9

    def handle(self, p: EncodedPacket) -> None:
        h, seg, cfg = p.header, self.segment, self.sink.config
        if seg is not None and (
            p.info.generation != seg.info.generation
            or (p.keyframe and float((p.pts - seg.pts0) * seg.time_base) >= cfg.segment_s)
        ):
            log.debug("source=%s seq=%d record: new segment (segment length reached)", h.source, h.seq)
            self.finish()
        if self.segment is None and not p.keyframe:  # a segment starts on a keyframe
            self.waiting += 1
            self.sink.pool.request_keyframe(self.source)
            return
        record = {
            "source": h.source,
            "seq": h.seq,
            "pts": h.pts,
            "time_base": list(h.time_base),
            "capture_ns": h.capture_ns,
        }
        if p.restamped:
            record["restamped"] = True
            self.restamped += 1
        try:
            if self.segment is None:
                self.segment = self.open(p)
            self.segment.add(p, record)
            self.frames += 1
        except (StreamError, av.FFmpegError, OSError, ValueError) as exc:
            self.failed(h, exc)
        self.sink.maybe_retain()

    def keyframe_due(self, pts: int) -> bool:
        seg = self.segment
        return seg is not None and float((pts - seg.pts0) * seg.time_base) >= self.sink.config.segment_s

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

    def open(self, p: EncodedPacket) -> Segment:
        h, cfg = p.header, self.sink.config
        mp4, jsonl = new_segment_paths(self.directory, self.sink.root, h.capture_ns, h.seq)
        seg = Segment(mp4, jsonl, info=p.info, pts0=p.pts, fragment_s=cfg.fragment_s, masks=cfg.masks)
        self.sink.set_open(self.source, mp4)
        self.segments += 1
        log.info(
            "source=%s seq=%d record: new segment %s (%dx%d, %s)",
            h.source,
            h.seq,
            mp4,
            p.info.width,
            p.info.height,
            p.info.codec,
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

    encoders: the output stage's shared pool to take packets from (its pictures are
    given to it by the stage); None: the sink makes its own pool and feeds it from
    ``write``. codec: encoder name for its own pool; None resolves
    ``config.encoder.codec`` ('auto' probes NVENC once). Frames without pixels are
    skipped (counted in ``skipped``)."""

    name = "record"

    def __init__(
        self, config: RecordConfig, *, codec: str | None = None, encoders: EncoderPool | None = None
    ) -> None:
        self.config = config
        self.key_interval_s = config.fragment_s
        self.queue_size = config.queue_size
        self.root = Path(config.root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root = self.root.resolve()
        self.encoding = EncoderPool.attach(
            self, encoders, annotated=config.annotated, encoder=config.encoder, codec=codec, label="record"
        )
        self.pool = self.encoding.pool
        # with a shared pool the stage hands the pictures to the pool, not to this sink
        self.wants_annotated = config.annotated and self.encoding.own
        self.skipped = 0
        self._recorders: dict[str, _SourceRecorder] = {}
        self._lock = threading.Lock()  # guards _open and retention (encoder threads share them)
        self._open: dict[str, Path] = {}
        self._last_retention = 0.0
        self.maybe_retain(force=True)

    @property
    def codec(self) -> str:
        return self.pool.codec

    # -- called by the output stage (pipeline thread); never blocks on encoding

    def wants_packets(self, source: str) -> bool:
        return self.config.sources is None or source in self.config.sources

    def needs_picture(self, source: str) -> bool:
        """False for a source this sink does not record, or whose encoder queue is full (the
        frame would be dropped): no picture is drawn for it."""
        return self.wants_packets(source) and self.pool.needs_picture(source)

    def write(self, frame: Frame) -> None:
        if not self.wants_packets(frame.source):
            return
        rec = self._recorder(frame.source)  # a directory outside the root is refused here (SourceError)
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
        self.encoding.write(frame)

    def reset(self, source: str) -> None:
        """The source restarted (new geometry): its next frame starts a new segment."""
        self.encoding.reset(source)

    def end_source(self, source: str) -> None:
        self.encoding.end_source(source)

    def close(self) -> None:
        self.encoding.close()
        self.maybe_retain(force=True)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per source: frames recorded, frames dropped (the encoder was behind, or a segment
        waited for its keyframe), segments started."""
        return {
            s: {"frames": r.frames, "dropped": self.pool.dropped(s) + r.waiting, "segments": r.segments}
            for s, r in self._recorders.items()
        }

    def outcomes(self) -> dict[str, dict[str, int]]:
        """Per source: frames in the recording ("written"), dropped by reason ("queue full":
        the shared encoder was behind; "failed": the encoder or the file refused them; "no
        pixels"; "waiting for a keyframe": a segment that failed restarts on one), see
        ``stream.sinks``."""
        out: dict[str, dict[str, int]] = {}
        for s, r in list(self._recorders.items()):
            row = {WRITTEN: r.frames, **self.pool.drops(s)}
            failed = r.errors + self.pool.errors(s)
            if failed:
                row[FAILED] = failed
            if r.skipped:
                row[NO_PIXELS] = r.skipped
            if r.waiting:
                row[WAITING_FOR_KEYFRAME] = r.waiting
            out[s] = row
        return out

    # -- called from encoder threads (stream.sinks.encode.PacketConsumer)

    def _recorder(self, source: str) -> _SourceRecorder:
        rec = self._recorders.get(source)
        if rec is None:
            rec = self._recorders[source] = _SourceRecorder(self, source, source_dir(self.root, source))
        return rec

    def keyframe_due(self, source: str, pts: int, time_base: Fraction) -> bool:
        rec = self._recorders.get(source)
        return rec is not None and rec.keyframe_due(pts)

    def on_packet(self, packet: EncodedPacket) -> None:
        if self.wants_packets(packet.info.source):
            self._recorder(packet.info.source).handle(packet)

    def on_stream_end(self, source: str, why: str) -> None:
        rec = self._recorders.get(source)
        if rec is not None:
            rec.finish()


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


def build(
    section: RecordConfig | dict[str, Any], config: Config, *, encoders: EncoderPools | None = None
) -> RecordSink:
    """The record sink from ``sinks.record`` (validated here; errors name the key). Each
    recorded source's directory is created and checked to be inside the root (SourceError).
    encoders: the output stage's pools (the sink takes the one for its picture kind and
    encoder settings); None: its own."""
    cfg = validate_section(RecordConfig, section, "sinks.record")
    known = [s.id for s in config.sources]
    check_sink_sources(SinksConfig(record=cfg), known)
    pool = encoders.get(annotated=cfg.annotated, encoder=cfg.encoder) if encoders is not None else None
    sink = RecordSink(cfg, encoders=pool)
    for source in cfg.sources if cfg.sources is not None else known:
        source_dir(sink.root, source)  # refuse a directory that escapes the root now, not mid-run
    return sink
