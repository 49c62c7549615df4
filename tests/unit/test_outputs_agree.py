"""Every output names classes and counts frames per second the same way: the overlay's
status line, the live page and the published records."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from types import MappingProxyType

import numpy as np

from stream.config import Config
from stream.messages import Frame, FrameHeader
from stream.render import build_annotator
from stream.sinks import live as live_sink
from stream.sinks.publish import frame_record

NAMES = ["forklift", "pallet", "worker"]


def _config() -> Config:
    return Config.model_validate(
        {"sources": [{"id": "dock", "type": "pattern"}], "detect": {"class_names": NAMES}}
    )


def _frame(seq: int) -> Frame:
    arrays = {
        "boxes": np.array([[10, 10, 60, 60], [100, 40, 150, 90]], np.float32),
        "scores": np.array([0.9, 0.8], np.float32),
        "class_ids": np.array([2, 0], np.int32),
        "track_ids": np.array([5, 6], np.int64),
    }
    header = FrameHeader("dock", seq, seq * 3000, (1, 90000), time.time_ns())
    return Frame(header, MappingProxyType(arrays), np.zeros((120, 160, 3), np.uint8))


def _first_event(port: int, timeout: float = 10.0) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        buf, deadline = b"", time.monotonic() + timeout
        while time.monotonic() < deadline:
            buf += s.recv(65536)
            for line in buf.split(b"\n"):
                if line.startswith(b"data:") and b'"objects"' in line:
                    return json.loads(line[5:])
    raise AssertionError("no object event arrived")


def _event_while_feeding(config: Config, make: Callable[[int], Frame], first_seq: int = 0) -> dict:
    """A real live sink fed ``make(seq)`` every 50 ms from a thread: its first object event."""
    sink = live_sink.build({"port": 0}, config)
    stop = threading.Event()

    def feed() -> None:
        seq = first_seq
        while not stop.wait(0.05):
            sink.write(make(seq))
            seq += 1

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    try:
        return _first_event(sink.port)
    finally:
        stop.set()
        t.join(5)
        sink.close()


def test_live_view_names_classes_like_publish_and_the_overlay() -> None:
    config = _config()
    event = _event_while_feeding(config, _frame)
    assert [o["class"] for o in event["objects"]] == ["worker", "forklift"]
    published = frame_record(_frame(0), 0, build_annotator(config).class_names)
    assert [o.class_name for o in published.objects] == ["worker", "forklift"]


def test_overlay_and_live_page_agree_on_fps_after_a_burst() -> None:
    """25 frames at 10 fps, then a burst of 10 (a stage catching up): both read the same
    frames-per-second over the same window, not 1/Δt of two frames microseconds apart."""
    config = _config()
    annotator = build_annotator(config)
    sink = live_sink.build({"port": 0}, config)
    try:
        seq = 0
        for _ in range(25):
            f = _frame(seq)
            annotator(f)
            sink.write(f)
            seq += 1
            time.sleep(0.1)
        for _ in range(10):
            f = _frame(seq)
            annotator(f)
            sink.write(f)
            seq += 1
        overlay = annotator.fps("dock")
        (page,) = [s["fps"] for s in sink.hub.summary() if s["id"] == "dock"]
    finally:
        sink.close()
    assert 10.0 <= overlay <= 16.0, overlay  # ~20 + 10 frames in the last 2 s
    assert abs(overlay - page) <= 1.0, (overlay, page)


class _CountingAnnotator:
    """The real Annotator, counting the frames it draws and the ones it only observes."""

    def __init__(self, config: Config) -> None:
        self.inner = build_annotator(config)
        self.drawn = 0
        self.observed = 0

    def __call__(self, frame: Frame) -> np.ndarray:
        self.drawn += 1
        return self.inner(frame)

    def observe(self, frame: Frame) -> None:
        self.observed += 1
        self.inner.observe(frame)


def test_pictures_are_drawn_only_while_someone_watches_or_records(tmp_path) -> None:
    from stream.sinks.record import RecordConfig, RecordSink
    from stream.stages.output import OutputStage

    config = _config()
    live = live_sink.build({"port": 0}, config)
    annotator = _CountingAnnotator(config)
    stage = OutputStage([live], annotator=annotator)
    try:
        for seq in range(20):
            stage.write(_frame(seq))
        assert annotator.drawn == 0 and annotator.observed == 20  # a live sink nobody watches
        assert annotator.inner.fps("dock") > 0  # its state is kept all the same

        viewer = socket.create_connection(("127.0.0.1", live.port))
        viewer.sendall(b"GET /stream/dock.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            deadline = time.monotonic() + 10
            while not live.hub.watched("dock") and time.monotonic() < deadline:
                time.sleep(0.05)
            for seq in range(20, 30):
                stage.write(_frame(seq))
            assert annotator.drawn == 10
        finally:
            viewer.close()
    finally:
        stage.close()

    recorder = RecordSink(RecordConfig(root=str(tmp_path / "rec"), queue_size=100), codec="libx264")
    annotator = _CountingAnnotator(config)
    stage = OutputStage([recorder], annotator=annotator)
    for seq in range(5):
        stage.write(_frame(seq))
    stage.close()
    assert annotator.drawn == 5  # an annotated recording needs every picture


def test_overlay_and_live_page_agree_on_latency(monkeypatch) -> None:
    """A frame captured 800 ms ago: the overlay's status line and the live page's event both
    show capture → now at the output, the same figure."""
    import re

    import cv2

    config = _config()
    annotator = build_annotator(config)
    drawn: list[str] = []
    real_put_text = cv2.putText

    def spy(img, text, *args, **kwargs):  # type: ignore[no-untyped-def]
        drawn.append(text)
        return real_put_text(img, text, *args, **kwargs)

    def old_frame(seq: int) -> Frame:
        f = _frame(seq)
        h = f.header
        return Frame(FrameHeader(h.source, h.seq, h.pts, h.time_base, time.time_ns() - 800_000_000),
                     f.arrays, f.image)

    monkeypatch.setattr(cv2, "putText", spy)
    annotator(old_frame(0))
    monkeypatch.setattr(cv2, "putText", real_put_text)
    (status,) = [t for t in drawn if "latency" in t]
    overlay_ms = float(re.search(r"latency\s+([\d.]+) ms", status)[1])  # type: ignore[index]

    event = _event_while_feeding(config, old_frame, first_seq=1)
    assert 800 <= overlay_ms < 1000, status
    assert 800 <= event["latency_ms"] < 1000 and abs(event["latency_ms"] - overlay_ms) < 150, (event, status)
