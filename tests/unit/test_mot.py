"""MOTChallenge files and MotSource: what a user feeding public detections would notice."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.errors import SourceError
from stream.sources.base import Source
from stream.sources.mot import GRAY, MotSource, read_mot, read_seqinfo, write_mot

MOT17_DET = """\
2,-1,100,50,20,40,0.9,-1,-1,-1
1,-1,10.5,20,30,60,0.75,-1,-1,-1
1,-1,200,100,25,50,0.3,-1,-1,-1
4,-1,300,150,40,80,0.6,-1,-1,-1
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_reads_det_rows_sorted_by_frame(tmp_path: Path) -> None:
    table = read_mot(write(tmp_path / "det.txt", MOT17_DET))
    assert table.frames.tolist() == [1, 1, 2, 4]
    assert table.conf.tolist() == [0.75, 0.3, 0.9, 0.6]  # file order kept within a frame
    np.testing.assert_allclose(table.xyxy[0], [10.5, 20, 40.5, 80])
    assert table.frame_slices() == {1: slice(0, 2), 2: slice(2, 3), 4: slice(3, 4)}
    assert table.last_frame == 4 and (table.classes == -1).all()


def test_gt_styles(tmp_path: Path) -> None:
    mot15 = read_mot(
        write(tmp_path / "a.txt", "1,1,399,182,121,229,1,-1,-1,-1\n1,2,282,201,92,184,1,-1,-1,-1\n")
    )
    assert not mot15.has_classes() and mot15.ids.tolist() == [1, 2]
    mot17 = read_mot(write(tmp_path / "b.txt", "1,1,912,484,97,109,0,7,1\n1,2,1338,418,167,379,1,1,0.84\n"))
    assert mot17.has_classes()
    assert mot17.classes.tolist() == [7, 1] and mot17.visibility.tolist() == [1.0, 0.84]
    assert mot17.conf.tolist() == [0.0, 1.0]
    short = read_mot(write(tmp_path / "c.txt", "3, 5, 1, 2, 3, 4\n\n# comment\n"))
    assert short.conf.tolist() == [1.0] and short.frames.tolist() == [3]
    spaced = read_mot(write(tmp_path / "d.txt", "1 -1 10 20 30 40 0.5\n"))
    np.testing.assert_allclose(spaced.tlwh, [[10, 20, 30, 40]])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1,-1,10,20,30", "expected at least 6"),
        ("1,-1,10,abc,30,40,0.9", "column 4 is not a number: 'abc'"),
        ("0,-1,10,20,30,40,0.9", "frame must be an integer >= 1"),
        ("1.5,-1,10,20,30,40,0.9", "frame must be an integer >= 1"),
        ("1,-1,10,nan,30,40,0.9", "column 4 is not finite"),
        ("1,-1,10,20,-30,40,0.9", "width and height must be >= 0"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "det.txt", f"1,-1,1,2,3,4,0.5\n{line}\n")
    with pytest.raises(SourceError) as exc:
        read_mot(path)
    assert f"{path}:2:" in str(exc.value)
    assert message in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="MOT file not found: .*nope.txt"):
        read_mot(tmp_path / "nope.txt")
    with pytest.raises(SourceError, match="nope.txt"):
        MotSource(tmp_path / "nope.txt").open()


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    xyxy = np.array([[10, 20, 40, 80], [1.25, 2.5, 3.75, 5]], np.float64)
    write_mot(tmp_path / "out" / "pred.txt", np.array([1, 3]), np.array([7, 8]), xyxy, np.array([0.5, 1.0]))
    table = read_mot(tmp_path / "out" / "pred.txt")
    assert table.frames.tolist() == [1, 3] and table.ids.tolist() == [7, 8]
    np.testing.assert_allclose(table.xyxy, xyxy, atol=0.01)


def test_source_without_sequence_folder_serves_gray_frames(tmp_path: Path) -> None:
    source: Source = MotSource(write(tmp_path / "det.txt", MOT17_DET))
    info = source.open()
    # size from the largest box extent (x2 = 340, y2 = 230), frames 1..4, 30 fps by default
    assert (info.width, info.height, info.frame_count, info.live) == (340, 230, 4, False)
    assert info.fps == 30.0 and info.time_base == Fraction(1, 30)
    frames = list(source.frames())
    assert [f.pts for f in frames] == [0, 1, 2, 3]
    assert [f.extra["mot_frame"] for f in frames] == [1, 2, 3, 4]
    first = frames[0]
    assert (
        first.image.shape == (230, 340, 3) and first.image.dtype == np.uint8 and (first.image == GRAY).all()
    )
    boxes, scores, classes = first.extra["detections"]
    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and classes.dtype == np.int32
    np.testing.assert_allclose(boxes, np.array([[10.5, 20, 40.5, 80], [200, 100, 225, 150]]))
    np.testing.assert_allclose(scores, [0.75, 0.3])
    assert classes.tolist() == [0, 0]  # COCO person
    assert frames[2].extra["detections"][0].shape == (0, 4)  # frame 3 has no detections
    # a restarted capture resumes where it stopped
    assert [f.pts for f in source.frames(start=2)] == [2, 3]
    source.close()


