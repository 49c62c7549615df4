"""The last stage of every pipeline: runs the configured sinks and keeps, per
source, what arrived (a count, the latest seq ranges, order, end-to-end and per-hop latency) for
the run summary."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from stream.config import Config
from stream.errors import ConfigError
from stream.messages import EndOfStream, Frame, Reset, RosterEntry, SourceReport
from stream.runtime import LatencyWindow
from stream.sinks import FAILED, MAX_CONSECUTIVE_FAILURES, Sink
from stream.stage import StageBase
from stream.summary import RECENT_KEPT

log = logging.getLogger(__name__)


@dataclass
class _SourceStats:
    frames: int = -1
    received: int = 0
    ranges: deque[list[int]] = field(default_factory=lambda: deque(maxlen=RECENT_KEPT))
    ranges_from: int = 0  # the ranges are complete for seqs from here (older ones forgotten)
    last_seq: int = -1
    out_of_order: int = 0
    latency: LatencyWindow = field(default_factory=lambda: LatencyWindow(100_000))
    hops: dict[str, LatencyWindow] = field(default_factory=dict)
    first_ns: int = 0
    last_ns: int = 0


class OutputStage(StageBase):
    name = "output"

    def __init__(self, sinks: Sequence[Sink], annotator: Callable[[Frame], np.ndarray] | None = None) -> None:
        self.sinks = list(sinks)
        self.annotator = annotator
        self._failures = {s.name: 0 for s in self.sinks}
        self._stats: dict[str, _SourceStats] = {}
        self._all_sinks = list(sinks)  # a disabled sink still reports what it wrote
        self._lost: dict[tuple[str, str, str], int] = {}  # (sink, source, "failed" | "sink disabled") -> frames
        self._closed = False

    def process_batch(self, frames: Sequence[Frame]) -> list[Frame | None]:
        """Every frame to the sinks (the runner stamped it on arrival); each is delivered as it came."""
        for frame in frames:
            self.write(frame)
        return list(frames)

    def write(self, frame: Frame) -> None:
        """One frame: counted for the summary, then handed to every sink (a ``stream.stage.Reporter``)."""
        now = time.time_ns()
        st = self._stats.setdefault(frame.source, _SourceStats())
        seq = frame.seq
        if seq <= st.last_seq:
            st.out_of_order += 1
        elif st.ranges and st.ranges[-1][1] == seq - 1:
            st.ranges[-1][1] = seq
        else:
            if len(st.ranges) == st.ranges.maxlen:
                st.ranges_from = st.ranges[0][1] + 1
            st.ranges.append([seq, seq])
        st.last_seq = max(st.last_seq, seq)
        st.received += 1
        st.first_ns = st.first_ns or now
        st.last_ns = now
        st.latency.add((now - frame.header.capture_ns) / 1e6)
        stamps = frame.header.stamps
        for (_, t0), (name, t1) in zip(stamps, stamps[1:], strict=False):
            st.hops.setdefault(name, LatencyWindow(100_000)).add((t1 - t0) / 1e6)
        annotated: Frame | None = None
        drawn = [self._needs_picture(s, frame) for s in self.sinks]
        if self.annotator is not None and not any(drawn):
            observe = getattr(self.annotator, "observe", None)
            if observe is not None:
                observe(frame)  # nobody looks at this frame's picture: keep fps and traces, draw nothing
        for sink, draw in zip(list(self.sinks), drawn, strict=True):
            try:
                if draw:
                    if annotated is None:  # drawn once per frame, shared by every sink that shows it
                        annotated = frame.evolve(image=self.annotator(frame))  # type: ignore[misc]
                    sink.write(annotated)
                else:
                    sink.write(frame)
                self._failures[sink.name] = 0
            except Exception as exc:  # noqa: BLE001 — one failing sink must not stop the others
                self._failures[sink.name] += 1
                self._count_lost(sink.name, frame.source, FAILED)
                log.error("source=%s seq=%d sink %s failed: %s", frame.source, seq, sink.name, exc)
                if self._failures[sink.name] >= MAX_CONSECUTIVE_FAILURES:
                    log.error("sink %s disabled after %d failures in a row", sink.name, MAX_CONSECUTIVE_FAILURES)
                    self.sinks.remove(sink)
        if len(self.sinks) < len(self._all_sinks):
            for sink in self._all_sinks:
                if sink not in self.sinks:
                    self._count_lost(sink.name, frame.source, "sink disabled")

    def _count_lost(self, sink: str, source: str, outcome: str) -> None:
        key = (sink, source, outcome)
        self._lost[key] = self._lost.get(key, 0) + 1

    def sink_outcomes(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per sink, per source: frames by outcome, cumulative (``"written"`` or a drop
        reason; see ``stream.sinks``). Safe to call from the heartbeat thread."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for sink in self._all_sinks:
            outcomes = getattr(sink, "outcomes", None)
            rows = {src: dict(row) for src, row in outcomes().items()} if outcomes is not None else {}
            for (name, src, outcome), n in list(self._lost.items()):
                if name == sink.name:
                    row = rows.setdefault(src, {})
                    row[outcome] = row.get(outcome, 0) + n
            if rows:
                out[sink.name] = rows
        return out

    def _needs_picture(self, sink: Sink, frame: Frame) -> bool:
        """Whether ``sink`` gets this frame's annotated picture: it shows pixels
        (``wants_annotated``) and, when it can tell (``needs_picture(source)``), someone will see
        them now (a live viewer is connected, the recorder will encode the frame)."""
        if self.annotator is None or frame.image is None or not getattr(sink, "wants_annotated", False):
            return False
        needs = getattr(sink, "needs_picture", None)
        return bool(needs(frame.source)) if needs is not None else True

    def event(self, msg: EndOfStream | Reset) -> None:
        if isinstance(msg, EndOfStream):
            self._stats.setdefault(msg.source, _SourceStats()).frames = msg.frames
        else:  # the source came back different: recorders start a new segment, trackers start fresh
            self._each("reset", msg.source, source=msg.source, failed="to reset")

    def source_states(self, states: dict[str, str]) -> None:
        """The supervisor's capture state per source (connecting/streaming/stalled/failed/done),
        passed to every sink that shows it (``source_states``)."""
        self._each("source_states", states, failed="to take the source states")

    def set_sources(self, roster: Sequence[RosterEntry]) -> None:
        """The run's sources changed at runtime (stream.roster): a source added again after
        its removal starts its report afresh; sinks that list sources (the live view) follow."""
        for e in roster:
            st = self._stats.get(e.source)
            if st is not None and st.frames >= 0:  # it ended before: this is a new stream
                del self._stats[e.source]
        self._each("set_sources", roster, failed="to take the new sources")

    def forget_source(self, source: str) -> None:
        """A source removed at runtime has ended: sinks free what they kept for it."""
        self._each("forget_source", source, source=source, failed="to let it go")

    def end_source(self, source: str) -> None:
        self._each("end_source", source, source=source, failed="at end of stream")

    def close(self) -> None:
        """Close every sink (once): queued frames are written first, so ``sink_outcomes`` is final."""
        if self._closed:
            return
        self._closed = True
        self._each("close", failed="to close")

    def _each(self, method: str, *args: object, failed: str, source: str | None = None) -> None:
        """``method(*args)`` on every (enabled) sink that has it, in order. A sink that raises is
        logged ("sink <name> failed <failed>", with the source when there is one) and the
        others still get theirs."""
        for sink in self.sinks:
            call = getattr(sink, method, None)
            if call is None:
                continue
            try:
                call(*args)
            except Exception as exc:  # noqa: BLE001 — one failing sink must not stop the others
                if source is None:
                    log.error("sink %s failed %s: %s", sink.name, failed, exc)
                else:
                    log.error("source=%s sink %s failed %s: %s", source, sink.name, failed, exc)

    def reports(self) -> tuple[SourceReport, ...]:
        return tuple(
            SourceReport(
                source=src, frames=st.frames if st.frames >= 0 else st.last_seq + 1, received=st.received,
                received_ranges=tuple((a, b) for a, b in st.ranges), out_of_order=st.out_of_order,
                latency_ms=st.latency.quantiles(), hop_ms={k: w.quantiles() for k, w in st.hops.items()},
                first_ns=st.first_ns, last_ns=st.last_ns, ranges_from=st.ranges_from,
            )
            for src, st in self._stats.items()
        )


# sink name -> module defining build(section: dict, config: Config) -> Sink
SINK_MODULES = {
    "publish": "stream.sinks.publish",
    "record": "stream.sinks.record",
    "live": "stream.sinks.live",
    "restream": "stream.sinks.restream",
    "mqtt": "stream.sinks.mqtt",
}


# sinks whose build() takes the stage's shared H.264 encoders (stream.sinks.encode)
H264_SINKS = ("record", "live", "restream")

# the key named when a sink cannot create or open the path its section gives
SINK_PATH_KEYS = {"jsonl": "sinks.jsonl.path", "record": "sinks.record.root"}


def preflight(config: Config) -> None:
    """What ``_build_sink`` would refuse, found without creating anything (``stream check``):
    a sink path whose folder cannot be made (a file in the way) or written (no permission).
    Raises ConfigError naming the key."""
    import os
    from pathlib import Path

    paths = []
    if config.sinks.jsonl.path:
        paths.append(("jsonl", Path(config.sinks.jsonl.path).expanduser().parent))
    record = config.sinks.record
    if record is not None and record.enabled:
        paths.append(("record", Path(record.root).expanduser()))
    for name, folder in paths:
        key = SINK_PATH_KEYS[name]
        existing = folder.absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(f"{key}: cannot create {folder}: {existing} is not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{key}: cannot create or write in {folder}: no permission to write in {existing}")


def _build_sink(name: str, make: Callable[[], Sink]) -> Sink:
    """``make()``; a file-system error there (a folder that cannot be made, a file in the way,
    no permission) is a ConfigError naming the key: it would fail the same way on every
    restart, so the run stops with it at once instead of crash-looping."""
    try:
        return make()
    except OSError as exc:
        key = SINK_PATH_KEYS.get(name, f"sinks.{name}")
        what = f" {exc.filename}" if exc.filename else ""
        raise ConfigError(f"{key}: cannot create or open{what}: {exc.strerror or exc}") from None


def build(config: Config) -> OutputStage:
    from functools import partial
    from importlib import import_module
    from pathlib import Path

    from stream.sinks.encode import EncoderPools
    from stream.sinks.jsonl import JsonlSink

    sinks: list[Sink] = []
    pools = EncoderPools()  # one H.264 encode per source, shared by record, restream and live
    if config.sinks.jsonl.path:
        path = Path(config.sinks.jsonl.path)
        sinks.append(_build_sink("jsonl", partial(JsonlSink, path)))
    for name, module in SINK_MODULES.items():
        section = getattr(config.sinks, name)
        if section is not None and section.enabled:
            build_sink = import_module(module).build
            extra = {"encoders": pools} if name in H264_SINKS else {}
            sinks.append(_build_sink(name, partial(build_sink, section, config, **extra)))
    # the encoders first: at end of stream and close they flush into the sinks before those finish
    sinks[:0] = pools.pools
    annotator = None
    if any(getattr(s, "wants_annotated", False) for s in sinks):
        from stream.render import build_annotator

        annotator = build_annotator(config)
    return OutputStage(sinks, annotator)
