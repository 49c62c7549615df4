"""Fragmented MP4 written box by box (stream.live.fmp4) decodes with FFmpeg frame for frame,
and the WebSocket framing (stream.live.websocket) follows RFC 6455."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path
from types import MappingProxyType

import av
import numpy as np
import pytest

from stream.live import fmp4, websocket
from stream.messages import Frame, FrameHeader
from stream.sections.sinks import EncoderConfig
from stream.sinks.encode import EncodedPacket, EncoderPool
from tests.unit.test_encode import Consumer


def _packets(n: int, preset: str = "ultrafast") -> list[EncodedPacket]:
    c = Consumer(key_interval_s=10 * 3000 / 90000)
    pool = EncoderPool(annotated=True, encoder=EncoderConfig(codec="libx264", preset=preset), codec="libx264")
    pool.add_consumer(c)
    for seq in range(n):
        image = np.full((120, 160, 3), 20 + seq * 9, np.uint8)
        header = FrameHeader("cam0", seq, seq * 3000, (1, 90000), time.time_ns())
        pool.write(Frame(header, MappingProxyType({}), image))
    pool.close()
    return c.packets


@pytest.mark.parametrize("preset", ["ultrafast", "veryfast"])  # constrained baseline, high profile
def test_init_and_one_fragment_per_frame_decode_to_the_frames_sent(tmp_path: Path, preset: str) -> None:
    packets = _packets(25, preset)
    info = packets[0].info
    data = fmp4.init_segment(info.width, info.height, info.time_base, info.extradata)
    assert data[4:8] == b"ftyp" and b"moov" in data[:64] and b"avcC" in data
    for i, p in enumerate(packets, 1):
        seg = fmp4.media_segment(i, p.pts, p.duration, fmp4.avcc_sample(p.data), keyframe=p.keyframe)
        assert seg[4:8] == b"moof"
        data += seg
    path = tmp_path / "live.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as f:
        frames = [(fr.pts, fr.key_frame, float(fr.to_ndarray(format="gray").mean())) for fr in f.decode(video=0)]
    assert [pts for pts, _, _ in frames] == [p.pts for p in packets]
    assert [k for _, k, _ in frames] == [p.keyframe for p in packets] and sum(k for _, k, _ in frames) == 3
    for seq, (_, _, mean) in enumerate(frames):  # each decoded picture is the frame sent
        assert abs(mean - (20 + seq * 9)) < 4, (seq, mean)  # grey BGR is the same grey in Y
    codec = fmp4.codec_string(info.extradata)
    assert codec.startswith("avc1.") and len(codec) == 11
    assert codec[5:7] == ("42" if preset == "ultrafast" else "64")  # baseline / high


def test_nal_units_split_on_three_and_four_byte_start_codes() -> None:
    stream = b"\x00\x00\x00\x01\x67\xaa\x00\x00\x01\x68\xbb\xcc\x00\x00\x00\x01\x65\x00\x01"
    assert fmp4.nal_units(stream) == [b"\x67\xaa", b"\x68\xbb\xcc", b"\x65\x00\x01"]
    assert fmp4.avcc_sample(b"\x00\x00\x01\x65\x11") == b"\x00\x00\x00\x02\x65\x11"
    with pytest.raises(ValueError, match="SPS"):
        fmp4.codec_string(b"\x00\x00\x01\x68\xbb")


def test_websocket_handshake_and_frames_follow_rfc_6455() -> None:
    assert websocket.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3
    good = {
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    assert websocket.handshake_error(good) is None
    assert "Upgrade" in (websocket.handshake_error({**good, "Upgrade": "h2c"}) or "")
    assert "16 bytes" in (websocket.handshake_error({**good, "Sec-WebSocket-Key": "abc"}) or "")
    for n, head in ((5, 2), (200, 4), (70_000, 10)):
        out = websocket.frame(websocket.BINARY, bytes(n))
        assert out[0] == 0x82 and len(out) == head + n
    a, b = socket.socketpair()
    with a, b:
        mask = b"\x01\x02\x03\x04"
        payload = b"\x03\xe8bye"
        a.sendall(bytes([0x88, 0x80 | len(payload)]) + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))
        assert websocket.read_frame(b) == (websocket.CLOSE, payload)
        a.sendall(struct.pack(">BB", 0x81, 3) + b"abc")  # unmasked from a client: refused
        with pytest.raises(ConnectionError, match="masked"):
            websocket.read_frame(b)
