"""One notion of "live" (``SourceConfig.is_live``), shared by the supervisor, the capture and every stage."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from stream.config import load_config
from stream.sources.base import SourceInfo
from stream.supervisor import Supervisor
from stream.transport import FrameRing

SOURCES = [
    {"id": "cam", "type": "rtsp", "url": "rtsp://127.0.0.1:8554/cam"},
    {"id": "door", "type": "http", "url": "http://127.0.0.1:8080/door.m3u8"},
    {"id": "yard", "type": "rtmp", "url": "rtmp://127.0.0.1:1935/live/yard"},
    {"id": "usb", "type": "webcam", "device": 0},
    {"id": "clip", "type": "file", "path": "clip.mp4", "live": True},
    {"id": "disk", "type": "file", "path": "clip.mp4"},
]
LIVE = {"cam", "door", "yard", "usb", "clip"}


def _probed(config) -> dict[str, SourceInfo]:
    """What probing the sources at start returns (geometry; a network source is not connected)."""
    return {s.id: SourceInfo(64, 48, 30.0, Fraction(1, 30), live=False) for s in config.sources}


@pytest.fixture
def config():
    return load_config(None, base={"sources": SOURCES, "pipeline": ["detect", "track", "segment"],
                                   "segment": {"model": "tiny"}, "random_weights": True})


def test_network_and_webcam_sources_are_live_without_saying_so(config):
    assert {s.id for s in config.sources if s.is_live} == LIVE


def test_sam_never_blocks_frames_of_any_live_source(config):
    # README: "On live sources the SAM keyframe runs in a worker thread: frames never wait for it".
    # Before: only `live: true` files got it; rtsp / rtmp / http / webcam sources got the blocking path.
    from stream.stages import segment

    stage = segment.stage_for(config, object(), random_weights=True)  # what build() wraps around SAM
    assert {s["id"] for s in SOURCES if stage._is_async(s["id"])} == LIVE


def test_the_supervisor_gives_captures_and_stages_the_same_notion(config, tmp_path: Path):
    sup = Supervisor(config)
    sup.run_dir = tmp_path
    sup._hb_ep, sup._ctl_ep = f"ipc://{tmp_path}/hb", f"ipc://{tmp_path}/ctl"
    sup.rings = [FrameRing.create(tmp_path / f"r-{s.id}.ring", 2, 64) for s in config.sources]
    try:
        sup._build_procs(_probed(config))
    finally:
        for ring in sup.rings:
            ring.unlink()
    captures = {p.request["spec"]["source_id"]: p.request["spec"] for p in sup.procs if p.is_capture}
    assert {k for k, spec in captures.items() if spec["live"]} == LIVE
    for p in sup.procs:
        if not p.is_capture:
            assert set(p.request["spec"]["stale_after_s"]) == LIVE, p.name


def test_queue_depth_counts_frames_not_seqs_dropped_at_the_edge(tmp_path: Path):
    # A live camera whose capture dropped most frames at the edge ("downstream busy"): the seqs
    # run far ahead of what is queued. Before: the gauge read capture seq - stage seq (193).
    from stream.messages import DropRecord, Heartbeat

    config = load_config(None, base={"sources": [SOURCES[0]], "pipeline": ["passthrough"]})
    sup = Supervisor(config)
    sup.run_dir = tmp_path
    sup._hb_ep, sup._ctl_ep = f"ipc://{tmp_path}/hb", f"ipc://{tmp_path}/ctl"
    sup.rings = [FrameRing.create(tmp_path / "r-cam.ring", 2, 64)]
    try:
        sup._build_procs(_probed(config))
    finally:
        sup.rings[0].unlink()
    last = {"capture:cam": 1000, "passthrough": 807, "output": 805}
    for p in sup.procs:
        p.hb = Heartbeat(stage=p.name, pid=0, time_ns=0, state="running", last_seq={"cam": last[p.name]})
    # of seqs 808..1000 the capture sent only every 48th (and 2 are queued at passthrough);
    # passthrough filtered 806 on its way
    sent = {808, 856, 904, 952, 1000}
    sup.ledger.add([DropRecord("cam", "downstream busy", s, s) for s in range(808, 1001) if s not in sent])
    sup.ledger.add([DropRecord("cam", "filtered", 806, 806)])
    depth = {name: st["queue_depth"] for name, st in sup.snapshot()["stages"].items()}
    assert depth["passthrough"] == {"cam": len(sent)}
    assert depth["output"] == {"cam": 1}  # 807 (806 was dropped before output)
