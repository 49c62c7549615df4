"""What every pipeline process (a stage or a capture) runs beside its work: the counters
its heartbeats carry, the heartbeat thread, the latency window, the SIGTERM stop flag,
and the one-line report of a process that failed before it was ready."""

from __future__ import annotations

import bisect
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from stream.messages import AGE_BUCKETS_S, DropRecord, Frame, Heartbeat, encode_control
from stream.report import percentile
from stream.transport.sockets import open_socket, send_parts


class LatencyWindow:
    """Rolling window of the last ``size`` durations (ms) → (p50, p99), interpolated as
    ``stream.report.percentile`` does. A float64 ring: 8 bytes a value (a deque of Python
    floats took 32: the output's 100,000-frame windows, one per source and hop, grew by
    3.2 MB each over their first hours, which a soak reads as a leak)."""

    def __init__(self, size: int = 1024) -> None:
        self._ring = np.empty(size, np.float64)  # pages are touched as it fills
        self._n = 0
        self._next = 0

    def add(self, ms: float) -> None:
        self._ring[self._next] = ms
        self._next = (self._next + 1) % len(self._ring)
        self._n = min(self._n + 1, len(self._ring))

    def quantiles(self) -> tuple[float, float]:
        if not self._n:
            return (0.0, 0.0)
        data = self._ring[: self._n].tolist()
        return (percentile(data, 50), percentile(data, 99))


@dataclass
class Counters:
    """What a process reports in its heartbeats. Written by the main loop, read by
    the heartbeat thread; drops are handed over under a lock so none is lost."""

    frames_in: int = 0
    frames_out: int = 0
    errors: int = 0
    pending_drops: list[DropRecord] = field(default_factory=list)
    last_seq: dict[str, int] = field(default_factory=dict)
    busy_since: float = 0.0  # monotonic time the current batch started, 0 when idle
    age_buckets: dict[str, list[int]] = field(default_factory=dict)  # see Heartbeat.age_buckets
    age_sum_s: dict[str, float] = field(default_factory=dict)
    objects: dict[str, tuple[int, int]] = field(default_factory=dict)  # see Heartbeat.objects
    sink_outcomes: Callable[[], dict[str, dict[str, dict[str, int]]]] | None = None  # see Heartbeat.sinks
    _last_sinks: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def observe_age(self, source: str, age_s: float) -> None:
        """One frame of ``source`` reached the end of the pipeline ``age_s`` after its capture."""
        counts = self.age_buckets.setdefault(source, [0] * (len(AGE_BUCKETS_S) + 1))
        counts[bisect.bisect_left(AGE_BUCKETS_S, age_s)] += 1
        self.age_sum_s[source] = self.age_sum_s.get(source, 0.0) + age_s

    def observe_objects(self, frame: Frame) -> None:
        """The newest frame of its source at the end of the pipeline: how many objects, how many masked."""
        a = frame.arrays
        boxes = a.get("boxes")
        kinds = a.get("mask_kind")
        masked = int((kinds != 2).sum()) if kinds is not None else 0  # 2: no mask (stream.stages.segment)
        self.objects[frame.source] = (len(boxes) if boxes is not None else 0, masked)

    def age_snapshot(self) -> tuple[dict[str, tuple[int, ...]], dict[str, float]]:
        """Cumulative bucket counts (le=each bound, then +Inf) and sums, per source."""
        cumulative = {src: tuple(itertools.accumulate(list(c))) for src, c in list(self.age_buckets.items())}
        return cumulative, dict(self.age_sum_s)

    def sinks_snapshot(self) -> dict[str, dict[str, dict[str, int]]]:
        """``sink_outcomes()`` read from the heartbeat thread (the last good one if a sink's
        dict changed size under it: the next beat has the new figures)."""
        if self.sink_outcomes is not None:
            try:
                self._last_sinks = self.sink_outcomes()
            except RuntimeError:
                pass
        return self._last_sinks

    def drop(self, source: str, seq: int, reason: str) -> None:
        with self._lock:
            last = self.pending_drops[-1] if self.pending_drops else None
            if last and last.source == source and last.reason == reason and last.last == seq - 1:
                self.pending_drops[-1] = DropRecord(source, reason, last.first, seq)
            else:
                self.pending_drops.append(DropRecord(source, reason, seq, seq))

    def take_drops(self) -> tuple[DropRecord, ...]:
        with self._lock:
            drops, self.pending_drops = tuple(self.pending_drops), []
        return drops


