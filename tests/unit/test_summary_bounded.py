"""Seq bookkeeping stays bounded on a run of weeks: drops are counted, not listed;
the output stage keeps the latest seq ranges; the summary does interval arithmetic,
never one Python object per frame — and still names the seqs of recent gaps."""

from __future__ import annotations

import time
import tracemalloc

from stream.messages import DropRecord, Frame, FrameHeader
from stream.stages.output import OutputStage
from stream.summary import RECENT_KEPT, DropLedger, summarize_source


def _frame(seq: int) -> Frame:
    return Frame(FrameHeader("cam", seq, seq, (1, 30), time.time_ns() - 1_000_000))


def test_a_month_of_drops_costs_bounded_memory_and_a_fast_summary():
    # a 25 fps camera for 30 days in which every other frame was dropped at the edge
    frames = 25 * 3600 * 24 * 30
    ledger = DropLedger()
    tracemalloc.start()
    for first in range(1, 200_001, 2):
        ledger.add([DropRecord("cam", "downstream busy", first, first)])
    ledger.add([DropRecord("cam", "downstream busy", 200_001, frames - 1)])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2_000_000  # bytes: a bounded window, not 100 000 records
    assert len(ledger.recent("cam")) == RECENT_KEPT
    assert ledger.counts[("cam", "downstream busy")] == 100_000 + frames - 1 - 200_001 + 1
    t0 = time.perf_counter()
    s = summarize_source(None, "cam", frames, ledger)
    assert time.perf_counter() - t0 < 0.5  # no set of 64 800 000 seqs
    assert s.read == frames and s.dropped["downstream busy"] == ledger.counts[("cam", "downstream busy")]


def test_the_output_stage_keeps_the_latest_ranges_and_counts_the_rest():
    out = OutputStage([])
    for seq in range(0, 20_000, 2):  # a gap after every frame: one range per frame
        out.write(_frame(seq))
    (report,) = out.reports()
    assert report.received == 10_000
    assert len(report.received_ranges) == RECENT_KEPT
    assert report.ranges_from == report.received_ranges[0][0] - 1  # complete from there on
    assert report.received_ranges[-1] == (19_998, 19_998)


def test_recent_gaps_are_named_by_seq_and_counts_add_up():
    out = OutputStage([])
    ledger = DropLedger()
    for seq in range(100):
        if seq in (10, 11):
            ledger.add([DropRecord("cam", "overwritten", seq, seq)])
        elif seq not in (40, 41, 42, 77):  # these were lost with a crashed stage
            out.write(_frame(seq))
    (report,) = out.reports()
    s = summarize_source(report, "cam", 100, ledger)
    assert s.processed == 94 and s.dropped == {"overwritten": 2, "lost in flight": 4}
    assert s.lost_in_flight == [(40, 42), (77, 77)]
    assert "dropped 4 (lost in flight): seq 40-42, 77" in _format(s)


def test_after_a_stop_frames_still_in_the_pipeline_are_not_called_lost():
    out = OutputStage([])
    for seq in range(17):
        out.write(_frame(seq))
    (report,) = out.reports()
    s = summarize_source(report, "cam", 34, DropLedger(), stopped=True)
    assert (s.processed, s.dropped) == (17, {"in flight at stop": 17})


def _format(s) -> str:
    from stream.summary import RunSummary

    return RunSummary([s], {}, 1.0).format()
