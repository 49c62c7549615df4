"""The shared H.264 encode (stream.sinks.encode): one encode feeds every consumer, keyframes
come when asked, nothing is encoded for nobody, and the output stage builds one pool."""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest

from stream.config import Config
from stream.messages import Frame, FrameHeader
from stream.sections.sinks import EncoderConfig
from stream.sinks.encode import EncodedPacket, EncoderPool

TB = (1, 90000)


class Consumer:
    def __init__(self, wants: bool = True, key_interval_s: float = 10.0) -> None:
        self.wants, self.key_interval_s, self.queue_size = wants, key_interval_s, 100
        self.packets: list[EncodedPacket] = []
        self.ends: list[str] = []
        self.due_at: set[int] = set()

    def wants_packets(self, source: str) -> bool:
        return self.wants

    def keyframe_due(self, source: str, pts: int, time_base: Fraction) -> bool:
        return pts in self.due_at

    def on_packet(self, packet: EncodedPacket) -> None:
        self.packets.append(packet)

    def on_stream_end(self, source: str, why: str) -> None:
        self.ends.append(why)


def frame(seq: int, pts: int | None = None, size: tuple[int, int] = (64, 48)) -> Frame:
    image = np.full((size[1], size[0], 3), 10 + (seq * 7) % 200, np.uint8)
    header = FrameHeader("cam0", seq, seq * 3000 if pts is None else pts, TB, time.time_ns())
    return Frame(header, MappingProxyType({}), image)


def pool_with(*consumers: Consumer) -> EncoderPool:
    pool = EncoderPool(annotated=True, encoder=EncoderConfig(codec="libx264"), codec="libx264")
    for c in consumers:
        pool.add_consumer(c)
    return pool


def test_one_encode_feeds_every_consumer_the_same_packets() -> None:
    a, b = Consumer(), Consumer()
    pool = pool_with(a, b)
    for seq in range(12):
        pool.write(frame(seq))
    pool.close()
    assert len(a.packets) == 12 and [p.data for p in a.packets] == [p.data for p in b.packets]
    assert a.packets[0] is b.packets[0]  # the very same packet objects: encoded once
    assert pool.stats()["cam0"]["streams"] == 1
    assert [p.header.seq for p in a.packets] == list(range(12))
    assert a.packets[0].keyframe and not any(p.keyframe for p in a.packets[1:])
    assert a.packets[0].info.extradata.startswith(b"\x00\x00\x00\x01")  # SPS/PPS out of band
    assert a.ends == ["closed"]


def test_keyframes_on_request_when_due_and_on_the_interval() -> None:
    c = Consumer(key_interval_s=10 * 3000 / 90000)  # every 10 frames
    c.due_at = {4 * 3000}
    pool = pool_with(c)
    for seq in range(3):
        pool.write(frame(seq))
    deadline = time.monotonic() + 10
    while len(c.packets) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    pool.request_keyframe("cam0")  # a viewer joins: the next frame is a keyframe
    for seq in range(3, 22):
        pool.write(frame(seq))
    pool.close()
    keys = [p.header.seq for p in c.packets if p.keyframe]
    assert keys == [0, 3, 4, 14], keys  # first, requested, due (segment), then every 10 frames


def test_nothing_is_encoded_for_nobody_and_a_new_size_is_a_new_stream() -> None:
    c = Consumer(wants=False)
    pool = pool_with(c)
    assert not pool.needs_picture("cam0")
    pool.write(frame(0))
    c.wants = True
    assert pool.needs_picture("cam0")
    pool.write(frame(1))
    pool.write(frame(2, size=(81, 47)))  # odd: encoded cropped to even
    pool.write(frame(3, pts=2 * 3000, size=(81, 47)))  # pts repeats: re-stamped forward
    pool.close()
    assert [p.header.seq for p in c.packets] == [1, 2, 3]
    first, second, third = c.packets
    assert (first.info.generation, second.info.generation) == (1, 2) and second.keyframe
    assert (second.info.width, second.info.height) == (80, 46)
    assert c.ends == ["picture size changed", "closed"]
    assert third.restamped and third.pts > second.pts


