from __future__ import annotations

import msgspec
import numpy as np
import pytest

from stream.errors import ProtocolError
from stream.messages import (
    Credit,
    EndOfStream,
    Frame,
    FrameHeader,
    PixelRef,
    decode,
    encode_frame,
    encode_message,
)


def header(**kw: object) -> FrameHeader:
    base = {"source": "cam", "seq": 7, "pts": 700, "time_base": (1, 90000), "capture_ns": 123}
    return FrameHeader(**{**base, **kw})  # type: ignore[arg-type]


def roundtrip(frame: Frame, **kw: object) -> Frame:
    parts = encode_frame(frame, **kw)  # type: ignore[arg-type]
    out = decode([bytes(p) for p in parts])
    assert isinstance(out, Frame)
    return out


def test_frame_roundtrip_keeps_identity_arrays_and_stamps():
    boxes = np.arange(12, dtype=np.float32).reshape(3, 4)
    f = Frame(header(pixels=PixelRef("ring", 2, 10, 4, 5))).evolve(stamp="detect", boxes=boxes,
                                                                   track_ids=np.array([1, 2, 3]))
    g = roundtrip(f)
    assert g.header.seq == 7 and g.header.pts == 700 and g.header.time_base == (1, 90000)
    assert g.header.pixels == PixelRef("ring", 2, 10, 4, 5)
    assert [s[0] for s in g.header.stamps] == ["detect"]
    np.testing.assert_array_equal(g.arrays["boxes"], boxes)
    assert g.arrays["track_ids"].dtype == np.int64
    assert not g.arrays["boxes"].flags.writeable


def test_inline_image_travels_in_the_message():
    img = np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8)
    g = roundtrip(Frame(header(), image=img), inline_image=True)
    np.testing.assert_array_equal(g.image, img)
    assert g.header.pixels is None


def test_an_inline_frame_carries_its_in_flight_credit_and_a_malformed_one_is_a_protocol_error():
    img = np.zeros((2, 2, 3), np.uint8)
    g = roundtrip(Frame(header(credit=Credit("run-cam.ring", 3, 8)), image=img), inline_image=True)
    assert g.header.credit == Credit("run-cam.ring", 3, 8) and g.header.pixels is None
    topic, head, *rest = [bytes(p) for p in encode_frame(Frame(header(), image=img), inline_image=True)]
    doc = msgspec.json.decode(head) if head.startswith(b"{") else msgspec.msgpack.decode(head)
    for bad in (["run-cam.ring", "3", 8], ["run-cam.ring", 3], "x", [None, 3, 8]):
        forged = {**doc, "credit": bad}
        enc = msgspec.json.encode(forged) if head.startswith(b"{") else msgspec.msgpack.encode(forged)
        with pytest.raises(ProtocolError):
            decode([topic, enc, *rest])


def test_evolve_never_mutates_the_input():
    f = Frame(header())
    g = f.evolve(stamp="x", scores=np.ones(2, np.float32))
    assert "scores" not in f.arrays and f.header.stamps == ()
    assert g.header.stamps[0][0] == "x"


def test_events_roundtrip():
    assert decode(encode_message(EndOfStream("cam", 10, "end of input"))) == EndOfStream("cam", 10, "end of input")


def test_object_arrays_are_refused():
    f = Frame(header()).evolve(bad=np.array([object()], dtype=object))
    with pytest.raises(ProtocolError, match="cannot go on the wire"):
        encode_frame(f)


@pytest.mark.parametrize("mutate", ["garbage", "version", "short", "extra_part"])
def test_bad_messages_raise_protocol_error(mutate):
    parts = [bytes(p) for p in encode_frame(Frame(header()).evolve(boxes=np.zeros((2, 4), np.float32)))]
    if mutate == "garbage":
        parts[1] = b"\xc1\xc1"
    elif mutate == "version":
        parts[1] = msgspec.msgpack.encode(msgspec.structs.replace(decode(parts).header, version=99))  # type: ignore[union-attr]
    elif mutate == "short":
        parts[2] = parts[2][:-4]
    else:
        parts.append(b"x")
    with pytest.raises(ProtocolError):
        decode(parts)
