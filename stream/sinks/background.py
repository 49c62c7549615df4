"""A bounded queue drained by one background thread, for sinks that must never block.

``offer`` never waits: when the queue is full the item is dropped, counted, and a
warning is logged at most once per second naming the source, the seq and how many
frames were dropped since the last warning. Control items (end of source, close)
wait for room, with a timeout, so they are never lost while the worker is alive.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_STOP = object()
QUEUE_FULL = "queue full"


class BackgroundWorker:
    """Runs ``handle(item)`` for every offered item, in order, on one daemon thread.

    name: thread name and log label (e.g. "record cam0"). maxsize: queue length in
    items. handle: called on the worker thread; an exception is logged and the
    worker goes on. on_stop: called on the worker thread after the last item.
    """

    def __init__(
        self,
        name: str,
        handle: Callable[[Any], None],
        *,
        maxsize: int,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._handle = handle
        self._on_stop = on_stop
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self.dropped = 0
        self.drops: dict[str, int] = {}  # dropped frames by reason (the summary's and /metrics' outcome)
        self._dropped_since_log = 0
        self._last_log = 0.0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def offer(self, item: Any, source: str, seq: int) -> bool:
        """Queue ``item`` without waiting; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            self.count_drop(source, seq, "queue full, the encoder is behind", reason=QUEUE_FULL)
            return False

    def count_drop(self, source: str, seq: int, why: str, *, reason: str | None = None) -> None:
        """Count one dropped frame under ``reason`` (a short label; default ``why``); log
        ``why`` at most once a second."""
        self.dropped += 1
        key = reason or why
        self.drops[key] = self.drops.get(key, 0) + 1
        self._dropped_since_log += 1
        now = time.monotonic()
        if now - self._last_log >= 1.0:
            log.warning(
                "source=%s seq=%d %s: dropped %d frame(s) in the last second (%s; %d in total)",
                source,
                seq,
                self.name,
                self._dropped_since_log,
                why,
                self.dropped,
            )
            self._dropped_since_log = 0
            self._last_log = now

    def would_drop(self) -> bool:
        """True when the next ``offer`` would be dropped (lets callers skip copying pixels)."""
        return self._queue.full()

    def put_control(self, item: Any, timeout: float = 10.0) -> bool:
        """Queue a control item, waiting up to ``timeout`` s for room; False if it never came."""
        if not self._thread.is_alive():
            return False
        try:
            self._queue.put(item, timeout=timeout)
            return True
        except queue.Full:
            log.error("%s: worker did not take a control message within %.0f s", self.name, timeout)
            return False

    def close(self, timeout: float = 30.0) -> bool:
        """Finish the queued items, run ``on_stop`` and end the thread; False on timeout."""
        self.put_control(_STOP, timeout)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("%s: worker still busy after %.0f s; abandoning it", self.name, timeout)
            return False
        return True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            try:
                self._handle(item)
            except Exception as exc:  # noqa: BLE001 — one bad item must not end the worker
                log.exception("%s: %s", self.name, exc)
        if self._on_stop is not None:
            try:
                self._on_stop()
            except Exception as exc:  # noqa: BLE001
                log.exception("%s: while stopping: %s", self.name, exc)
