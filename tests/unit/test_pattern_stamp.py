"""The pattern source's capture-time stamp: read back exactly after JPEG and H.264 at the
bitrates the live view uses, after scaling, and refused (None) when the picture is damaged."""

from __future__ import annotations

import time
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from stream.sources.pattern import PatternSource, read_seq, read_time, stamp_time, time_stamp_geometry


def _frames(width: int, height: int, n: int) -> list[tuple[np.ndarray, int]]:
    src = PatternSource(width, height, fps=30.0, frames=n)
    src.open()
    out = [(f.image.copy(), f.extra["stamped_ns"] // 1_000_000) for f in src.frames()]
    src.close()
    return out


def test_geometry_fits_the_picture_or_is_none() -> None:
    assert time_stamp_geometry(1280, 720).to_dict() == {"x0": 32, "y0": 64, "cell": 32, "bits": 24}
    assert time_stamp_geometry(320, 240).cell == 8
    assert time_stamp_geometry(64, 48) is None  # too small: the source still runs, unstamped
    assert len(_frames(64, 48, 2)) == 2


def test_a_live_pattern_gives_the_stamped_time_as_the_capture_time() -> None:
    live = PatternSource(320, 240, fps=100.0, frames=3, live=True)
    live.open()
    assert all(f.extra["capture_ns"] == f.extra["stamped_ns"] for f in live.frames())
    file_like = PatternSource(320, 240, frames=1)
    file_like.open()
    assert "capture_ns" not in next(iter(file_like.frames())).extra  # the capture times it


def test_each_frame_carries_its_capture_time_and_its_seq() -> None:
    t0 = time.time_ns() // 1_000_000
    frames = _frames(320, 240, 6)
    g = time_stamp_geometry(320, 240)
    for seq, (image, ms) in enumerate(frames):
        assert read_seq(image) == seq  # the data path's per-frame check still reads
        assert read_time(image, g) == ms % 2**24
        assert t0 <= ms <= t0 + 10_000


@pytest.mark.parametrize("size", [(320, 240), (1280, 720)])
def test_the_stamp_survives_jpeg_and_half_scale(size: tuple[int, int]) -> None:
    w, h = size
    g = time_stamp_geometry(w, h)
    image, ms = _frames(w, h, 1)[0]
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 50])
    decoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    assert read_time(decoded, g) == ms % 2**24
    half = cv2.resize(decoded, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    back = cv2.resize(half, (w, h), interpolation=cv2.INTER_LINEAR)  # what a scaled tile shows
    assert read_time(back, g) == ms % 2**24


def test_the_stamp_survives_low_bitrate_h264() -> None:
    w, h = 1280, 720
    g = time_stamp_geometry(w, h)
    frames = _frames(w, h, 30)
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = w, h, "yuv420p"
    codec.time_base = Fraction(1, 30)
    codec.bit_rate = 1_000_000
    codec.options = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0"}
    decoder = av.CodecContext.create("h264", "r")
    read = []
    for i, (image, _) in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = i
        for packet in codec.encode(frame):
            for out in decoder.decode(packet):
                read.append(read_time(out.to_ndarray(format="bgr24"), g))
    assert len(read) >= 25
    assert read == [ms % 2**24 for _, ms in frames[: len(read)]]


def test_a_damaged_stamp_reads_as_none_not_as_a_wrong_time() -> None:
    g = time_stamp_geometry(320, 240)
    image = np.full((240, 320, 3), 128, np.uint8)
    assert read_time(image, g) is None  # no stamp
    stamp_time(image, 123_457, g)
    assert read_time(image, g) == 123_457
    image[g.y0 + g.cell:g.y0 + 2 * g.cell, g.x0:g.x0 + g.cell] = 255  # bit 0's complement whited out
    assert read_time(image, g) is None


def test_the_moving_pattern_is_one_still_picture_with_a_sliding_box() -> None:
    src = PatternSource(320, 240, fps=10.0, frames=12, moving=True)
    src.open()
    frames = [f.image.copy() for f in src.frames()]
    g = time_stamp_geometry(320, 240)
    below = slice(g.y0 + 2 * g.cell, None)  # under the stamps
    changed = [np.argwhere((a[below] != b[below]).any(axis=2)) for a, b in zip(frames, frames[1:], strict=False)]
    assert all(len(c) for c in changed)  # the box moves every frame …
    assert all(len(c) < 0.1 * 320 * 240 for c in changed)  # … and little else does
    assert read_seq(frames[5]) == 5
