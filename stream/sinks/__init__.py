"""Sinks: where frames leave the pipeline (debug JSONL, publish, record, live view, mqtt,
restream). Record, restream and the live view's H.264 viewers share one encode per
source: ``stream.sinks.encode.EncoderPool`` is a sink too, placed first, and feeds them
its packets.

A sink is configured once and called per frame from the output stage::

    class Sink(Protocol):
        name: str
        def write(self, frame: Frame) -> None
        def end_source(self, source: str) -> None
        def close(self) -> None

A sink that raises is logged (with source and seq) and counted; after
``MAX_CONSECUTIVE_FAILURES`` in a row it is disabled, and the other sinks and
the pipeline go on.

A sink that can drop (a bounded queue, a broken connection) also has
``outcomes() -> {source: {outcome: count}}``, cumulative: ``"written"`` for what
reached its output, any other key a drop reason ("queue full", "not connected",
"failed", …). Counts are frames, except for the sinks in ``MESSAGE_SINKS``, which
count messages (MQTT events). The output stage reports them in its heartbeats
(``/metrics``: ``stream_sink_frames_total``, ``stream_sink_messages_total``) and
in the run summary; an exception a sink raises is counted there as ``"failed"``.
It may be called from another thread (the heartbeat's): it only copies counters.
"""

from __future__ import annotations

from typing import Protocol

from stream.messages import Frame

MAX_CONSECUTIVE_FAILURES = 50
WRITTEN = "written"  # the outcome of what reached a sink's output
FAILED = "failed"
NO_PIXELS = "no pixels"
MESSAGE_SINKS = frozenset({"mqtt"})  # sinks whose outcomes count messages, not frames


class Sink(Protocol):
    name: str

    def write(self, frame: Frame) -> None: ...

    def end_source(self, source: str) -> None: ...

    def close(self) -> None: ...