def test_the_output_stage_shares_one_encode_between_record_restream_and_live(tmp_path: Path) -> None:
    from stream.stages.output import build

    base = {
        "sources": [{"id": "cam0", "type": "pattern"}],
        "sinks": {
            "record": {"root": str(tmp_path / "rec"), "encoder": {"codec": "libx264"}},
            "restream": {"url": "rtsp://127.0.0.1:9/{source}"},
            "live": {"port": 0},
        },
    }
    stage = build(Config.model_validate(base))
    try:
        pools = [s for s in stage.sinks if isinstance(s, EncoderPool)]
        assert len(pools) == 1 and stage.sinks[0] is pools[0]  # first: flushed before the sinks close
        assert len(pools[0].consumers) == 3
    finally:
        stage.close()
    # a re-stream with its own encoder settings gets its own encode
    base["sinks"]["restream"]["encoder"] = {"codec": "libx264", "bitrate_kbps": 2000}  # type: ignore[index]
    stage = build(Config.model_validate(base))
    try:
        assert len([s for s in stage.sinks if isinstance(s, EncoderPool)]) == 2
    finally:
        stage.close()


def test_a_sink_feeds_its_own_pool_and_leaves_the_shared_one_to_the_stage() -> None:
    """``EncoderPool.attach``: on the output stage's pool a sink's write, reset, end and close do
    nothing (the stage feeds that pool: twice would encode twice and cut its streams); on a pool
    of its own they are the pool's."""
    stage_side, theirs, mine = Consumer(), Consumer(), Consumer()
    shared = pool_with(stage_side)
    on_shared = EncoderPool.attach(theirs, shared, annotated=True, encoder=EncoderConfig(codec="libx264"))
    own = EncoderPool.attach(mine, None, annotated=False, encoder=EncoderConfig(codec="libx264"), label="test")
    assert on_shared.pool is shared and not on_shared.own and shared.consumers == [stage_side, theirs]
    assert own.own and own.pool.consumers == [mine] and own.pool.codec == "libx264" and not own.pool.wants_annotated
    for seq in range(3):
        shared.write(frame(seq))  # what the output stage does with its shared pool
        on_shared.write(frame(seq))
        own.write(frame(seq))
    for attachment in (on_shared, own):
        attachment.reset("cam0")
        attachment.end_source("cam0")
        attachment.close()
    shared.close()
    assert [p.header.seq for p in theirs.packets] == [0, 1, 2] and theirs.ends == ["closed"]
    assert [p.header.seq for p in mine.packets] == [0, 1, 2] and mine.ends == ["the source restarted"]


@pytest.mark.parametrize("annotated", [True, False])
def test_record_alone_encodes_the_picture_kind_it_asks_for(tmp_path: Path, annotated: bool) -> None:
    from stream.stages.output import build

    config = Config.model_validate(
        {
            "sources": [{"id": "cam0", "type": "pattern"}],
            "sinks": {"record": {"root": str(tmp_path), "annotated": annotated, "encoder": {"codec": "libx264"}}},
        }
    )
    stage = build(config)
    try:
        (pool,) = [s for s in stage.sinks if isinstance(s, EncoderPool)]
        assert pool.wants_annotated is annotated
    finally:
        stage.close()


def test_an_encoder_that_cannot_open_logs_once_and_drops_frames(caplog: pytest.LogCaptureFixture) -> None:
    c = Consumer()
    pool = EncoderPool(annotated=True, encoder=EncoderConfig(), codec="no_such_encoder_here")
    pool.add_consumer(c)
    for seq in range(5):
        pool.write(frame(seq))
    pool.close()
    assert c.packets == [] and pool._sources["cam0"].errors == 5
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "cannot encode" in r.getMessage()]
    assert len(errors) == 1 and "source=cam0 seq=0" in errors[0].getMessage()


def test_a_removed_source_lets_its_encoder_thread_go_after_its_stream_ended() -> None:
    c = Consumer()
    pool = pool_with(c)
    before = {t.name for t in threading.enumerate()}
    for seq in range(5):
        pool.write(frame(seq))
    assert "h264 cam0" in {t.name for t in threading.enumerate()} - before
    pool.end_source("cam0")
    pool.forget_source("cam0")  # the source was removed at runtime: returns once the thread has ended
    assert "h264 cam0" not in {t.name for t in threading.enumerate()}
    assert len(c.packets) == 5 and c.ends == ["end of stream"], "every frame encoded, the stream ended once"
    assert pool.stats()["cam0"]["frames"] == 5  # its counts stay for the run's summary

    for seq in range(3):  # added again: a new encoder, a new stream from a keyframe
        pool.write(frame(seq))
    pool.close()
    assert len(c.packets) == 8 and c.packets[5].keyframe and c.packets[5].info.generation == 2
    assert c.ends == ["end of stream", "closed"]
