"""``stream run`` prints a status line per source every few seconds while it runs (a real
pipeline: two live pattern sources through a pass-through stage, no models)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.conftest import run_stream

LINE = re.compile(r"status (\w+): ([\d.]+) fps, age (\d+) ms, (\d+) objects, (\d+) masks, (\d+) dropped")


def test_stream_run_prints_fps_age_objects_and_drops_per_source_every_interval(tmp_path: Path):
    cfg = tmp_path / "run.yaml"
    sources = [{"id": s, "type": "pattern", "live": True, "fps": 20, "max_frames": 100,
                "synthetic": {"width": 160, "height": 120}} for s in ("cam1", "cam2")]  # fmt: skip
    cfg.write_text(yaml.safe_dump({
        "sources": sources, "pipeline": ["passthrough"], "metrics": {"enabled": False},
        "supervisor": {"status_interval_s": 1.0},
    }))  # fmt: skip
    r = run_stream("run", str(cfg), timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "first frames at the output" in r.stderr
    lines = [LINE.search(s) for s in r.stderr.splitlines()]
    per_source: dict[str, list[re.Match[str]]] = {}
    for m in filter(None, lines):
        per_source.setdefault(m.group(1), []).append(m)
    assert set(per_source) == {"cam1", "cam2"}, r.stderr[-3000:]
    for src, found in per_source.items():
        assert len(found) >= 2, (src, r.stderr[-2000:])  # 5 s of video, a line a second
        assert max(float(m.group(2)) for m in found) > 5, found[-1].group(0)  # frames are flowing
        assert all(m.group(4) == "0" and m.group(5) == "0" for m in found)  # pass-through: no objects
    assert "status" not in r.stdout  # stdout is the summary's
