"""``stream bench soak``: does a 24/7 pipeline stay bounded?

Runs ``--streams`` live test sources (``--source``) through the real supervisor and workers
(``--pipeline``: ``full`` = detect → track → segment on seeded random weights, or
``passthrough``), with recording (into a temporary folder), the publish sink and a
subscriber reading it, and /metrics on a free loopback port. Every ``--interval-s``
seconds (60 by default: "each minute") it samples, per process (the supervisor and
every worker): resident memory (RSS less shared pages, MB: the rings' pages are
counted once, as /dev/shm use) and open file descriptors; the run's
``/dev/shm`` use (its rings, MB); and the time one ``/metrics`` scrape takes (ms).

After ``--minutes`` (fractions allowed) it reports, per process and in total, the
growth per hour of each figure (least-squares slope over the samples after
``--warmup-s``, times 3600), every sample's RSS per process (``rss_mb_series``), and
fails (the figures are printed all the same, ``--json`` too, then one line per figure
over its bound, exit code 1) when a total grows faster than its bound or a scrape is
slower than ``--max-scrape-ms``. Extrapolating a short run to an hour is noisy: a real soak runs
for an hour or more; ``make test`` runs a short one as a smoke check of the bounds.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from stream.bench import BenchResult
from stream.config import load_config
from stream.errors import StreamError
from stream.transport.endpoints import free_port

log = logging.getLogger(__name__)

HELP = "live sources for MINUTES: RSS, fds, /dev/shm and /metrics scrape time per hour; fails above bounds"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=60.0, help="how long to run (fractions allowed)")
    p.add_argument("--interval-s", type=float, default=60.0, help="seconds between samples")
    p.add_argument("--warmup-s", type=float, default=None,
                   help="samples in the first seconds are left out of the slopes (default: one interval)")
    p.add_argument("--streams", type=int, default=4, help="live sources")
    p.add_argument("--fps", type=float, default=10.0, help="frames/s of each source")
    p.add_argument("--resolution", default="320x240", help="WxH of each source")
    p.add_argument("--source", choices=["pattern", "synthetic"], default="pattern",
                   help="pattern: a moving test pattern; synthetic: the test scene, whose object "
                   "caches (bounded, 512 objects) fill for its first ~10 minutes and read as growth before")
    p.add_argument("--pipeline", choices=["full", "passthrough"], default="full",
                   help="full: detect, track, segment (random weights); passthrough: no models")
    p.add_argument("--segment-s", type=float, default=60.0,
                   help="record segment length: shorter segments rotate (open and close an encoder) more often")
    p.add_argument("--max-rss-mb-per-h", type=float, default=50.0, help="bound on total RSS growth")
    p.add_argument("--max-fds-per-h", type=float, default=50.0, help="bound on total open-fd growth")
    p.add_argument("--max-shm-mb-per-h", type=float, default=1.0, help="bound on /dev/shm growth")
    p.add_argument("--max-scrape-ms", type=float, default=500.0, help="bound on any /metrics scrape")


def _config(args: argparse.Namespace, record_dir: str) -> dict[str, Any]:
    from stream import random_weights

    w, _, h = args.resolution.lower().partition("x")
    if not (w.isdigit() and h.isdigit()):
        raise StreamError(f"--resolution {args.resolution!r}: use WxH, e.g. 320x240")
    sources = [{"id": f"s{i:02d}", "type": args.source, "live": True, "fps": args.fps,
                "synthetic": {"width": int(w), "height": int(h), "seed": i}} for i in range(args.streams)]
    cfg: dict[str, Any] = {
        "name": "bench-soak", "random_weights": True, "cache_dir": str(args.cache_root),
        "sources": sources,
        "sinks": {"publish": {"endpoint": f"tcp://127.0.0.1:{free_port()}", "hwm": 1000},
                  "record": {"root": record_dir, "segment_s": args.segment_s}},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": 0},
    }
    if args.pipeline == "full":
        cfg["pipeline"] = ["detect", "track", "segment"]
        # boxes and masks from random weights: the settings stream bench pipeline and stream demo use
        chosen = random_weights.sections(random_weights.choices("cpu", fps=args.fps, boxes=10))
        cfg["detect"] = {**chosen["detect"], "model": "yolo_nas_s", "device": "cpu"}
        cfg["track"] = chosen["track"]
        cfg["segment"] = {**chosen["segment"], "device": "cpu"}
    else:
        cfg["pipeline"] = ["passthrough"]
    return cfg


class _Subscriber(threading.Thread):
    """Reads the publish socket (counts only: its own memory must stay flat too)."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(name="soak-subscriber", daemon=True)
        self.endpoint = endpoint
        self.received = 0
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        from stream.client import Subscriber

        sub = Subscriber(self.endpoint, hwm=1000)
        try:
            while not self._halt.is_set():
                if sub.recv(timeout_s=0.1) is not None:
                    self.received += 1
        finally:
            sub.close()


def _scrape_ms(port: int) -> float:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise StreamError(f"/metrics answered {resp.status}")
    finally:
        conn.close()
    return (time.perf_counter() - t0) * 1000.0


def _sample(sup: Any, prefix: str) -> dict[str, Any]:
    procs = {"supervisor": os.getpid()}
    for name, st in sup.snapshot()["stages"].items():
        if st.get("pid") and st.get("up"):
            procs[name] = st["pid"]
    rss, fds = {}, {}
    for name, pid in procs.items():
        try:
            p = psutil.Process(pid)
            mem = p.memory_info()
            rss[name] = (mem.rss - mem.shared) / 1e6  # private: ring pages are counted under /dev/shm
            fds[name] = float(p.num_fds())
        except psutil.Error:
            continue
    shm = 0
    for ring in sup.rings:
        try:
            shm += ring.path.stat().st_blocks * 512
        except OSError:
            pass
    for path in Path("/dev/shm").glob(f"{prefix}*"):  # anything else the run left in /dev/shm
        if path not in {r.path for r in sup.rings}:
            try:
                shm += path.stat().st_blocks * 512
            except OSError:
                pass
    return {"t": time.monotonic(), "rss": rss, "fds": fds, "shm_mb": shm / 1e6,
            "scrape_ms": _scrape_ms(sup.metrics.port)}


