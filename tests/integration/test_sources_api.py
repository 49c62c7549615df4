"""Cameras at runtime through the control API, on a real ``stream run`` (pattern sources,
a passthrough stage, publish + record): a camera added mid-run shows in /metrics, in
the published records and in its recording within 5 s while the other camera's seqs
stay contiguous; removing it stops its capture process, finalizes its last segment
(decoded here by PyAV), lets its encoder thread go, ends its subscribers' stream and
touches nothing else; a bad definition gets 400 with the config loader's own message;
``stream sources`` lists, removes and changes sources."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import av
import psutil
import pytest
import yaml

from stream.cli import main
from stream.client import EndRecord, FrameRecord, Subscriber
from stream.config import load_config
from stream.errors import ConfigError
from tests.conftest import free_port, stream_cmd, wait_for
from tests.integration.test_live_view import browser

__all__ = ["browser"]  # the module-scoped Chromium fixture of test_live_view

pytestmark = pytest.mark.timeout(180)

CAM = {"type": "pattern", "live": True, "fps": 10, "max_in_flight": 8, "ring_slots": 32,
       "synthetic": {"width": 64, "height": 48}}


def api(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def metrics_text(base: str) -> str:
    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        return r.read().decode()


class Records:
    """Every record a real subscriber receives, collected in its own thread."""

    def __init__(self, endpoint: str) -> None:
        self.frames: dict[str, list[int]] = {}
        self.ends: dict[str, int] = {}
        self.first_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._sub = Subscriber(endpoint)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rec = self._sub.recv(0.2)
            if isinstance(rec, FrameRecord):
                self.frames.setdefault(rec.source, []).append(rec.seq)
                self.first_at.setdefault(rec.source, time.monotonic())
            elif isinstance(rec, EndRecord):
                self.ends[rec.source] = self.ends.get(rec.source, 0) + 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sub.close()


def contiguous(seqs: list[int]) -> bool:
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def decoded_frames(mp4: Path) -> int:
    with av.open(str(mp4)) as c:
        return sum(1 for _ in c.decode(video=0))


def start_run(tmp_path: Path, extra: dict[str, Any] | None = None) -> tuple[subprocess.Popen[str], str, str, Path]:
    port, pub = free_port(), f"tcp://127.0.0.1:{free_port()}"
    root = tmp_path / "rec"
    cfg = {
        "name": "runtime-sources",
        "sources": [{"id": "cam1", **CAM}],
        "pipeline": ["passthrough"],
        "metrics": {"port": port},
        "supervisor": {"status_interval_s": 0},
        "sinks": {"publish": {"endpoint": pub},
                  "record": {"root": str(root), "segment_s": 2, "fragment_s": 0.5, "annotated": False}},
    }
    for key, value in (extra or {}).items():
        cfg[key] = {**cfg.get(key, {}), **value}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(stream_cmd("run", str(path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{port}", pub, root


def stop_run(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=60)


def cli(capfd: Any, *args: str) -> tuple[int, str, str]:
    """``stream sources …`` run in this process (the same parser and handler as the command,
    without a fresh interpreter's seconds of imports): exit code, stdout, stderr."""
    capfd.readouterr()
    code = main(["sources", *args])
    out, err = capfd.readouterr()
    return code, out, err


def test_cameras_added_removed_and_changed_at_runtime(tmp_path: Path, capfd: Any) -> None:
    proc, base, pub, root = start_run(tmp_path)
    records = Records(pub)
    summary = log_text = ""
    try:
        wait_for(lambda: len(records.frames.get("cam1", [])) >= 5, 60, "cam1's records")
        status, listed = api(base, "GET", "/api/sources")
        assert status == 200 and [s["id"] for s in listed["sources"]] == ["cam1"], listed
        cam1_pid = listed["sources"][0]["pid"]

        # a bad definition: 400 with the message the config loader gives for the same source in a file
        bad = {"id": "cam9", "type": "rtsp"}
        status, body = api(base, "POST", "/api/sources", bad)
        file = tmp_path / "bad.yaml"
        file.write_text(yaml.safe_dump({"sources": [{"id": "cam1", **CAM}, bad], "pipeline": ["passthrough"]}))
        with pytest.raises(ConfigError) as loader:
            load_config(file)
        assert status == 400, body
        assert body["error"].split(": ", 1)[1] == str(loader.value).split(": ", 1)[1], (body, loader.value)
        assert body["error"].startswith("config error in POST /api/sources: sources.1.url: url is required")
        assert api(base, "POST", "/api/sources", {"id": "cam1", **CAM})[0] == 409  # the id exists

        # add cam2 mid-run: in /metrics, published and recorded within 5 s
        output = psutil.Process(api(base, "GET", "/healthz")[1]["stages"]["output"]["pid"])
        output_threads = output.num_threads()  # cam1's encoder among them
        t0 = time.monotonic()
        status, added = api(base, "POST", "/api/sources", {"id": "cam2", **CAM})
        assert status == 201 and added["source"]["id"] == "cam2", added
        cam2_pid = added["source"]["pid"]
        wait_for(lambda: 'stream_source_state{source="cam2",state="streaming"} 1.0' in metrics_text(base), 5,
                 "cam2 streaming in /metrics", interval=0.05)
        wait_for(lambda: "cam2" in records.first_at, max(0.1, 5 - (time.monotonic() - t0)),
                 "cam2's published records", interval=0.05)
        wait_for(lambda: list((root / "cam2").glob("*.mp4")), max(0.1, 5 - (time.monotonic() - t0)),
                 "cam2's recording", interval=0.05)
        assert time.monotonic() - t0 < 5.0
        wait_for(lambda: len(records.frames.get("cam2", [])) >= 10, 30, "ten frames of cam2")

        # list through the CLI
        code, out, err = cli(capfd, "--url", base, "--json", "list")
        assert code == 0, err
        rows = {s["id"]: s for s in json.loads(out)["sources"]}
        assert set(rows) == {"cam1", "cam2"} and rows["cam2"]["state"] == "streaming", rows
        assert rows["cam1"]["pid"] == cam1_pid and rows["cam2"]["frames"] > 0, rows
        wait_for(lambda: api(base, "GET", "/api/sources/cam2")[1]["source"]["fps"] > 5, 10, "cam2's fps")

        # remove cam2 through the CLI: its capture is gone, its last segment plays, its stream ended
        code, out, err = cli(capfd, "--url", base, "remove", "cam2")
        assert code == 0 and "removed cam2" in out, err
        assert not psutil.pid_exists(cam2_pid) or psutil.Process(cam2_pid).status() == psutil.STATUS_ZOMBIE
        wait_for(lambda: records.ends.get("cam2") == 1, 10, "cam2's end record")
        cam2_seqs = records.frames["cam2"]
        assert contiguous(cam2_seqs) and cam2_seqs[0] == 0, cam2_seqs
        segments = sorted((root / "cam2").glob("*.mp4"))
        sidecar_lines = sum(len(p.read_text().splitlines()) for p in (root / "cam2").glob("*.jsonl"))
        assert sum(decoded_frames(p) for p in segments) == sidecar_lines == len(cam2_seqs), (
            [decoded_frames(p) for p in segments], sidecar_lines, len(cam2_seqs))
        status, listed = api(base, "GET", "/api/sources")
        assert [s["id"] for s in listed["sources"]] == ["cam1"] and listed["sources"][0]["pid"] == cam1_pid
        # the output stage let cam2's encoder go (its thread, its codec) once the segment was final
        wait_for(lambda: output.num_threads() <= output_threads, 10, "cam2's encoder thread gone")
        assert "capture:cam2" not in metrics_text(base)
        n = len(records.frames["cam1"])
        wait_for(lambda: len(records.frames["cam1"]) >= n + 10, 30, "cam1 going on after the removal")
        # cam1 was never paused or restarted: one capture process, every seq, no end record
        assert contiguous(records.frames["cam1"]) and "cam1" not in records.ends
        assert api(base, "GET", "/api/sources/cam2")[0] == 404

        # change cam1 (its fps): an end of stream, then a new stream from seq 0 by a new capture
        code, out, err = cli(capfd, "--url", base, "change", "cam1", "--set", "fps=20")
        assert code == 0 and "changed cam1" in out, err
        wait_for(lambda: records.ends.get("cam1") == 1, 10, "cam1's end record")
        status, one = api(base, "GET", "/api/sources/cam1")
        assert one["source"]["fps_setting"] == 20 and one["source"]["pid"] != cam1_pid, one
        seqs = records.frames["cam1"]
        wait_for(lambda: seqs[-1] < n, 15, "cam1 from seq 0 again")

        # with its last camera removed the run waits for the next one
        assert api(base, "DELETE", "/api/sources/cam1")[0] == 200
        assert api(base, "GET", "/api/sources") == (200, {"sources": []}) and proc.poll() is None
        assert api(base, "POST", "/api/sources", {"id": "cam3", **CAM})[0] == 201
        wait_for(lambda: len(records.frames.get("cam3", [])) >= 3, 15, "cam3's records")
    finally:
        records.close()
        summary, log_text = stop_run(proc)
    assert proc.returncode == 0, log_text[-3000:]
    assert all(cam in summary for cam in ("cam1", "cam2", "cam3")), summary  # removed cameras are listed too


def test_off_loopback_the_api_needs_its_token_and_the_wall_shows_a_new_camera(
    tmp_path: Path, browser: Any, capfd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control API bound off loopback: 401 without its token, 200 with it (the token
    never reaches a log line); a camera it adds appears on the live wall of an open page,
    without a reload."""
    from selenium.webdriver.common.by import By

    token = "s3cret-token-for-the-api-7f3a"
    port, live_port = free_port(), free_port()
    proc, _, _, _ = start_run(tmp_path, {"metrics": {"host": "0.0.0.0", "port": port, "token": token},
                                         "sinks": {"live": {"port": live_port}}})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(base), 60, "the run ready")
        status, body = api(base, "GET", "/api/sources")
        assert status == 401 and "unauthorized" in body["error"], body
        assert api(base, "POST", "/api/sources", {"id": "cam2", **CAM})[0] == 401
        assert api(base, "GET", "/api/sources", token="wrong")[0] == 401
        assert api(base, "GET", "/api/openapi.json")[0] == 200  # the schema is public
        code, out, err = cli(capfd, "--url", base, "list")
        assert code == 8 and "401: unauthorized" in err, err

        browser.get(f"http://127.0.0.1:{live_port}/")
        wait_for(lambda: _tile_state(browser, "cam1") == "streaming", 30, "cam1's tile streaming")
        monkeypatch.setenv("STREAM_API_TOKEN", token)
        code, out, err = cli(capfd, "--url", base, "list")
        assert code == 0 and "cam1" in out and "streaming" in out, err
        browser.execute_script("window.__notReloaded = true;")
        status, added = api(base, "POST", "/api/sources", {"id": "cam2", **CAM}, token=token)
        assert status == 201, added
        wait_for(lambda: _tile_state(browser, "cam2"), 10, "cam2's tile on the wall")
        wait_for(lambda: _tile_state(browser, "cam2") == "streaming", 30, "cam2's tile streaming")
        assert browser.execute_script("return window.__notReloaded === true;")
        assert len(browser.find_elements(By.CSS_SELECTOR, "section.card")) == 2
    finally:
        _, err = stop_run(proc)
    assert proc.returncode == 0, err[-3000:]
    assert token not in err


def _tile_state(driver: Any, source: str) -> str:
    return str(driver.execute_script(
        "const c = document.querySelector(arguments[0]); return c ? c.dataset.state || '' : '';",
        f'section.card[data-source="{source}"]'))


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False
