"""The model cache's one way to write a file (``stream.models.cache_file.write_atomic``): a
reader finds the old file or the whole new one with its metadata, readable by other users,
and no temporary is left, even when the writer fails."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from stream.models.cache_file import write_atomic


def test_the_file_and_its_metadata_appear_whole_and_shared(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "m.onnx"
    seen_during_write: list[list[str]] = []

    def write(name: str) -> None:
        seen_during_write.append(sorted(p.name for p in path.parent.iterdir() if not p.name.endswith(".tmp")))
        Path(name).write_bytes(b"x" * 1000)

    write_atomic(path, write, meta={"arch": "a", "format": 1})
    assert seen_during_write == [[]]  # nothing under the final names while it was written
    assert path.read_bytes() == b"x" * 1000 and json.loads(path.with_suffix(".json").read_text())["arch"] == "a"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.json", "m.onnx"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    write_atomic(path, lambda name: Path(name).write_bytes(b"old"))

    def broken(name: str) -> None:
        Path(name).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, broken)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["m.bin"]
