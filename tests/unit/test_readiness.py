"""/readyz: a pipeline is ready (its models warm, captures started) or not, apart from
/healthz, whose rules (degraded, 503) belong to the supervisor's liveness check."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from stream.config import load_config
from stream.messages import Heartbeat
from stream.metrics import MetricsServer
from stream.supervisor import Proc, Supervisor


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _hb(name: str, pid: int, state: str) -> Heartbeat:
    return Heartbeat(stage=name, pid=pid, time_ns=time.time_ns(), state=state)


def test_readyz_is_503_until_models_are_warm_and_captures_run_and_during_a_restart_or_stop() -> None:
    sup = Supervisor(load_config(None, base={"sources": [{"id": "cam", "type": "pattern", "live": True}],
                                             "pipeline": ["passthrough"]}))
    # real (idle) processes stand in for the workers
    popens = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
    stage, output = (Proc(n, {"role": "stage"}, popen=p) for n, p in zip(("passthrough", "output"), popens, strict=True))
    capture = Proc("capture:cam", {"role": "capture", "spec": {"source_id": "cam"}})
    sup.procs = [stage, output, capture]
    server = MetricsServer("127.0.0.1", 0, sup.snapshot, sup.health, sup.ready)
    server.start()
    try:
        stage.hb, output.hb = _hb("passthrough", popens[0].pid, "starting"), _hb("output", popens[1].pid, "running")
        code, body = _get(server.port, "/readyz")
        assert code == 503 and body["ready"] is False and "passthrough" in body["waiting"]

        stage.hb = _hb("passthrough", popens[0].pid, "running")
        code, body = _get(server.port, "/readyz")
        assert code == 503 and body["waiting"] == "starting captures"

        capture.popen = popens[0]  # the supervisor starts captures once every stage is warm
        assert _get(server.port, "/readyz") == (200, {"ready": True, "run": sup.run_id})

        stage.restart_at = time.monotonic() + 1  # crashed, waiting for its restart
        assert _get(server.port, "/readyz")[0] == 503

        stage.restart_at = None
        sup.request_stop("SIGTERM")
        assert _get(server.port, "/readyz")[1]["waiting"] == "stopping"
    finally:
        server.close()
        for p in popens:
            p.kill()
            p.wait()
