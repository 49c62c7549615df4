"""The end-of-run summary: per source, frames read, processed, dropped (and why),
fps and end-to-end latency; and the frames lost in flight (a stage crashed
while holding them), named by seq range."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from stream.messages import DropRecord, SourceReport
from stream.sinks import MESSAGE_SINKS, WRITTEN


@dataclass
class SourceSummary:
    source: str
    read: int
    processed: int
    dropped: dict[str, int] = field(default_factory=dict)
    lost_in_flight: list[tuple[int, int]] = field(default_factory=list)
    out_of_order: int = 0
    fps: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    hop_ms: dict[str, tuple[float, float]] = field(default_factory=dict)
    state: str = "done"
    sinks: dict[str, dict[str, int]] = field(default_factory=dict)  # sink -> outcome -> frames (see stream.sinks)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


@dataclass
class RunSummary:
    sources: list[SourceSummary]
    restarts: dict[str, int]
    wall_s: float
    random_weights: bool = False
    stopped_by: str = "end of input"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    def format(self) -> str:
        lines = []
        if self.random_weights:
            lines.append("RANDOM WEIGHTS: every model ran with random weights; outputs are not detections")
        lines.append(f"{'source':<16} {'read':>7} {'processed':>9} {'dropped':>7} {'fps':>7} {'latency p50/p99 ms':>20}")
        for s in self.sources:
            lat = f"{s.latency_p50_ms:.1f} / {s.latency_p99_ms:.1f}"
            lines.append(f"{s.source:<16} {s.read:>7} {s.processed:>9} {s.dropped_total:>7} {s.fps:>7.1f} {lat:>20}")
            for reason, n in sorted(s.dropped.items()):
                detail = ""
                if reason == "lost in flight" and s.lost_in_flight:
                    named = sum(b - a + 1 for a, b in s.lost_in_flight)
                    shown = s.lost_in_flight[-20:]
                    detail = ": seq " + ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in shown)
                    if named < n or len(shown) < len(s.lost_in_flight):
                        detail += " (and earlier ones)"
                lines.append(f"    dropped {n} ({reason}){detail}")
            if s.out_of_order:
                lines.append(f"    {s.out_of_order} frames arrived out of order")
            for sink, row in sorted(s.sinks.items()):
                lines.append(f"    sink {sink}: {format_outcomes(sink, row)}")
        if any(self.restarts.values()):
            lines.append("restarts: " + ", ".join(f"{k} ×{v}" for k, v in self.restarts.items() if v))
        lines.append(f"wall time {self.wall_s:.1f} s ({self.stopped_by})")
        return "\n".join(lines)


def format_outcomes(sink: str, row: dict[str, int]) -> str:
    """'120 written, 30 dropped (queue full)' (MQTT: messages, not frames)."""
    unit = " messages" if sink in MESSAGE_SINKS else ""
    parts = [f"{row.get(WRITTEN, 0)}{unit} written"]
    parts += [f"{n} {'queued' if why == 'queued' else f'dropped ({why})'}"
              for why, n in sorted(row.items()) if why != WRITTEN and n]
    return ", ".join(parts)


Outcomes = dict[str, dict[str, dict[str, int]]]  # sink -> source -> outcome -> count


def _add(into: Outcomes, more: Outcomes) -> None:
    for sink, rows in more.items():
        for source, row in rows.items():
            mine = into.setdefault(sink, {}).setdefault(source, {})
            for outcome, n in row.items():
                mine[outcome] = mine.get(outcome, 0) + n


class SinkTally:
    """The sinks' outcomes over a run. A process reports counts cumulative since it
    started, so those of a process that was replaced (a restart) are kept and added to
    its successor's."""

    def __init__(self) -> None:
        self._before: Outcomes = {}
        self._current: dict[str, Outcomes] = {}

    def update(self, proc: str, outcomes: Outcomes) -> None:
        """The latest cumulative outcomes of process ``proc``."""
        if outcomes:
            self._current[proc] = outcomes

    def replaced(self, proc: str) -> None:
        """``proc`` is being started again: what it reported stays counted."""
        _add(self._before, self._current.pop(proc, {}))

    def totals(self) -> Outcomes:
        out: Outcomes = {}
        _add(out, self._before)
        for outcomes in self._current.values():
            _add(out, outcomes)
        return out

    def of_source(self, source: str) -> dict[str, dict[str, int]]:
        return {sink: rows[source] for sink, rows in self.totals().items() if source in rows}


