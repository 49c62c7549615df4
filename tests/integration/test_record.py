"""Record sink: real H.264 fragmented MP4 segments and JSONL sidecars, decoded back with PyAV."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType

import av
import av.logging
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from stream.config import Config
from stream.errors import ConfigError, SourceError
from stream.messages import Frame, FrameHeader
from stream.objects import ObjectMasks
from stream.sinks.record import RecordConfig, RecordSink, build
from stream.sinks.retention import SEGMENT_NAME, apply_retention, source_dir

pytestmark = pytest.mark.timeout(120)

TB = (1, 90000)
STEP = 3600  # pts per frame: 25 fps


def grey(seq: int) -> int:
    """The grey level frame ``seq`` is painted with, so a decoded picture names its frame."""
    return 20 + (seq * 9) % 210


def make_frame(
    seq: int, source: str = "cam0", width: int = 160, height: int = 120, objects: bool = True
) -> Frame:
    image = np.full((height, width, 3), grey(seq), np.uint8)
    arrays: dict[str, np.ndarray] = {}
    if objects:
        x = 10 + seq % 50
        crop = np.zeros((20, 30), bool)
        crop[5:15, 5:25] = True
        masks = ObjectMasks.pack(
            [crop, np.ones((10, 10), bool)],
            np.array([[x, 20, x + 30, 40], [0, 0, 10, 10]]),
            np.array([0, 1]),
            np.array([0, 3]),
        )
        arrays = {
            "boxes": np.array([[x, 20, x + 30, 40], [0, 0, 10, 10]], np.float32),
            "scores": np.array([0.9, 0.5], np.float32),
            "class_ids": np.array([0, 2], np.int32),
            "track_ids": np.array([1, seq + 100], np.int64),
            **masks.to_arrays(),
        }
    header = FrameHeader(source, seq, seq * STEP, TB, time.time_ns())
    return Frame(header, MappingProxyType(arrays), image)


def segments(root: Path, source: str = "cam0") -> list[Path]:
    return sorted((root / source).glob("*.mp4"))


def decode(path: Path) -> list[tuple[Fraction, float, tuple[int, int]]]:
    """(pts in seconds, mean grey of the bottom half, (width, height)) of every frame;
    fails on any FFmpeg error."""
    out: list[tuple[Fraction, float, tuple[int, int]]] = []
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logs, av.open(str(path)) as f:
            for fr in f.decode(video=0):
                assert fr.pts is not None and fr.time_base is not None
                bottom = fr.to_ndarray(format="gray")[fr.height // 2 :]
                out.append((fr.pts * fr.time_base, float(bottom.mean()), (fr.width, fr.height)))
        assert not logs, f"{path.name}: FFmpeg reported {logs}"
    finally:
        av.logging.set_level(None)
    return out


def sidecar(mp4: Path) -> list[dict]:
    return [json.loads(line) for line in mp4.with_suffix(".jsonl").read_text().splitlines()]


def test_segments_decode_and_align_with_sidecar(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    sink = RecordSink(
        RecordConfig(root=str(root), segment_s=1.0, fragment_s=0.2, queue_size=1000), codec="libx264"
    )
    for seq in range(60):
        sink.write(make_frame(seq))
    sink.close()
    assert sink.stats()["cam0"] == {"frames": 60, "dropped": 0, "segments": 3}

    files = segments(root)
    assert [f.name[-12:] for f in files] == ["00000000.mp4", "00000025.mp4", "00000050.mp4"]
    assert all(SEGMENT_NAME.match(f.name) for f in files)
    seen = []
    for mp4 in files:
        frames, lines = decode(mp4), sidecar(mp4)
        assert len(frames) == len(lines) == (10 if mp4 == files[-1] else 25)
        for i, ((t, mean, size), line) in enumerate(zip(frames, lines, strict=True)):
            assert line["index"] == i and size == (160, 120)
            assert t == Fraction(line["pts"] - lines[0]["pts"], 90000)  # same pts in video and sidecar
            assert abs(line["t"] - float(t)) < 1e-6
            assert abs(mean - grey(line["seq"])) < 3  # the picture is the frame the line describes
            seen.append(line["seq"])
    assert seen == list(range(60))

    line = sidecar(files[1])[3]  # seq 28
    obj, small = line["objects"]
    assert (obj["track_id"], obj["class_id"], obj["box"]) == (1, 0, [38.0, 20.0, 68.0, 40.0])
    assert small["track_id"] == 128 and small["score"] == 0.5 and small["mask_kind"] == "propagated"
    mask = mask_utils.decode({"size": obj["mask"]["size"], "counts": obj["mask"]["counts"].encode()})
    assert mask.shape == (120, 160) and mask.sum() == 200
    assert mask[25:35, 43:63].all()


def test_new_segment_on_geometry_change_and_reset(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    sink = RecordSink(RecordConfig(root=str(root), segment_s=60, queue_size=1000), codec="libx264")
    for seq in range(5):
        sink.write(make_frame(seq, objects=False))
    for seq in range(5, 10):  # odd size: recorded cropped to even
        sink.write(make_frame(seq, width=201, height=99, objects=False))
    sink.reset("cam0")
    for seq in range(10, 13):
        sink.write(make_frame(seq, width=201, height=99, objects=False))
    sink.close()
    got = [(len(decode(f)), decode(f)[0][2], [ln["seq"] for ln in sidecar(f)]) for f in segments(root)]
    assert got == [
        (5, (160, 120), [0, 1, 2, 3, 4]),
        (5, (200, 98), [5, 6, 7, 8, 9]),
        (3, (200, 98), [10, 11, 12]),
    ]


def test_write_never_blocks_and_drops_when_the_encoder_is_behind(tmp_path: Path) -> None:
    sink = RecordSink(RecordConfig(root=str(tmp_path / "rec"), queue_size=2), codec="libx264")
    image = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    worst = 0.0
    for seq in range(40):
        frame = make_frame(seq, objects=False).evolve(image=image)
        t0 = time.perf_counter()
        sink.write(frame)
        worst = max(worst, time.perf_counter() - t0)
    sink.close()
    stats = sink.stats()["cam0"]
    assert stats["dropped"] > 0 and stats["frames"] + stats["dropped"] == 40
    assert worst < 0.25, f"write() took {worst * 1000:.0f} ms: it must not wait for the encoder"
    assert sum(len(decode(f)) for f in segments(tmp_path / "rec")) == stats["frames"]


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    from types import MappingProxyType
    from stream.messages import Frame, FrameHeader
    from stream.sinks.record import RecordConfig, RecordSink

    sink = RecordSink(RecordConfig(root=sys.argv[1], segment_s=1.0, fragment_s=0.2, queue_size=1000),
                      codec="libx264")
    rng = np.random.default_rng(0)
    seq = 0
    while True:  # until killed
        image = np.full((240, 320, 3), 20 + (seq * 9) % 210, np.uint8)
        image[:120] = rng.integers(0, 256, (120, 320, 3), dtype=np.uint8)  # fragments > PyAV's 32 kB writes
        boxes = np.array([[1, 2, 3, 4]], np.float32)
        header = FrameHeader("cam0", seq, seq * 3600, (1, 90000), time.time_ns())
        sink.write(Frame(header, MappingProxyType({"boxes": boxes}), image))
        print(seq, flush=True)
        seq += 1
        time.sleep(0.04)
""")


