"""Every frame a sink drops is counted, per sink and source, with its reason: in the run
summary and on ``/metrics``. A real ``stream run`` records with a one-frame encoder queue
behind a slow encoder (x264 veryslow), so most frames are dropped; the summary's figures
are checked against the frames that PyAV decodes from the recording."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import urllib.request
from pathlib import Path

import av
import pytest
import yaml

from tests.conftest import stream_cmd, wait_for

pytestmark = pytest.mark.timeout(300)

FRAMES = 200


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_a_record_queue_of_one_under_a_slow_encoder_reports_exactly_the_frames_missing(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    cfg = {
        "name": "outcomes",
        "sources": [{"id": "cam", "type": "synthetic", "live": False, "max_frames": FRAMES,
                     "synthetic": {"width": 640, "height": 480}}],
        "pipeline": ["passthrough"],
        "passthrough": {"delay_ms": 5},  # the run lasts a few seconds: /metrics is scraped meanwhile
        "sinks": {"record": {"root": str(root), "queue_size": 1, "annotated": False,
                             "encoder": {"codec": "libx264", "preset": "veryslow"}}},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": 0},
        "cache_dir": str(tmp_path / "cache"),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    summary_path = tmp_path / "summary.json"
    proc = subprocess.Popen(stream_cmd("run", str(path), "--summary-json", str(summary_path)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True)
    reader.start()
    scraped: list[str] = []
    try:
        port = int(wait_for(lambda: next((m[1] for line in list(lines)
                                          if (m := re.search(r"metrics on http://[^:]+:(\d+)/metrics", line))), None),
                            120, "the metrics server"))
        pattern = re.compile(r'stream_sink_frames_total\{outcome="queue full",sink="record",source="cam"\} (\S+)')

        def dropped_on_metrics() -> bool:
            try:
                text = _scrape(port)
            except OSError:
                return False
            scraped.append(text)
            m = pattern.search(text)
            return bool(m and float(m[1]) > 0)

        wait_for(dropped_on_metrics, 120, "a record drop counted on /metrics", interval=0.05)
        proc.wait(120)
    finally:
        proc.kill()
        reader.join(5)
    assert proc.returncode == 0, "".join(lines)
    assert 'stream_sink_frames_total{outcome="written",sink="record",source="cam"}' in scraped[-1]

    summary = json.loads(summary_path.read_text())
    (cam,) = summary["sources"]
    record = cam["sinks"]["record"]
    decoded = 0
    for mp4 in sorted((root / "cam").glob("*.mp4")):
        with av.open(str(mp4)) as c:
            decoded += sum(1 for _ in c.decode(video=0))
    print(f"processed {cam['processed']}, record {record}, decoded {decoded}")
    assert cam["processed"] == FRAMES
    assert record["queue full"] > 0, record  # the test proves something only if the sink dropped
    assert record["written"] == decoded  # "written" is what the recording holds
    assert record["written"] + record["queue full"] == cam["processed"], record  # every missing frame counted
    assert set(record) == {"written", "queue full"}, record
    text = (proc.stdout.read() if proc.stdout else "")
    assert f"sink record: {decoded} written, {record['queue full']} dropped (queue full)" in text, text
