"""The loop that runs one stage in its own process (``StageRunner``).

It owns the stage's sockets, attaches pixels from the shared-memory ring, batches,
calls the stage (``stream.stage.Stage``), stamps timings, forwards to the next stage,
releases ring slots, follows the supervisor's control messages (drain, stop, roster)
and heartbeats to it (``stream.runtime``, shared with the capture). A frame that fails
in the stage becomes a logged, counted drop. The last stage sends nowhere: the runner
stamps the frames it receives before the stage delivers them, and reads what it
delivered from it at the end (``stream.stage.Reporter``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from stream.errors import FrameDropped, ProtocolError, StreamError, TransportError
from stream.messages import (
    Control,
    EndOfStream,
    Frame,
    PixelRef,
    Reset,
    RunReport,
    decode,
    decode_control,
    encode_control,
    encode_frame,
    encode_message,
)
from stream.runtime import Counters, Heartbeater, LatencyWindow, StopFlag, one_line
from stream.stage import Reporter, Stage
from stream.transport.keys import Curve
from stream.transport.ring import FrameRing, RingCache
from stream.transport.sockets import CurveAuth, close_flushing, open_socket, recv_parts, send_parts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    """Where a stage process reads, writes and reports (built by the supervisor)."""

    name: str
    input: str
    output: str | None  # None: this is the last stage
    heartbeat: str
    control: str
    ring_dir: str
    sources: tuple[str, ...]
    inline_pixels: bool = False
    hwm: int = 4
    heartbeat_interval_s: float = 1.0
    # a hop to another host (stream.split): CURVE key files of each end, how long the
    # sender waits at the end to hand its queued frames over, how the pixels travel,
    # and whether this stage reports what it sent (it ends its host's part of the run)
    input_curve: dict[str, Any] | None = None
    output_curve: dict[str, Any] | None = None
    control_curve: dict[str, Any] | None = None  # heartbeat and control (transport.curve)
    output_linger_s: float = 0.0
    image_codec: str = "raw"
    jpeg_quality: int = 90
    report: bool = False
    stale_after_s: dict[str, float] = field(default_factory=dict)  # live sources: frames that waited longer are "stale"
    roster_gen: int = 0  # the generation of the roster ``sources`` is (see Control 'roster')


class StageRunner:
    """Runs one stage: receive → attach pixels → process_batch → forward; heartbeats."""

    def __init__(self, stage: Stage, spec: WorkerSpec, *, sent: Reporter | None = None) -> None:
        """``sent``: upstream of a split, the ledger of the frames handed to the other host. The
        last stage (``spec.output`` None) reports what it delivered itself, when it is a ``Reporter``."""
        self.stage = stage
        self.spec = spec
        self.reporter = sent if spec.output is not None else stage if isinstance(stage, Reporter) else None
        self.counters = Counters(sink_outcomes=getattr(self.reporter, "sink_outcomes", None))
        self.latency = LatencyWindow()
        self.ended: set[str] = set()
        self.sources: set[str] = set(spec.sources)  # accepted now (the roster, and removed ones until their end)
        self.leaving: set[str] = set()  # removed from the roster, end of stream not here yet
        self.gone: set[str] = set()  # removed, and their end of stream has passed
        self.roster_gen = spec.roster_gen
        self._stale_after_s = dict(spec.stale_after_s)
        self.stop = StopFlag(armed=False)  # armed once the stage is ready (see run)
        self.ready = False  # stage.start() returned: a failure from now on is a crash, restarted
        self._zctx = zmq.Context()
        self._rings = RingCache(Path(spec.ring_dir))
        self.out: zmq.Socket[Any] | None = None
        self._give_up_at = float("inf")
        self._in_control = False
        self._n_malformed = 0

    def _should_stop_sending(self) -> bool:
        return self.stop() or time.monotonic() > self._give_up_at

    def _open(self) -> None:
        s = self.spec
        # own context: the data context's term() waits for queued frames to be delivered
        # while this one keeps heartbeating
        self._hbctx = zmq.Context()
        control = Curve.from_spec(s.control_curve)
        self.hb = Heartbeater(open_socket(self._hbctx, s.heartbeat, hwm=100, curve=control), s.name, self.counters,
                              s.heartbeat_interval_s, self.latency)
        self.ctl = open_socket(self._zctx, s.control, hwm=100, curve=control)
        self._auth = CurveAuth(self._zctx)
        self.inp = open_socket(self._zctx, s.input, hwm=s.hwm, auth=self._auth, curve=Curve.from_spec(s.input_curve))
        self.out = open_socket(self._zctx, s.output, hwm=s.hwm,
                               curve=Curve.from_spec(s.output_curve)) if s.output else None

    def run(self) -> int:
        self._open()
        self.hb.start()
        try:
            self.hb.beat()
            try:
                self.stage.start()
            except StreamError as exc:
                # cannot fix itself (config, device, port, weights): the final heartbeat says why
                self.hb.state, self.hb.detail = "failed", one_line(exc)
                raise
            self.stop.arm()
            self.ready = True
            self.hb.state = "running"
            self.hb.roster_gen = self.roster_gen
            self.hb.beat()
            while not self.stop() and not self._all_ended():
                self._poll_control()
                if not self._all_ended():  # a drain may have just ended them all
                    self._step()
            if self._all_ended():
                self._finish()
                self._wait_until_released()
            elif self.reporter is not None:
                self._finish()  # stopped mid-run: the summary still gets what the sinks were given
            return 0
        finally:
            try:
                self.stage.close()
            finally:
                self._rings.close()
                self.inp.close(linger=0)
                self.ctl.close(linger=0)
                if self.out is not None:  # delivery was awaited in _wait_until_released, or is now
                    # after a drain the supervisor waits only so long: so does the hand-over
                    close_flushing(self.out, min(self.spec.output_linger_s, max(0.0, self._give_up_at - time.monotonic())))
                self._auth.stop()
                self._zctx.term()
                self.hb.stop()
                self._hbctx.destroy(linger=1000)

    def _all_ended(self) -> bool:
        """Every source of the roster has ended (a run whose last source was removed at
        runtime goes on, waiting for a new one, until it is stopped)."""
        roster = self.sources - self.leaving
        return bool(roster) and roster <= self.ended

    def _apply_roster(self, msg: Control) -> None:
        """A newer roster: accept its new sources, let removed ones go at their end of stream."""
        if msg.generation <= self.roster_gen:
            return
        new = {e.source for e in msg.roster}
        for source in new - self.sources:
            self.sources.add(source)
            self.ended.discard(source)
            self.gone.discard(source)
            log.info("stage %s: source=%s added", self.spec.name, source)
        self.leaving -= new
        for source in self.sources - new:
            if source in self.ended:  # its end of stream came already
                self._forget(source)
            else:
                self.leaving.add(source)
        self._stale_after_s = {e.source: e.stale_after_s for e in msg.roster
                               if e.live and e.stale_after_s is not None}
        set_sources = getattr(self.stage, "set_sources", None)
        if set_sources is not None:
            set_sources(tuple(msg.roster))
        self.roster_gen = msg.generation
        self.hb.roster_gen, self.hb.gone = self.roster_gen, tuple(sorted(self.gone))
        self.hb.beat()  # the supervisor waits for this before it starts or stops a capture

    def _forget(self, source: str) -> None:
        """A removed source's end of stream has passed: nothing of it is kept."""
        self.sources.discard(source)
        self.ended.discard(source)
        self.leaving.discard(source)
        self.gone.add(source)
        c = self.counters
        for per_source in (c.last_seq, c.age_buckets, c.age_sum_s, c.objects):
            per_source.pop(source, None)  # type: ignore[attr-defined]
        self._rings.forget(lambda name: name.endswith(f"-{source}.ring"))
        forget = getattr(self.stage, "forget_source", None)  # e.g. the recorder's encoder thread
        if forget is not None:
            forget(source)
        log.info("stage %s: source=%s removed", self.spec.name, source)
        if hasattr(self, "hb"):
            self.hb.gone = tuple(sorted(self.gone))
            self.hb.beat()

    def _finish(self) -> None:
        self.hb.state = "done"
        if self.reporter is not None:
            outcomes = getattr(self.reporter, "sink_outcomes", None)
            close = getattr(self.reporter, "close", None)
            if outcomes is not None and close is not None:
                close()  # the sinks write what they hold: their outcomes are final
            self.hb.send(encode_control(RunReport(stage=self.spec.name, sources=self.reporter.reports(),
                                                  sinks=outcomes() if outcomes is not None else {})))

    def _wait_until_released(self) -> None:
        """ZeroMQ discards what a peer has not read yet when the sender disconnects, so a
        stage that has sent its last frames stays connected (heartbeating 'done') until
        the supervisor, seeing the last stage finish, tells everyone to go. A stage sending to
        another host is the last one here: it hands its queue over as it closes (linger)."""
        if self.out is None or self.spec.output_linger_s > 0:
            return
        while not self.stop():
            self._poll_control()
            time.sleep(0.05)

    def _poll_control_once(self) -> None:
        """``_poll_control`` from inside a blocked send, not again from inside itself."""
        if not self._in_control:
            self._in_control = True
            try:
                self._poll_control()
            finally:
                self._in_control = False

    def _poll_control(self) -> None:
        parts = recv_parts(self.ctl, 0)
        if parts is None:
            return
        try:
            msg = decode_control(parts[0])
        except ProtocolError as exc:
            log.warning("ignoring control message: %s", exc)
            return
        if isinstance(msg, Control) and msg.command == "drain":
            # what is left goes out with a deadline: downstream may already be gone
            self._give_up_at = time.monotonic() + 3.0
            if not self.sources - self.leaving:  # every source was removed: nothing to wait for
                self.stop.stopped = True
            for source in sorted(self.sources):
                if source not in self.ended:
                    last = self.counters.last_seq.get(source, -1)
                    self._on_event(EndOfStream(source, last + 1, "drained"))
        elif isinstance(msg, Control) and msg.command == "stop":
            self.stop.stopped = True
        elif isinstance(msg, Control) and msg.command == "roster":
            self._apply_roster(msg)
        elif isinstance(msg, Control) and msg.command == "sources":
            show = getattr(self.stage, "source_states", None)  # the output stage passes them to its sinks
            if show is not None:
                show(dict(msg.sources))

    def _step(self) -> None:
        batch: list[Frame] = []
        deadline: float | None = None
        while len(batch) < max(1, self.stage.max_batch):
            if deadline is None:
                timeout_ms = 100
            else:
                timeout_ms = max(0, int((deadline - time.monotonic()) * 1000))
            parts = recv_parts(self.inp, timeout_ms)
            if parts is None:
                break
            try:
                msg = self._check(decode(parts))
                frame = self._attach(msg) if isinstance(msg, Frame) else None
            except ProtocolError as exc:
                self._malformed(exc)
                continue
            if isinstance(msg, Frame):
                if frame is not None:
                    # the last stage sends nowhere: its stamp is when it got the frame, before the sinks
                    batch.append(frame if self.out is not None else frame.evolve(stamp=self.spec.name))
                    if deadline is None:
                        deadline = time.monotonic() + self.stage.max_wait_ms / 1000.0
                if self.stage.max_batch <= 1 or time.monotonic() >= (deadline or 0):
                    break
            else:
                self._run_batch(batch)
                batch = []
                self._on_event(msg)
                return
        self._run_batch(batch)

    def _check(self, msg: Frame | EndOfStream | Reset) -> Frame | EndOfStream | Reset:
        """Refuse what this run cannot have sent: a source it does not have (a stray
        end-of-stream would end the stage), pixels in another source's ring."""
        source = msg.source
        if source not in self.sources:
            raise ProtocolError(f"source {source[:64]!r} is not one of this run's sources")
        if isinstance(msg, Frame):
            px = msg.header.pixels
            if px is not None and msg.image is None and not px.ring.endswith(f"-{source}.ring"):
                raise ProtocolError(f"source={source} seq={msg.seq}: ring {px.ring[:80]!r} is not this source's")
        return msg

    def _malformed(self, exc: ProtocolError) -> None:
        """A message that cannot be a frame of this run: counted, dropped, the stage goes on.
        Logged for the first 10, then every 100th, so a flood cannot flood the log."""
        self.counters.errors += 1
        self._n_malformed += 1
        n = self._n_malformed
        if n <= 10 or n % 100 == 0:
            log.error("stage %s: dropped a malformed message (%d so far): %s", self.spec.name, n, exc)

    def _attach(self, frame: Frame) -> Frame | None:
        h = frame.header
        if h.pixels is None or frame.image is not None:
            self._count_in(frame)
            return None if self._stale(frame) else frame
        try:
            ring = self._rings.get(h.pixels.ring)
        except TransportError as exc:
            raise ProtocolError(f"source={h.source} seq={h.seq}: {exc}") from None
        ring.check(h.pixels)  # ProtocolError: slot or shape outside the ring
        self._count_in(frame)
        if self._stale(frame):
            return None
        if not ring.valid(h.pixels):
            self._drop(frame, "overwritten")
            return None
        return Frame(h, frame.arrays, ring.view(h.pixels))

    def _stale(self, frame: Frame) -> bool:
        """A live frame that waited longer than its source's stale_after_s since the previous
        stage sent it (this one was stalled) is dropped before any work is spent on it. Only
        the wait counts, not the work upstream, so a slow pipeline is never starved; the last
        stage delivers what it gets."""
        bound = self._stale_after_s.get(frame.source)
        if bound is None or self.out is None:
            return False
        h = frame.header
        sent_ns = h.stamps[-1][1] if h.stamps else h.capture_ns
        if (time.time_ns() - sent_ns) / 1e9 <= bound:
            return False
        self._drop(frame, "stale")
        return True

    def _count_in(self, frame: Frame) -> None:
        h = frame.header
        self.counters.frames_in += 1
        self.counters.last_seq[h.source] = max(h.seq, self.counters.last_seq.get(h.source, -1))

    def _drop(self, frame: Frame, reason: str) -> None:
        """Count the drop and release the frame's ring slot: a file source waits for it."""
        self.counters.drop(frame.source, frame.seq, reason)
        log.debug("source=%s seq=%d dropped: %s", frame.source, frame.seq, reason)
        self._release(frame)

    def _release(self, frame: Frame) -> None:
        """This frame's way ends here (delivered or dropped): free its ring slot."""
        px = frame.header.pixels
        if px is None or self.spec.inline_pixels:
            return
        try:
            ring = self._rings.get(px.ring)
            ring.check(px)
        except (TransportError, ProtocolError):
            return  # not a slot of ours (a malformed message that carried its own pixels)
        ring.release(px)

    def _run_batch(self, batch: list[Frame]) -> None:
        if not batch:
            return
        t0 = time.perf_counter()
        self.counters.busy_since = time.monotonic()
        try:
            outputs = self.stage.process_batch(batch)
        except Exception as exc:  # noqa: BLE001 — a per-frame failure must not stop the stage
            self.counters.busy_since = 0.0
            if len(batch) > 1:
                # one bad frame must not take the others with it: each frame again, alone
                # (stages that keep state across frames run with max_batch 1)
                log.warning("stage %s: a batch of %d frames failed (%s); retrying them one by one",
                            self.spec.name, len(batch), exc)
                for f in batch:
                    self._run_batch([f])
            elif isinstance(exc, FrameDropped):
                self._drop(batch[0], exc.reason)
            else:
                f = batch[0]
                self.counters.errors += 1
                log.error("source=%s seq=%d stage %s failed: %s", f.source, f.seq, self.spec.name, exc,
                          exc_info=log.isEnabledFor(logging.DEBUG))
                self._drop(f, "error")
            return
        finally:
            self.counters.busy_since = 0.0
        per_frame_ms = (time.perf_counter() - t0) * 1000.0 / len(batch)
        for frame_in, out in zip(batch, outputs, strict=True):
            self.latency.add(per_frame_ms)
            if out is None:
                self._drop(frame_in, "filtered")
                continue
            px = frame_in.header.pixels
            # (the last stage has delivered the frame already: it was checked when it arrived)
            if px is not None and frame_in.image is not None and not self.spec.inline_pixels and self.out is not None:
                ring = self._rings.get(px.ring)
                if not ring.valid(px):  # overwritten while we used it: the result is suspect
                    self._drop(frame_in, "overwritten")
                    continue
                if out.image is not None and out.image is not frame_in.image and not self._write_back(out, px, ring):
                    continue
            self._emit(out.evolve(stamp=self.spec.name) if self.out is not None else out)

    def _write_back(self, frame: Frame, px: PixelRef, ring: FrameRing) -> bool:
        """The stage replaced the pixels (``frame.evolve(image=new)``, e.g. preprocess): only
        the PixelRef travels in shm mode, so copy them into the frame's slot. False: dropped."""
        image = frame.image
        if image is None or image.shape != (px.height, px.width, px.channels) or image.dtype.str != "|u1":
            self.counters.errors += 1
            log.error("source=%s seq=%d stage %s returned an image of shape %s %s; in shared memory it must "
                      "keep the frame's %dx%dx%d uint8", frame.source, frame.seq, self.spec.name,
                      getattr(image, "shape", None), getattr(image, "dtype", None), px.height, px.width, px.channels)
            self._drop(frame, "error")
            return False
        ring.writable_view(px)[...] = image
        if not ring.valid(px):
            self._drop(frame, "overwritten")
            return False
        return True

    def _emit(self, frame: Frame) -> None:
        if self.out is None:  # the stage delivered it in process_batch
            self.counters.observe_age(frame.source, (time.time_ns() - frame.header.capture_ns) / 1e9)
            self.counters.observe_objects(frame)
            self._release(frame)
            self.counters.frames_out += 1
            return
        parts = encode_frame(frame, inline_image=self.spec.inline_pixels, image_codec=self.spec.image_codec,
                             jpeg_quality=self.spec.jpeg_quality)
        # a drain must reach a stage blocked here (its downstream gone, e.g. the other host)
        if send_parts(self.out, parts, block=True, timeout_s=0.2, should_stop=self._should_stop_sending,
                      on_wait=self._poll_control_once):
            self.counters.frames_out += 1
            if self.reporter is not None:  # reports what it handed to the next host
                self.reporter.write(frame)
        else:
            self._drop(frame, "stopped")

    def _on_event(self, msg: EndOfStream | Reset) -> None:
        self.stage.end_source(msg.source)
        if self.reporter is not None:
            self.reporter.event(msg)
        if isinstance(msg, EndOfStream):
            self.ended.add(msg.source)
            log.info("stage %s: end of stream for source=%s (%s)", self.spec.name, msg.source, msg.reason)
        if self.out is not None:
            send_parts(self.out, encode_message(msg), block=True, timeout_s=0.2, should_stop=self._should_stop_sending)
        if isinstance(msg, EndOfStream) and msg.source in self.leaving:
            self._forget(msg.source)
