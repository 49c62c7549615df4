"""The capture process: one per source. Reads frames, writes pixels into the
source's shared-memory ring and sends a small FrameRef downstream.

Policies (DESIGN.md):
- file sources (``live: false``) never lose a frame: before reusing a ring
  slot the capture waits until its frame was released (by the last stage, or by
  the stage that dropped it), and a full downstream queue blocks the send
  (backpressure).
- live sources never block: a full downstream queue drops the frame at the
  edge ("downstream busy", counted); ring slots are overwritten regardless and
  readers detect it by generation.
- live sources keep frame age bounded: with shared-memory pixels at most
  ``max_in_flight`` frames of a live source are between capture and the end of
  the pipeline, stalled or not (``InFlight``: a frame counts until its ring slot is
  released, by the last stage or by whoever dropped it). A reconnecting live
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

import numpy as np
import zmq

from stream.errors import SourceError
from stream.messages import (
    EndOfStream,
    Frame,
    FrameHeader,
    PixelRef,
    Reset,
    encode_frame,
    encode_message,
    now_ns,
)
from stream.runtime import Counters, Heartbeater, StopFlag
from stream.sources.base import Source, SourceFrame
from stream.sources.live import LiveSource, LiveStatus
from stream.transport.keys import Curve
from stream.transport.ring import FrameRing
from stream.transport.sockets import open_socket, send_parts

log = logging.getLogger(__name__)

DEFAULT_MAX_IN_FLIGHT = 2  # live sources without their own setting (synthetic, pattern, file with live: true)
SLOT_POLL_MIN_S, SLOT_POLL_MAX_S = 0.0005, 0.004  # a file's wait for a ring slot (CaptureRunner._wait_slot)


@dataclass
class _Sent:
    seq: int
    ref: PixelRef
    at: float  # monotonic time sent
    epoch: int  # the ring's epoch when sent


class InFlight:
    """Frames a live source sent that are not done yet (released by the last stage, or by
    whichever stage or capture dropped them: see ``FrameRing.release``).

    ``has_room(ring)`` is False while ``limit`` frames are out, however long a stalled
    stage holds them: a live source never has more than ``limit`` frames between capture
    and output. Frames are forgotten only when they may have been lost with a crashed
    process: written before the ring's epoch was bumped (by the supervisor, on a crash) and
    not back ``timeout_s()`` (max(1 s, 4 × the median round trip)) after that; and, as a
    last resort (a frame that vanished without a crash), after ``last_resort_s``. Both are
    counted in ``expired``. Times in seconds (monotonic).
    """

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic, last_resort_s: float = 30.0,
                 source: str = "") -> None:
        self.limit = limit
        self.source = source
        self.expired = 0
        self.last_resort_s = last_resort_s
        self._clock = clock
        self._out: deque[_Sent] = deque()
        self._trips: deque[float] = deque(maxlen=32)
        self._epoch = -1
        self._epoch_at = 0.0

    def __len__(self) -> int:
        return len(self._out)

    def sent(self, seq: int, ref: PixelRef, ring: FrameRing) -> None:
        self._out.append(_Sent(seq, ref, self._clock(), ring.epoch))

    def timeout_s(self) -> float:
        return max(1.0, 4.0 * statistics.median(self._trips)) if self._trips else 1.0

    def has_room(self, ring: FrameRing) -> bool:
        now = self._clock()
        if ring.epoch != self._epoch:
            self._epoch, self._epoch_at = ring.epoch, now
        keep: deque[_Sent] = deque()
        for item in self._out:
            if ring.released(item.ref):
                self._trips.append(now - item.at)
            elif (item.epoch < self._epoch and now - self._epoch_at > self.timeout_s()) \
                    or now - item.at > self.last_resort_s:
                self.expired += 1
                log.warning("source=%s seq=%d: not released %.1f s after it was sent; presumed lost%s", self.source,
                            item.seq, now - item.at, " with a crashed process" if item.epoch < self._epoch else "")
            else:
                keep.append(item)
        self._out = keep
        return len(self._out) < self.limit

    def holds(self, slot: int, ring: FrameRing) -> bool:
        """True while a frame in flight (sent, neither released nor presumed lost) is in ring
        slot ``slot``. Seqs skip when frames are dropped at the edge, so the slot of the next
        seq (seq % ring.slots) can still hold a frame sent ``ring.slots`` seqs ago or more."""
        return any(item.ref.slot == slot and not ring.released(item.ref) for item in self._out)


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
    lost_grace_s: float = 2.0  # see CaptureRunner._wait_slot
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
        self._slot_epoch: dict[int, int] = {}  # ring slot -> the ring's epoch when we wrote it
        self._lost_epoch = -1  # frames written before this epoch were declared lost

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
            inflight = InFlight(getattr(self.source, "max_in_flight", DEFAULT_MAX_IN_FLIGHT), source=spec.source_id)
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
                    elif getattr(self.source, "end_reason", None):  # e.g. a truncated file
                        reason = f"end of input ({self.source.end_reason})"  # type: ignore[attr-defined]
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
                if inflight is not None and ((live_src is None and not inflight.has_room(ring))
                                             or inflight.holds(seq % ring.slots, ring)):
                    # no room, or this seq's ring slot holds a frame still in flight: writing it
                    # would overwrite that frame (and waste what the stages did with it)
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
                    # a copy: the send is zero-copy and the source may reuse its buffer meanwhile
                    # (the pattern source does), which would put a later frame's pixels in this one
                    frame = Frame(header, image=np.array(item.image))
                else:
                    ref = ring.write(seq, item.image, item.pts)
                    self._slot_epoch[ref.slot] = ring.epoch
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
                    if inflight is not None and header.pixels is not None:
                        inflight.sent(seq, header.pixels, ring)
                else:
                    self.counters.drop(spec.source_id, seq, "downstream busy" if spec.live else "stopped")
                    if header.pixels is not None:
                        ring.release(header.pixels)
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
        while not inflight.has_room(ring):
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
        """Backpressure for files: wait until the frame in this slot is done (released by the
        last stage or by whichever stage dropped it). The wait is unbounded while that frame
        may still be in the pipeline, so a file never loses a frame to an overwrite. Only
        frames written before a process crashed (the ring's epoch moved past the one they
        were written in) and not released ``lost_grace_s`` after the last progress are
        presumed lost with it; their slots are reused. Polled with a pause that doubles up to
        ``SLOT_POLL_MAX_S``: a file waits here for most of each frame once the ring is full, and
        a fixed 0.5 ms poll cost the capture about 8 ms of CPU per frame (10 fps, 2 cores)."""
        last, since = ring.releases, time.monotonic()
        pause = SLOT_POLL_MIN_S
        while not ring.slot_free(seq) and not self.stop():
            written = self._slot_epoch.get(seq % ring.slots, -1)
            if written < self._lost_epoch:
                return  # declared lost already
            if ring.releases != last:
                last, since = ring.releases, time.monotonic()
            if written < ring.epoch and time.monotonic() - since > self.spec.lost_grace_s:
                self._lost_epoch = ring.epoch
                log.warning("source=%s seq=%d: frames written before a process crashed were not released "
                            "within %.0f s; presumed lost with it, reusing their ring slots",
                            self.spec.source_id, seq, self.spec.lost_grace_s)
                return
            time.sleep(pause)
            pause = min(2 * pause, SLOT_POLL_MAX_S)