def test_sigkill_mid_segment_leaves_playable_files(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    script = tmp_path / "recorder.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        last = -1
        deadline = time.monotonic() + 60
        while last < 62 and time.monotonic() < deadline:  # mid third segment (seq 50..74)
            printed = proc.stdout.readline()
            if not printed:
                break
            last = int(printed)
        assert last >= 62, "the recorder did not get going"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    files = segments(root)
    assert len(files) == 3
    decoded_seqs = []
    for mp4 in files:
        frames, lines = decode(mp4), sidecar(mp4)
        # sidecar lines go to disk right after their fragment: never more lines than frames,
        # at most one fragment (0.2 s = 5 frames) fewer
        assert len(lines) <= len(frames) <= len(lines) + 5
        for (_, mean, _), line in zip(frames, lines, strict=False):
            assert abs(mean - grey(line["seq"])) < 3
        first = lines[0]["seq"]
        decoded_seqs += list(range(first, first + len(frames)))
    assert decoded_seqs[:50] == list(range(50)), "closed segments must be complete"
    assert decoded_seqs == list(range(len(decoded_seqs)))
    lost = last - decoded_seqs[-1]
    assert 0 <= lost <= 5 + 2, f"{lost} frames lost: more than one fragment (5 frames) plus the queue"


def make_fake_segment(root: Path, source: str, stem: str, size: int, mtime: float) -> Path:
    d = root / source
    d.mkdir(parents=True, exist_ok=True)
    mp4 = d / f"{stem}.mp4"
    mp4.write_bytes(b"\0" * size)
    mp4.with_suffix(".jsonl").write_bytes(b"{}\n" * 10)  # 30 bytes
    for p in (mp4, mp4.with_suffix(".jsonl")):
        os.utime(p, (mtime, mtime))
    return mp4


def test_retention_by_size_deletes_oldest_first_but_never_the_open_segment(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    now = time.time()
    a = make_fake_segment(root, "cam0", "20250101T000000.000Z_00000000", 1000, now - 400)  # being written
    b = make_fake_segment(root, "cam1", "20250101T000100.000Z_00000000", 1000, now - 300)
    c = make_fake_segment(root, "cam0", "20250101T000200.000Z_00000100", 1000, now - 200)
    d = make_fake_segment(root, "cam1", "20250101T000300.000Z_00000100", 1000, now - 100)
    foreign = [root / "cam0" / "holiday.mp4", root / "notes.txt"]
    for p in foreign:
        p.write_bytes(b"x" * 5000)
    deleted = apply_retention(root, max_age_s=None, max_bytes=2100, keep=[a])
    assert deleted == [b, c]
    assert a.exists() and d.exists() and d.with_suffix(".jsonl").exists()
    assert not c.with_suffix(".jsonl").exists()
    assert all(p.exists() for p in foreign)


def test_retention_by_age(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    now = time.time()
    old = make_fake_segment(root, "cam0", "20250101T000000.000Z_00000000", 10, now - 7200)
    new = make_fake_segment(root, "cam0", "20250101T010000.000Z_00000000", 10, now - 60)
    assert apply_retention(root, max_age_s=3600, max_bytes=None) == [old]
    assert new.exists() and not old.exists()
    # the sink applies it when it starts, too
    again = make_fake_segment(root, "cam0", "20250101T000000.000Z_00000001", 10, now - 7200)
    sink = RecordSink(RecordConfig(root=str(root), max_age_s=3600), codec="libx264")
    sink.close()
    assert not again.exists() and new.exists()


def test_sink_keeps_the_root_under_max_size_while_recording(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    sink = RecordSink(
        RecordConfig(root=str(root), segment_s=0.4, fragment_s=0.2, max_size_mb=0.05, queue_size=1000),
        codec="libx264",
    )
    rng = np.random.default_rng(1)
    for seq in range(100):  # a noisy patch: about 22 kB per 10-frame segment
        image = np.full((120, 160, 3), grey(seq), np.uint8)
        image[:40, :40] = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        sink.write(make_frame(seq, objects=False).evolve(image=image))
    sink.close()
    kept = segments(root)
    total = sum(p.stat().st_size + p.with_suffix(".jsonl").stat().st_size for p in kept)
    assert sink.stats()["cam0"]["segments"] == 10
    assert total <= 50_000
    assert [p.name[-12:] for p in kept] == ["00000080.mp4", "00000090.mp4"], "the newest segments are kept"


def test_paths_are_confined_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    for bad in ("../x", "/etc", "a/b", "..", ""):
        with pytest.raises(SourceError, match="cannot be a directory under"):
            source_dir(root, bad)
    (root / "cam9").symlink_to(outside)
    with pytest.raises(SourceError, match="outside the recording root"):
        source_dir(root, "cam9")

    sink = RecordSink(RecordConfig(root=str(root)), codec="libx264")
    with pytest.raises(SourceError, match=r"'\.\./x'"):
        sink.write(make_frame(0, source="../x"))
    with pytest.raises(SourceError, match="outside the recording root"):
        sink.write(make_frame(0, source="cam9"))
    sink.close()
    assert list(outside.iterdir()) == [] and not (tmp_path / "x").exists()


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    config = Config.model_validate({"sources": [{"id": "cam0", "type": "pattern"}]})
    with pytest.raises(ConfigError, match=r"sinks\.record\.segment_s"):
        build({"root": str(tmp_path), "segment_s": -1}, config)
    with pytest.raises(ConfigError, match=r"sinks\.record\.encoder\.preset"):
        build({"root": str(tmp_path), "encoder": {"preset": "warp"}}, config)
    with pytest.raises(ConfigError, match=r"sinks\.record\.sources: cam7 not among the configured sources"):
        build({"root": str(tmp_path), "sources": ["cam7"]}, config)
    sink = build({"root": str(tmp_path / "r"), "annotated": False, "encoder": {"codec": "libx264"}}, config)
    assert sink.wants_annotated is False and sink.codec == "libx264"
    assert (tmp_path / "r" / "cam0").is_dir()
    sink.close()
    (tmp_path / "r" / "cam0").rmdir()
    (tmp_path / "r" / "cam0").symlink_to(tmp_path)
    with pytest.raises(SourceError, match="outside the recording root"):
        build({"root": str(tmp_path / "r"), "encoder": {"codec": "libx264"}}, config)


def test_pts_going_backwards_are_restamped_inside_one_segment(tmp_path: Path) -> None:
    """Broken AVI timestamps (pts repeats and steps back, as in Megamind.avi): every frame is
    recorded, in order, in one segment, with pts that move forward in the video."""
    root = tmp_path / "rec"
    sink = RecordSink(RecordConfig(root=str(root), fragment_s=0.2, queue_size=1000), codec="libx264")
    src_pts = []
    for seq in range(40):
        # forward 1 frame, but every 4th frame jumps 2 frames back, and every 9th repeats the last pts
        pts = (seq - 3 * (seq // 4)) * STEP if seq % 9 else (src_pts[-1] if src_pts else 0)
        src_pts.append(pts)
        f = make_frame(seq)
        sink.write(Frame(FrameHeader("cam0", seq, pts, TB, f.header.capture_ns), f.arrays, f.image))
    sink.close()
    assert sum(b <= a for a, b in zip(src_pts, src_pts[1:], strict=False)) >= 8  # the input is really broken
    stats = sink.stats()["cam0"]
    assert stats == {"frames": 40, "dropped": 0, "segments": 1}, stats
    (mp4,) = segments(root)
    frames, lines = decode(mp4), sidecar(mp4)
    assert [line["seq"] for line in lines] == list(range(40))
    assert [line["pts"] for line in lines] == src_pts  # the sidecar keeps the source's pts
    assert len(frames) == 40
    times = [t for t, _, _ in frames]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    for (t, mean, _), line in zip(frames, lines, strict=True):
        assert abs(line["t"] - float(t)) < 1e-6  # "t" is where the frame is in the video
        assert abs(mean - grey(line["seq"])) < 3
    assert sum(bool(line.get("restamped")) for line in lines) >= 8
