"""Inline pixels coded as JPEG between hosts: decoded on receive, smaller on the wire."""

from __future__ import annotations

import numpy as np
import pytest

from stream.errors import ProtocolError
from stream.messages import JPEG_IMAGE, ArraySpec, Frame, FrameHeader, decode, encode_frame


def header() -> FrameHeader:
    return FrameHeader("cam", 3, 3003, (1, 30000), 1)


def smooth_image(h: int = 120, w: int = 160) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 127 // (w + h))], axis=-1).astype(np.uint8)


def test_jpeg_inline_image_is_decoded_to_bgr_close_to_the_original_and_smaller():
    img = smooth_image()
    boxes = np.array([[1, 2, 3, 4]], np.float32)
    parts = encode_frame(Frame(header(), image=img).evolve(boxes=boxes), inline_image=True, image_codec="jpeg",
                         jpeg_quality=90)
    raw = encode_frame(Frame(header(), image=img), inline_image=True)
    assert sum(len(bytes(p)) for p in parts) < sum(len(bytes(p)) for p in raw) / 4
    g = decode([bytes(p) for p in parts])
    assert isinstance(g, Frame) and g.image is not None
    assert g.image.shape == img.shape and g.image.dtype == np.uint8
    assert np.abs(g.image.astype(int) - img.astype(int)).mean() < 3
    assert g.header.pts == 3003 and g.header.seq == 3
    np.testing.assert_array_equal(g.arrays["boxes"], boxes)
    assert JPEG_IMAGE not in g.arrays and not g.image.flags.writeable


def test_a_corrupt_jpeg_is_a_protocol_error_naming_the_frame():
    parts = encode_frame(Frame(header(), image=smooth_image()), inline_image=True, image_codec="jpeg")
    data = bytearray(bytes(parts[2]))
    data[:] = b"\x00" * len(data)
    with pytest.raises(ProtocolError, match="seq=3.*not a decodable JPEG"):
        decode([bytes(parts[0]), bytes(parts[1]), bytes(data)])


def test_unknown_codec_is_refused():
    with pytest.raises(ProtocolError, match="unknown image codec"):
        encode_frame(Frame(header(), image=smooth_image()), inline_image=True, image_codec="png")
    assert ArraySpec(JPEG_IMAGE, "u1", (5,)).name == "image.jpeg"
