"""The recordings the live view serves: listing segments and resolving request paths.

The record sink writes ``<root>/<source>/<UTC start>_<first seq>.mp4`` with a
``.jsonl`` sidecar beside it (``stream.sinks.retention``). A request path
``/recordings/<source>/<name>`` names a file only when ``<source>`` is a plain
source id and ``<name>`` a segment's file name; the resolved path must lie under
the resolved root (``retention.is_inside``: a symlink out of the root is refused),
so a request string never reaches the file system unchecked.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from stream.config import SOURCE_ID
from stream.sinks.retention import SEGMENT_NAME, is_inside

_FILE = re.compile(r"^/recordings/([^/]+)/([^/]+)$")
_STEM = re.compile(r"^(\d{8}T\d{6}\.\d{3}Z)_(\d+)(?:-\d+)?$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_TYPES = {".mp4": "video/mp4", ".jsonl": "application/x-ndjson"}


def list_recordings(root: Path | None) -> dict[str, list[dict[str, Any]]]:
    """Per source directory under ``root``: its segments, oldest first, each
    {"name", "start" (ISO UTC), "first_seq", "bytes", "mp4", "sidecar" (URL paths or None)}.
    Empty when there is no root (the record sink is off) or it does not exist yet."""
    out: dict[str, list[dict[str, Any]]] = {}
    if root is None or not root.is_dir():
        return out
    for directory in sorted(root.iterdir()):
        if not SOURCE_ID.match(directory.name) or not directory.is_dir() or not is_inside(root, directory):
            continue
        segments = []
        for mp4 in sorted(directory.iterdir()):
            m = _STEM.match(mp4.stem)
            if not SEGMENT_NAME.match(mp4.name) or m is None or not is_inside(root, mp4):
                continue
            try:
                size = mp4.stat().st_size
            except OSError:
                continue  # deleted by retention meanwhile
            start = datetime.strptime(m.group(1), "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
            sidecar = mp4.with_suffix(".jsonl")
            base = f"/recordings/{directory.name}/{mp4.stem}"
            segments.append(
                {
                    "name": mp4.stem,
                    "start": start.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "first_seq": int(m.group(2)),
                    "bytes": size,
                    "mp4": base + ".mp4",
                    "sidecar": base + ".jsonl" if sidecar.is_file() else None,
                }
            )
        out[directory.name] = segments
    return out


def recording_file(root: Path | None, path: str) -> tuple[Path, str] | None:
    """(file, content type) for a request path ``/recordings/<source>/<stem>.mp4|.jsonl``,
    or None when the path names no segment file confined under ``root``."""
    m = _FILE.match(path)
    if root is None or m is None:
        return None
    source, name = m.groups()
    suffix = name[name.rfind(".") :] if "." in name else ""
    if not SOURCE_ID.match(source) or suffix not in _TYPES:
        return None
    if not SEGMENT_NAME.match(name[: -len(suffix)] + ".mp4"):
        return None
    file = root / source / name
    if not is_inside(root, file) or not file.is_file():
        return None
    return file.resolve(), _TYPES[suffix]


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | Literal["unsatisfiable"]:
    """A single ``Range: bytes=a-b`` (or ``a-``, ``-n``) → (first, last) byte, inclusive;
    None for no header or one this server ignores (several ranges: the whole file is sent)."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if m is None:
        return None
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:  # the last n bytes
        n = int(last)
        if n == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, end