RECENT_KEPT = 1024  # drop records and received ranges kept per source for naming seqs


class DropLedger:
    """Every drop the stages reported, bounded for runs of weeks: a count per
    (source, reason) since the start, and the latest ``RECENT_KEPT`` records per
    source (enough to name the seqs of recent gaps)."""

    def __init__(self, recent: int = RECENT_KEPT) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self._recent: dict[str, deque[DropRecord]] = {}
        self._keep = recent

    def add(self, records: Iterable[DropRecord]) -> None:
        for d in records:
            key = (d.source, d.reason)
            self.counts[key] = self.counts.get(key, 0) + d.last - d.first + 1
            self._recent.setdefault(d.source, deque(maxlen=self._keep)).append(d)

    def recent(self, source: str | None = None) -> list[DropRecord]:
        """The kept records of ``source`` (all sources when None), oldest first."""
        if source is not None:
            return list(self._recent.get(source, ()))
        return [d for q in self._recent.values() for d in q]

    def by_reason(self, source: str) -> dict[str, int]:
        return {reason: n for (src, reason), n in self.counts.items() if src == source}


def summarize_source(report: SourceReport | None, source: str, read: int, drops: DropLedger,
                     state: str = "done", stopped: bool = False) -> SourceSummary:
    """Counts, not sets: read = processed + dropped (by reason) + unexplained. The
    unexplained are 'lost in flight' (a stage crashed holding them) or, after a stop
    request, 'in flight at stop' when they came after the last frame the sinks got.
    Their seqs are named from the recent received ranges and drop records."""
    if report:
        read = max(read, report.frames)
    processed = report.received if report else 0
    dropped = drops.by_reason(source)
    explained_n = sum(dropped.values())
    unexplained = max(0, read - processed - explained_n)
    lo = report.ranges_from if report else 0
    received = sorted((max(a, lo), b) for a, b in (report.received_ranges if report else ()) if b >= lo)
    explained = sorted((d.first, d.last) for d in drops.recent(source))
    gaps = _subtract(_subtract([(lo, read - 1)] if read > lo else [], received), explained)
    last_out = max((b for _, b in received), default=-1)
    lost = [g for g in gaps if not stopped or g[1] <= last_out]
    at_stop = [(max(a, last_out + 1), b) for a, b in gaps if stopped and b > last_out]
    at_stop_n = min(unexplained, sum(b - a + 1 for a, b in at_stop))
    if unexplained - at_stop_n:
        dropped["lost in flight"] = unexplained - at_stop_n
    if at_stop_n:
        dropped["in flight at stop"] = at_stop_n
    duration_s = (report.last_ns - report.first_ns) / 1e9 if report and report.received > 1 else 0.0
    return SourceSummary(
        source=source, read=read, processed=processed, dropped=dropped, lost_in_flight=lost,
        out_of_order=report.out_of_order if report else 0,
        fps=(processed - 1) / duration_s if duration_s > 0 else 0.0,
        latency_p50_ms=report.latency_ms[0] if report else 0.0,
        latency_p99_ms=report.latency_ms[1] if report else 0.0,
        hop_ms=dict(report.hop_ms) if report else {}, state=state,
    )


def _subtract(spans: list[tuple[int, int]], remove: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive seq ranges ``spans`` minus the (sorted) inclusive ranges ``remove``."""
    out: list[tuple[int, int]] = []
    for a, b in spans:
        cur = a
        for c, d in remove:
            if d < cur:
                continue
            if c > b:
                break
            if c > cur:
                out.append((cur, c - 1))
            cur = max(cur, d + 1)
            if cur > b:
                break
        if cur <= b:
            out.append((cur, b))
    return out
