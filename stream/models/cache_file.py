"""Writing a file into the model cache so that no reader ever sees half of it.

Several stage processes may build the same artifact at once (two detect workers, a
restart while the first still exports): each writes under a temporary name in the
file's own folder and renames it into place, which is atomic on one filesystem, so a
reader finds the old file, no file, or the whole new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: Path, write: Callable[[str], object], *, meta: dict[str, Any] | None = None) -> None:
    """``write(name)`` fills a temporary file, which then becomes ``path`` (mode 0644: mkstemp
    makes it 0600, and the cache may be shared by the stage processes' users). ``meta``: also
    written as JSON to ``path`` with the suffix ``.json``, renamed before the file itself, so a
    reader that finds the file finds its metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        if meta is not None:
            meta_tmp = Path(tmp).with_suffix(".json.tmp")
            meta_tmp.write_text(json.dumps(meta, indent=1))
        os.chmod(tmp, 0o644)
        if meta is not None:
            os.replace(meta_tmp, path.with_suffix(".json"))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
