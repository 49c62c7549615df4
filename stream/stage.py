"""The Stage protocol: what a stage is to the loop that runs it (``stream.runner``).

A stage is a small class built from its config section::

    class Stage(Protocol):
        name: str
        max_batch: int         # frames per process_batch call (1 = one at a time)
        max_wait_ms: float     # how long to wait to fill a batch
        def start(self) -> None                       # load models, open files
        def process_batch(self, frames) -> list[Frame | None]
        def end_source(self, source: str) -> None     # end of stream / reset: free per-source state
        def close(self) -> None
        # optional: def set_sources(self, roster: tuple[RosterEntry, ...]) -> None
        #   the run's sources changed at runtime (stream.control): every source now
        # optional: def forget_source(self, source: str) -> None
        #   a source removed at runtime has ended here: nothing of it needs to stay
        # optional: def source_states(self, states: dict[str, str]) -> None
        #   the supervisor's view of each source (the output stage passes it to its sinks)

Sources can be added and removed while the run goes on (the control API): the
supervisor publishes a ``Control('roster')`` and waits until every stage's heartbeat
acknowledges its generation before a new source's capture starts, or a removed one's
stops. A removed source is still accepted until its end of stream, which frees its
state here (``end_source``) and is then reported in ``Heartbeat.gone``.

``process_batch`` returns one output per input: a new Frame (never the input
mutated) or None to drop it on purpose; raising ``FrameDropped`` drops the frame
with its reason, any other exception is a logged, counted drop. Frames of one
source arrive in seq order. The last stage (``stream.stages.output``) is a stage
like the others: its ``process_batch`` hands each frame to the sinks, and what it
delivered is read from it at the end (``Reporter``).

A stage knows no socket, ring or supervisor: the loop does that (``stream.runner``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from stream.messages import EndOfStream, Frame, Reset, SourceReport


class Stage(Protocol):
    name: str
    max_batch: int
    max_wait_ms: float

    def start(self) -> None: ...

    def process_batch(self, frames: Sequence[Frame]) -> list[Frame | None]: ...

    def end_source(self, source: str) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Reporter(Protocol):
    """What reached the end of this host's part of the run, per source, for the summary:
    the last stage itself, or upstream of a split the ledger of what crossed the hop."""

    def write(self, frame: Frame) -> None: ...

    def event(self, msg: EndOfStream | Reset) -> None: ...

    def reports(self) -> tuple[SourceReport, ...]: ...

    def close(self) -> None: ...


class StageBase:
    """Convenience base: per-frame ``process``; override what you need."""

    name = "stage"
    max_batch = 1
    max_wait_ms = 0.0

    def start(self) -> None:
        pass

    def process(self, frame: Frame) -> Frame | None:
        return frame

    def process_batch(self, frames: Sequence[Frame]) -> list[Frame | None]:
        return [self.process(f) for f in frames]

    def end_source(self, source: str) -> None:
        pass

    def close(self) -> None:
        pass
