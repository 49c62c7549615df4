"""Two real ``stream run --shard I/2`` processes over one camera list: each runs only
its share, and one subscriber connected to both sees every camera exactly once."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import yaml

from stream.client import FrameRecord, Subscriber
from stream.shard import Shard, select
from tests.conftest import free_port, run_stream, stream_cmd, wait_for

SOURCES = ["gate", "lobby", "dock", "yard", "roof", "hall"]


def test_two_shards_publish_disjoint_sources_that_one_subscriber_sees_together(tmp_path: Path) -> None:
    shares = [select(SOURCES, Shard(i, 2)) for i in range(2)]
    assert all(shares), "precondition: both shards own some of these ids"
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "sharded",
        "sources": [{"id": s, "type": "pattern", "live": True, "fps": 15,
                     "synthetic": {"width": 64, "height": 48}} for s in SOURCES],
        "pipeline": [],
        "metrics": {"port": 0},
    }))
    endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    procs = [
        subprocess.Popen(
            stream_cmd("run", str(cfg), "--shard", f"{i}/2", "--set", f"sinks.publish.endpoint={ep}"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i, ep in enumerate(endpoints)
    ]
    seen: dict[str, set[str]] = {ep: set() for ep in endpoints}
    try:
        # one subscriber on both publishers: what a consumer of a sharded deployment runs
        with Subscriber(endpoints) as together:
            def all_sources() -> bool:
                rec = together.recv(0.5)
                return isinstance(rec, FrameRecord) and set(together.received) == set(SOURCES)

            wait_for(all_sources, 60, "records from every source through one subscriber", interval=0)
        # and which publisher sent which: one subscriber per shard
        for ep in endpoints:
            with Subscriber(ep) as one:
                wait_for(lambda one=one: isinstance(one.recv(0.5), FrameRecord) and one.received, 30,
                         f"a record from {ep}", interval=0)
                for _ in range(40):  # every source of the shard shows up within a few frames
                    rec = one.recv(0.5)
                    if isinstance(rec, FrameRecord):
                        seen[ep].add(rec.source)
                    if len(seen[ep]) == len(shares[endpoints.index(ep)]):
                        break
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=30) for p in procs]
    for i, ep in enumerate(endpoints):
        assert seen[ep] == set(shares[i]), (i, seen, outs[i][1][-2000:])
        assert f"shard {i}/2: {len(shares[i])} source(s)" in outs[i][1]
        # the end-of-run summary lists only this shard's sources
        table = outs[i][0]
        assert all(s in table for s in shares[i]) and not any(s in table for s in shares[1 - i]), table
    assert seen[endpoints[0]].isdisjoint(seen[endpoints[1]])


def test_auto_shard_index_comes_from_the_pod_name(tmp_path: Path) -> None:
    """What the StatefulSet runs: --shard auto/N with the pod's name in POD_NAME (or HOSTNAME)."""
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(yaml.safe_dump({"sources": [{"id": s, "type": "pattern", "max_frames": 1,
                                                "synthetic": {"width": 32, "height": 32}} for s in SOURCES]}))
    r = run_stream("check", str(cfg), "--shard", "auto/2", env={"POD_NAME": "stream-1"}, timeout=60)
    assert r.returncode == 0, r.stderr
    listed = [line.split(":")[0].removeprefix("source ") for line in r.stdout.splitlines() if line.startswith("source ")]
    assert listed == select(SOURCES, Shard(1, 2)), r.stdout
    # without POD_NAME, HOSTNAME (a pod's hostname is its name); an ordinal beyond N is refused
    r = run_stream("check", str(cfg), "--shard", "auto/2", env={"POD_NAME": "", "HOSTNAME": "stream-2"}, timeout=60)
    assert r.returncode == 2 and "STREAM_SHARDS must equal the StatefulSet's replicas" in r.stderr, r.stderr
