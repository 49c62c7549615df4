"""The capture process: one per source. Reads frames, writes pixels into the
source's shared-memory ring and sends a small FrameRef downstream.

Policies (DESIGN.md):
- file sources (``live: false``) never lose a frame: before reusing a ring
  slot the capture waits until the last stage released it, and a full
  downstream queue blocks the send (backpressure).
- live sources never block: a full downstream queue drops the frame at the
  edge ("downstream busy", counted); ring slots are overwritten regardless and
  readers detect it by generation.
- live sources keep frame age bounded: with shared-memory pixels at most
  ``max_in_flight`` frames of a live source are between capture and the end of
  the pipeline (``InFlight``, from the ring's released_seq). A reconnecting live
  source (``LiveSource``: rtsp/rtmp/http/webcam) is read only when there is room,
  so the frame sent is the newest one (its edge buffer drops the oldest); other
  live sources drop the frame at hand. With inline pixels the socket buffers hold
  only a few frames, and the limit is not needed.
- frames a LiveSource lost (corrupt, dropped from its edge buffer, an outage)
  take up seqs and are recorded as drops with that reason, so the summary and
  /metrics count them; after a reconnect a ``Reset`` goes downstream before the
  first new frame (and when a live capture restarts). The source's state
  (connecting, streaming, stalled, failed) goes out in every heartbeat.
A restarted capture resumes at the ring's ``next_seq``.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import zmq

from stream.errors import SourceError
from stream.messages import EndOfStream, Frame, FrameHeader, Reset, encode_frame, encode_message, now_ns
from stream.sources.base import Source, SourceFrame
from stream.sources.live import LiveSource, LiveStatus
from stream.stage import Counters, Heartbeater, StopFlag
from stream.transport import Curve, FrameRing, open_socket, send_parts

log = logging.getLogger(__name__)

DEFAULT_MAX_IN_FLIGHT = 2  # live sources without their own setting (synthetic, pattern, file with live: true)


class InFlight:
    """Frames a live source sent that the last stage has not finished with.

    ``has_room(released_seq)`` is False while ``limit`` frames are out. A frame that has
    not come back after ``timeout_s()`` (max(1 s, 4 × the median recent round trip)) is
    presumed dropped on the way (filtered by a stage, lost with a crashed one) and no
    longer counts, so the source can never be starved. Times in seconds (monotonic).
    """

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.expired = 0
        self._clock = clock
        self._out: deque[tuple[int, float]] = deque()
        self._trips: deque[float] = deque(maxlen=32)

    def __len__(self) -> int:
        return len(self._out)

    def sent(self, seq: int) -> None:
        self._out.append((seq, self._clock()))

    def timeout_s(self) -> float:
        return max(1.0, 4.0 * statistics.median(self._trips)) if self._trips else 1.0

    def has_room(self, released_seq: int) -> bool:
        now = self._clock()
        while self._out and self._out[0][0] <= released_seq:
            self._trips.append(now - self._out.popleft()[1])
        timeout = self.timeout_s()
        while self._out and now - self._out[0][1] > timeout:
            self._out.popleft()
            self.expired += 1
        return len(self._out) < self.limit


@dataclass(frozen=True)
class CaptureSpec:
    source_id: str
    output: str
    heartbeat: str
    ring_path: str
    live: bool
    inline_pixels: bool = False
    max_frames: int | None = None
    hwm: int = 4
    heartbeat_interval_s: float = 1.0
    slot_wait_timeout_s: float = 30.0
    random_weights: bool = False
    output_curve: dict[str, Any] | None = None  # transport.curve: the run's own keys
    control_curve: dict[str, Any] | None = None


class CaptureRunner:
    def __init__(self, source: Source, spec: CaptureSpec) -> None:
        self.source = source
        self.spec = spec
        self.stop = StopFlag()
        self.counters = Counters()
        self._zctx = zmq.Context()

    def run(self) -> int:
        spec = self.spec
        self._hbctx = zmq.Context()  # see StageRunner: heartbeats go on while queued frames drain
        hb_sock = open_socket(self._hbctx, spec.heartbeat, hwm=100, curve=Curve.from_spec(spec.control_curve))
        self.hb = Heartbeater(hb_sock, f"capture:{spec.source_id}", self.counters, spec.heartbeat_interval_s)
        self.hb.start()
        out = open_socket(self._zctx, spec.output, hwm=spec.hwm, curve=Curve.from_spec(spec.output_curve))
        self.out = out
        ring = FrameRing.attach(Path(spec.ring_path))
        seq = ring.next_seq
        reason = "end of input"
        live_src = self.source if isinstance(self.source, LiveSource) else None
        inflight = None
        if spec.live and not spec.inline_pixels:
            inflight = InFlight(getattr(self.source, "max_in_flight", DEFAULT_MAX_IN_FLIGHT))
        try:
            self._set_state("connecting")
            try:
                info = self.source.open()
            except SourceError as exc:
                return self._fail(exc, seq)
            tb = Fraction(info.time_base)
            if live_src is not None:
                live_src.on_status = self._on_live_status
                self.hb.state = "running"
                frames: Iterator[SourceFrame] = live_src.frames(seq, should_stop=self.stop)
            else:
                self._set_state("streaming")
                frames = self.source.frames(start=seq)
            if seq:
                log.info("source=%s: resuming at seq %d after a restart", spec.source_id, seq)
                if spec.live:  # what downstream holds for this source is from before the restart
                    self._send_reset(seq, "the capture restarted")
            while True:
                if live_src is not None and inflight is not None and not self._wait_room(ring, inflight):
                    reason = "stopped"
                    break
                try:
                    item = next(frames, None)
                except SourceError as exc:  # a live source gave up (reconnect.max_attempts)
                    return self._fail(exc, seq)
                if item is None:
                    if self.stop():
                        reason = "stopped"
                    break
                if self.stop():
                    reason = "stopped"
                    break
                seq = self._skip(seq, item.extra.get("skipped"))
                if spec.max_frames is not None and seq >= spec.max_frames:
                    break
                if item.extra.get("reset"):
                    self._send_reset(seq, str(item.extra["reset"]))
                self.counters.frames_in += 1
                self.counters.last_seq[spec.source_id] = seq
                if live_src is None and inflight is not None and not inflight.has_room(ring.released_seq):
                    self.counters.drop(spec.source_id, seq, "downstream busy")
                    seq += 1
                    ring.set_next_seq(seq)
                    continue
                if not spec.live and not spec.inline_pixels and not ring.slot_free(seq):
                    self._wait_slot(ring, seq)
                capture_ns = int(item.extra.get("capture_ns") or now_ns())
                if spec.inline_pixels:
                    header = FrameHeader(spec.source_id, seq, item.pts, (tb.numerator, tb.denominator),
                                         capture_ns, (("capture", now_ns()),), random_weights=spec.random_weights)
                    frame = Frame(header, image=item.image)
                else:
                    ref = ring.write(seq, item.image, item.pts)
                    header = FrameHeader(spec.source_id, seq, item.pts, (tb.numerator, tb.denominator),
                                         capture_ns, (("capture", now_ns()),), pixels=ref,
                                         random_weights=spec.random_weights)
                    frame = Frame(header)
                extras = {k: v for k, v in item.extra.items() if k == "detections"}
                if extras:
                    boxes, scores, class_ids = extras["detections"]
                    frame = frame.evolve(boxes=boxes, scores=scores, class_ids=class_ids)
                parts = encode_frame(frame, inline_image=spec.inline_pixels)
                if send_parts(out, parts, block=not spec.live, timeout_s=0.2, should_stop=self.stop):
                    self.counters.frames_out += 1
                    if inflight is not None:
                        inflight.sent(seq)
                else:
                    self.counters.drop(spec.source_id, seq, "downstream busy" if spec.live else "stopped")
                seq += 1
                ring.set_next_seq(seq)
            self._set_state("done")
            eos = EndOfStream(spec.source_id, seq, reason)
            give_up = time.monotonic() + 3.0  # a stuck downstream must not keep us alive
            send_parts(out, encode_message(eos), block=True, timeout_s=0.2,
                       should_stop=lambda: time.monotonic() > give_up)
            log.info("source=%s: %d frames, %s", spec.source_id, seq, reason)
            self._wait_until_released(signals=2 if reason == "stopped" else 1)
            return 0
        finally:
            self.source.close()
            ring.close()
            # frames and the end-of-stream still queued must reach the next stage
            out.close(linger=0)
            self._zctx.term()
            self.hb.stop()
            self._hbctx.destroy(linger=1000)

    def _fail(self, exc: SourceError, seq: int) -> int:
        """The source cannot deliver (bad path, or a live source gave up): end its stream downstream."""
        self.hb.detail = str(exc)
        self._set_state("failed")
        log.error("source=%s: %s", self.spec.source_id, exc)
        send_parts(self.out, encode_message(EndOfStream(self.spec.source_id, seq, f"failed: {exc}")), block=True,
                   timeout_s=0.2, should_stop=self.stop)
        return 3

    def _skip(self, seq: int, skipped: object) -> int:
        """Give the frames a live source lost their seqs, recorded as drops with the reason."""
        if not isinstance(skipped, dict):
            return seq
        for why, n in skipped.items():
            for _ in range(int(n)):
                self.counters.drop(self.spec.source_id, seq, str(why))
                seq += 1
        return seq

    def _send_reset(self, seq: int, why: str) -> None:
        """Per-source state downstream (tracker, masks, recorder segment) starts fresh at ``seq``.
        Sent blocking for up to 2 s: losing it would leave stale tracks."""
        give_up = time.monotonic() + 2.0
        msg = Reset(self.spec.source_id, seq, why)
        if send_parts(self.out, encode_message(msg), block=True, timeout_s=0.2,
                      should_stop=lambda: self.stop() or time.monotonic() > give_up):
            log.info("source=%s seq=%d: reset sent downstream (%s)", self.spec.source_id, seq, why)
        else:
            log.warning("source=%s seq=%d: could not send the reset downstream within 2 s (%s)",
                        self.spec.source_id, seq, why)

    def _wait_room(self, ring: FrameRing, inflight: InFlight) -> bool:
        """Wait until fewer than max_in_flight frames are out; False when stopping."""
        while not inflight.has_room(ring.released_seq):
            if self.stop():
                return False
            time.sleep(0.002)
        return True

    def _on_live_status(self, status: LiveStatus) -> None:
        """Called by a LiveSource (from its reader thread) on every state change."""
        detail = f"{status.state}: {status.detail}"
        if status.reconnects:
            detail += f"; {status.reconnects} reconnects, last outage {status.last_outage_s:.1f} s"
        self.hb.detail = detail
        self.hb.source_state[self.spec.source_id] = status.state
        self.hb.beat()

    def _wait_until_released(self, signals: int) -> None:
        """Stay connected until the supervisor says the run is over (SIGTERM number
        ``signals``): ZeroMQ would drop frames the next stage has not read yet if we
        disconnected now."""
        while self.stop.count < signals:
            time.sleep(0.05)

    def _set_state(self, state: str) -> None:
        self.hb.state = state
        self.hb.source_state[self.spec.source_id] = state
        self.hb.beat()

    def _wait_slot(self, ring: FrameRing, seq: int) -> None:
        """Backpressure for files: wait until the frame that used this slot is done.
        The wait is unbounded while the pipeline makes progress (released_seq
        moves); only after ``slot_wait_timeout_s`` with no progress at all (every
        frame in flight was lost with a crashed stage) is the slot reused. A reader
        that still holds it then sees the new generation and drops that frame, counted."""
        last_released = ring.released_seq
        deadline = time.monotonic() + self.spec.slot_wait_timeout_s
        while not ring.slot_free(seq) and not self.stop():
            if ring.released_seq != last_released:
                last_released = ring.released_seq
                deadline = time.monotonic() + self.spec.slot_wait_timeout_s
            if time.monotonic() > deadline:
                log.warning("source=%s seq=%d: no frame released for %.0f s; reusing ring slot %d",
                            self.spec.source_id, seq, self.spec.slot_wait_timeout_s, seq % ring.slots)
                return
            time.sleep(0.0005)
