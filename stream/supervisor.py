"""The supervisor (``stream run``): creates the shared-memory rings and sockets,
spawns one process per capture and per stage, restarts a process that crashes
or stops heartbeating after it was ready (with backoff; too many crashes stop
the run), stops the run at once when a stage fails before it is ready with an
error that a restart cannot fix (config, device, port, weights), serves
/metrics and /healthz (and the control API: ``stream.control``; a source is added,
removed or changed at runtime through ``stream.roster``), shuts down in order on
SIGINT/SIGTERM (sources stop, in-flight frames drain, sinks finalize) and leaves no
process, ipc file or shared-memory segment behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

import zmq

from stream.backoff import doubling
from stream.config import Config, SourceConfig
from stream.errors import STARTUP_EXIT_BASE, ProtocolError, SupervisorError, error_for_exit_code
from stream.health import HealthWindow, verdict
from stream.messages import (
    LOADING,
    LOADING_STATES,
    Control,
    Heartbeat,
    RunReport,
    decode_control,
    encode_control,
)
from stream.metrics import MetricsServer
from stream.roster import RosterChanges
from stream.sources import open_source
from stream.split import SplitPlan, hop_curve, plan
from stream.stages import STAGES, check_pipeline
from stream.status import StatusLine
from stream.summary import DropLedger, RunSummary, SinkTally, summarize_source
from stream.transport.endpoints import check_tcp_port_free, free_port
from stream.transport.keys import Curve, run_curve_keys
from stream.transport.ring import FrameRing, shm_dir
from stream.transport.runfiles import remove_stale_run_files, run_prefix
from stream.transport.sockets import CurveAuth, open_socket, recv_parts

log = logging.getLogger(__name__)

_TERMINATE_GRACE_S = 1.5  # after SIGTERM, before SIGKILL (a stage mid model call cannot react sooner)


@dataclass
class Proc:
    """One supervised process (a capture or a stage)."""

    name: str
    request: dict[str, Any]
    popen: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    last_hb: float = 0.0
    hb: Heartbeat | None = None
    crashes: deque[float] = field(default_factory=deque)
    restarts: int = 0
    restart_at: float | None = None
    finished: bool = False
    exit_code: int | None = None
    failure: str = ""  # the one-line error of a heartbeat in state 'failed'

    @property
    def is_capture(self) -> bool:
        return self.request["role"] == "capture"


class Supervisor:
    def __init__(self, config: Config, *, log_level: str = "info", shard: Any = None,
                 env: Any = None) -> None:
        check_pipeline(config)  # which stage needs what: checked by whoever builds the pipeline
        self.config = config
        self._curve: tuple[dict[str, Any], dict[str, Any]] | None = None  # the run's keys (prepare)
        self.log_level = log_level
        self.run_id = uuid.uuid4().hex[:8]
        self.procs: list[Proc] = []
        self.ledger = DropLedger()  # counts + a bounded recent window: runs last weeks
        self.report: RunReport | None = None
        self.sink_tally = SinkTally()  # what each sink wrote and dropped (heartbeats, the final report)
        self.rings: list[FrameRing] = []
        self.run_dir: Path | None = None
        self.metrics: MetricsServer | None = None
        self._lock = threading.Lock()
        self._stopping: str | None = None
        self._stop_drained = False
        self._last_progress = (0, time.monotonic())
        self._drained_at = 0.0
        self._source_states: dict[str, str] = {}
        self._dropped: dict[str, int] = {}  # frames dropped per source, for the status line
        self._status = StatusLine(config.supervisor.status_interval_s, tuple(s.id for s in config.sources))
        self.split: SplitPlan | None = None
        self._sent_states: dict[str, str] = {}
        self._sent_states_at = 0.0
        self._health_window = HealthWindow(config.supervisor.health_window_s)
        self._captures_started = False
        self._spare: subprocess.Popen[bytes] | None = None  # a capture worker kept ready (keep_spare)
        self.shard = shard  # stream.shard.Shard of a --shard run (the control API adds only its own sources)
        self.roster = RosterChanges(self, env if env is not None else {})
        self.rings_by_source: dict[str, FrameRing] = {}
        self.removed: dict[str, tuple[SourceConfig, int]] = {}  # removed at runtime: (config, frames read)
        self.fps: dict[str, float] = {}  # per source, frames its capture sent per second (newest heartbeats)
        self.frame_age_s: dict[str, float] = {}  # per source, mean frame age at the output between heartbeats
        self._rate_from: dict[str, tuple[int, int]] = {}  # capture name -> (time_ns, frames_out)
        self._age_from: dict[str, tuple[int, float]] = {}  # source -> (frames, age sum) at the output

    # --- set-up --------------------------------------------------------------
    def prepare(self) -> None:
        """Probe every source and create rings and sockets; nothing is spawned yet.
        Raises SourceError / TransportError with a message a user can act on."""
        cfg = self.config
        self.split = plan(cfg)
        for name in dict.fromkeys(self._local_stages()):
            module = import_module(STAGES[name].module)
            if hasattr(module, "preflight"):
                module.preflight(cfg)  # e.g. weights present; before any process starts
        infos = {}
        captures_here = self.split is None or self.split.upstream
        # the capture opens each source again and logs what it finds there (e.g. MOT scores
        # outside [0, 1]): the probe keeps quiet below errors, so the run says it once
        sources_log = logging.getLogger("stream.sources")
        level = sources_log.level
        sources_log.setLevel(logging.ERROR)
        try:
            for s in cfg.sources if captures_here else ():  # downstream of a split: the sources are elsewhere
                src = open_source(s)
                try:
                    infos[s.id] = src.open()
                finally:
                    src.close()
        finally:
            sources_log.setLevel(level)
        if cfg.metrics.enabled:
            check_tcp_port_free(cfg.metrics.host, cfg.metrics.port, "metrics.port")
        for stale in remove_stale_run_files(shm_dir(), Path(tempfile.gettempdir())):
            log.info("removed %s, left behind by a run whose supervisor is gone", stale)
        prefix = run_prefix(self.run_id)  # names the owner: a later run can collect them if we are killed
        self.run_dir = Path(tempfile.mkdtemp(prefix=prefix))
        for s in cfg.sources if captures_here else ():
            info = infos[s.id]
            path = shm_dir() / f"{prefix}{s.id}.ring"
            self.rings.append(FrameRing.create(path, s.ring_slots, info.width * info.height * 3))
            self.rings_by_source[s.id] = self.rings[-1]
        self._zctx = zmq.Context()
        self._hb_ep = self._endpoint("supervisor.hb")
        self._ctl_ep = self._endpoint("supervisor.ctl")
        self._auth = CurveAuth(self._zctx)
        self._curve = run_curve_keys() if cfg.transport.curve and cfg.transport.endpoints == "tcp" else None
        server = Curve.from_spec(self._curve[0]) if self._curve else None
        self.hb_sock = open_socket(self._zctx, f"pull+bind:{self._hb_ep}", hwm=10000, curve=server, auth=self._auth)
        self.ctl_sock = open_socket(self._zctx, f"pub+bind:{self._ctl_ep}", hwm=100, curve=server, auth=self._auth)
        self._build_procs(infos)
        if cfg.metrics.enabled:
            from stream.control import ControlApi

            api = ControlApi(self.roster, cfg.metrics) if cfg.metrics.api else None
            self.metrics = MetricsServer(cfg.metrics.host, cfg.metrics.port, self.snapshot, self.health, self.ready,
                                         idle_timeout_s=cfg.metrics.idle_timeout_s, api=api)

    def _local_stages(self) -> list[str]:
        """The pipeline stages this host runs (all of them unless the pipeline is split)."""
        sp, pipeline = self.split, self.config.pipeline
        if sp is None:
            return list(pipeline)
        return pipeline[: sp.index] if sp.upstream else pipeline[sp.index :]

    def _endpoint(self, name: str) -> str:
        t = self.config.transport
        if t.endpoints == "ipc":
            assert self.run_dir is not None
            return f"ipc://{self.run_dir}/{name}"
        if t.tcp_base_port:
            port = t.tcp_base_port + len(getattr(self, "_ports", []))
            check_tcp_port_free(t.tcp_host, port, "transport.tcp_base_port")
        else:
            port = free_port(t.tcp_host)
        self._ports = [*getattr(self, "_ports", []), port]
        return f"tcp://{t.tcp_host}:{port}"

    def _build_procs(self, infos: dict[str, Any]) -> None:
        cfg = self.config
        # Each model stage gets its share of the cores for its CPU thread pools: with torch's
        # default (every core in every process) two model stages on 2 cores stall each other
        # (measured: 1.0 fps vs 6.4 fps at 1080p). An explicit OMP_NUM_THREADS wins.
        models = sum(1 for n in cfg.pipeline if n in ("detect", "segment", "preprocess")) or 1
        threads = str(max(1, (os.cpu_count() or 1) // models))
        self._worker_env = {k: v for k, v in os.environ.items() if k not in cfg.env_names}  # secrets: stdin only
        self._worker_env.setdefault("OMP_NUM_THREADS", threads)
        names = [f"{n}#{i}" if cfg.pipeline.count(n) > 1 else n for i, n in enumerate(cfg.pipeline)]
        names.append("output")
        sp = self.split
        if sp is not None:  # this host's part; the hop replaces the missing neighbour's input
            names = names[: sp.index] if sp.upstream else names[sp.index :]
        inputs = [self._endpoint(f"{n}.in") for n in names]
        if sp is not None and sp.upstream:
            inputs.append(sp.config.address)
        elif sp is not None:
            inputs[0] = sp.config.bind or sp.config.address
        config_json = cfg.model_dump(mode="json")
        sources = [s.id for s in cfg.sources]
        inline = cfg.transport.pixels == "inline"
        self.capture_input = inputs[0]  # where a capture added at runtime sends
        for i, name in enumerate(names):
            spec: dict[str, Any] = {
                "name": name, "input": f"pull+bind:{inputs[i]}",
                "output": f"push+connect:{inputs[i + 1]}" if i + 1 < len(inputs) else None,
                "heartbeat": f"push+connect:{self._hb_ep}", "control": f"sub+connect:{self._ctl_ep}",
                "ring_dir": str(shm_dir()), "sources": sources, "inline_pixels": inline,
                "hwm": cfg.transport.hwm, "heartbeat_interval_s": cfg.supervisor.heartbeat_interval_s,
                "stale_after_s": {s.id: s.stale_after_s for s in cfg.sources if s.is_live and s.stale_after_s is not None},
            }
            if self._curve:  # the run's own keys on its local tcp hops
                spec.update(input_curve=self._curve[0], control_curve=self._curve[1],
                            output_curve=self._curve[1] if spec["output"] else None)
            if sp is not None and sp.upstream and i == len(names) - 1:  # sends across the hop
                spec.update(output_curve=hop_curve(sp), output_linger_s=sp.config.linger_s, report=True,
                            image_codec=sp.config.pixels, jpeg_quality=sp.config.jpeg_quality)
            elif sp is not None and not sp.upstream and i == 0:  # receives from the other host
                spec.update(input_curve=hop_curve(sp))
            self.procs.append(Proc(name, {"role": "stage", "config": config_json, "spec": spec}))
        for s, ring in zip(cfg.sources if self.rings else (), self.rings, strict=True):
            self.procs.append(self.capture_proc(s, ring, config_json))

    def capture_proc(self, s: SourceConfig, ring: FrameRing, config_json: dict[str, Any]) -> Proc:
        """The (not yet started) capture process of source ``s``, writing into ``ring``."""
        cfg = self.config
        spec = {
            "source_id": s.id, "output": f"push+connect:{self.capture_input}", "heartbeat": f"push+connect:{self._hb_ep}",
            "ring_path": str(ring.path), "live": s.is_live, "inline_pixels": cfg.transport.pixels == "inline",
            "max_frames": s.max_frames,
            "hwm": cfg.transport.hwm, "heartbeat_interval_s": cfg.supervisor.heartbeat_interval_s,
            "random_weights": cfg.random_weights,
            "output_curve": self._curve[1] if self._curve else None,
            "control_curve": self._curve[1] if self._curve else None,
        }
        return Proc(f"capture:{s.id}", {"role": "capture", "config": config_json, "spec": spec})

    # --- process control -------------------------------------------------------
    def _spawn(self, proc: Proc) -> None:
        request = {**proc.request, "log_level": self.log_level}
        spare = self._spare
        if proc.is_capture and spare is not None and spare.poll() is None:
            proc.popen, self._spare = spare, None  # its imports are done: it starts capturing at once
            self.keep_spare()
        else:
            proc.popen = self._worker()
        assert proc.popen.stdin is not None
        proc.popen.stdin.write(json.dumps(request).encode())
        proc.popen.stdin.close()
        proc.started = time.monotonic()
        proc.last_hb = proc.started
        proc.hb = None
        self.sink_tally.replaced(proc.name)
        proc.restart_at = None
        log.debug("started %s (pid %d)", proc.name, proc.popen.pid)

    def _worker(self, *args: str) -> subprocess.Popen[bytes]:
        # stdout belongs to the run's summary (and --json reports): workers write to stderr
        return subprocess.Popen([sys.executable, "-m", "stream.worker", *args], stdin=subprocess.PIPE,
                                stdout=2, env=self._worker_env)

    def keep_spare(self) -> None:
        """Keep one capture worker ready (imports done, waiting for its request) for a
        camera added at runtime: it starts in well under the control API's 5 s even on a
        busy host, where a fresh interpreter took 5-7 s to import PyAV and numpy (measured)."""
        if self._spare is None and not self._stopping:
            self._spare = self._worker("--spare")

    def _end_spare(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None and spare.poll() is None:
            assert spare.stdin is not None
            spare.stdin.close()  # an empty request: it leaves
            try:
                spare.wait(_TERMINATE_GRACE_S)
            except subprocess.TimeoutExpired:
                spare.kill()
                spare.wait()

    def request_stop(self, why: str) -> None:
        """Begin an ordered shutdown: sources stop, in-flight frames drain."""
        if self._stopping:
            return
        self._stopping = why
        # shutdown_timeout_s bounds the whole stop: the drain gets what the terminate grace leaves
        self._stop_deadline = time.monotonic() + max(0.5, self.config.supervisor.shutdown_timeout_s - _TERMINATE_GRACE_S)
        log.info("stopping (%s): sources stop, in-flight frames drain", why)
        if not any(p.is_capture for p in self.procs):  # downstream of a split: end what arrived
            self.ctl_sock.send(encode_control(Control("drain")))
        for p in self.procs:
            # before the captures start no frame is in flight: the stages (maybe still
            # loading models, which SIGTERM ends at once) have nothing to drain
            if (p.is_capture or not self._captures_started) and p.popen and p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)

    def run(self) -> RunSummary:
        """Run to the end of all sources (or a stop request); returns the summary."""
        t0 = self._status.started = time.monotonic()
        if self.metrics:
            self.metrics.start()
        for p in self.procs:  # stages first, output first: each binds its input before upstream sends
            if not p.is_capture:
                if self._stopping:  # a stop request came while spawning
                    p.finished = True
                else:
                    self._spawn(p)
        log.info("loading and warming up the models of %s (a first run builds and caches them)",
                 ", ".join(p.name for p in self.procs if not p.is_capture))
        try:
            while not self._done():
                self._pump_heartbeats(timeout_ms=100)
                self.roster.step()  # sources added, removed or changed through the control API
                self._publish_source_states()
                if not self._captures_started and (self._stages_ready() or self._stopping):
                    # models are loaded and warmed up: frames start flowing only now
                    if not self._stopping:
                        log.info("every stage is ready after %.1f s: sources start", time.monotonic() - t0)
                    for p in self.procs:
                        if p.is_capture and not self._stopping:
                            self._spawn(p)
                        elif p.is_capture:
                            p.finished = True
                        elif self._stopping and p.popen is not None and p.popen.poll() is None:
                            p.popen.send_signal(signal.SIGTERM)  # stopped before any frame: nothing to drain
                    self._captures_started = True
                    if self.config.metrics.enabled and self.config.metrics.api and self.split is None:
                        self.keep_spare()
                self._check_procs()
                self._observe_health()
                self._maybe_drain()
                self._print_status()
                if self.split is not None and self._stopping and not self._stop_drained \
                        and time.monotonic() > self._stop_deadline - 4.0:
                    # a stage blocked on the other host would be killed at the deadline without
                    # its report: drained now, it gives up sending and finishes in time
                    self.ctl_sock.send(encode_control(Control("drain")))
                    self._stop_drained = True
                if self._stopping and time.monotonic() > self._stop_deadline:
                    log.warning("shutdown deadline passed; terminating remaining processes")
                    break
        finally:
            self.roster.cancel("the run is stopping")
            self._end_spare()
            self._terminate_all()
        return self._summary(time.monotonic() - t0)

    def _done(self) -> bool:
        """The run is over when the last stage has finished (every source ended there):
        the output, or upstream of a split the stage that hands frames to the other host."""
        return [p for p in self.procs if not p.is_capture][-1].finished

    def _stages_ready(self) -> bool:
        return all(p.hb is not None and p.hb.state in ("running", "done") for p in self.procs if not p.is_capture)

    def _pump_heartbeats(self, timeout_ms: int) -> None:
        parts = recv_parts(self.hb_sock, timeout_ms)
        while parts is not None:
            try:
                msg = decode_control(parts[0])
            except ProtocolError as exc:
                log.warning("ignoring a bad heartbeat: %s", exc)
            else:
                with self._lock:
                    if isinstance(msg, Heartbeat):
                        self._on_heartbeat(msg)
                    elif isinstance(msg, RunReport):
                        self.report = msg
                        self.sink_tally.update(msg.stage, msg.sinks)
            parts = recv_parts(self.hb_sock, 0)

    def _publish_source_states(self) -> None:
        """Tell the stages each source's capture state (the live view shows it): on a
        change, and once a second for stages that subscribed late (PUB drops what came before)."""
        now = time.monotonic()
        if self._source_states == self._sent_states and now - self._sent_states_at < 1.0:
            return
        self._sent_states, self._sent_states_at = dict(self._source_states), now
        self.ctl_sock.send(encode_control(Control("sources", sources=self._sent_states)))

    def _on_heartbeat(self, hb: Heartbeat) -> None:
        proc = next((p for p in self.procs if p.name == hb.stage), None)
        if proc is None or proc.popen is None or proc.popen.pid != hb.pid:
            return  # a late heartbeat from a process that was replaced
        if hb.state == LOADING and (proc.hb is None or proc.hb.state != LOADING):
            log.debug("%s is loading (pid %d)", proc.name, hb.pid)
        proc.hb = hb
        proc.last_hb = time.monotonic()
        self._observe_rates(proc, hb)
        self.sink_tally.update(proc.name, hb.sinks)
        self.ledger.add(hb.drops)
        for d in hb.drops:
            self._dropped[d.source] = self._dropped.get(d.source, 0) + d.last - d.first + 1
        self._source_states.update(hb.source_state)
        if hb.state == "failed" and hb.detail:
            proc.failure = hb.detail
            log.error("%s: %s", proc.name, hb.detail)

    def _observe_rates(self, proc: Proc, hb: Heartbeat) -> None:
        """The control API's fps (a capture's frames sent per second) and frame age (mean
        at the output since its previous heartbeat), over at least a second."""
        if proc.is_capture:
            source = proc.request["spec"]["source_id"]
            t0, n0 = self._rate_from.setdefault(proc.name, (hb.time_ns, hb.frames_out))
            dt = (hb.time_ns - t0) / 1e9
            if dt >= 1.0 or hb.frames_out < n0:
                self.fps[source] = max(0.0, hb.frames_out - n0) / dt if dt > 0 and hb.frames_out >= n0 else 0.0
                self._rate_from[proc.name] = (hb.time_ns, hb.frames_out)
        elif proc.name == "output":
            for source, counts in hb.age_buckets.items():
                n, total = (counts[-1] if counts else 0), hb.age_sum_s.get(source, 0.0)
                n0, total0 = self._age_from.get(source, (0, 0.0))
                if n > n0:
                    self.frame_age_s[source] = (total - total0) / (n - n0)
                    self._age_from[source] = (n, total)
                elif n < n0:  # the output restarted
                    self._age_from[source] = (n, total)

    def _observe_health(self) -> None:
        with self._lock:
            self._health_window.observe(time.monotonic(), {p.name: (p.hb.frames_in, p.hb.frames_out, p.hb.errors)
                                                           for p in self.procs if p.hb})

    def _check_procs(self) -> None:
        now = time.monotonic()
        sup = self.config.supervisor
        for p in self.procs:
            if p.finished or p.popen is None:
                continue
            if p.restart_at is not None:
                if now >= p.restart_at:
                    p.restarts += 1
                    log.warning("restarting %s (restart %d)", p.name, p.restarts)
                    self._spawn(p)
                continue
            assert p.popen is not None
            rc = p.popen.poll()
            if rc is None:
                loading = p.hb is None or p.hb.state in LOADING_STATES
                limit = (sup.startup_timeout_s if p.hb is None else sup.load_heartbeat_timeout_s if loading
                         else sup.heartbeat_timeout_s)
                if loading and now - p.started > sup.startup_timeout_s and p.hb is not None:
                    log.error("%s is still loading %.0f s after it started (supervisor.startup_timeout_s); "
                              "killing it", p.name, now - p.started)
                    p.popen.kill()
                    p.popen.wait()
                    self._crashed(p, "still loading")
                elif now - p.last_hb > limit:
                    log.error("%s sent no heartbeat for %.0f s%s; killing it", p.name, now - p.last_hb,
                              " while loading" if loading else "")
                    p.popen.kill()
                    p.popen.wait()
                    self._crashed(p, "no heartbeat")
                elif p.hb and p.hb.busy_s > sup.stall_timeout_s:
                    log.error("%s has been stuck in one batch for %.0f s; killing it", p.name, p.hb.busy_s)
                    p.popen.kill()
                    p.popen.wait()
                    self._crashed(p, "stuck")
                continue
            if rc == 0 or (p.is_capture and rc == 3) or self._stopping:
                p.finished, p.exit_code = True, rc
                if rc == 3:
                    self._source_states[p.request["spec"]["source_id"]] = "failed"
                continue
            if not p.is_capture and rc > STARTUP_EXIT_BASE:
                self._failed_to_start(p, rc - STARTUP_EXIT_BASE)
            self._crashed(p, f"exit code {rc}" if rc > 0 else f"killed by signal {-rc}")

    def _failed_to_start(self, p: Proc, code: int) -> None:
        """A stage failed before it was ready with an error that a restart cannot fix
        (config, device, port, weights): stop the run now with that error and its code."""
        deadline = time.monotonic() + 1.0
        while not p.failure and time.monotonic() < deadline:  # its last heartbeat may still be on the way
            self._pump_heartbeats(timeout_ms=50)
        why = p.failure or "see its log line above"
        raise error_for_exit_code(code, f"stage {p.name} could not start: {why}")

    def _crashed(self, p: Proc, why: str) -> None:
        if p.is_capture and p.request["spec"]["source_id"] in self.roster.leaving:
            p.finished, p.restart_at = True, None  # being removed: not restarted
            return
        for ring in self.rings:  # frames it held are never released: tell the captures (FrameRing.epoch)
            ring.bump_epoch()
        now = time.monotonic()
        sup = self.config.supervisor
        p.crashes.append(now)
        while p.crashes and now - p.crashes[0] > sup.crash_window_s:
            p.crashes.popleft()
        if len(p.crashes) >= sup.max_crashes:
            raise SupervisorError(
                f"stage {p.name} crashed {len(p.crashes)} times in {sup.crash_window_s:.0f} s (last: {why}); "
                "stopping the run — see the log lines above for its error"
            )
        backoff = doubling(len(p.crashes), sup.restart_backoff_s, sup.restart_backoff_max_s)
        log.error("%s crashed (%s); restarting in %.1f s", p.name, why, backoff)
        p.restart_at = now + backoff

    def _print_status(self) -> None:
        """Every supervisor.status_interval_s: one line per source (stream.status)."""
        # the output, or on the upstream host of a split (no output here) the stage before the hop
        last = next((p for p in self.procs if p.name == "output"), None) or next(
            (p for p in reversed(self.procs) if not p.is_capture), None
        )
        if last is None:
            return
        with self._lock:
            lines = self._status.poll(time.monotonic(), last.hb, self._dropped)
        for line in lines:
            log.info("%s", line)

    def _maybe_drain(self) -> None:
        """An end-of-stream lost with a crashed stage would leave the chain waiting:
        once every capture has finished and nothing moved for drain_idle_s, tell the
        stages to end their remaining sources."""
        captures = [p for p in self.procs if p.is_capture]
        if not captures or self.split is not None:
            # Split: downstream, the end of stream comes from the upstream host; upstream, an idle
            # pipeline is most often the other host not reading yet (loading its models), and
            # draining would drop the frames it has not taken. Ctrl-C ends a split run.
            return
        if not all(p.finished or (p.hb is not None and p.hb.state in ("done", "failed")) for p in captures):
            return
        progress = sum(p.hb.frames_in + p.hb.frames_out for p in self.procs if p.hb)
        now = time.monotonic()
        if progress != self._last_progress[0]:
            self._last_progress = (progress, now)
            return
        def busy(p: Proc) -> bool:
            if p.finished or p.is_capture:
                return False
            if p.restart_at is not None or p.hb is None:
                return True
            return p.hb.state in LOADING_STATES or p.hb.busy_s > 0

        busy_now = any(busy(p) for p in self.procs)
        idle = now - self._last_progress[1]
        if not busy_now and idle > self.config.supervisor.drain_idle_s and now - self._drained_at > 2.0:
            log.warning("pipeline idle after end of input; draining the stages")
            self.ctl_sock.send(encode_control(Control("drain")))
            self._drained_at = now

    def _terminate_all(self) -> None:
        alive = [p.popen for p in self.procs if p.popen and p.popen.poll() is None]
        for popen in alive:
            popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _TERMINATE_GRACE_S
        for popen in alive:
            try:
                popen.wait(max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        self._pump_heartbeats(timeout_ms=0)

    def close(self) -> None:
        """Release everything: sockets, rings, ipc files, metrics server."""
        if self.metrics:
            self.metrics.close()
        for attr in ("hb_sock", "ctl_sock"):
            sock = getattr(self, attr, None)
            if sock is not None:
                sock.close(0)
        if hasattr(self, "_auth"):
            self._auth.stop()
        if hasattr(self, "_zctx"):
            self._zctx.term()
        for ring in self.rings:
            ring.unlink()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # --- reporting -----------------------------------------------------------
    def _summary(self, wall_s: float) -> RunSummary:
        reports = {r.source: r for r in (self.report.sources if self.report else ())}
        sources = []
        for s in [*(c for c, _ in self.removed.values()), *self.config.sources]:
            cap = next((p for p in self.procs if p.name == f"capture:{s.id}"), None)  # None: on another host
            read = (cap.hb.last_seq.get(s.id, -1) + 1) if cap and cap.hb else 0
            if cap is None and s.id in self.removed and s not in self.config.sources:
                read = self.removed[s.id][1]
            sources.append(summarize_source(reports.get(s.id), s.id, read, self.ledger,
                                            self._source_states.get(s.id, "done"), stopped=bool(self._stopping)))
            sources[-1].sinks = self.sink_tally.of_source(s.id)
        return RunSummary(sources, {p.name: p.restarts for p in self.procs}, wall_s,
                          random_weights=self.config.random_weights, stopped_by=self._stopping or "end of input")

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            stages: dict[str, Any] = {}
            prev_seq: dict[str, int] = {}
            dropped_seqs: dict[str, list[tuple[int, int]]] = {}
            for d in self.ledger.recent():
                dropped_seqs.setdefault(d.source, []).append((d.first, d.last))
            for p in sorted(self.procs, key=lambda p: not p.is_capture):
                hb = p.hb
                last = dict(hb.last_seq) if hb else {}
                stages[p.name] = {
                    "frames_in": hb.frames_in if hb else 0, "frames_out": hb.frames_out if hb else 0,
                    "errors": hb.errors if hb else 0, "latency_ms": hb.latency_ms if hb else (0.0, 0.0),
                    "restarts": p.restarts, "up": bool(p.popen and p.popen.poll() is None),
                    "pid": p.popen.pid if p.popen else None,
                    "state": hb.state if hb else "starting",
                    "queue_depth": {k: _frames_between(dropped_seqs.get(k, []), v, prev_seq[k])
                                    for k, v in last.items() if k in prev_seq} if not p.is_capture else {},
                }
                if p.is_capture:
                    prev_seq.update(last)
                else:
                    prev_seq = {**prev_seq, **last}
            drops = dict(self.ledger.counts)
            output = next((p.hb for p in self.procs if p.name == "output"), None)
            ages = {src: (counts, output.age_sum_s.get(src, 0.0)) for src, counts in output.age_buckets.items()} \
                if output else {}
            return {"stages": stages, "drops": drops, "sources": dict(self._source_states), "frame_age": ages,
                    "sinks": self.sink_tally.totals()}

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(answer 200, body) for /healthz; see stream.health for the verdicts."""
        snap = self.snapshot()
        with self._lock:
            code, body = verdict(snap["stages"], snap["sources"], self._health_window, time.monotonic())
        return code == 200, {**body, "run": self.run_id,
                    "stages": {k: {"up": v["up"], "state": v["state"], "restarts": v["restarts"], "pid": v["pid"],
                                   "frames_out": v["frames_out"]}
                               for k, v in snap["stages"].items()},
                    "sources": dict(self._source_states)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready to serve (a readiness probe): every stage has loaded and warmed up its
        model (heartbeat state running or done; not waiting to be restarted), captures are
        started, and no stop is under way. Apart from health(): a camera that is down does
        not make the pipeline unready."""
        with self._lock:
            waiting = [p.name for p in self.procs if not p.is_capture and not p.finished and (
                p.restart_at is not None or p.hb is None or p.hb.state not in ("running", "done"))]
            captures = any(p.is_capture and p.popen is not None for p in self.procs) \
                or not any(p.is_capture for p in self.procs)  # downstream of a split: the captures are elsewhere
        ok = not waiting and captures and not self._stopping
        why = "stopping" if self._stopping else ("stages not ready: " + ", ".join(waiting) if waiting else
                                                  ("starting captures" if not captures else ""))
        return ok, {"ready": ok, "run": self.run_id, **({"waiting": why} if why else {})}


def _frames_between(dropped: list[tuple[int, int]], seq: int, upstream_seq: int) -> int:
    """Frames between a stage (newest seq ``seq``) and the one before it (``upstream_seq``):
    the seqs in between, less those dropped on the way (edge drops take up seqs too).
    Frames of a source travel in order, so every seq in between that was dropped was
    dropped before this stage. dropped: (first, last) seq ranges of that source."""
    gap = upstream_seq - seq
    if gap <= 0:
        return 0
    gone = sum(max(0, min(last, upstream_seq) - max(first, seq + 1) + 1) for first, last in dropped)
    return max(0, gap - gone)


def run_pipeline(config: Config, *, log_level: str = "info", shard: Any = None,
                 env: Any = None) -> RunSummary:
    """Prepare, run and clean up; SIGINT/SIGTERM trigger an ordered shutdown. shard: the
    ``--shard`` of the run, env: what ``${ENV:NAME}`` in a source added at runtime reads."""
    sup = Supervisor(config, log_level=log_level, shard=shard, env=env)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, _frame: Any) -> None:
        sup.request_stop(signal.Signals(signum).name)

    try:
        sup.prepare()
        for sig in previous:
            signal.signal(sig, on_signal)
        return sup.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sup.close()
