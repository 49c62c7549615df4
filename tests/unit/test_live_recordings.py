"""The live view's recording listing, path confinement and HTTP Range parsing."""

from __future__ import annotations

from pathlib import Path

from stream.live.recordings import list_recordings, parse_range, recording_file

STEM = "20250101T120000.123Z_00000042"


def test_parse_range_forms_and_refusals() -> None:
    assert parse_range(None, 1000) is None
    assert parse_range("bytes=0-99", 1000) == (0, 99)
    assert parse_range("bytes=900-", 1000) == (900, 999)
    assert parse_range("bytes=-100", 1000) == (900, 999)
    assert parse_range("bytes=990-5000", 1000) == (990, 999)  # clipped to the file
    assert parse_range("bytes=-5000", 1000) == (0, 999)
    assert parse_range("bytes=1000-", 1000) == "unsatisfiable"
    assert parse_range("bytes=5-4", 1000) == "unsatisfiable"
    assert parse_range("bytes=-0", 1000) == "unsatisfiable"
    assert parse_range("bytes=0-1,5-9", 1000) is None  # several ranges: the whole file
    assert parse_range("items=0-1", 1000) is None


def _segment(root: Path, source: str, stem: str = STEM) -> Path:
    d = root / source
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{stem}.mp4").write_bytes(b"\0" * 10)
    (d / f"{stem}.jsonl").write_text("{}\n")
    return d / f"{stem}.mp4"


def test_lists_segments_by_source_in_time_order(tmp_path: Path) -> None:
    _segment(tmp_path, "cam0", "20250101T120500.000Z_00000100")
    _segment(tmp_path, "cam0")
    _segment(tmp_path, "cam1")
    (tmp_path / "cam0" / "notes.txt").write_text("x")
    (tmp_path / "bad name").mkdir()
    listing = list_recordings(tmp_path)
    assert sorted(listing) == ["cam0", "cam1"]
    assert [s["name"] for s in listing["cam0"]] == [STEM, "20250101T120500.000Z_00000100"]
    first = listing["cam0"][0]
    assert first["start"] == "2025-01-01T12:00:00.123Z" and first["first_seq"] == 42 and first["bytes"] == 10
    assert (
        first["mp4"] == f"/recordings/cam0/{STEM}.mp4"
        and first["sidecar"] == f"/recordings/cam0/{STEM}.jsonl"
    )
    assert list_recordings(None) == {} and list_recordings(tmp_path / "missing") == {}


def test_request_paths_resolve_only_to_segment_files_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    mp4 = _segment(root, "cam0")
    assert recording_file(root, f"/recordings/cam0/{STEM}.mp4") == (mp4.resolve(), "video/mp4")
    assert recording_file(root, f"/recordings/cam0/{STEM}.jsonl") == (
        mp4.with_suffix(".jsonl").resolve(),
        "application/x-ndjson",
    )
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"s")
    (root / "cam0" / "20250101T000000.000Z_00000001.mp4").symlink_to(secret)
    (root / "cam9").symlink_to(tmp_path, target_is_directory=True)
    for path in (
        "/recordings/cam0/20250101T000000.000Z_00000001.mp4",  # a link out of the root
        "/recordings/../secret.mp4",
        "/recordings/cam0/../../secret.mp4",
        "/recordings/cam9/secret.mp4",
        f"/recordings/cam0/{STEM}.txt",
        f"/recordings/cam0/{STEM}",
        "/recordings/cam0/missing.mp4",
        f"/recordings/..%2Fcam0/{STEM}.mp4",
    ):
        assert recording_file(root, path) is None, path
    assert recording_file(None, f"/recordings/cam0/{STEM}.mp4") is None
    assert "cam9" not in list_recordings(root)