class Heartbeater:
    """Sends a Heartbeat every ``interval_s`` from its own thread, so a stage busy
    in a long model call (SAM on a CPU takes seconds) still reports. A frozen
    process (SIGSTOP, swap) stops heartbeating; a main loop stuck in one batch
    shows a growing ``busy_s``, which the supervisor also acts on."""

    def __init__(self, sock: zmq.Socket[Any], name: str, counters: Counters, interval_s: float,
                 latency: LatencyWindow | None = None) -> None:
        self.sock = sock
        self.name = name
        self.counters = counters
        self.interval_s = interval_s
        self.latency = latency
        self.state = "starting"
        self.source_state: dict[str, str] = {}
        self.detail = ""
        self.roster_gen = 0  # see Heartbeat.roster_gen and .gone (sources at runtime: stream.roster)
        self.gone: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()

    def beat(self) -> None:
        c = self.counters
        busy = time.monotonic() - c.busy_since if c.busy_since else 0.0
        age_buckets, age_sum_s = c.age_snapshot()
        hb = Heartbeat(
            stage=self.name, pid=os.getpid(), time_ns=time.time_ns(), state=self.state,
            frames_in=c.frames_in, frames_out=c.frames_out, errors=c.errors, drops=c.take_drops(),
            last_seq=dict(c.last_seq), latency_ms=self.latency.quantiles() if self.latency else (0.0, 0.0),
            source_state=dict(self.source_state), detail=self.detail, busy_s=busy,
            age_buckets=age_buckets, age_sum_s=age_sum_s, objects=dict(c.objects),
            sinks=c.sinks_snapshot(), roster_gen=self.roster_gen, gone=self.gone,
        )
        self.send(encode_control(hb))

    def send(self, data: bytes) -> None:
        with self._lock:
            send_parts(self.sock, [data], block=True, timeout_s=1.0, should_stop=lambda: True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.beat()


class StopFlag:
    """Set by SIGTERM once armed; SIGINT is ignored in workers (the supervisor orchestrates Ctrl-C).

    Until ``arm()`` SIGTERM keeps its default action (the process ends at once): a stage
    loading its models has no frame to finish, and a Python handler would only run once
    the model call (seconds, in C) returns."""

    def __init__(self, *, armed: bool = True) -> None:
        self.stopped = False
        self.count = 0  # SIGTERMs received: a capture stops reading at the first, leaves at the second
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if armed:
            self.arm()

    def arm(self) -> None:
        signal.signal(signal.SIGTERM, self._set)

    def _set(self, *_: Any) -> None:
        self.stopped = True
        self.count += 1

    def __call__(self) -> bool:
        return self.stopped


def one_line(exc: BaseException) -> str:
    """An error's message on one line (what the supervisor prints when a stage cannot start)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def report_failed_start(endpoint: str, name: str, detail: str) -> None:
    """Tell the supervisor on its heartbeat ``endpoint`` that stage ``name`` failed before
    it was ready (used when the failure came before a StageRunner existed)."""
    ctx = zmq.Context()
    try:
        sock = open_socket(ctx, endpoint, hwm=10)
        hb = Heartbeat(stage=name, pid=os.getpid(), time_ns=time.time_ns(), state="failed", detail=detail)
        send_parts(sock, [encode_control(hb)], block=True, timeout_s=1.0, should_stop=lambda: True)
        sock.close(linger=1000)
    finally:
        ctx.term()
