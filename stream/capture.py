"""The capture process: one per source. Reads frames, writes pixels into the
source's shared-memory ring and sends a small FrameRef downstream.

Policies (DESIGN.md):
- file sources (``live: false``) never lose a frame: before reusing a ring
  slot the capture waits until the last stage released it, and a full
  downstream queue blocks the send (backpressure).
- live sources never block: a full downstream queue drops the frame at the
  edge ("downstream busy", counted); ring slots are overwritten regardless and
  readers detect it by generation.
A restarted capture resumes at the ring's ``next_seq``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import zmq

from stream.errors import SourceError
from stream.messages import EndOfStream, Frame, FrameHeader, encode_frame, encode_message, now_ns
from stream.sources.base import Source
from stream.stage import Counters, Heartbeater, StopFlag
from stream.transport import FrameRing, open_socket, send_parts

log = logging.getLogger(__name__)


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


class CaptureRunner:
    def __init__(self, source: Source, spec: CaptureSpec) -> None:
        self.source = source
        self.spec = spec
        self.stop = StopFlag()
        self.counters = Counters()
        self._zctx = zmq.Context()

    def run(self) -> int:
        spec = self.spec
        self.hb = Heartbeater(open_socket(self._zctx, spec.heartbeat, hwm=100), f"capture:{spec.source_id}",
                              self.counters, spec.heartbeat_interval_s)
        self.hb.start()
        out = open_socket(self._zctx, spec.output, hwm=spec.hwm)
        ring = FrameRing.attach(Path(spec.ring_path))
        seq = ring.next_seq
        reason = "end of input"
        try:
            self._set_state("connecting")
            try:
                info = self.source.open()
            except SourceError as exc:
                self.hb.detail = str(exc)
                self._set_state("failed")
                log.error("source=%s: %s", spec.source_id, exc)
                reason = f"failed: {exc}"
                send_parts(out, encode_message(EndOfStream(spec.source_id, seq, reason)), block=True,
                           timeout_s=0.2, should_stop=self.stop)
                return 3
            tb = Fraction(info.time_base)
            self._set_state("streaming")
            if seq:
                log.info("source=%s: resuming at seq %d after a restart", spec.source_id, seq)
            for item in self.source.frames(start=seq):
                if self.stop():
                    reason = "stopped"
                    break
                if spec.max_frames is not None and seq >= spec.max_frames:
                    break
                self.counters.frames_in += 1
                self.counters.last_seq[spec.source_id] = seq
                if not spec.live and not spec.inline_pixels and not ring.slot_free(seq):
                    self._wait_slot(ring, seq)
                capture_ns = now_ns()
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
            return 0
        finally:
            self.hb.stop()
            self.source.close()
            ring.close()
            # linger: frames and the end-of-stream still queued must reach the next stage
            out.close(linger=3000)
            self.hb.sock.close(linger=1000)
            self._zctx.destroy(linger=0)

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
