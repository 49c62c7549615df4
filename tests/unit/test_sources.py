"""FileSource and FolderSource on small videos and images generated in tmp_path."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import cv2
import numpy as np
import pytest

from stream.data import demo_clip_path
from stream.errors import SourceError
from stream.sources.file import FileSource
from stream.sources.folder import FolderSource

W, H, N = 160, 120, 30


def index_image(i: int, w: int = W, h: int = H) -> np.ndarray:
    """A BGR frame whose 8 vertical bars spell ``i`` in binary (survives lossy coding)."""
    img = np.zeros((h, w, 3), np.uint8)
    bar = w // 8
    for b in range(8):
        if (i >> b) & 1:
            img[:, b * bar : (b + 1) * bar] = 255
    return img


def read_index(img: np.ndarray) -> int:
    bar = img.shape[1] // 8
    return sum(1 << b for b in range(8) if img[:, b * bar + 4 : (b + 1) * bar - 4].mean() > 128)


def make_video(
    path: Path,
    codec: str = "libx264",
    n: int = N,
    options: dict[str, str] | None = None,
    faststart: bool = True,
) -> Path:
    """``n`` frames of ``index_image`` at 10 fps; MP4s get their index up front unless faststart=False."""
    container_opts: dict[str, str] = {"movflags": "+faststart"} if faststart and path.suffix == ".mp4" else {}
    with av.open(str(path), mode="w", options=container_opts) as out:
        stream = cast(av.VideoStream, out.add_stream(codec, rate=10))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {**(options if options is not None else {"g": "7", "bf": "2"})}
        for i in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(index_image(i), format="bgr24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def container_pts(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        return [cast(int, f.pts) for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("video") / "clip.mp4")


@pytest.mark.parametrize(
    ("name", "codec", "options"),
    [
        ("clip.mp4", "libx264", {"g": "7", "bf": "2"}),
        ("clip.mkv", "libx264", {"g": "7"}),
        ("clip.avi", "mpeg4", {"g": "7"}),
    ],
)
def test_file_yields_every_frame_in_order_with_container_pts(
    tmp_path: Path, name: str, codec: str, options: dict[str, str]
) -> None:
    path = make_video(tmp_path / name, codec, options=options)
    src = FileSource(path)
    info = src.open()
    assert (info.width, info.height, info.fps, info.live) == (W, H, 10.0, False)
    assert info.frame_count in (N, None)  # Matroska does not store a frame count
    frames = list(src.frames())
    assert [read_index(f.image) for f in frames] == list(range(N))
    assert [f.pts for f in frames] == container_pts(path)
    assert [f.extra["index"] for f in frames] == list(range(N))
    img = frames[0].image
    assert img.shape == (H, W, 3) and img.dtype == np.uint8 and img.flags["C_CONTIGUOUS"]
    # pts * time_base is the frame's time in seconds: 10 fps
    assert float((frames[10].pts - frames[0].pts) * info.time_base) == pytest.approx(1.0)


@pytest.mark.parametrize("start", [1, 7, 13, 29])
def test_file_frames_resume_at_start_index(mp4: Path, start: int) -> None:
    src = FileSource(mp4)
    src.open()
    frames = list(src.frames(start))
    assert [read_index(f.image) for f in frames] == list(range(start, N))
    assert [f.pts for f in frames] == container_pts(mp4)[start:]


def test_file_start_past_the_end_yields_nothing(mp4: Path) -> None:
    assert list(FileSource(mp4).frames(N + 5)) == []


def test_file_loop_restarts_with_increasing_pts(mp4: Path) -> None:
    src = FileSource(mp4, loop=True)
    info = src.open()
    gen = src.frames(25)
    frames = [next(gen) for _ in range(40)]
    gen.close()
    assert [read_index(f.image) for f in frames] == [i % N for i in range(25, 65)]
    assert [f.extra["index"] for f in frames] == list(range(25, 65))
    step = round(1 / (10 * info.time_base))  # one frame period in pts units
    assert np.all(np.diff([f.pts for f in frames]) == step)
    # a restarted looping capture resumes where it was (frame 50 = the second pass's frame 20)
    again = next(src.frames(50))
    assert read_index(again.image) == 20 and again.pts == frames[25].pts


def test_file_close_stops_running_iterators(mp4: Path) -> None:
    src = FileSource(mp4)
    a, b = src.frames(), src.frames(10)
    assert read_index(next(a).image) == 0 and read_index(next(b).image) == 10
    src.close()
    assert next(a, None) is None and next(b, None) is None  # ended, file released (no crash)
    assert read_index(next(src.frames(3)).image) == 3  # the source can be read again


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_file_live_paces_at_fps_and_drops_for_a_slow_reader(mp4: Path) -> None:
    clock = FakeClock()
    src = FileSource(mp4, live=True, clock=clock, sleep=clock.sleep)
    assert src.open().live
    gen = src.frames()
    times = []
    for _ in range(5):
        next(gen)
        times.append(clock.now)
    assert np.diff(times) == pytest.approx([0.1] * 4)  # 10 fps in wall-clock time
    clock.now += 0.45  # the reader stalls for 4.5 frame periods
    after = next(gen)
    assert read_index(after.image) == 8  # frames 5-7 were more than a period late: dropped
    assert src.dropped == 3
    gen.close()


def test_file_with_a_damaged_tail_ends_early_keeping_indices_true(tmp_path: Path) -> None:
    # Matroska has no up-front index to check, so a cut file opens and ends early.
    data = make_video(tmp_path / "whole.mkv", options={"g": "7"}).read_bytes()
    cut = _write(tmp_path / "cut.mkv", data[: len(data) * 6 // 10])
    frames = list(FileSource(cut).frames())
    assert 5 < len(frames) < N
    # a frame lost in the damage leaves a gap in the indices instead of shifting the rest
    assert all(f.extra["index"] == read_index(f.image) for f in frames[:-1])


def write_truncated(tmp_path: Path) -> Path:
    data = make_video(tmp_path / "whole.mp4").read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def test_a_truncated_mp4_with_its_index_up_front_plays_its_decodable_part(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_truncated(tmp_path)
    decodable = 0
    with av.open(str(path)) as c:  # what PyAV itself gets out of it
        try:
            for _ in c.decode(video=0):
                decodable += 1
        except av.FFmpegError:
            pass
    assert 0 < decodable < N
    src = FileSource(path)
    with caplog.at_level(logging.WARNING):
        info = src.open()  # before: refused at start
        frames = list(src.frames())
    assert info.frame_count == N  # what the index claims
    assert len(frames) == decodable
    assert [f.extra["index"] for f in frames] == list(range(decodable))
    assert all(read_index(f.image) == f.extra["index"] for f in frames)
    assert src.end_reason is not None and src.end_reason.startswith("truncated")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("is truncated" in w and "playing the part that decodes" in w for w in warnings), warnings
    assert not any("undecodable packet" in w for w in warnings), warnings  # the end is the end, not damage
    src.close()


def write_unfinished(tmp_path: Path) -> Path:
    """An MP4 cut before its index (moov, written last without faststart) reached the disk."""
    data = make_video(tmp_path / "plain.mp4", faststart=False).read_bytes()
    path = tmp_path / "unfinished.mp4"
    path.write_bytes(data[: len(data) // 2])
    return path


BAD_INPUTS = {
    "missing": (lambda d: d / "nope.mp4", "does not exist"),
    "directory": (lambda d: d, "is a directory"),
    "text": (lambda d: _write(d / "notes.txt", b"hello, not a video\n" * 20), "cannot open"),
    "jpeg": (lambda d: _imwrite(d / "still.jpg"), "has no video stream"),
    "empty": (lambda d: _write(d / "empty.mp4", b""), "cannot open"),
    "unfinished": (write_unfinished, "cannot open .* truncated"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _imwrite(path: Path) -> Path:
    cv2.imwrite(str(path), index_image(3))
    return path


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_file_open_rejects_bad_input_naming_the_path(tmp_path: Path, case: str) -> None:
    make, expected = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(SourceError, match=expected) as err:
        FileSource(path).open()
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_demo_clip_is_bundled_small_and_decodes() -> None:
    path = demo_clip_path()
    assert path.stat().st_size <= 3 * 1024 * 1024
    src = FileSource(path)
    info = src.open()
    assert (info.width, info.height, info.fps, info.frame_count) == (768, 576, 10.0, 200)
    gen = src.frames(195)
    tail = list(gen)
    assert [f.extra["index"] for f in tail] == [195, 196, 197, 198, 199]
    assert tail[0].image.shape == (576, 768, 3)
    assert tail[0].image.std() > 20  # a real street scene, not a blank frame


# --- FolderSource ----------------------------------------------------------------------------


def make_folder(d: Path, n: int = 6) -> list[np.ndarray]:
    """PNG images 0000.png … with the index in their bars; image 4 is larger than the rest."""
    d.mkdir(parents=True, exist_ok=True)
    images: list[np.ndarray] = []
    for i in reversed(range(n)):  # creation order must not matter
        img = index_image(i, 200 if i == 4 else W, 150 if i == 4 else H)
        cv2.imwrite(str(d / f"{i:04d}.png"), img)
        images.insert(0, img)
    (d / "notes.txt").write_text("not an image")
    return images


def test_folder_yields_sorted_images_with_index_pts(tmp_path: Path) -> None:
    images = make_folder(tmp_path / "imgs")
    src = FolderSource(tmp_path / "imgs", fps=5)
    info = src.open()
    assert (info.width, info.height) == (200, 150)  # the largest image
    assert (info.fps, info.time_base, info.frame_count, info.live) == (5.0, Fraction(1, 5), 6, False)
    frames = list(src.frames())
    assert [f.pts for f in frames] == list(range(6))
    assert all(np.array_equal(f.image, img) for f, img in zip(frames, images, strict=True))
    assert [read_index(f.image) for f in src.frames(3)] == [3, 4, 5]


def test_folder_skips_a_corrupt_image_and_names_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_folder(tmp_path)
    (tmp_path / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (tmp_path / "0003b.JPG").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    src = FolderSource(tmp_path)
    src.open()
    with caplog.at_level(logging.WARNING):
        frames = list(src.frames())
    assert [f.pts for f in frames] == [0, 1, 3, 5, 6]  # 0003b.JPG is index 4
    assert [read_index(f.image) for f in frames] == [0, 1, 3, 4, 5]
    assert "0002.png" in caplog.text and "0003b.JPG" in caplog.text


def test_folder_without_images_is_a_source_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no pictures here")
    with pytest.raises(SourceError, match=r"no images in .* \(looked for \*\.jpg") as err:
        FolderSource(tmp_path).open()
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_folder_missing_or_not_a_folder_is_a_source_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nothing"
    if kind == "file":
        path.write_text("x")
    with pytest.raises(SourceError) as err:
        FolderSource(path).open()
    assert str(path) in str(err.value)
