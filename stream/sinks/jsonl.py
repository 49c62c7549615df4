"""Debug sink: one JSON line per frame with its identity and stage timestamps.

Line: {"source", "seq", "pts", "time_base": [num, den], "capture_ns",
"stamps": [[stage, ns], …], "random_weights", "objects": N (when boxes exist),
"track_ids": [id, …] (when the frame was tracked)}.
The file is line-buffered, so a crash loses at most the line being written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stream.messages import Frame


class JsonlSink:
    name = "jsonl"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", buffering=1, encoding="utf-8")

    def write(self, frame: Frame) -> None:
        h = frame.header
        record: dict[str, Any] = {
            "source": h.source, "seq": h.seq, "pts": h.pts, "time_base": list(h.time_base),
            "capture_ns": h.capture_ns, "stamps": [list(s) for s in h.stamps], "random_weights": h.random_weights,
        }
        if "boxes" in frame.arrays:
            record["objects"] = int(frame.arrays["boxes"].shape[0])
        if "track_ids" in frame.arrays:
            record["track_ids"] = [int(t) for t in frame.arrays["track_ids"]]
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def end_source(self, source: str) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
