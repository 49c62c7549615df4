"""Publish sink → subscribers over real sockets: records, masks, gaps, slow
subscribers, CURVE, and the ``stream subscribe`` command in its own process."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.client import CurveClient, EndRecord, FrameRecord, Subscriber
from stream.config import Config, load_config
from stream.errors import ConfigError
from stream.masks import rle
from stream.messages import Frame, FrameHeader
from stream.objects import COCO_CLASSES, ObjectMasks
from stream.sinks.publish import PublishSink, build
from stream.transport import generate_curve_keypair

H, W = 240, 320
LOCAL = "tcp://127.0.0.1:0"  # the OS picks a free port; sink.bound_endpoint tells which


def make_frame(seq: int, source: str = "cam", n: int = 3, *, random_weights: bool = True) -> Frame:
    """n objects with crop masks (random blobs, the last crop partly outside the frame)."""
    rng = np.random.default_rng(seq)
    boxes, crops = [], []
    for i in range(n):
        x1, y1 = int(rng.integers(0, W - 60)), int(rng.integers(0, H - 60))
        if i == n - 1:
            x1, y1 = W - 20, H - 15
        w, h = int(rng.integers(10, 60)), int(rng.integers(10, 60))
        boxes.append([x1, y1, x1 + w, y1 + h])
        crops.append(rng.random((h, w)) < 0.6)
    box_arr = np.array(boxes, np.int32).reshape(n, 4)
    masks = ObjectMasks.pack(crops, box_arr, np.array([0, 1] * n, np.uint8)[:n], np.arange(n, dtype=np.int32))
    header = FrameHeader(
        source=source,
        seq=seq,
        pts=seq * 40,
        time_base=(1, 1000),
        capture_ns=time.time_ns(),
        random_weights=random_weights,
    )
    image = np.zeros((H, W, 3), np.uint8)
    arrays: dict[str, Any] = {
        "boxes": box_arr.astype(np.float32) + 0.5,
        "scores": np.linspace(0.5, 0.9, n, dtype=np.float32),
        "class_ids": np.arange(n, dtype=np.int32),
        "track_ids": np.arange(10, 10 + n, dtype=np.int64),
        **masks.to_arrays(),
    }
    return Frame(header, image=image).evolve(**arrays)


def check_record(rec: dict[str, Any], frame: Frame) -> None:
    """A record (as JSON) matches the frame it was made from, masks included."""
    h, arrays = frame.header, frame.arrays
    masks = ObjectMasks(
        arrays["mask_boxes"],
        arrays["mask_bits"],
        arrays["mask_offsets"],
        arrays["mask_kind"],
        arrays["mask_age"],
    )
    assert rec["kind"] == "frame" and rec["version"] == 1
    assert (rec["source"], rec["seq"], rec["pts"], rec["time_base"], rec["capture_ns"]) == (
        h.source,
        h.seq,
        h.pts,
        list(h.time_base),
        h.capture_ns,
    )
    assert rec["random_weights"] is True and (rec["width"], rec["height"]) == (W, H)
    assert len(rec["objects"]) == len(arrays["boxes"])
    for i, obj in enumerate(rec["objects"]):
        assert obj["track_id"] == 10 + i and obj["class_id"] == i and obj["class_name"] == COCO_CLASSES[i]
        assert obj["score"] == pytest.approx(float(arrays["scores"][i]))
        assert obj["box"] == pytest.approx(arrays["boxes"][i].tolist())
        assert obj["mask_kind"] == ("keyframe", "propagated")[i % 2] and obj["mask_age"] == i
        assert obj["mask"]["size"] == [H, W]
        np.testing.assert_array_equal(rle.decode(obj["mask"]), masks.full_mask(i, H, W))


def publish_until(
    sink: PublishSink,
    make: Callable[[int], Frame],
    done: Callable[[], bool],
    timeout_s: float = 20.0,
    every_s: float = 0.02,
) -> int:
    """Publish make(i) for i = 0, 1, … until done() (ZeroMQ subscribers join late)."""
    i = 0
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError("subscriber never got what was published")
        sink.write(make(i))
        i += 1
        time.sleep(every_s)
    return i


def test_crop_rle_equals_full_frame_pycocotools_and_decodes_back() -> None:
    rng = np.random.default_rng(0)
    cases = [
        (rng.random((h, w)) < p, x0, y0)
        for h, w, x0, y0, p in [
            (50, 40, 10, 20, 0.5),
            (H, 7, 0, 0, 1.0),
            (H, 3, W - 3, 0, 0.9),
            (30, 30, -10, -5, 0.7),
            (30, 30, W - 10, H - 8, 0.7),
            (20, 20, W + 5, 0, 1.0),
            (25, 35, 100, 100, 0.0),
            (1, 1, 0, 0, 1.0),
            (1, 1, W - 1, H - 1, 1.0),
        ]
    ]
    for crop, x0, y0 in cases:
        full = np.zeros((H + 100, W + 100), bool)
        ys, xs = max(0, y0 + 50), max(0, x0 + 50)
        full[ys : y0 + 50 + crop.shape[0], xs : x0 + 50 + crop.shape[1]] = crop[
            ys - y0 - 50 :, xs - x0 - 50 :
        ]
        full = full[50 : 50 + H, 50 : 50 + W]
        got = rle.crop_counts(crop, x0, y0, H, W)
        assert got == rle.encode(full)["counts"], (x0, y0, crop.shape)
        np.testing.assert_array_equal(rle.decode({"size": [H, W], "counts": got}), full)


def test_subscribe_command_prints_records_with_masks(tmp_path: Path) -> None:
    sink = PublishSink(LOCAL, hwm=100)
    sent: dict[int, Frame] = {}
    cmd = [
        sys.executable,
        "-m",
        "stream.cli",
        "subscribe",
        sink.bound_endpoint,
        "--json",
        "--count",
        "4",
        "--source",
        "cam",
        "--timeout",
        "60",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:

        def make(i: int) -> Frame:
            if i % 3 == 2:
                return make_frame(i, source="cam10")  # a topic that "cam" prefixes: must not be printed
            sent[i] = make_frame(i)
            return sent[i]

        publish_until(sink, make, lambda: proc.poll() is not None, timeout_s=60, every_s=0.05)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        sink.close()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 4
    seqs = [rec["seq"] for rec in lines]
    assert seqs == sorted(seqs) and all(s % 3 != 2 for s in seqs)
    for rec in lines:
        check_record(rec, sent[rec["seq"]])
    assert "cam: 4 records" in err


def test_subscriber_counts_seq_gaps_and_sees_the_end() -> None:
    sink = PublishSink(LOCAL)
    sub = Subscriber(sink.bound_endpoint)
    try:
        publish_until(sink, lambda i: make_frame(i, source="warmup", n=1), lambda: sub.recv(0.01) is not None)
        for seq in (0, 1, 2, 5, 6, 9):  # 3, 4, 7, 8 dropped upstream
            sink.write(make_frame(seq))
        sink.end_source("cam")
        got: list[FrameRecord | EndRecord] = []
        while len(got) < 7:
            rec = sub.recv(5.0)
            assert rec is not None, f"only {len(got)} records arrived"
            if rec.source == "cam":
                got.append(rec)
    finally:
        sub.close()
        sink.close()
    assert [r.seq for r in got if isinstance(r, FrameRecord)] == [0, 1, 2, 5, 6, 9]
    assert [r.pub_seq for r in got] == list(range(7))
    assert isinstance(got[-1], EndRecord) and got[-1].last_seq == 9
    assert sub.gaps["cam"] == 4 and sub.lost["cam"] == 0 and sub.received["cam"] == 6
    assert isinstance(got[0], FrameRecord)
    mask = got[0].objects[0].mask()
    assert mask is not None and mask.shape == (H, W) and mask.dtype == bool


def test_stuck_subscriber_never_blocks_the_publisher() -> None:
    sink = PublishSink(LOCAL, hwm=4, encode_masks=False)
    stuck = Subscriber(sink.bound_endpoint, hwm=4)  # connected, never reads while we publish
    try:
        warmup = publish_until(
            sink, lambda i: make_frame(i, source="warmup", n=1), lambda: stuck.recv(0.01) is not None
        )
        big = make_frame(0, n=1)
        boxes = np.tile(big.arrays["boxes"], (1000, 1))  # ~90 kB records: 27 MB, far beyond socket buffers
        n_records = 300
        times = []
        for seq in range(n_records):
            frame = big.with_header(seq=seq).evolve(
                boxes=boxes,
                scores=np.ones(len(boxes), np.float32),
                class_ids=np.zeros(len(boxes), np.int32),
                track_ids=np.arange(len(boxes), dtype=np.int64),
            )
            t0 = time.perf_counter()
            sink.write(frame)
            times.append(time.perf_counter() - t0)
        assert sink.published == n_records + warmup  # every write went through at once
        assert float(np.median(times)) < 0.05 and max(times) < 1.0, (np.median(times), max(times))
        received = 0
        while (rec := stuck.recv(1.0)) is not None:  # the subscriber wakes up and drains its queue
            received += rec.source == "cam"
        assert received < n_records  # PUB dropped records for it…

        def next_arrives() -> bool:
            rec = stuck.recv(0.01)
            return rec is not None and rec.source == "cam"

        # …and the next record that gets through shows how many (pub_seq gap)
        publish_until(sink, lambda i: big.with_header(seq=n_records + i), next_arrives)
    finally:
        stuck.close()
        sink.close()
    assert stuck.lost["cam"] == n_records - received
    assert stuck.gaps["cam"] == stuck.lost["cam"]  # no frame was dropped upstream


def config_with(section: dict[str, Any]) -> Config:
    return load_config(
        None, base={"sources": [{"id": "cam", "type": "pattern"}], "sinks": {"publish": section}}
    )


def test_curve_lets_in_only_allowed_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, server_secret = generate_curve_keypair(tmp_path / "server", "server")
    allowed = tmp_path / "allowed"
    _, client_secret = generate_curve_keypair(allowed, "client")
    _, intruder_secret = generate_curve_keypair(tmp_path / "other", "intruder")
    assert oct(client_secret.stat().st_mode & 0o777) == "0o600"
    caplog.set_level(logging.DEBUG)
    section = {
        "endpoint": "tcp://127.0.0.1:0",
        "curve_server_secret_key_file": str(server_secret),
        "curve_allowed_keys_dir": str(allowed),
    }
    sink = build(section, config_with(section))
    endpoint = sink.bound_endpoint
    server_public = tmp_path / "server" / "server.key"
    good = Subscriber(endpoint, curve=CurveClient(client_secret, server_public))
    no_key = Subscriber(endpoint)
    wrong = Subscriber(endpoint, curve=CurveClient(intruder_secret, server_public))
    try:
        got = {"good": 0, "no_key": 0, "wrong": 0}

        def poll() -> bool:
            for name, sub in (("good", good), ("no_key", no_key), ("wrong", wrong)):
                got[name] += sub.recv(0.01) is not None
            return got["good"] >= 3

        publish_until(sink, make_frame, poll)
        deadline = time.monotonic() + 1.5  # keep publishing a while longer: the others still get nothing

        def keep_polling() -> bool:
            poll()
            return time.monotonic() > deadline

        publish_until(sink, make_frame, keep_polling)
    finally:
        for sub in (good, no_key, wrong):
            sub.close()
        sink.close()
    assert got["good"] >= 3 and got["no_key"] == 0 and got["wrong"] == 0
    secret_text = server_secret.read_text()
    secret_key = [
        ln.split("=", 1)[1].strip().strip('"') for ln in secret_text.splitlines() if "secret-key" in ln
    ][0]
    assert secret_key not in caplog.text


def test_config_errors_and_exposed_endpoint_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match=r"sinks\.publish\.hwmm"):
        build({"hwmm": 3}, config_with({"hwmm": 3}))
    with pytest.raises(ConfigError, match=r"sinks\.publish\.endpoint"):
        build({"endpoint": "udp://x"}, config_with({"endpoint": "udp://x"}))
    missing = {
        "curve_server_secret_key_file": str(tmp_path / "nope.key_secret"),
        "curve_allowed_keys_dir": "x",
    }
    with pytest.raises(ConfigError, match="nope.key_secret"):
        build(missing, config_with(missing))
    public, secret = generate_curve_keypair(tmp_path, "srv")
    no_allow = {"curve_server_secret_key_file": str(secret)}
    with pytest.raises(ConfigError, match="no client key is allowed"):
        build(no_allow, config_with(no_allow))
    public_only = {"curve_server_secret_key_file": str(public), "curve_allowed_keys": [str(public)]}
    with pytest.raises(ConfigError, match="holds no secret key"):
        build(public_only, config_with(public_only))
    caplog.set_level(logging.WARNING)
    exposed = {"endpoint": "tcp://0.0.0.0:0"}
    build(exposed, config_with(exposed)).close()
    assert "reachable from other hosts and CURVE is off" in caplog.text
    caplog.clear()
    build({"endpoint": LOCAL}, config_with({"endpoint": LOCAL})).close()
    assert "CURVE is off" not in caplog.text


def test_output_stage_builds_the_publish_sink() -> None:
    from stream.stages.output import build as build_output

    stage = build_output(config_with({"endpoint": LOCAL, "hwm": 7}))
    try:
        (sink,) = [s for s in stage.sinks if s.name == "publish"]
        assert isinstance(sink, PublishSink) and stage.annotator is None  # publishing draws nothing
    finally:
        stage.close()
