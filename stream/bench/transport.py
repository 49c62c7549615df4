"""``stream bench transport``: 1080p BGR frames through a chain of pass-through
stage processes, pixels in shared memory vs. pixels inside the ZeroMQ messages,
in the same run.

Two measurements per path:
- throughput: a file-like source (backpressure, nothing dropped) as fast as the
  chain goes; fps from the first to the last frame at the output;
- latency: the same chain paced at ``--paced-fps`` (a camera), per-hop latency
  p50/p99 from the stage timestamps every frame carries.
Summary keys: shm_fps, copy_fps, fps_ratio, hop_p50_ms (shm, paced; the worst
hop's median), hop_p99_ms, copy_hop_p50_ms.
"""

from __future__ import annotations

import argparse
import logging

from stream.bench import BenchResult
from stream.config import load_config
from stream.errors import StreamError
from stream.summary import SourceSummary

HELP = "shared-memory vs in-message pixels through a chain of stage processes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stages", type=int, default=4, help="pass-through stage processes in the chain")
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--frames", type=int, default=600, help="frames per throughput run")
    p.add_argument("--paced-fps", type=float, default=30.0)
    p.add_argument("--paced-frames", type=int, default=150)
    p.add_argument("--hwm", type=int, default=4)


def _run(args: argparse.Namespace, pixels: str, *, paced: bool) -> SourceSummary:
    from stream.supervisor import run_pipeline

    base = {
        "name": f"bench-transport-{pixels}",
        "sources": [{
            "id": "pattern", "type": "pattern", "live": paced,
            "fps": args.paced_fps if paced else 1000.0,
            "max_frames": args.paced_frames if paced else args.frames,
            "synthetic": {"width": args.width, "height": args.height},
        }],
        "pipeline": ["passthrough"] * args.stages,
        "transport": {"pixels": pixels, "hwm": args.hwm},
        "metrics": {"enabled": False},
    }
    summary = run_pipeline(load_config(None, base=base), log_level="warning")
    if summary.stopped_by != "end of input":
        raise StreamError(f"benchmark interrupted ({summary.stopped_by})")
    return summary.sources[0]


def run(args: argparse.Namespace) -> BenchResult:
    logging.getLogger("stream").setLevel(logging.WARNING)
    result = BenchResult()
    figures = {}
    for pixels, label in (("shm", "shm"), ("inline", "copy")):
        thr = _run(args, pixels, paced=False)
        lat = _run(args, pixels, paced=True)
        inner = {k: v for k, v in lat.hop_ms.items() if k != "output"} or lat.hop_ms
        hop_p50 = max(v[0] for v in inner.values())
        hop_p99 = max(v[1] for v in inner.values())
        figures[label] = (thr, lat, hop_p50, hop_p99)
        result.rows.append({
            "path": label, "stages": args.stages, "frames": thr.processed, "dropped": thr.dropped_total,
            "fps": thr.fps, f"hop_p50_ms@{args.paced_fps:g}fps": hop_p50, "hop_p99_ms": hop_p99,
            "e2e_p50_ms": lat.latency_p50_ms, "e2e_p99_ms": lat.latency_p99_ms,
        })
    shm, copy = figures["shm"], figures["copy"]
    result.summary = {
        "shm_fps": shm[0].fps, "copy_fps": copy[0].fps,
        "fps_ratio": shm[0].fps / copy[0].fps if copy[0].fps else float("nan"),
        "hop_p50_ms": shm[2], "hop_p99_ms": shm[3], "copy_hop_p50_ms": copy[2],
        "resolution": f"{args.width}x{args.height}", "stages": args.stages,
    }
    return result
