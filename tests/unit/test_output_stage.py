"""The output stage's sinks fail alone: a sink that raises in a lifecycle call (reset, the
sources' states, a new roster, a removed source, end of stream, close) is logged with its
name (and the source), and every other sink still gets the call."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from stream.messages import EndOfStream, Reset, RosterEntry
from stream.stages.output import OutputStage

CALLS = ("reset", "source_states", "set_sources", "forget_source", "end_source", "close")


class Recorder:
    """A sink that notes each lifecycle call it gets; ``broken`` ones raise in every one."""

    wants_annotated = False

    def __init__(self, name: str, broken: bool = False) -> None:
        self.name, self.broken = name, broken
        self.calls: list[tuple[str, Any]] = []

    def _note(self, call: str, arg: Any = None) -> None:
        self.calls.append((call, arg))
        if self.broken:
            raise OSError(f"{self.name} cannot {call}")

    def write(self, frame: Any) -> None:
        pass

    def reset(self, source: str) -> None:
        self._note("reset", source)

    def source_states(self, states: dict[str, str]) -> None:
        self._note("source_states", dict(states))

    def set_sources(self, roster: Any) -> None:
        self._note("set_sources", tuple(e.source for e in roster))

    def forget_source(self, source: str) -> None:
        self._note("forget_source", source)

    def end_source(self, source: str) -> None:
        self._note("end_source", source)

    def close(self) -> None:
        self._note("close")


def test_a_sink_failing_in_each_lifecycle_call_is_logged_and_the_others_still_get_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, good, last = Recorder("first", broken=True), Recorder("good"), Recorder("last", broken=True)
    stage = OutputStage([first, good, last])  # type: ignore[list-item]
    caplog.set_level(logging.ERROR, logger="stream.stages.output")
    stage.event(Reset("cam0", 7, "reconnected"))
    stage.source_states({"cam0": "streaming"})
    stage.set_sources((RosterEntry("cam0"), RosterEntry("cam1")))
    stage.event(EndOfStream("cam1", 3, "eof"))  # counted for the summary, not a sink call
    stage.end_source("cam1")
    stage.forget_source("cam1")
    stage.close()
    stage.close()  # once only
    expected = [("reset", "cam0"), ("source_states", {"cam0": "streaming"}), ("set_sources", ("cam0", "cam1")),
                ("end_source", "cam1"), ("forget_source", "cam1"), ("close", None)]
    assert first.calls == good.calls == last.calls == expected
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        f"{prefix}sink {name} failed {what}: {name} cannot {call}"
        for call, prefix, what in [
            ("reset", "source=cam0 ", "to reset"),
            ("source_states", "", "to take the source states"),
            ("set_sources", "", "to take the new sources"),
            ("end_source", "source=cam1 ", "at end of stream"),
            ("forget_source", "source=cam1 ", "to let it go"),
            ("close", "", "to close"),
        ]
        for name in ("first", "last")
    ]
