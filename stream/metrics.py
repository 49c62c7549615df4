"""``/metrics`` (Prometheus text), ``/healthz`` and ``/readyz`` (JSON) served by the
supervisor on a loopback port by default. Values come from the latest heartbeats.

``/healthz`` says whether the run is healthy (``Supervisor.health``: a liveness
check). ``/readyz`` says whether it serves (a readiness probe): 200 only once every
stage has loaded and warmed up its model and captures have started, 503 while a
restarted stage waits or loads again and once a stop has begun; a camera that is
down does not make a pipeline unready (its other cameras still run)."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from stream.errors import TransportError
from stream.httpd import GuardedHandler, GuardedServer, is_loopback
from stream.messages import AGE_BUCKETS_S
from stream.sinks import MESSAGE_SINKS

SOURCE_STATES = ("connecting", "streaming", "stalled", "failed", "done")

log = logging.getLogger(__name__)


class _HeartbeatCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        snap = self._snapshot()
        frames_in = CounterMetricFamily("stream_stage_frames_in", "frames received by a stage process", labels=["stage"])
        frames_out = CounterMetricFamily("stream_stage_frames_out", "frames sent on by a stage process", labels=["stage"])
        errors = CounterMetricFamily("stream_stage_errors", "per-frame failures in a stage", labels=["stage"])
        drops = CounterMetricFamily("stream_frames_dropped", "frames dropped on purpose", labels=["source", "reason"])
        latency = GaugeMetricFamily("stream_stage_latency_ms", "stage processing time per frame", labels=["stage", "quantile"])
        restarts = CounterMetricFamily("stream_stage_restarts", "restarts of a stage process", labels=["stage"])
        up = GaugeMetricFamily("stream_stage_up", "1 when the stage process is running", labels=["stage"])
        depth = GaugeMetricFamily("stream_stage_queue_depth", "frames between the previous stage and this one",
                                  labels=["stage", "source"])
        for name, st in snap["stages"].items():
            frames_in.add_metric([name], st["frames_in"])
            frames_out.add_metric([name], st["frames_out"])
            errors.add_metric([name], st["errors"])
            latency.add_metric([name, "0.5"], st["latency_ms"][0])
            latency.add_metric([name, "0.99"], st["latency_ms"][1])
            restarts.add_metric([name], st["restarts"])
            up.add_metric([name], 1.0 if st["up"] else 0.0)
            for source, d in st.get("queue_depth", {}).items():
                depth.add_metric([name, source], d)
        for (source, reason), n in snap["drops"].items():
            drops.add_metric([source, reason], n)
        state = GaugeMetricFamily("stream_source_state", "1 for the state a source is in", labels=["source", "state"])
        for source, current in snap.get("sources", {}).items():
            for name in SOURCE_STATES:
                state.add_metric([source, name], 1.0 if current == name else 0.0)
        age = HistogramMetricFamily("stream_frame_age_seconds", "output time minus capture time of each frame",
                                    labels=["source"])
        for source, (counts, total) in snap.get("frame_age", {}).items():
            bounds = [*(f"{b:g}" for b in AGE_BUCKETS_S), "+Inf"]
            age.add_metric([source], list(zip(bounds, counts, strict=True)), total)
        sink_frames = CounterMetricFamily("stream_sink_frames", "frames each sink wrote (outcome 'written') "
                                          "or dropped (outcome: the reason)", labels=["sink", "source", "outcome"])
        sink_messages = CounterMetricFamily("stream_sink_messages", "messages (MQTT events) each sink published "
                                            "(outcome 'written') or did not", labels=["sink", "source", "outcome"])
        for sink, rows in snap.get("sinks", {}).items():
            family = sink_messages if sink in MESSAGE_SINKS else sink_frames
            for source, row in rows.items():
                for outcome, n in row.items():
                    family.add_metric([sink, source, outcome], n)
        yield from (frames_in, frames_out, errors, drops, latency, restarts, up, depth, state, age, sink_frames,
                    sink_messages)


class MetricsServer:
    """Serves in a daemon thread; ``port`` is the bound port (0 in config picks one).

    Bound to a loopback host, it answers only requests whose Host header names a
    loopback host (DNS rebinding); bound elsewhere (a Prometheus scraping a pod) it
    answers any Host. A connection that sends nothing for ``idle_timeout_s`` is closed.
    """

    def __init__(self, host: str, port: int, snapshot: Callable[[], dict[str, Any]],
                 health: Callable[[], tuple[bool, dict[str, Any]]],
                 ready: Callable[[], tuple[bool, dict[str, Any]]] | None = None, *,
                 idle_timeout_s: float = 10.0) -> None:
        registry = CollectorRegistry()
        registry.register(_HeartbeatCollector(snapshot))

        class Handler(GuardedHandler):
            server_version = "stream-metrics"

            def do_GET(self) -> None:  # noqa: N802
                if not self.host_allowed():
                    return
                if self.path == "/metrics":
                    body, ctype, code = generate_latest(registry), "text/plain; version=0.0.4", 200
                elif self.path in ("/healthz", "/readyz") and (probe := health if self.path == "/healthz" else ready):
                    ok, detail = probe()
                    body, ctype, code = json.dumps(detail).encode(), "application/json", 200 if ok else 503
                else:
                    body, ctype, code = b"not found: try /metrics, /healthz or /readyz\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        bind_host = host.strip("[]")
        try:
            self._server = GuardedServer((bind_host, port), Handler, loopback_only=is_loopback(host),
                                         family=socket.AF_INET6 if ":" in bind_host else socket.AF_INET,
                                         idle_timeout_s=idle_timeout_s)
        except OSError as exc:
            raise TransportError(
                f"metrics.port: {host}:{port} cannot be used ({exc.strerror}); "
                "choose another with --set metrics.port=N (0 picks a free port)"
            ) from exc
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics and /healthz", self._server.server_address[0], self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
