"""What ``stream bench pipeline`` watches while a pipeline runs, from outside it.

- ``PublishProbe``: a subscriber on the publish sink (its own thread). Per stream:
  capture→publish latency of every frame (``publish_ns - capture_ns``, both wall-clock
  ns on this host), frame age (every 100 ms, how old the newest published frame of
  the stream is: what a consumer showing the latest result sees; a stalled stream's
  age grows even when the frames that do arrive are fresh), frames the live source
  skipped before they got a seq (gaps in the frame index read from ``pts``), objects
  and masks per frame.
- ``ResourceMonitor``: every 0.5 s, CPU time of every worker process (pids from
  ``Supervisor.snapshot()``) with psutil, the whole host's CPU, and on CUDA the GPU's
  utilisation (NVML, when ``nvidia-ml-py`` is installed) and used memory. Counted only
  in the steady window: from ``delay_s`` after every capture is streaming until the
  first one ends (model loading is always left out, the first seconds of video on request);
  or, given ``published`` (frames the probe counted so far) and ``until``, from the first
  sample with every stage ready (before the captures start: no frame's work is left out)
  until ``until`` frames were published (the capacity trial: a file source not paced by
  time, whose capture ends while the pipeline still holds frames).
- ``stdout_to_stderr`` and ``cpu_threads``: what the benchmark's processes inherit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil

log = logging.getLogger(__name__)


@dataclass
class StreamStats:
    """What the probe saw of one stream after its warm-up frames. latency_ms, age_ms:
    samples in ms; objects, masked: objects and objects with a mask (keyframe or propagated), summed."""

    latency_ms: list[float] = field(default_factory=list)
    age_ms: list[float] = field(default_factory=list)
    frames: int = 0
    objects: int = 0
    masked: int = 0
    first: tuple[int, int] | None = None  # (frame index, seq) of the first record
    last: tuple[int, int] | None = None
    latest_capture_ns: int = 0
    first_publish_ns: int = 0  # publish_ns (wall clock) of the first and last counted record
    last_publish_ns: int = 0
    ended: bool = False

    @property
    def source_skipped(self) -> int:
        """Frames the live source skipped (reader too late) between the first and last record."""
        if self.first is None or self.last is None:
            return 0
        return max(0, (self.last[0] - self.first[0]) - (self.last[1] - self.first[1]))


class PublishProbe(threading.Thread):
    """Subscribes to ``endpoint`` and fills ``stats`` per source id until ``stop()`` or every
    source in ``source_fps`` (source id → nominal frames/s, to turn pts into a frame index) ended.
    Records with seq < ``skip_seq`` (warm-up) are not counted; age is sampled from the first
    counted record on."""

    def __init__(
        self, endpoint: str, source_fps: dict[str, float], *, skip_seq: int = 0, age_interval_s: float = 0.1
    ) -> None:
        super().__init__(name="publish-probe", daemon=True)
        self.endpoint = endpoint
        self.source_fps = dict(source_fps)
        self.skip_seq = skip_seq
        self.age_interval_s = age_interval_s
        self.stats = {s: StreamStats() for s in source_fps}
        self.published = 0  # frames counted, all streams (ResourceMonitor reads it from its thread)
        self.lost = 0
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        from stream.client import FrameRecord, Subscriber

        try:
            sub = Subscriber(self.endpoint, hwm=1_000_000)
        except BaseException as exc:  # noqa: BLE001 — reported by the caller
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        next_age = time.monotonic() + self.age_interval_s
        try:
            while not self._halt.is_set() and not all(s.ended for s in self.stats.values()):
                rec = sub.recv(timeout_s=0.02)
                now_ns = time.time_ns()
                if rec is not None and rec.source in self.stats:
                    st = self.stats[rec.source]
                    if isinstance(rec, FrameRecord):
                        if rec.seq >= self.skip_seq:
                            self._add(st, rec)
                    else:
                        st.ended = True
                if time.monotonic() >= next_age:
                    next_age += self.age_interval_s
                    for st in self.stats.values():
                        if st.latest_capture_ns and not st.ended:
                            st.age_ms.append((now_ns - st.latest_capture_ns) / 1e6)
            self.lost = sum(sub.lost.values())
        finally:
            sub.close()

    def _add(self, st: StreamStats, rec: Any) -> None:
        st.frames += 1
        st.first_publish_ns = st.first_publish_ns or rec.publish_ns
        st.last_publish_ns = rec.publish_ns
        st.latency_ms.append((rec.publish_ns - rec.capture_ns) / 1e6)
        st.latest_capture_ns = max(st.latest_capture_ns, rec.capture_ns)
        st.objects += len(rec.objects)
        st.masked += sum(1 for o in rec.objects if o.mask_kind is not None)
        num, den = rec.time_base
        index = round(rec.pts * num / den * self.source_fps[rec.source])
        if st.first is None:
            st.first = (index, rec.seq)
        st.last = (index, rec.seq)
        self.published += 1


@dataclass
class Resources:
    """Steady-window figures. cpu_cores: CPU seconds per second of the workers (1.0 = one
    core busy); cpu_util: that over the host's cores; host_cpu_util: the whole host (other
    users included); per_stage: cores per stage (captures summed). GPU fields None without
    CUDA; gpu_util None without NVML; gpu_mem_mb: device memory used above the level
    before the run (first, last and max sample of the window). published: frames the probe
    counted inside the window (only with ``ResourceMonitor(published=…)``, else 0)."""

    window_s: float = 0.0
    published: int = 0
    cpu_cores: float = 0.0
    cpu_util: float = 0.0
    host_cpu_util: float = 0.0
    per_stage: dict[str, float] = field(default_factory=dict)
    gpu_util: float | None = None
    gpu_mem_mb: tuple[float, float, float] | None = None


class ResourceMonitor(threading.Thread):
    """Samples ``snapshot()`` (Supervisor.snapshot) every ``interval_s`` in its own thread.
    With ``published`` (frames published so far, e.g. ``lambda: probe.published``) the
    window runs from the first sample with every non-capture stage ready to the first with
    ``until`` published, and ``Resources.published`` counts the frames published inside it."""

    def __init__(
        self,
        snapshot: Any,
        cuda_index: int | None,
        *,
        delay_s: float = 0.0,
        interval_s: float = 0.5,
        published: Callable[[], int] | None = None,
        until: int = 0,
    ) -> None:
        super().__init__(name="resource-monitor", daemon=True)
        self.snapshot = snapshot
        self.delay_s = delay_s
        self.interval_s = interval_s
        self.published = published
        self.until = until
        self.gpu = _Gpu(cuda_index) if cuda_index is not None else None
        self.result = Resources()
        self._halt = threading.Event()
        self._procs: dict[int, tuple[str, psutil.Process]] = {}

    def stop(self) -> None:
        self._halt.set()

    def _cpu(self, stages: dict[str, Any]) -> dict[int, tuple[str, float]]:
        """CPU seconds so far of every worker that is up, by pid: (stage group, seconds). With
        ``published``, a process counts from its first heartbeat on (a capture started inside
        the window: its imports are a start-up cost, not a frame's)."""
        out = {}
        for name, st in stages.items():
            pid = st.get("pid")
            if not pid or not st.get("up") or (self.published is not None and st.get("state") == "starting"):
                continue
            try:
                if pid not in self._procs:
                    self._procs[pid] = (name.split(":")[0], psutil.Process(pid))
                group, proc = self._procs[pid]
                t = proc.cpu_times()
                out[pid] = (group, t.user + t.system)
            except psutil.Error:
                continue
        return out

    def run(self) -> None:
        start: dict[int, tuple[str, float]] = {}
        last: dict[int, tuple[str, float]] = {}
        t_open = t_close = 0.0
        streaming_since = 0.0
        host0 = host1 = None
        gpu_util: list[float] = []
        gpu_mem: list[float] = []
        done = published0 = published1 = 0
        while not self._halt.wait(self.interval_s):
            stages = self.snapshot()["stages"]
            if self.published is not None:  # every stage ready .. `until` frames published
                done = self.published()
                if not t_open:
                    workers = [st for name, st in stages.items() if not name.startswith("capture:")]
                    if workers and all(st["state"] == "running" and st["up"] for st in workers):
                        t_open, host0, published0 = time.monotonic(), psutil.cpu_times(), done
                        start = self._cpu(stages)
                    continue
                streaming = published1 < self.until
            else:
                caps = [st for name, st in stages.items() if name.startswith("capture:")]
                streaming = bool(caps) and all(
                    st["state"] in ("streaming", "running") and st["up"] for st in caps
                )
            if not t_open:
                if streaming and not streaming_since:
                    streaming_since = time.monotonic()
                if streaming and time.monotonic() - streaming_since >= self.delay_s:
                    t_open, host0 = time.monotonic(), psutil.cpu_times()
                    start = self._cpu(stages)
                continue
            if not streaming:
                break
            now = self._cpu(stages)
            for pid, value in now.items():
                start.setdefault(pid, value)  # a process that (re)started inside the window
            last = {**last, **now}
            t_close, host1 = time.monotonic(), psutil.cpu_times()
            published1 = done
            if self.gpu is not None:
                util, mem = self.gpu.sample()
                if util is not None:
                    gpu_util.append(util)
                gpu_mem.append(mem)
        self.result.published = published1 - published0 if self.published is not None and t_close else 0
        self._finish(
            start, last, t_close - t_open if t_open and t_close else 0.0, host0, host1, gpu_util, gpu_mem
        )

    def _finish(
        self,
        start: dict[int, tuple[str, float]],
        last: dict[int, tuple[str, float]],
        window: float,
        host0: Any,
        host1: Any,
        gpu_util: list[float],
        gpu_mem: list[float],
    ) -> None:
        r = self.result
        r.window_s = window
        if window <= 0:
            return
        per_stage: dict[str, float] = {}
        for pid, (group, t1) in last.items():
            per_stage[group] = per_stage.get(group, 0.0) + (t1 - start[pid][1]) / window
        r.per_stage = {k: round(v, 3) for k, v in per_stage.items()}
        r.cpu_cores = sum(per_stage.values())
        r.cpu_util = r.cpu_cores / (psutil.cpu_count() or 1)
        if host0 is not None and host1 is not None:
            busy = _busy(host1) - _busy(host0)
            total = sum(host1) - sum(host0)
            r.host_cpu_util = busy / total if total > 0 else 0.0
        if self.gpu is not None:
            r.gpu_util = sum(gpu_util) / len(gpu_util) / 100.0 if gpu_util else None
            if gpu_mem:
                r.gpu_mem_mb = (gpu_mem[0], gpu_mem[-1], max(gpu_mem))


def _busy(t: Any) -> float:
    idle = t.idle + getattr(t, "iowait", 0.0)
    return float(sum(t)) - idle


class _Gpu:
    """Used device memory (MB, relative to construction time) and utilisation (%) of one
    CUDA device: NVML when importable (no CUDA context here), else torch.cuda.mem_get_info
    (which creates one in this process; the baseline taken here includes it) and no utilisation."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:  # noqa: BLE001 — NVML is optional: missing module or driver
            log.info("GPU utilisation not measured (NVML unavailable: %s); install nvidia-ml-py for it", exc)
            self.nvml = None
        self.baseline = self._used_mb()

    def _used_mb(self) -> float:
        if self.nvml is not None:
            return float(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used) / 2**20
        import torch

        free, total = torch.cuda.mem_get_info(self.index)
        return float(total - free) / 2**20

    def sample(self) -> tuple[float | None, float]:
        util = None
        if self.nvml is not None:
            util = float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)
        return util, self._used_mb() - self.baseline


def pooled(values: Iterable[list[float]]) -> list[float]:
    """All samples of several streams in one list."""
    return [v for vs in values for v in vs]


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 points at stderr while the benchmark runs: worker processes inherit
    it, and super-gradients prints to stdout on import; --json output must be alone there."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """OMP_NUM_THREADS for the worker processes (they inherit the environment) and torch's
    thread count here (the naive loop), restored afterwards."""
    if threads is None:
        yield
        return
    import torch

    saved_env, saved_threads = os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved_threads)
        if saved_env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved_env
