"""``stream bench pipeline``: the whole pipeline on N live streams, its capacity, and the naive loop.

Runs capture → detect → track → segment → publish (and record with ``--record``) on
``--streams`` concurrent live sources paced at real time (``synthetic``: the test
scene with moving objects; ``pattern``: a cheap moving test pattern; or a video
FILE looped and played at its own frame rate) for ``--duration`` seconds, through
the real supervisor and worker processes, with seeded random weights. Measured from
outside the pipeline (``stream.bench.probes``): a subscriber on the publish socket
and psutil/NVML on the worker processes.

Rows (one per stream): frames published and achieved fps (frames / duration of the
live stream, so a burst at the end counts for no more), drops (inside the pipeline +
``drops_source``: frames the live source skipped because its reader was late;
frames + drops - drops_source = frames read),
frame age p50/p99 (age of the newest published frame, sampled every 100 ms),
capture→publish latency p50/p99, objects and masks per frame.
Summary: totals and pooled percentiles; ``held`` (every stream: no drops, every frame
published, p99 ≤ ``--budget-ms``, no restart); CPU (worker processes, in cores and as
a share of the host; the host as a whole) and GPU (utilisation, device memory above
the idle level: total, per stream, growth over the run) in the steady window (every
capture streaming; ``--warmup-s`` leaves the first seconds out of every figure);
the naive reference (``stream.bench.naive``) timed in the same run on the same kind
of frames (half before the pipeline runs, half after: the host's load is bracketed;
``naive_fps_before_after`` shows how much it moved), ``ratio`` (and
``ratio_without_annotate``: against the naive loop less its drawing, which our pipeline
does only for --record) = delivered frames/s of ours (all streams) / naive frames/s.
CPU per delivered frame (``cpu_ms_per_frame``, ``cpu_ms_per_frame_per_stage``; the naive
loop's ``naive_cpu_ms_per_frame[_without_annotate]``, ``naive_cpu_ms_per_step``) and
``cpu_ratio_without_annotate`` (naive CPU ms per frame without drawing / ours) move far
less with other load on a shared host than frames/s do.
The paced run's throughput cannot exceed streams × fps, so ``ratio`` is a lower bound
unless ``--find-max`` raised the stream count to the limit. How many frames per second
the pipeline can process is the capacity trial's (``stream.bench.capacity``), run right
after the paced one: the same ``--streams`` sources, not live (as fast as the pipeline
takes them, backpressure, no drop), ``--capacity-frames`` frames each (0: skipped):
``capacity_fps`` (published frames / s from the first to the last published),
``capacity_cpu_ms_per_frame[_per_stage]``, ``capacity_drops`` (0 unless something is
wrong), and against the naive loop, which is unpaced too, ``ratio_capacity`` and
``ratio_capacity_without_annotate`` (= capacity_fps / naive frames/s).

``--find-max`` doubles the stream count from ``--streams`` until a run does not hold,
then bisects; ``max_streams`` is the largest that held (0: none), rows and figures are
that run's (or the smallest run's when none held) and ``trials`` lists every run.
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stream import random_weights
from stream.bench import BenchResult, percentile
from stream.bench.probes import (
    PublishProbe,
    ResourceMonitor,
    Resources,
    cpu_threads,
    pooled,
    stdout_to_stderr,
)
from stream.config import load_config
from stream.errors import ConfigError, StreamError

log = logging.getLogger(__name__)

HELP = "whole pipeline on N live streams (fps, drops, age, latency, CPU/GPU) and unpaced vs the naive loop"

RESOLUTIONS = {
    "2160p": (3840, 2160),
    "1080p": (1920, 1080),
    "720p": (1280, 720),
    "480p": (854, 480),
    "360p": (640, 360),
}
NOTE = "RANDOM WEIGHTS: seeded random weights everywhere; timings are real, boxes and masks are not"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--streams", type=int, default=1, help="concurrent live sources (start of --find-max)")
    p.add_argument("--resolution", default="1080p", help=f"{', '.join(RESOLUTIONS)} or WxH")
    p.add_argument(
        "--fps", type=float, default=30.0, help="frames/s of each live source (a FILE keeps its own)"
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds of video per stream")
    p.add_argument(
        "--warmup-s",
        type=float,
        default=0.0,
        help="first seconds of each stream left out of every figure (default 0: all counted)",
    )
    p.add_argument("--source", default="synthetic", help="synthetic, pattern or the path of a video FILE")
    p.add_argument("--record", action="store_true", help="also record every stream (to a temporary folder)")
    p.add_argument("--find-max", action="store_true", help="search the largest stream count that holds")
    p.add_argument("--max-streams", type=int, default=256, help="upper bound of --find-max")
    p.add_argument("--budget-ms", type=float, default=100.0, help="p99 capture→publish latency budget")
    p.add_argument("--model-size", default="s", choices=["s", "m", "l"], help="YOLO-NAS S, M or L")
    p.add_argument(
        "--input-size", type=int, default=None, help="detector input (default 640 on CUDA, 320 on CPU)"
    )
    p.add_argument(
        "--sam-model",
        default=None,
        choices=["vit_b", "vit_l", "vit_h", "tiny"],
        help="default vit_b on CUDA, tiny (a small test SAM, not a released model) on CPU",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (detector, SAM, naive loop)")
    p.add_argument(
        "--boxes", type=int, default=random_weights.BOXES, help="detections kept per frame (both pipelines)"
    )
    p.add_argument(
        "--conf",
        type=float,
        default=random_weights.CONF,
        help="detection threshold; random weights score about 0.0101, so 0.01 keeps the top --boxes",
    )
    p.add_argument(
        "--keyframe-interval",
        type=int,
        default=random_weights.KEYFRAME_INTERVAL,
        help="frames between SAM keyframes",
    )
    p.add_argument("--max-batch", type=int, default=None, help="detector batch (default min(32, streams))")
    p.add_argument("--naive-frames", type=int, default=30, help="frames the naive loop is timed on (0: skip)")
    p.add_argument(
        "--capacity-frames",
        type=int,
        default=100,
        help="frames per stream of the capacity trial: the same sources not live, as fast as the pipeline "
        "takes them (0: skip)",
    )
    p.add_argument(
        "--cpu-threads",
        type=int,
        default=None,
        help="intra-op threads of the detect and segment workers (detect.threads, segment.threads) and of "
        "the naive loop (default: the stages' share of the cores, see stream.threads; the naive loop, one "
        "process, torch's default: every core)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=random_weights.SEED,
        help="seed of the random weights; with 2 (also 5, 7) yolo_nas_s puts most of its top boxes inside "
        "the frame at 320 and 640 (with 0, all of them fall in the letterbox padding at 640)",
    )
    p.add_argument(
        "--random-weights", action="store_true", help="implied: benchmarks always use random weights"
    )


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    """Resolved settings shared by every trial and the naive loop."""
    from stream.models.yolo_nas import resolve_device

    device = resolve_device(args.device, "--device")
    cuda = device.type == "cuda"
    plan: dict[str, Any] = {
        "device": str(device),
        "cuda_index": (device.index or 0) if cuda else None,
        "arch": f"yolo_nas_{args.model_size}",
        "input_size": args.input_size or random_weights.input_size_for(device.type),
        "sam": args.sam_model or random_weights.sam_model_for(device.type),
        "kind": args.source,
        "fps": args.fps,
    }
    if args.source in ("synthetic", "pattern"):
        res = RESOLUTIONS.get(args.resolution)
        if res is None:
            w, sep, h = args.resolution.lower().partition("x")
            if not (sep and w.isdigit() and h.isdigit()):
                raise ConfigError(
                    f"--resolution {args.resolution!r}: use {', '.join(RESOLUTIONS)} or WxH, e.g. 320x240"
                )
            res = (int(w), int(h))
        plan["size"] = res
    else:
        from stream.sources.file import FileSource

        path = Path(args.source).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"--source {args.source!r}: not 'synthetic', 'pattern' or an existing video file"
            )
        src = FileSource(path)
        try:
            info = src.open()
        finally:
            src.close()
        plan.update(kind="file", path=str(path), size=(info.width, info.height), fps=float(info.fps))
        if abs(info.fps - args.fps) > 0.01:
            log.warning(
                "%s plays at its own %.3g fps (--fps %.3g applies to synthetic sources)",
                path,
                info.fps,
                args.fps,
            )
    plan["frames"] = max(2, round(plan["fps"] * args.duration))
    plan["skip"] = min(round(plan["fps"] * args.warmup_s), plan["frames"] - 2)
    return plan


def _config(
    args: argparse.Namespace,
    plan: dict[str, Any],
    n: int,
    endpoint: str,
    record_dir: str | None,
    *,
    live: bool = True,
    frames: int | None = None,
) -> dict[str, Any]:
    """The run's config: ``n`` sources, live (paced, edge drops) or not (as fast as the pipeline
    takes frames, backpressure, never a drop: the capacity trial), ``frames`` each (default
    the paced run's)."""
    w, h = plan["size"]
    sources = []
    for i in range(n):
        s: dict[str, Any] = {"id": f"s{i:03d}", "live": live, "max_frames": frames or plan["frames"]}
        if plan["kind"] == "file":
            s.update(type="file", path=plan["path"], loop=True)
        else:
            s.update(type=plan["kind"], fps=plan["fps"], synthetic={"width": w, "height": h, "seed": i})
        sources.append(s)
    sinks: dict[str, Any] = {"publish": {"endpoint": endpoint, "hwm": 100_000}}
    if record_dir:
        sinks["record"] = {"root": record_dir}
    chosen = _sections(args, plan)
    if args.cpu_threads is not None:  # the stages set their own pools (stream.threads)
        for section in ("detect", "segment"):
            chosen[section]["threads"] = args.cpu_threads
    return {
        "name": "bench-pipeline",
        "random_weights": True,
        "cache_dir": str(args.cache_root),
        "sources": sources,
        "pipeline": ["detect", "track", "segment"],
        "detect": {
            **chosen["detect"],
            "model": plan["arch"],
            "device": plan["device"],
            "max_batch": args.max_batch or min(32, n),
        },
        "track": chosen["track"],
        "segment": {**chosen["segment"], "device": plan["device"]},
        "sinks": sinks,
        "metrics": {"enabled": False},
    }


def _sections(args: argparse.Namespace, plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """detect/track/segment settings that give random weights boxes to track and segment
    (``stream.random_weights``, shared with ``stream demo``)."""
    return random_weights.sections(
        random_weights.choices(
            "cuda" if plan["cuda_index"] is not None else "cpu",
            fps=plan["fps"],
            boxes=args.boxes,
            conf=args.conf,
            seed=args.seed,
            keyframe_interval=args.keyframe_interval,
            input_size=plan["input_size"],
            sam_model=plan["sam"],
        )
    )


def _free_endpoint() -> str:
    from stream.transport.endpoints import free_port

    return f"tcp://127.0.0.1:{free_port()}"


def _trial(args: argparse.Namespace, plan: dict[str, Any], n: int) -> dict[str, Any]:
    """One paced run with ``n`` live streams: its per-stream rows and summary figures."""
    summary, drops, probe, res, recorded_mb = _run(args, plan, n)
    return _figures(args, plan, n, summary, drops, probe, res, recorded_mb)


def _capacity(args: argparse.Namespace, plan: dict[str, Any], n: int) -> dict[str, Any]:
    """The capacity trial: ``n`` streams of ``--capacity-frames`` frames each, not live."""
    from stream.bench.capacity import figures

    frames = args.capacity_frames
    summary, _, probe, res, _ = _run(args, plan, n, live=False, frames=frames)
    return figures(n, frames, summary, probe, res)


def _run(
    args: argparse.Namespace, plan: dict[str, Any], n: int, *, live: bool = True, frames: int | None = None
) -> tuple[Any, list[Any], PublishProbe, Resources, float | None]:
    """Run the pipeline once: (run summary, drop records, probe, resources, recorded MB).
    Paced (``live``): the steady window skips ``--warmup-s``; not live (``frames`` each):
    every frame counts, and CPU is counted from every stage ready to the last frame published."""
    from stream.supervisor import Supervisor

    endpoint = _free_endpoint()
    record_dir = tempfile.mkdtemp(prefix="bench-record-") if args.record else None
    config = load_config(None, base=_config(args, plan, n, endpoint, record_dir, live=live, frames=frames))
    sup = Supervisor(config, log_level="warning")
    skip = plan["skip"] if live else 0
    probe = PublishProbe(endpoint, {s.id: plan["fps"] for s in config.sources}, skip_seq=skip)
    if live:
        monitor = ResourceMonitor(sup.snapshot, plan["cuda_index"], delay_s=args.warmup_s)
    else:
        monitor = ResourceMonitor(
            sup.snapshot, plan["cuda_index"], interval_s=0.2, published=lambda: probe.published, until=n * (frames or 0)
        )
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        sup.prepare()
        probe.start()
        probe.ready.wait(10)
        if probe.error is not None:
            raise StreamError(f"benchmark subscriber on {endpoint} failed: {probe.error}")
        monitor.start()
        for sig in previous:
            signal.signal(sig, lambda signum, _f: sup.request_stop(signal.Signals(signum).name))
        summary = sup.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        monitor.stop()
        probe.stop()
        sup.close()
        monitor.join(5)
        probe.join(5)
        recorded_mb = _size_mb(record_dir) if record_dir else None
        if record_dir:
            shutil.rmtree(record_dir, ignore_errors=True)
    if summary.stopped_by != "end of input":
        raise StreamError(f"benchmark interrupted ({summary.stopped_by})")
    return summary, sup.ledger.recent(), probe, monitor.result, recorded_mb


def _figures(
    args: argparse.Namespace,
    plan: dict[str, Any],
    n: int,
    summary: Any,
    drop_records: list[Any],
    probe: PublishProbe,
    res: Resources,
    recorded_mb: float | None,
) -> dict[str, Any]:
    rows = []
    held = not any(summary.restarts.values())
    skip = plan["skip"]
    for s in summary.sources:
        st = probe.stats[s.source]
        ranges = [(d.first, d.last) for d in drop_records if d.source == s.source] + list(s.lost_in_flight)
        dropped = sum(max(0, b - max(a, skip) + 1) for a, b in ranges)
        drops = dropped + st.source_skipped
        p99 = percentile(st.latency_ms, 99)
        held = held and drops == 0 and st.frames >= plan["frames"] - skip and p99 <= args.budget_ms
        rows.append(
            {
                "stream": s.source,
                "frames": st.frames,
                "fps": st.frames / (plan["frames"] - skip) * plan["fps"],
                "drops": drops,
                "drops_source": st.source_skipped,
                "age_p50_ms": percentile(st.age_ms, 50),
                "age_p99_ms": percentile(st.age_ms, 99),
                "latency_p50_ms": percentile(st.latency_ms, 50),
                "latency_p99_ms": p99,
                "objects_per_frame": st.objects / st.frames if st.frames else 0.0,
                "masks_per_frame": st.masked / st.frames if st.frames else 0.0,
            }
        )
    reasons: dict[str, int] = {}
    for d in drop_records:
        if d.last >= skip:
            reasons[d.reason] = reasons.get(d.reason, 0) + d.last - max(d.first, skip) + 1
    lat = pooled(st.latency_ms for st in probe.stats.values())
    age = pooled(st.age_ms for st in probe.stats.values())
    fig: dict[str, Any] = {
        "streams": n,
        "held": held,
        "fps_total": sum(r["fps"] for r in rows),
        "fps_min": min(r["fps"] for r in rows),
        "drops_total": sum(r["drops"] for r in rows),
        "drop_reasons": reasons,
        "latency_p50_ms": percentile(lat, 50),
        "latency_p99_ms": percentile(lat, 99),
        "age_p50_ms": percentile(age, 50),
        "age_p99_ms": percentile(age, 99),
        "cpu_util": res.cpu_util,
        "cpu_cores": res.cpu_cores,
        "cpu_per_stage_cores": res.per_stage,
        # CPU per delivered frame: far less sensitive to other load on the host than fps
        "cpu_ms_per_frame": res.cpu_cores * 1000.0 / fps if (fps := sum(r["fps"] for r in rows)) else float("nan"),
        "cpu_ms_per_frame_per_stage": {k: v * 1000.0 / fps if fps else float("nan") for k, v in res.per_stage.items()},
        "host_cpu_util": res.host_cpu_util,
        "steady_window_s": res.window_s,
        "subscriber_lost": probe.lost,
        "gpu_util": "n/a" if res.gpu_util is None else res.gpu_util,
        "gpu_mem_mb": "n/a" if res.gpu_mem_mb is None else res.gpu_mem_mb[1],
        "gpu_mem_per_stream_mb": "n/a" if res.gpu_mem_mb is None else res.gpu_mem_mb[1] / n,
        "gpu_mem_growth_mb": "n/a" if res.gpu_mem_mb is None else res.gpu_mem_mb[1] - res.gpu_mem_mb[0],
    }
    if recorded_mb is not None:
        fig["recorded_mb"] = recorded_mb
    return {"rows": rows, "figures": fig}


def _size_mb(folder: str) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 2**20


def _find_max(args: argparse.Namespace, plan: dict[str, Any]) -> tuple[int, dict[int, dict[str, Any]]]:
    """Doubling from --streams, then bisection; returns (largest stream count that held, 0 for
    none; every trial by stream count)."""
    trials: dict[int, dict[str, Any]] = {}

    def attempt(n: int) -> bool:
        t = trials[n] = _trial(args, plan, n)
        log.warning("find-max: %d streams %s", n, "held" if t["figures"]["held"] else "did not hold")
        return bool(t["figures"]["held"])

    lo, hi = 0, None  # lo: largest held, hi: smallest that did not
    n = max(1, args.streams)
    while n <= args.max_streams:
        if not attempt(n):
            hi = n
            break
        lo, n = n, n * 2
    if hi is None:
        hi = args.max_streams + 1
        if lo < args.max_streams and attempt(args.max_streams):
            lo = args.max_streams
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if attempt(mid) else (lo, mid)
    return lo, trials


def _naive_loop(args: argparse.Namespace, plan: dict[str, Any]) -> tuple[Any, Iterator[Any]]:
    """The naive loop (built now: imports super-gradients) and the frames it is timed on."""
    from stream.bench.naive import NaiveConfig, NaiveLoop, reference_frames

    frames = reference_frames(
        plan["kind"], plan["size"], plan["fps"], plan.get("path"), args.naive_frames + 1
    )
    cfg = NaiveConfig(
        arch=plan["arch"],
        input_size=plan["input_size"],
        conf=args.conf,
        max_detections=args.boxes,
        sam_model=plan["sam"],
        keyframe_interval=args.keyframe_interval,
        device=plan["device"],
        seed=args.seed,
        tracker=_sections(args, plan)["track"],
    )
    return NaiveLoop(cfg), frames


def run(args: argparse.Namespace) -> BenchResult:
    logging.getLogger("stream").setLevel(logging.WARNING)
    if args.cpu_threads is not None and args.cpu_threads < 1:
        raise ConfigError(
            f"--cpu-threads {args.cpu_threads}: give at least 1 (or leave it out: torch's default)"
        )
    if (
        args.streams < 1
        or args.duration <= 0
        or args.fps <= 0
        or min(args.naive_frames, args.capacity_frames, args.warmup_s) < 0
    ):
        raise ConfigError(
            "--streams must be ≥ 1, --duration and --fps > 0, --naive-frames, --capacity-frames and --warmup-s ≥ 0 "
            f"(got {args.streams}, {args.duration}, {args.fps}, {args.naive_frames}, {args.capacity_frames}, "
            f"{args.warmup_s})"
        )
    if args.warmup_s >= args.duration:
        raise ConfigError(f"--warmup-s {args.warmup_s} must be shorter than --duration {args.duration}")
    plan = _plan(args)
    with stdout_to_stderr(), cpu_threads(args.cpu_threads):
        parts, first = [], 0
        if args.naive_frames:  # timed half before and half after the pipeline runs
            naive, frames = _naive_loop(args, plan)
            first = (args.naive_frames + 1) // 2
            parts.append(naive.run(frames, first))
        trials: dict[int, dict[str, Any]] = {}
        if args.find_max:
            held, trials = _find_max(args, plan)
            best = trials[held or min(trials)]  # none held: the smallest run shows why
        else:
            best = _trial(args, plan, args.streams)
        capacity = _capacity(args, plan, args.streams) if args.capacity_frames else {}
        if args.naive_frames > first:
            parts.append(naive.run(frames, args.naive_frames - first, warmup=0))
    w, h = plan["size"]
    sam = plan["sam"] + (" (a small test SAM, not a released model)" if plan["sam"] == "tiny" else "")
    summary: dict[str, Any] = {
        "random_weights": True,
        "note": NOTE,
        "device": plan["device"],
        "source": plan["kind"],
        "resolution": f"{w}x{h}",
        "fps_target": plan["fps"],
        "duration_s": args.duration,
        "warmup_s": args.warmup_s,
        "detector": f"{plan['arch']}@{plan['input_size']}",
        "sam_model": sam,
        "budget_ms": args.budget_ms,
        "cpu_threads": _threads(args),
        **best["figures"],
        **capacity,
    }
    if args.find_max:
        summary["max_streams"] = held
        keys = ("streams", "held", "fps_total", "drops_total", "latency_p99_ms", "cpu_util", "gpu_util")
        summary["trials"] = [{k: trials[n]["figures"][k] for k in keys} for n in sorted(trials)]
    objects = [r["objects_per_frame"] for r in best["rows"]]
    if objects and min(objects) < 0.5 * args.boxes:
        summary["warning"] = (
            f"only {min(objects):.1f} tracked objects per frame (--boxes {args.boxes}): the random detector's "
            "boxes fall outside the frame with this --seed/--input-size/--model-size, so tracking and SAM do "
            "little work; try another --seed"
        )
    if parts:
        from stream.bench.naive import figures

        summary.update(figures(parts))
        fps = summary["naive_fps"]
        summary["ratio"] = summary["fps_total"] / fps if fps else float("nan")
        fps = summary["naive_fps_without_annotate"]
        summary["ratio_without_annotate"] = summary["fps_total"] / fps if fps else float("nan")
        # how many times less CPU per frame than the naive loop without its drawing
        ours = summary["cpu_ms_per_frame"]
        summary["cpu_ratio_without_annotate"] = (
            summary["naive_cpu_ms_per_frame_without_annotate"] / ours if ours and not math.isnan(ours) else float("nan")
        )
        if capacity:
            from stream.bench.capacity import ratios

            summary.update(ratios(summary))
    return BenchResult(rows=[_finite(r) for r in best["rows"]], summary=_finite(summary))


def _threads(args: argparse.Namespace) -> dict[str, int]:
    """Intra-op threads each part ran with: the detect and segment workers and the naive loop."""
    import torch

    from stream.threads import resolve

    out = {stage: resolve(stage, args.cpu_threads) for stage in ("detect", "segment")}
    out["naive"] = args.cpu_threads or torch.get_num_threads()
    return out


def _finite(value: Any) -> Any:
    """NaN (no samples) becomes None, inside dicts and lists too, so that --json stays valid JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value
