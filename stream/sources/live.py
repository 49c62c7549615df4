"""Live sources that reconnect: the engine shared by network streams (rtsp/rtmp/http
through PyAV, ``stream.sources.rtsp``) and webcams (OpenCV, ``stream.sources.webcam``).

A ``LiveSource`` runs a reader thread that owns the connection. It connects (state
``connecting``), reads and decodes without pause (``streaming``), and when the
connection fails, ends, or delivers no clean frame for ``stall_s`` (``stalled``) it
closes it and connects again: at once after a stream that was flowing, then after a
capped exponential backoff with jitter (``failed`` while it waits). A failing source
never raises into the capture unless ``max_attempts`` failed attempts in a row were
made; it keeps retrying and says why in its status.

Decoded frames wait in an edge buffer of ``buffer`` frames; when it is full the oldest
is dropped. The consumer (the capture process) iterates ``frames()``; every
``SourceFrame`` has a BGR uint8 image (H,W,3), at most ``max_width``×``max_height``
(a larger frame is downscaled, aspect kept, with a warning), a pts in ``TIME_BASE``
units (1/90000 s) that strictly increases across reconnects (an outage advances it by
its wall-clock length), and in ``extra``:

- ``capture_ns``: wall-clock time (``time.time_ns``) the frame was decoded;
- ``skipped``: ``{reason: n}`` frames lost just before this one: ``"downstream busy"``
  (dropped from the full edge buffer), ``"corrupt"`` (undecodable or concealed
  frames, up to the next clean keyframe), ``"source outage"`` (the frames the source
  would have produced while it was away, estimated from its frame rate);
- ``reset``: on the first frame of every connection after the first, why: per-source
  state downstream (tracks, masks, recorder segment) must start fresh.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

from stream.backoff import Backoff
from stream.config import SourceConfig
from stream.errors import SourceError
from stream.sources.base import SourceFrame, SourceInfo
from stream.sources.connection import BAD, TICK, Connection, Decoded, LiveStatus, StreamStalled
from stream.sources.edge import TICKS, TIME_BASE, EdgeBuffer, PtsClock

__all__ = ["BAD", "TICK", "Backoff", "Connection", "Decoded", "LiveSource", "LiveStatus", "StreamStalled"]

log = logging.getLogger(__name__)

# Logged at WARNING: the first few failed attempts in a row, then one line this often.
_LOUD_ATTEMPTS = 3
_QUIET_LOG_S = 30.0
_STEADY_S = 10.0  # a connection that streamed this long resets the backoff when it ends


class LiveSource:
    """A reconnecting live source (see the module doc). Implements the Source protocol.

    name: the source id (for log lines). label: what is opened, secrets masked (for logs).
    connect(stall_s): opens a Connection (raises SourceError); the reader thread calls it.
    check(): offline validation run by ``open()`` (url form, device form); raises SourceError.
    fps: the configured rate, used until a connection states its own (0/None: unknown).
    stall_timeout_s: None → max(2 frame intervals, 2 s). max_attempts: None retries forever.
    scrub: removes secrets from error text. clock, rng: injectable for tests.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[float], Connection],
        *,
        label: str,
        max_width: int = 1920,
        max_height: int = 1080,
        fps: float | None = None,
        buffer: int = 1,
        max_in_flight: int = 2,
        stall_timeout_s: float | None = None,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
        check: Callable[[], None] = lambda: None,
        scrub: Callable[[str], str] = lambda text: text,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if buffer < 1 or max_in_flight < 1:
            raise SourceError(f"source {name}: buffer and max_in_flight must be >= 1")
        self.name = name
        self.label = label
        self.max_width = max_width
        self.max_height = max_height
        self.fps_hint = fps or 0.0
        self.buffer = buffer
        self.max_in_flight = max_in_flight
        self.stall_timeout_s = stall_timeout_s
        self.max_attempts = max_attempts
        self.on_status: Callable[[LiveStatus], None] | None = None
        self.status = LiveStatus("connecting", f"not started ({label})")
        self._connect = connect
        self._check = check
        self._scrub = scrub
        self._clock = clock
        self._backoff = backoff or Backoff(0.25, 2.0)
        self._edge = EdgeBuffer(buffer)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fatal: SourceError | None = None
        self._pts = PtsClock()
        self._last_frame_at: float | None = None  # monotonic time of the newest clean frame
        self._last_desc = ""
        self._conn_started = 0.0
        self._failures = 0
        self._failing_since = 0.0
        self._last_loud = 0.0
        self._reconnects = 0
        self._last_outage = 0.0
        self._size_warned = ""

    @classmethod
    def from_config(
        cls,
        cfg: SourceConfig,
        connect: Callable[[float], Connection],
        *,
        label: str,
        max_size: tuple[int, int] | None = None,
        check: Callable[[], None] = lambda: None,
        scrub: Callable[[str], str] = lambda text: text,
    ) -> LiveSource:
        """A LiveSource with the live settings of ``cfg`` (max size, buffer, timeouts, reconnect)."""
        r = cfg.reconnect
        width, height = max_size or (cfg.max_width, cfg.max_height)
        return cls(
            cfg.id,
            connect,
            label=label,
            max_width=width,
            max_height=height,
            fps=cfg.fps,
            buffer=cfg.buffer,
            max_in_flight=cfg.max_in_flight,
            stall_timeout_s=cfg.stall_timeout_s,
            backoff=Backoff(r.initial_s, r.max_s, r.jitter, fast_s=r.fast_s, fast_for_s=r.fast_for_s),
            max_attempts=r.max_attempts,
            check=check,
            scrub=scrub,
        )

    # --- Source protocol -----------------------------------------------------
    def open(self) -> SourceInfo:
        """Validate offline (no connection is made: a camera that is down must not stop the
        run from starting) and return the ring geometry: max_width×max_height, live."""
        self._check()
        return SourceInfo(
            width=self.max_width, height=self.max_height, fps=self.fps_hint, time_base=TIME_BASE, live=True
        )

    def probe(self) -> SourceInfo:
        """Connect once, read the first clean frame and return the stream's real geometry
        (``stream check``). Raises SourceError saying what failed."""
        self._check()
        conn = self._connect(self.stall_s())
        why = "the stream ended"
        try:
            deadline = self._clock() + self.stall_s(conn.fps)
            for d in conn.frames():
                if d.kind == "frame":
                    return SourceInfo(
                        width=d.width,
                        height=d.height,
                        fps=conn.fps or self.fps_hint,
                        time_base=TIME_BASE,
                        live=True,
                    )
                if self._clock() > deadline:
                    why = f"none within {self.stall_s(conn.fps):.1f} s"
                    break
        except SourceError as exc:
            why = self._scrub(str(exc))
        finally:
            conn.close()
        raise SourceError(f"{self.label}: connected ({conn.description}) but no clean frame arrived: {why}")

    def frames(
        self, start: int = 0, *, should_stop: Callable[[], bool] = lambda: False
    ) -> Iterator[SourceFrame]:
        """Frames as they come, forever (``start`` is ignored: a live stream cannot seek).
        Returns when ``should_stop()`` turns true (checked every 0.1 s while waiting); raises
        SourceError once ``max_attempts`` failed attempts in a row were made."""
        self._start()
        while True:
            entry = self._edge.take(0.1)
            if entry is None:
                if self._fatal is not None:
                    raise self._fatal
                if should_stop() or self._stop.is_set():
                    return
                continue
            pending = entry.before
            image = self._image(entry.decoded)
            extra: dict[str, object] = {"capture_ns": entry.capture_ns}
            if pending.skipped:
                extra["skipped"] = pending.skipped
            if pending.reset:
                extra["reset"] = pending.reset
            yield SourceFrame(image=image, pts=entry.pts, extra=extra)

    def close(self) -> None:
        """Stop the reader thread (it finishes its current read: at most the read timeout)."""
        self._stop.set()
        self._edge.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10.0)
            if thread.is_alive():
                log.warning("source=%s: the reader thread did not stop within 10 s", self.name)

    # --- helpers ---------------------------------------------------------------
    def stall_s(self, fps: float = 0.0) -> float:
        """Seconds without a clean frame after which the stream counts as stalled."""
        if self.stall_timeout_s is not None:
            return self.stall_timeout_s
        rate = fps or self.fps_hint
        return max(2.0, 2.0 / rate) if rate > 0 else 2.0

    def fit(self, width: int, height: int) -> tuple[int, int]:
        """The size a width×height frame is stored at: itself, or downscaled (aspect kept,
        even sizes) to fit max_width×max_height."""
        if width <= self.max_width and height <= self.max_height:
            return width, height
        scale = min(self.max_width / width, self.max_height / height)
        return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)

    def _image(self, d: Decoded) -> np.ndarray:
        assert d.image is not None  # only clean frames are queued
        w, h = self.fit(d.width, d.height)
        if (w, h) != (d.width, d.height) and self._size_warned != f"{d.width}x{d.height}":
            self._size_warned = f"{d.width}x{d.height}"
            log.warning(
                "source=%s: %dx%d frames exceed max_width×max_height %dx%d; downscaling to %dx%d "
                "(raise max_width/max_height to keep the full resolution)",
                self.name,
                d.width,
                d.height,
                self.max_width,
                self.max_height,
                w,
                h,
            )
        return np.ascontiguousarray(d.image(w, h))

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"live-{self.name}", daemon=True)
            self._thread.start()

    def _report(self, state: str, detail: str) -> None:
        self.status = LiveStatus(state, detail, self._failures, self._reconnects, self._last_outage)
        callback = self.on_status
        if callback is not None:
            try:
                callback(self.status)
            except Exception as exc:  # noqa: BLE001 — a status listener must not kill the reader
                log.error("source=%s: status callback failed: %s", self.name, exc)

    # --- the reader thread -------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._report("connecting", f"connecting to {self.label}")
            t0 = self._clock()
            try:
                conn = self._connect(self.stall_s())
            except Exception as exc:  # noqa: BLE001 — SourceError, or any failure of the library below
                if self._stop.is_set() or not self._attempt_failed(self._why(exc), t0, "failed"):
                    return
                continue
            try:
                got, why, state = self._stream(conn)
            finally:
                try:
                    conn.close()
                except Exception as exc:  # noqa: BLE001
                    log.debug("source=%s: closing the connection: %s", self.name, self._why(exc))
            if self._stop.is_set():
                return
            if not got:
                if not self._attempt_failed(why, t0, state):
                    return
                continue
            # It was flowing: reconnect at once with a fresh backoff, unless it flaps
            # (connections that die within seconds back off like failed attempts).
            flapping = self._clock() - self._conn_started < _STEADY_S
            if not flapping:
                self._backoff.reset()
            delay = self._backoff.next() if flapping else 0.0
            log.warning(
                "source=%s: %s (%s); reconnecting%s",
                self.name,
                why,
                self.label,
                f" in {delay:.1f} s" if delay else "",
            )
            self._report(state, why)
            if self._stop.wait(delay):
                return

    def _why(self, exc: BaseException) -> str:
        text = self._scrub(str(exc)) or type(exc).__name__
        if not isinstance(exc, SourceError):
            log.debug(
                "source=%s: unexpected %s from the connection",
                self.name,
                type(exc).__name__,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            text = f"{type(exc).__name__}: {text}"
        return text

    def _attempt_failed(self, why: str, t0: float, state: str) -> bool:
        """Count a failed attempt, report it and wait the backoff. False: give up (or stopping)."""
        now = self._clock()
        if self._failures == 0:
            self._failing_since = now
        self._failures += 1
        took = now - t0
        if self.max_attempts is not None and self._failures >= self.max_attempts:
            msg = f"{self.label}: gave up after {self._failures} failed attempts in a row; last: {why}"
            log.error("source=%s: %s", self.name, msg)
            self._report("failed", msg)
            self._fatal = SourceError(msg)
            self._edge.close()
            return False
        delay = self._backoff.next()
        line = f"attempt {self._failures} failed after {took:.1f} s: {why}; retrying in {delay:.1f} s"
        if self._failures <= _LOUD_ATTEMPTS or now - self._last_loud >= _QUIET_LOG_S:
            self._last_loud = now
            if self._failures > _LOUD_ATTEMPTS:
                line += f" (failing for {now - self._failing_since:.0f} s)"
            log.warning("source=%s: %s: %s", self.name, self.label, line)
        else:
            log.debug("source=%s: %s: %s", self.name, self.label, line)
        self._report(state if state == "stalled" else "failed", line)
        return not self._stop.wait(delay)

    def _stream(self, conn: Connection) -> tuple[bool, str, str]:
        """Read one connection until it ends. Returns (delivered a frame, why it ended, state)."""
        got = False
        stall_s = self.stall_s(conn.fps)
        last_clean = self._clock()
        try:
            for d in conn.frames():
                if self._stop.is_set():
                    return got, "stopped", "connecting"
                now = self._clock()
                if d.kind != "frame":
                    if d.kind == "bad":
                        self._edge.count("corrupt")
                    if now - last_clean > stall_s:
                        return got, f"no clean frame for {now - last_clean:.1f} s (stalled)", "stalled"
                    continue
                if not got:
                    got = True
                    self._first_frame(conn, now)
                last_clean = now
                self._last_frame_at = now
                self._push(d, now)
        except StreamStalled as exc:
            return got, self._why(exc), "stalled"
        except Exception as exc:  # noqa: BLE001 — a failing library call is one failed connection
            return got, self._why(exc), "failed"
        return got, "the stream ended", "connecting"

    def _first_frame(self, conn: Connection, now: float) -> None:
        fps = conn.fps or self.fps_hint
        prev = self._last_frame_at
        reset = None
        missing = 0
        if prev is not None:
            self._last_outage = now - prev
            self._reconnects += 1
            if fps > 0:
                missing = max(1, round(self._last_outage * fps) - 1)
            else:
                missing = 1
            changed = (
                ""
                if conn.description == self._last_desc
                else f"; was {self._last_desc}, now {conn.description}"
            )
            reset = f"reconnected after {self._last_outage:.1f} s without frames{changed}"
            log.warning(
                "source=%s: streaming again after %.1f s (%s, %s); downstream state of %s starts fresh",
                self.name,
                self._last_outage,
                self.label,
                conn.description,
                self.name,
            )
            self._pts.start(self._pts.last + max(1, round(self._last_outage * TICKS)), now)
        else:
            log.info("source=%s: streaming %s (%s)", self.name, self.label, conn.description)
            self._pts.start(0, now)
        self._last_desc = conn.description
        self._conn_started = now
        self._failures = 0
        self._edge.restart(missing, reset)
        self._report("streaming", conn.description)

    def _push(self, d: Decoded, now: float) -> None:
        self._edge.push(d, self._pts.pts(d.media_s, now), time.time_ns())
