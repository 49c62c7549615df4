"""Run a real ``StageRunner`` loop on real ipc sockets and a real frame ring, in this process.

The runner runs in the main thread (it installs signal handlers); a driver thread sends
what the test gives it to the stage's input, then end-of-stream for every source, and
collects what the stage forwards until those end-of-streams came out. The stage's
heartbeats (counters, drop records) are read after the loop returned.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from stream.messages import (
    Control,
    DropRecord,
    EndOfStream,
    Frame,
    FrameHeader,
    Heartbeat,
    RunReport,
    decode,
    decode_control,
    encode_control,
    encode_frame,
    encode_message,
)
from stream.runner import StageRunner, WorkerSpec
from stream.stage import Stage
from stream.transport import FrameRing, open_socket, recv_parts

H, W = 16, 24


@dataclass
class Result:
    frames: list[Frame] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    heartbeats: list[Heartbeat] = field(default_factory=list)
    reports: list[RunReport] = field(default_factory=list)
    exit_code: int | None = None

    @property
    def seqs(self) -> list[int]:
        return [f.seq for f in self.frames]

    @property
    def errors(self) -> int:
        return max((hb.errors for hb in self.heartbeats), default=0)

    def drops(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for hb in self.heartbeats:
            for d in hb.drops:
                out.setdefault(d.reason, []).extend(range(d.first, d.last + 1))
        return out

    def drop_records(self) -> list[DropRecord]:
        return [d for hb in self.heartbeats for d in hb.drops]


class Harness:
    """A stage between a driver (upstream) and a collector (downstream), one ring per source.

    Ring files are named ``run-<source>.ring`` in ``tmp_path``, as the supervisor names them."""

    def __init__(self, tmp_path: Path, sources: Sequence[str] = ("cam",), slots: int = 64) -> None:
        self.dir = tmp_path
        self.sources = tuple(sources)
        self.rings = {s: FrameRing.create(tmp_path / f"run-{s}.ring", slots, H * W * 3) for s in self.sources}

    def frame(self, seq: int, source: str = "cam", capture_ns: int | None = None, **arrays: np.ndarray) -> Frame:
        """A frame whose pixels (value seq % 256) are written into its source's ring."""
        ref = self.rings[source].write(seq, np.full((H, W, 3), seq % 256, np.uint8), pts=seq)
        header = FrameHeader(source, seq, seq, (1, 30), capture_ns or time.time_ns(), pixels=ref)
        return Frame(header).evolve(**arrays) if arrays else Frame(header)

    def parts(self, frame: Frame) -> list[Any]:
        return encode_frame(frame)

    def run(self, stage: Stage, messages: Callable[[], Sequence[list[Any]]] | Sequence[list[Any]],
            timeout_s: float = 30.0, last: bool = False, **spec: Any) -> Result:
        """``last``: the stage is the last of the pipeline (no output socket): nothing is collected
        downstream, its RunReport is."""
        d = self.dir
        ctx: zmq.Context[Any] = zmq.Context()
        out = open_socket(ctx, f"pull+bind:ipc://{d}/out", hwm=10000)
        hb = open_socket(ctx, f"pull+bind:ipc://{d}/hb", hwm=10000)
        ctl = open_socket(ctx, f"pub+bind:ipc://{d}/ctl", hwm=100)
        wspec = WorkerSpec(name=stage.name, input=f"pull+bind:ipc://{d}/in", output=None if last else f"push+connect:ipc://{d}/out",
                           heartbeat=f"push+connect:ipc://{d}/hb", control=f"sub+connect:ipc://{d}/ctl",
                           ring_dir=str(d), sources=self.sources, hwm=spec.pop("hwm", 1000),
                           heartbeat_interval_s=0.2, **spec)
        result = Result()
        done = threading.Event()
        failure: list[BaseException] = []

        def drive() -> None:
            try:
                inp = open_socket(ctx, f"push+connect:ipc://{d}/in", hwm=10000)
                for parts in (messages() if callable(messages) else messages):
                    inp.send_multipart(parts, copy=True)
                for s in self.sources:
                    inp.send_multipart(encode_message(EndOfStream(s, 0, "end of input")))
                ended: set[str] = set(self.sources) if last else set()
                deadline = time.monotonic() + timeout_s
                while ended != set(self.sources) and time.monotonic() < deadline:
                    got = recv_parts(out, 100)
                    if got is None:
                        continue
                    msg = decode(got)
                    if isinstance(msg, Frame):
                        result.frames.append(msg)
                    else:
                        result.events.append(msg)
                        if isinstance(msg, EndOfStream):
                            ended.add(msg.source)
                if last:  # the last stage ends by itself once every source ended
                    done.wait(timeout_s)
                while not done.wait(0.05):  # the runner waits to be told the run is over
                    ctl.send(encode_control(Control("stop")))
                inp.close(0)
            except BaseException as exc:  # noqa: BLE001 — reported by the main thread
                failure.append(exc)
                while not done.wait(0.05):
                    ctl.send(encode_control(Control("stop")))

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        try:
            result.exit_code = StageRunner(stage, wspec).run()
        finally:
            done.set()
            driver.join(10)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            while (got := recv_parts(hb, 200)) is not None:
                msg = decode_control(got[0])
                if isinstance(msg, Heartbeat):
                    result.heartbeats.append(msg)
                elif isinstance(msg, RunReport):
                    result.reports.append(msg)
            for sock in (out, hb, ctl):
                sock.close(0)
            ctx.term()
        if failure:
            raise failure[0]
        return result

    def close(self) -> None:
        for ring in self.rings.values():
            ring.unlink()
