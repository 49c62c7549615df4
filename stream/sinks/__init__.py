"""Sinks: where frames leave the pipeline (debug JSONL, publish, record, live view, mqtt).

A sink is configured once and called per frame from the output stage::

    class Sink(Protocol):
        name: str
        def write(self, frame: Frame) -> None
        def end_source(self, source: str) -> None
        def close(self) -> None

A sink that raises is logged (with source and seq) and counted; after
``MAX_CONSECUTIVE_FAILURES`` in a row it is disabled, and the other sinks and
the pipeline go on.
"""

from __future__ import annotations

from typing import Protocol

from stream.messages import Frame

MAX_CONSECUTIVE_FAILURES = 50


class Sink(Protocol):
    name: str

    def write(self, frame: Frame) -> None: ...

    def end_source(self, source: str) -> None: ...

    def close(self) -> None: ...
