"""Heartbeats while a stage process builds its stage (imports, model load, export).

Building a stage can take minutes (a first YOLO-NAS build under heavy load took over
300 s), and it happens before the stage's ``StageRunner`` exists. ``loading_heartbeat``
reports state ``loading`` from its own thread for that whole time, so the supervisor
judges the process by its heartbeats (a frozen process is still noticed) and bounds the
load by its own deadline (``supervisor.startup_timeout_s``), not by heartbeat silence.

SIGTERM keeps its default action meanwhile: a loading stage has no frame to finish and
ends at once (see ``stream.runtime.StopFlag``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import zmq

from stream.messages import LOADING
from stream.runtime import Counters, Heartbeater
from stream.transport import Curve, open_socket


@contextmanager
def loading_heartbeat(spec: dict[str, Any]) -> Iterator[Heartbeater]:
    """Heartbeat ``loading`` for the stage of worker ``spec`` (its ``name``, ``heartbeat``
    endpoint, ``heartbeat_interval_s``, ``control_curve``) until the block ends. The
    runner's own heartbeats take over from there."""
    ctx = zmq.Context()
    try:
        sock = open_socket(ctx, spec["heartbeat"], hwm=100, curve=Curve.from_spec(spec.get("control_curve")))
        hb = Heartbeater(sock, spec["name"], Counters(), float(spec.get("heartbeat_interval_s", 1.0)))
        hb.state = LOADING
        hb.beat()
        hb.start()
        try:
            yield hb
        finally:
            hb.stop()
            sock.close(linger=1000)
    finally:
        ctx.term()
