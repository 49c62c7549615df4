"""``stream bench live``: what the live view costs and how fast it is, per transport, as a
person watching in a browser sees it.

For each ``--resolution`` it starts a real pipeline (the supervisor and worker processes
of ``stream run``: one live ``pattern`` source at ``--fps``, one passthrough stage, the
output stage with the live view on a free loopback port; no models, so what is measured
is the transport) and opens viewers in a real headless Chromium (``stream.bench.browser``),
one window each, on each ``--transports`` entry's page in turn (``stream.bench.viewing``:
``mjpeg`` and ``h264`` are the live page's two players, ``mjpeg-img`` a plain ``<img>`` on
/stream/<id>.mjpg). A transport nobody watches costs nothing, so transports measured one
after the other in one pipeline do not mix. The pattern source stamps every frame's capture
time into its pixels (``--pattern moving``: a still picture with a sliding box, a fixed
camera; ``cycle``: four different pictures in turn, the worst case for H.264); the page's
own pictures are read back as they are shown (per animation frame; per presented frame for
a ``<video>``), so a sample is capture → displayed. ``--viewers`` are opened in turn (1, then
2 …; each count measured for ``--duration`` s once every new window plays); the sweep goes
on, doubling up to ``--max-viewers`` when given, until a count does not hold: every tile of
every viewer at least ``--min-fps-ratio`` × ``--fps`` and latency p50 ≤ ``--max-latency-ms``.

Rows (check "viewers": one per measured count; check "wall": per transport one page of
``--wall`` sources at ``--wall-resolution`` and ``--wall-fps``, from a pipeline of their own):
displayed frames/s per tile (mean, worst tile), latency p50/p99 (ms, all viewers' pictures
pooled), bytes/s per viewer (what the live view's server sent on its connections, from the
kernel's per-connection counter: HTTP/WebSocket payload), server CPU per viewer (the output
worker: drawing, encoding, serving; % of one core / viewers) and browser CPU per viewer
(every browser process; it includes the probe's own reading, one small canvas per picture).
Summary: per transport and resolution the one-viewer latency, bytes/s and
``viewers_served`` (the largest count that held); ``h264_over_mjpeg_bytes_<res>``; per
transport ``wall_all_updating`` and the wall's worst tile fps; ``load_avg`` (the host's
1-minute load when the bench started: read the figures of a loaded host as such).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psutil

from stream.bench import BenchResult
from stream.bench.browser import Browser, Viewer
from stream.bench.pipeline import RESOLUTIONS
from stream.bench.viewing import TRANSPORTS, Transport, measure, open_viewer
from stream.config import load_config
from stream.errors import ConfigError, StreamError
from stream.sources.pattern import time_stamp_geometry
from stream.transport import free_port

log = logging.getLogger(__name__)

HELP = "capture → displayed latency, bytes/s and CPU per viewer, viewers served, per live transport"
T = TypeVar("T")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resolution", default="720p,1080p", help=f"comma-separated: {', '.join(RESOLUTIONS)} or WxH")
    p.add_argument("--transports", default="mjpeg,h264", help=f"comma-separated: {', '.join(TRANSPORTS)}")
    p.add_argument("--viewers", default="1,2,4", help="comma-separated viewer counts, measured in turn")
    p.add_argument("--max-viewers", type=int, default=None,
                   help="go on doubling the last count up to this many viewers while they hold")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per viewer count")
    p.add_argument("--fps", type=float, default=30.0, help="frames/s of the source (and the live view's max_fps)")
    p.add_argument("--pattern", choices=["moving", "cycle"], default="moving",
                   help="moving: a still picture with a box sliding across (a fixed camera); cycle: 4 "
                   "different pictures in turn (the worst case for an encoder that codes changes)")
    p.add_argument("--jpeg-quality", type=int, default=80, help="sinks.live.jpeg_quality")
    p.add_argument("--wall", type=int, default=12, help="cameras on one page for the wall check (0: skip it)")
    p.add_argument("--wall-resolution", default="360p", help="each wall camera's size")
    p.add_argument("--wall-fps", type=float, default=10.0, help="frames/s of each wall camera")
    p.add_argument("--min-fps-ratio", type=float, default=0.8,
                   help="a count holds when every tile shows at least this × the source's fps …")
    p.add_argument("--max-latency-ms", type=float, default=1000.0, help="… and latency p50 is at most this")
    p.add_argument("--timeout-s", type=float, default=60.0, help="how long a new viewer may take to show pictures")


def _size(text: str, option: str = "--resolution") -> tuple[int, int]:
    if text in RESOLUTIONS:
        return RESOLUTIONS[text]
    w, _, h = text.lower().partition("x")
    if not (w.isdigit() and h.isdigit()):
        raise ConfigError(f"{option} {text!r}: use {', '.join(RESOLUTIONS)} or WxH, e.g. 640x360")
    return int(w), int(h)


def _counts(args: argparse.Namespace) -> tuple[list[int], int]:
    """(the viewer counts to measure, the last one of ``--viewers``): every listed count is
    measured; the doubling up to ``--max-viewers`` goes on only while counts hold."""
    try:
        counts = [int(c) for c in args.viewers.split(",") if c.strip()]
    except ValueError:
        raise ConfigError(f"--viewers {args.viewers!r}: use comma-separated counts, e.g. 1,2,4") from None
    if not counts or any(c < 1 for c in counts) or counts != sorted(set(counts)):
        raise ConfigError(f"--viewers {args.viewers!r}: use increasing counts >= 1, e.g. 1,2,4")
    listed = counts[-1]
    while args.max_viewers is not None and counts[-1] < args.max_viewers:
        counts.append(min(2 * counts[-1], args.max_viewers))
    return counts, listed


def _transports(args: argparse.Namespace) -> list[Transport]:
    names = [t.strip() for t in args.transports.split(",") if t.strip()]
    unknown = [t for t in names if t not in TRANSPORTS]
    if unknown or not names:
        raise ConfigError(f"--transports {args.transports!r}: use comma-separated names of {', '.join(TRANSPORTS)}")
    return [TRANSPORTS[t] for t in names]


def _config(ids: list[str], size: tuple[int, int], fps: float, port: int,
            args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": "bench-live",
        "sources": [{"id": s, "type": "pattern", "live": True, "fps": fps,
                     "synthetic": {"width": size[0], "height": size[1], "pattern": args.pattern}} for s in ids],
        "pipeline": ["passthrough"],
        "sinks": {"live": {"host": "127.0.0.1", "port": port, "max_fps": fps,
                           "jpeg_quality": args.jpeg_quality}},
        "metrics": {"enabled": False},
    }


def _with_pipeline(cfg: dict[str, Any], body: Callable[[Any, threading.Event], T], timeout_s: float) -> T:
    """Run ``cfg`` through the real supervisor (this thread) while ``body(supervisor, halt)`` runs
    in another thread once every source streams; the pipeline stops when ``body`` returns, and
    ``halt`` is set when it stopped first (Ctrl-C, a failed stage)."""
    from stream.supervisor import Supervisor

    sup = Supervisor(load_config(None, base=cfg), log_level="warning")
    out: list[T] = []
    errors: list[BaseException] = []
    halt = threading.Event()

    def worker() -> None:
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                states = sup.snapshot()["sources"]
                if len(states) == len(cfg["sources"]) and all(s == "streaming" for s in states.values()):
                    break
                if time.monotonic() > deadline:
                    raise StreamError(f"stream bench live: the sources did not stream within {timeout_s:.0f} s "
                                      f"(states: {states})")
                if halt.wait(0.2):
                    return
            out.append(body(sup, halt))
        except BaseException as exc:  # noqa: BLE001 — raised below, in the calling thread
            errors.append(exc)
        finally:
            sup.request_stop("bench live done")

    thread = threading.Thread(target=worker, name="bench-live", daemon=True)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        sup.prepare()
        thread.start()
        for sig in previous:
            signal.signal(sig, lambda signum, _f: sup.request_stop(signal.Signals(signum).name))
        sup.run()
    finally:
        halt.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sup.close()
        thread.join(30)
    if errors:
        raise errors[0] if isinstance(errors[0], StreamError) else StreamError(f"stream bench live: {errors[0]!r}")
    if not out:
        raise StreamError("stream bench live: the pipeline stopped before the measurement ended")
    return out[0]


def _server_procs(sup: Any) -> list[psutil.Process]:
    st = sup.snapshot()["stages"].get("output") or {}
    try:
        return [psutil.Process(st["pid"])] if st.get("pid") else []
    except psutil.Error:
        return []


def _held(row: dict[str, Any], fps: float, args: argparse.Namespace) -> bool:
    p50 = row["latency_p50_ms"]
    return row["fps_worst_tile"] >= args.min_fps_ratio * fps and p50 == p50 and p50 <= args.max_latency_ms


def _served(rows: list[dict[str, Any]]) -> int:
    """The most viewers that held, with every smaller count measured holding too (0: not one)."""
    served = 0
    for row in sorted(rows, key=lambda r: r["viewers"]):
        if not row["held"]:
            break
        served = row["viewers"]
    return served


def _geometry(size: tuple[int, int], option: str, label: str) -> dict[str, int]:
    geometry = time_stamp_geometry(*size)
    if geometry is None:
        raise ConfigError(f"{option} {label}: too small for the capture-time stamp (at least 200x64)")
    return geometry.to_dict()


def _sweeps(args: argparse.Namespace, browser: Callable[[], Browser], transports: list[Transport], label: str,
            size: tuple[int, int], counts: tuple[list[int], int]) -> list[dict[str, Any]]:
    """One pipeline (one source) serving each transport in turn: viewers added count by count
    (past the listed counts only while they hold), then closed. A transport nobody watches costs nothing (no
    JPEG, no H.264 encode), so the transports measured one after the other do not mix.
    browser(): the browser (it may still be starting)."""
    geometry = _geometry(size, "--resolution", label)
    ids, port = ["cam00"], free_port()
    live_url = f"http://127.0.0.1:{port}/"

    def body(sup: Any, halt: threading.Event) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        b = browser()
        for transport in transports:
            viewers: list[Viewer] = []
            try:
                for n in counts[0]:
                    while len(viewers) < n:
                        viewers.append(open_viewer(b, live_url, transport, ids, geometry, size[0],
                                                   args.timeout_s, halt))
                    row = {"check": "viewers", "transport": transport.name, "resolution": label, "sources": 1,
                           **measure(viewers, transport.tiles(ids), args.duration, port, _server_procs(sup), b,
                                     halt)}
                    row["held"] = _held(row, args.fps, args)
                    rows.append(row)
                    log.info("bench live: %s %s %d viewer(s): %.1f fps, p50 %.0f ms, %.0f kB/s per viewer",
                             transport.name, label, n, row["fps_worst_tile"], row["latency_p50_ms"],
                             row["bytes_per_s_per_viewer"] / 1e3)
                    if not row["held"] and n >= counts[1]:
                        break
            finally:
                for v in viewers:
                    b.close_viewer(v)
        return rows

    return _with_pipeline(_config(ids, size, args.fps, port, args), body, args.timeout_s)


def _walls(args: argparse.Namespace, browser: Callable[[], Browser], transports: list[Transport]) -> list[dict[str, Any]]:
    """One pipeline of ``--wall`` sources; per transport one page showing them all: every tile
    must keep showing new pictures."""
    size = _size(args.wall_resolution, "--wall-resolution")
    geometry = _geometry(size, "--wall-resolution", args.wall_resolution)
    ids, port = [f"cam{i:02d}" for i in range(args.wall)], free_port()
    live_url = f"http://127.0.0.1:{port}/"

    def body(sup: Any, halt: threading.Event) -> list[dict[str, Any]]:
        b = browser()
        rows = []
        for transport in transports:
            viewer = open_viewer(b, live_url, transport, ids, geometry, size[0], args.timeout_s, halt)
            try:
                row = {"check": "wall", "transport": transport.name, "resolution": args.wall_resolution,
                       "sources": args.wall,
                       **measure([viewer], ids, args.duration, port, _server_procs(sup), b, halt)}
            finally:
                b.close_viewer(viewer)
            row["held"] = _held(row, args.wall_fps, args)
            log.info("bench live: %s wall of %d: worst tile %.1f fps, p50 %.0f ms", transport.name, args.wall,
                     row["fps_worst_tile"], row["latency_p50_ms"])
            rows.append(row)
        return rows

    return _with_pipeline(_config(ids, size, args.wall_fps, port, args), body, args.timeout_s)


def run(args: argparse.Namespace) -> BenchResult:
    transports, counts = _transports(args), _counts(args)
    sizes = [(label, _size(label)) for label in (r.strip() for r in args.resolution.split(",")) if label]
    if args.duration <= 0 or args.fps <= 0 or args.wall < 0:
        raise ConfigError("--duration and --fps must be > 0, --wall >= 0")
    for label, size in sizes:  # before anything starts
        _geometry(size, "--resolution", label)
    if args.wall:
        _geometry(_size(args.wall_resolution, "--wall-resolution"), "--wall-resolution", args.wall_resolution)
    summary: dict[str, Any] = {"load_avg": os.getloadavg()[0], "cpus": os.cpu_count(), "fps": args.fps,
                               "pattern": args.pattern,
                               "pipeline": "pattern → passthrough → output (live view), no models"}
    result = BenchResult(summary=summary)
    # the browser starts while the first pipeline does (seconds each on a small host)
    starting = ThreadPoolExecutor(1, thread_name_prefix="bench-live-browser")
    launch = starting.submit(Browser, window_size=(1600, 1000))
    starting.shutdown(wait=False)
    try:
        for label, size in sizes:
            rows = _sweeps(args, launch.result, transports, label, size, counts)
            result.rows += rows
            for transport in transports:
                mine = [r for r in rows if r["transport"] == transport.name]
                key, one = f"{transport.name}_{label}", mine[0]
                summary[f"{key}_latency_p50_ms"] = one["latency_p50_ms"]
                summary[f"{key}_latency_p99_ms"] = one["latency_p99_ms"]
                summary[f"{key}_bytes_per_s"] = one["bytes_per_s_per_viewer"]
                summary[f"{key}_viewers_served"] = _served(mine)
        walls = [t for t in transports if t.wall]
        if args.wall and walls:
            for row in _walls(args, launch.result, walls):
                result.rows.append(row)
                summary[f"{row['transport']}_wall_all_updating"] = row["held"]
                summary[f"{row['transport']}_wall_worst_tile_fps"] = row["fps_worst_tile"]
    finally:
        if launch.exception() is None:
            launch.result().close()
    for label, _ in sizes:
        h264, mjpeg = (summary.get(f"{t}_{label}_bytes_per_s") for t in ("h264", "mjpeg"))
        if h264 is not None and mjpeg:
            summary[f"h264_over_mjpeg_bytes_{label}"] = h264 / mjpeg
    return result
