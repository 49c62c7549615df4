"""The end-of-run summary: per source, frames read, processed, dropped (and why),
fps and end-to-end latency; and the frames lost in flight (a stage crashed
while holding them), named by seq range."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from stream.messages import DropRecord, SourceReport


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
                if reason == "lost in flight":
                    detail = ": seq " + ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in s.lost_in_flight)
                lines.append(f"    dropped {n} ({reason}){detail}")
            if s.out_of_order:
                lines.append(f"    {s.out_of_order} frames arrived out of order")
        if any(self.restarts.values()):
            lines.append("restarts: " + ", ".join(f"{k} ×{v}" for k, v in self.restarts.items() if v))
        lines.append(f"wall time {self.wall_s:.1f} s ({self.stopped_by})")
        return "\n".join(lines)


def summarize_source(report: SourceReport | None, source: str, read: int, drops: Iterable[DropRecord],
                     state: str = "done") -> SourceSummary:
    """Missing seqs not explained by a stage's drop record are 'lost in flight'."""
    received: list[tuple[int, int]] = list(report.received_ranges) if report else []
    if report:
        read = max(read, report.frames)
    explained: dict[int, str] = {}
    for d in drops:
        if d.source == source:
            for seq in range(d.first, d.last + 1):
                explained.setdefault(seq, d.reason)
    got: set[int] = set()
    for a, b in received:
        got.update(range(a, b + 1))
    dropped: dict[str, int] = {}
    lost: list[int] = []
    for seq in range(read):
        if seq in got:
            continue
        reason = explained.get(seq)
        if reason is None:
            lost.append(seq)
        else:
            dropped[reason] = dropped.get(reason, 0) + 1
    if lost:
        dropped["lost in flight"] = len(lost)
    processed = report.received if report else 0
    duration_s = (report.last_ns - report.first_ns) / 1e9 if report and report.received > 1 else 0.0
    return SourceSummary(
        source=source, read=read, processed=processed, dropped=dropped, lost_in_flight=_ranges(lost),
        out_of_order=report.out_of_order if report else 0,
        fps=(processed - 1) / duration_s if duration_s > 0 else 0.0,
        latency_p50_ms=report.latency_ms[0] if report else 0.0,
        latency_p99_ms=report.latency_ms[1] if report else 0.0,
        hop_ms=dict(report.hop_ms) if report else {}, state=state,
    )


def _ranges(seqs: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s in seqs:
        if out and out[-1][1] == s - 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out