def test_explicit_size_and_fps(tmp_path: Path) -> None:
    info = MotSource(write(tmp_path / "det.txt", MOT17_DET), width=640, height=480, fps=25).open()
    assert (info.width, info.height, info.fps, info.time_base) == (640, 480, 25.0, Fraction(1, 25))


def make_sequence(root: Path, images: bool, length: int = 3) -> Path:
    seq = root / "SEQ-01"
    write(
        seq / "seqinfo.ini",
        f"[Sequence]\nname=SEQ-01\nimDir=img1\nframeRate=14\nseqLength={length}\nimWidth=64\nimHeight=48\nimExt=.png\n",
    )
    write(seq / "det" / "det.txt", "1,-1,1,2,10,10,0.9,-1,-1,-1\n3,-1,5,5,10,10,0.8,-1,-1,-1\n")
    if images:
        (seq / "img1").mkdir()
        for frame in range(1, length + 1):
            cv2.imwrite(str(seq / "img1" / f"{frame:06d}.png"), np.full((48, 64, 3), frame * 40, np.uint8))
    return seq


def test_source_reads_sequence_images(tmp_path: Path) -> None:
    seq = make_sequence(tmp_path, images=True)
    source = MotSource(seq / "det" / "det.txt")  # seqinfo.ini found two levels up
    info = source.open()
    assert (info.width, info.height, info.fps, info.frame_count) == (64, 48, 14.0, 3)
    frames = list(source.frames())
    assert [int(f.image[0, 0, 0]) for f in frames] == [40, 80, 120]
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.flags.c_contiguous
    assert frames[1].extra["detections"][0].shape == (0, 4)


def test_sequence_without_images_uses_seqinfo_size(tmp_path: Path) -> None:
    seq = make_sequence(tmp_path, images=False, length=5)
    source = MotSource(seq / "det" / "det.txt")
    assert source.open().frame_count == 5  # seqLength, though the last detection is in frame 3
    frame = next(iter(source.frames()))
    assert frame.image.shape == (48, 64, 3) and (frame.image == GRAY).all()


def test_missing_image_is_named(tmp_path: Path) -> None:
    seq = make_sequence(tmp_path, images=True)
    (seq / "img1" / "000002.png").unlink()
    source = MotSource(seq / "det" / "det.txt")
    frames = source.frames()
    next(frames)
    with pytest.raises(SourceError, match="000002.png"):
        next(frames)


def test_bad_seqinfo_names_the_key(tmp_path: Path) -> None:
    ini = write(tmp_path / "seqinfo.ini", "[Sequence]\nframeRate=fast\n")
    with pytest.raises(SourceError, match="frameRate='fast'"):
        read_seqinfo(ini)


def test_confidences_outside_0_1_are_mapped_to_scores_in_order(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dpm = "1,-1,10,20,30,60,-0.5,-1,-1,-1\n1,-1,200,100,25,50,2.5,-1,-1,-1\n2,-1,100,50,20,40,1.0,-1,-1,-1\n"
    source = MotSource(write(tmp_path / "dpm" / "det.txt", dpm))
    with caplog.at_level("WARNING"):
        source.open()
    first, second = (source.detections(f)[1] for f in (1, 2))
    np.testing.assert_allclose(first, [0.0, 1.0])
    np.testing.assert_allclose(second, [0.5])
    assert len([r for r in caplog.records if "outside [0, 1]" in r.getMessage()]) == 1
    assert "(conf - -0.5) / (2.5 - -0.5)" in caplog.text

    mot15 = MotSource(write(tmp_path / "mot15" / "det.txt", "1,-1,10,20,30,60,-1,-1,-1,-1\n"))
    mot15.open()
    np.testing.assert_allclose(mot15.detections(1)[1], [1.0])

    plain = MotSource(write(tmp_path / "plain" / "det.txt", MOT17_DET))
    plain.open()
    np.testing.assert_allclose(plain.detections(1)[1], [0.75, 0.3])  # already scores: untouched
