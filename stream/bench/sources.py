"""``stream bench sources``: a live RTSP source through the pipeline, against a local
GStreamer RTSP server (``stream.testing.rtsp_server``; needs the system packages of
``scripts/system-deps.sh``).

The run: capture → passthrough (``--delay-ms`` of work per frame) → output with a
JSONL sink. After ``--seconds`` of steady streaming the server is stopped for
``--outage-s`` and started again on the same port, ``--outages`` times.

- frame age: output time − capture time of every frame (the capture time is when
  the frame was decoded), p50/p99 over the steady phase (its first second left out);
- reconnect time: from the moment the restarted server answers RTSP OPTIONS to the
  capture time of the first frame after it.

Summary keys: age_p50_ms, age_p99_ms, reconnect_median_s, reconnect_max_s, fps_out,
dropped (by reason, whole run).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from stream.bench import BenchResult, median, percentile
from stream.config import load_config
from stream.errors import StreamError

HELP = "live RTSP source: frame age at steady state and reconnect time after outages (local server)"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=10.0, help="steady streaming before the first outage")
    p.add_argument("--outages", type=int, default=3)
    p.add_argument("--outage-s", type=float, default=5.0, help="how long the server is down each time")
    p.add_argument("--size", default="640x360", help="the served stream's WIDTHxHEIGHT")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--transport", choices=["tcp", "udp"], default="tcp")
    p.add_argument("--delay-ms", type=float, default=0.0, help="passthrough work per frame")


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise StreamError(f"benchmark: no {what} within {timeout:.0f} s")
        time.sleep(0.05)


class _Scenario:
    """Drives the server from a thread while the supervisor runs in the main thread."""

    def __init__(self, args: argparse.Namespace, workdir: Path, server: Any, jsonl: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.server = server
        self.jsonl = jsonl
        self.steady: tuple[int, int] = (0, 0)  # capture_ns window of the steady phase
        self.back_ns: list[int] = []
        self.error: BaseException | None = None

    def run(self, stop: Any) -> None:
        from stream.testing.rtsp_server import start_server

        args = self.args
        width, height = (int(v) for v in args.size.lower().split("x"))
        try:
            _wait(lambda: len(_records(self.jsonl)) > 0, 120, "first frame")
            t0 = time.time_ns()
            time.sleep(args.seconds)
            self.steady = (t0 + 1_000_000_000, time.time_ns())
            for _ in range(args.outages):
                port = self.server.port
                self.server.stop()
                time.sleep(args.outage_s)
                self.server = start_server(
                    self.workdir / "rec",
                    record=(),
                    play=("/cam",),
                    port=port,
                    play_size=(width, height),
                    play_fps=args.fps,
                )
                back = time.time_ns()
                self.back_ns.append(back)
                _wait(
                    lambda b=back: any(r["capture_ns"] > b for r in _records(self.jsonl)),
                    30,
                    "frame after the outage",
                )
                time.sleep(2.0)
        except BaseException as exc:  # noqa: BLE001 — reported by the main thread
            self.error = exc
        finally:
            stop("benchmark done")


def run(args: argparse.Namespace) -> BenchResult:
    from stream.supervisor import Supervisor
    from stream.testing.rtsp_server import RtspServerUnavailable, start_server

    logging.getLogger("stream").setLevel(logging.WARNING)
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="stream-bench-sources-") as tmp:
        workdir = Path(tmp)
        try:
            server = start_server(
                workdir / "rec", record=(), play=("/cam",), play_size=(width, height), play_fps=args.fps
            )
        except RtspServerUnavailable as exc:
            raise StreamError(f"stream bench sources needs a local RTSP server: {exc}") from None
        jsonl = workdir / "frames.jsonl"
        base = {
            "name": "bench-sources",
            "sources": [
                {"id": "cam", "type": "rtsp", "url": server.url("/cam"), "transport": args.transport}
            ],
            "pipeline": ["passthrough"],
            "passthrough": {"delay_ms": args.delay_ms},
            "sinks": {"jsonl": {"path": str(jsonl)}},
            "metrics": {"enabled": False},
        }
        sup = Supervisor(load_config(None, base=base), log_level="warning")
        scenario = _Scenario(args, workdir, server, jsonl)
        try:
            sup.prepare()
            threading.Thread(target=scenario.run, args=(sup.request_stop,), daemon=True).start()
            summary = sup.run()
        finally:
            sup.close()
            scenario.server.stop()
        if scenario.error is not None:
            raise StreamError(f"benchmark failed: {scenario.error}")
        records = _records(jsonl)
    return _result(args, records, scenario, summary.sources[0])


def _result(
    args: argparse.Namespace, records: list[dict[str, Any]], scenario: _Scenario, source: Any
) -> BenchResult:
    lo, hi = scenario.steady
    steady = [r for r in records if lo <= r["capture_ns"] <= hi]
    ages = [(r["stamps"][-1][1] - r["capture_ns"]) / 1e6 for r in steady]
    span_s = (hi - lo) / 1e9
    result = BenchResult()
    result.rows.append(
        {
            "phase": "steady",
            "seconds": span_s,
            "frames": len(steady),
            "fps_out": len(steady) / span_s if span_s else 0.0,
            "age_p50_ms": percentile(ages, 50),
            "age_p99_ms": percentile(ages, 99),
            "reconnect_s": None,
        }
    )
    reconnects = []
    for i, back in enumerate(scenario.back_ns, 1):
        first = min(r["capture_ns"] for r in records if r["capture_ns"] > back)
        reconnects.append((first - back) / 1e9)
        result.rows.append(
            {
                "phase": f"outage {i} ({args.outage_s:g} s)",
                "seconds": None,
                "frames": None,
                "fps_out": None,
                "age_p50_ms": None,
                "age_p99_ms": None,
                "reconnect_s": reconnects[-1],
            }
        )
    result.summary = {
        "age_p50_ms": percentile(ages, 50),
        "age_p99_ms": percentile(ages, 99),
        "reconnect_median_s": median(reconnects),
        "reconnect_max_s": max(reconnects, default=float("nan")),
        "fps_out": len(steady) / span_s if span_s else 0.0,
        "dropped": dict(source.dropped),
        "stream": f"{args.size} @ {args.fps} fps h264 over rtsp/{args.transport}",
        "delay_ms": args.delay_ms,
    }
    return result