def _slope_per_h(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return 0.0 if var == 0 else sum((t - mt) * (v - mv) for t, v in points) / var * 3600.0


def run(args: argparse.Namespace) -> BenchResult:
    from stream.supervisor import Supervisor
    from stream.transport.runfiles import run_prefix

    if args.minutes <= 0 or args.interval_s <= 0:
        raise StreamError("--minutes and --interval-s must be > 0")
    warmup = args.interval_s if args.warmup_s is None else args.warmup_s
    record_dir = tempfile.mkdtemp(prefix="bench-soak-record-")
    config = load_config(None, base=_config(args, record_dir))
    sup = Supervisor(config, log_level="warning")
    samples: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    assert config.sinks.publish is not None  # _config always sets it
    subscriber = _Subscriber(config.sinks.publish.endpoint)
    halt = threading.Event()

    def sampler() -> None:
        try:
            while not halt.is_set():
                states = sup.snapshot()["sources"]
                if len(states) == args.streams and all(s == "streaming" for s in states.values()):
                    break
                halt.wait(0.2)
            streaming_since = time.monotonic()
            prefix = run_prefix(sup.run_id)
            while not halt.is_set():
                samples.append(_sample(sup, prefix))
                if time.monotonic() - streaming_since >= args.minutes * 60:
                    break
                halt.wait(args.interval_s)
        except BaseException as exc:  # noqa: BLE001 — reported below
            errors.append(exc)
        finally:
            sup.request_stop("soak done")

    thread = threading.Thread(target=sampler, name="soak-sampler", daemon=True)
    try:
        sup.prepare()
        subscriber.start()
        thread.start()
        for sig in previous:
            signal.signal(sig, lambda signum, _f: sup.request_stop(signal.Signals(signum).name))
        summary = sup.run()
    finally:
        halt.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        subscriber.stop()
        sup.close()
        thread.join(10)
        subscriber.join(5)
        shutil.rmtree(record_dir, ignore_errors=True)
    if errors:
        raise StreamError(f"soak sampling failed: {errors[0]}")
    return _result(args, samples, warmup, summary, subscriber.received)


def _result(args: argparse.Namespace, samples: list[dict[str, Any]], warmup: float, summary: Any,
            received: int) -> BenchResult:
    if len(samples) < 2:
        raise StreamError("soak: fewer than 2 samples; run longer or sample more often (--interval-s)")
    t0 = samples[0]["t"]
    kept = [s for s in samples if s["t"] - t0 >= warmup] or samples[-2:]
    if len(kept) < 2:
        kept = samples[-2:]
    names = sorted({n for s in samples for n in s["rss"]})
    rows = []
    for name in names:
        rss = [(s["t"], s["rss"][name]) for s in kept if name in s["rss"]]
        fds = [(s["t"], s["fds"][name]) for s in kept if name in s["fds"]]
        rows.append({"process": name, "rss_mb": rss[-1][1] if rss else float("nan"),
                     "rss_mb_per_h": _slope_per_h(rss), "fds": fds[-1][1] if fds else float("nan"),
                     "fds_per_h": _slope_per_h(fds)})
    common = [s for s in kept if all(n in s["rss"] for n in names)]  # a restarted process breaks a total
    total_rss = _slope_per_h([(s["t"], sum(s["rss"].values())) for s in common])
    total_fds = _slope_per_h([(s["t"], sum(s["fds"].values())) for s in common])
    shm = _slope_per_h([(s["t"], s["shm_mb"]) for s in kept])
    scrape = max(s["scrape_ms"] for s in samples)
    figures = {
        "minutes": (samples[-1]["t"] - t0) / 60.0, "samples": len(samples), "samples_in_slopes": len(kept),
        "rss_mb_per_h": total_rss, "fds_per_h": total_fds, "shm_mb": samples[-1]["shm_mb"],
        "shm_mb_per_h": shm, "scrape_ms_max": scrape,
        "frames_processed": sum(s.processed for s in summary.sources), "frames_subscribed": received,
        "restarts": sum(summary.restarts.values()),
        # every sample, warm-up included (a plateau and a leak can have the same slope): minutes
        # since the first sample, and each process's RSS in MB (None: not running then)
        "sample_minutes": [round((s["t"] - t0) / 60.0, 2) for s in samples],
        "rss_mb_series": {n: [round(s["rss"][n], 1) if n in s["rss"] else None for s in samples] for n in names},
    }
    failures = []
    if total_rss > args.max_rss_mb_per_h:
        failures.append(f"RSS grows {total_rss:.1f} MB/h (bound {args.max_rss_mb_per_h:g})")
    if total_fds > args.max_fds_per_h:
        failures.append(f"open fds grow {total_fds:.1f}/h (bound {args.max_fds_per_h:g})")
    if shm > args.max_shm_mb_per_h:
        failures.append(f"/dev/shm grows {shm:.2f} MB/h (bound {args.max_shm_mb_per_h:g})")
    if scrape > args.max_scrape_ms:
        failures.append(f"a /metrics scrape took {scrape:.0f} ms (bound {args.max_scrape_ms:g})")
    if figures["restarts"]:
        failures.append(f"{figures['restarts']} stage restarts")
    figures["held"] = not failures
    return BenchResult(rows=rows, summary=figures, failures=failures)
