"""Where recordings live, confined under the recording root, and how old ones are deleted.

Layout: ``<root>/<source>/<UTC start>_<first seq>.mp4`` plus ``.jsonl`` beside it,
e.g. ``recordings/cam0/20250101T120000.000Z_00000042.mp4``. Names sort
chronologically within a source.

Confinement: a source name must be a plain id (letters, digits, '_', '-'; the
same rule as ``sources[].id``), so ``../x``, ``a/b`` or ``/abs`` are refused,
and every directory and file path is resolved (symlinks followed) and checked
to be inside the resolved root before anything is created in it.

Retention: segments whose last write (mtime) is older than ``max_age_s`` are
deleted, then the oldest go until the segments under the root total at most
``max_bytes``. Only files named like segments are touched, and never one in
``keep`` (the segments being written).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from stream.config import SOURCE_ID
from stream.errors import SourceError

log = logging.getLogger(__name__)

SEGMENT_NAME = re.compile(r"^\d{8}T\d{6}\.\d{3}Z_\d+(-\d+)?\.mp4$")


def is_inside(root: Path, path: Path) -> bool:
    """True when ``path``, resolved, is ``root`` (resolved) or below it."""
    return path.resolve().is_relative_to(root.resolve())


def source_dir(root: Path, source: str) -> Path:
    """The directory of ``source``'s segments (created), resolved and confined under ``root``.

    Raises SourceError when the name is not a plain source id or the directory
    resolves outside the root (e.g. a symlink to elsewhere)."""
    if not SOURCE_ID.match(source):
        raise SourceError(
            f"record: source name {source!r} cannot be a directory under {root}: use 1-64 "
            "letters, digits, '_' or '-' (no '/', '..' or absolute paths)"
        )
    root = root.resolve()
    path = root / source
    if not is_inside(root, path):
        raise SourceError(
            f"record: {path} resolves to {path.resolve()}, outside the recording root {root}; "
            "remove that link or choose another root"
        )
    path.mkdir(exist_ok=True)
    if not is_inside(root, path):  # created or swapped by someone else meanwhile
        raise SourceError(f"record: {path} resolves outside the recording root {root}")
    return path.resolve()


def segment_stem(capture_ns: int, seq: int) -> str:
    """``<UTC start>_<seq>``, e.g. 20250101T120000.123Z_00000042 (capture time in ns since the epoch)."""
    t = datetime.fromtimestamp(capture_ns / 1e9, tz=UTC)
    return f"{t:%Y%m%dT%H%M%S}.{t.microsecond // 1000:03d}Z_{seq:08d}"


def new_segment_paths(directory: Path, root: Path, capture_ns: int, seq: int) -> tuple[Path, Path]:
    """(mp4, jsonl) paths for a new segment that exist nowhere yet, checked to be under ``root``."""
    stem = segment_stem(capture_ns, seq)
    for n in range(1000):
        name = stem if n == 0 else f"{stem}-{n}"
        mp4, jsonl = directory / f"{name}.mp4", directory / f"{name}.jsonl"
        if mp4.exists() or mp4.is_symlink() or jsonl.exists() or jsonl.is_symlink():
            continue
        for p in (mp4, jsonl):
            if not is_inside(root, p):
                raise SourceError(f"record: {p} resolves outside the recording root {root}")
        return mp4, jsonl
    raise SourceError(f"record: cannot find a free segment name for {stem} in {directory}")


@dataclass(frozen=True)
class SegmentFiles:
    """One segment on disk: its video, its sidecar (may be missing), newest mtime, total bytes."""

    mp4: Path
    jsonl: Path
    mtime: float
    size: int


def list_segments(root: Path) -> list[SegmentFiles]:
    """Every segment under ``root``/<source>/, oldest first (by mtime). Directories that
    are not source ids or that resolve outside the root are skipped."""
    root = root.resolve()
    found: list[SegmentFiles] = []
    if not root.is_dir():
        return found
    for d in root.iterdir():
        if not SOURCE_ID.match(d.name) or d.is_symlink() or not d.is_dir() or not is_inside(root, d):
            continue
        for mp4 in d.iterdir():
            if not SEGMENT_NAME.match(mp4.name) or mp4.is_symlink():
                continue
            jsonl = mp4.with_suffix(".jsonl")
            try:
                st = mp4.stat()
                mtime, size = st.st_mtime, st.st_size
                if jsonl.exists() and not jsonl.is_symlink():
                    js = jsonl.stat()
                    mtime, size = max(mtime, js.st_mtime), size + js.st_size
            except FileNotFoundError:  # deleted meanwhile
                continue
            found.append(SegmentFiles(mp4, jsonl, mtime, size))
    found.sort(key=lambda s: (s.mtime, s.mp4.name))
    return found


def apply_retention(
    root: Path,
    *,
    max_age_s: float | None,
    max_bytes: int | None,
    keep: Collection[Path] = (),
    now: float | None = None,
) -> list[Path]:
    """Delete segments older than ``max_age_s`` seconds, then the oldest until the total is at
    most ``max_bytes``; never one whose mp4 is in ``keep``. Returns the deleted mp4 paths."""
    if max_age_s is None and max_bytes is None:
        return []
    now = time.time() if now is None else now
    keep_set = {Path(p).resolve() for p in keep}
    segments = list_segments(root)
    total = sum(s.size for s in segments)
    deleted: list[Path] = []
    for seg in segments:  # oldest first
        if seg.mp4.resolve() in keep_set:
            continue
        too_old = max_age_s is not None and now - seg.mtime > max_age_s
        too_big = max_bytes is not None and total > max_bytes
        if not (too_old or too_big):
            continue
        for p in (seg.mp4, seg.jsonl):
            p.unlink(missing_ok=True)
        total -= seg.size
        deleted.append(seg.mp4)
        log.info(
            "record: retention deleted %s (%s, %d bytes)",
            seg.mp4,
            "older than max_age_s" if too_old else "over max_size",
            seg.size,
        )
    return deleted
