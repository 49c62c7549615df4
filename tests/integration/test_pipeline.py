"""The backbone end to end: real processes, real sockets, real shared memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import REPO, free_port, get_json, run_stream, start_stream, stream_cmd, wait_for

pytestmark = pytest.mark.timeout(180)


def write_config(tmp_path: Path, sources: list[dict], pipeline: list[str], **sections: object) -> Path:
    cfg = {"name": "test", "sources": sources, "pipeline": pipeline,
           "sinks": {"jsonl": {"path": str(tmp_path / "frames.jsonl")}},
           "metrics": {"port": free_port()}, **sections}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# Runs a command as a child subreaper (prctl PR_SET_CHILD_SUBREAPER): whatever the command
# leaves behind is re-parented to this wrapper, not to init, so the wrapper sees exactly the
# processes of the run it started (other runs on the machine are not its descendants). After
# the command exits it waits up to 5 s for stream.worker descendants to end, then writes the
# pids of those still alive (one a line) to argv[1], kills them and exits with the command's code.
_REAPER = """
import ctypes, subprocess, sys, time
import psutil
ctypes.CDLL("libc.so.6", use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
code = subprocess.call(sys.argv[2:])
def left():
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "stream.worker" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out
deadline = time.monotonic() + 5
while left() and time.monotonic() < deadline:
    time.sleep(0.05)
alive = left()
with open(sys.argv[1], "w") as f:
    f.write("".join(f"{p.pid} {' '.join(p.cmdline())}\\n" for p in alive))
for p in alive:
    p.kill()
sys.exit(code)
"""


def run_stream_reaped(tmp_path: Path, *args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], str]:
    """``stream *args`` run under the subreaper above: (its result, the stream.worker processes
    of this run still alive after it exited, one a line; empty when it left nothing)."""
    import sys

    left = tmp_path / "left-running.txt"
    r = subprocess.run([sys.executable, "-c", _REAPER, str(left), *stream_cmd(*args)], capture_output=True,
                       text=True, timeout=timeout, cwd=REPO)
    return r, left.read_text()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def leftovers(run_id: str) -> list[str]:
    found = [str(p) for p in Path("/dev/shm").glob(f"stream-{run_id}*")]
    found += [str(p) for p in Path("/tmp").glob(f"stream-{run_id}-*")]
    return found


def test_all_frames_of_a_file_arrive_in_order_with_pts(tmp_path, video):
    path, pts = video
    cfg = write_config(tmp_path, [{"id": "cam", "type": "file", "path": str(path)}], ["passthrough"])
    r = run_stream("run", str(cfg), "--summary-json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    records = read_jsonl(tmp_path / "frames.jsonl")
    assert [x["seq"] for x in records] == list(range(len(pts)))
    assert [x["pts"] for x in records] == pts
    assert all([s[0] for s in x["stamps"]] == ["capture", "passthrough", "output"] for x in records)
    summary = json.loads((tmp_path / "s.json").read_text())["sources"][0]
    assert (summary["read"], summary["processed"], summary["dropped"]) == (len(pts), len(pts), {})
    assert "cam" in r.stdout and f"{len(pts)}" in r.stdout  # the printed summary table


def test_sigkill_of_a_middle_stage_restarts_it_and_names_the_lost_frames(tmp_path):
    frames = 300
    cfg = write_config(
        tmp_path,
        [{"id": "syn", "type": "synthetic", "max_frames": frames, "fps": 1000,
          "synthetic": {"width": 320, "height": 240, "num_objects": 3}}],
        ["passthrough", "passthrough"],
        passthrough={"delay_ms": 10},
        supervisor={"restart_backoff_s": 0.2},
    )
    port = yaml.safe_load(cfg.read_text())["metrics"]["port"]
    proc = start_stream("run", str(cfg), "--summary-json", str(tmp_path / "s.json"))
    try:
        health = wait_for(lambda: (h := get_json(f"http://127.0.0.1:{port}/healthz"))
                          and h["stages"]["passthrough#0"]["frames_out"] > 40 and h, 60, "frames flowing")
        victim = health["stages"]["passthrough#0"]["pid"]
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["restarts"]["passthrough#0"] == 1
    src = summary["sources"][0]
    lost = [s for a, b in src["lost_in_flight"] for s in range(a, b + 1)]
    got = [x["seq"] for x in read_jsonl(tmp_path / "frames.jsonl")]
    assert src["read"] == frames
    assert got == sorted(got), "frames out of order after the restart"
    assert sorted(set(range(frames)) - set(got)) == lost, "every missing frame is named, and only those"
    assert src["processed"] + len(lost) == frames
    assert 0 < len(lost) <= 20, f"only frames in flight may be lost, lost {len(lost)}"
    assert "lost in flight" in out and "restarts: passthrough#0 ×1" in out


def test_sigterm_stops_everything_within_10_s_and_leaves_nothing(tmp_path):
    cfg = write_config(
        tmp_path,
        [{"id": "live", "type": "synthetic", "live": True, "fps": 30,
          "synthetic": {"width": 320, "height": 240}}],
        ["passthrough"],
    )
    port = yaml.safe_load(cfg.read_text())["metrics"]["port"]
    proc = start_stream("run", str(cfg))
    try:
        health = wait_for(lambda: (h := get_json(f"http://127.0.0.1:{port}/healthz"))
                          and h["stages"]["output"]["frames_out"] > 10 and h, 60, "frames flowing")
        pids = [st["pid"] for st in health["stages"].values()]
        assert leftovers(health["run"]), "the run's ring and ipc dir should exist while it runs"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        elapsed = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert elapsed < 10
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert leftovers(health["run"]) == []
    assert "stopped" not in err.lower() or "SIGTERM" in out + err
    assert "live" in out  # the summary is still printed


def test_a_stage_that_keeps_crashing_stops_the_run_with_a_clear_error(tmp_path):
    cfg = write_config(
        tmp_path,
        [{"id": "live", "type": "synthetic", "live": True, "fps": 30, "synthetic": {"width": 160, "height": 120}}],
        ["passthrough"],
        supervisor={"restart_backoff_s": 0.05, "restart_backoff_max_s": 0.2, "max_crashes": 3},
    )
    port = yaml.safe_load(cfg.read_text())["metrics"]["port"]
    proc = start_stream("run", str(cfg))
    killed: set[int] = set()
    try:
        def kill_current() -> bool:
            h = get_json(f"http://127.0.0.1:{port}/healthz")
            if h is None:
                return proc.poll() is not None
            st = h["stages"]["passthrough"]
            if st["up"] and st["pid"] not in killed:
                killed.add(st["pid"])
                os.kill(st["pid"], signal.SIGKILL)
            return proc.poll() is not None

        wait_for(kill_current, 90, "the run to give up", interval=0.05)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 6
    assert "stream: stage passthrough crashed 3 times in 60 s" in err
    assert "Traceback" not in err


def test_a_frozen_stage_is_killed_and_restarted(tmp_path):
    cfg = write_config(
        tmp_path,
        [{"id": "syn", "type": "synthetic", "max_frames": 200, "fps": 1000, "synthetic": {"width": 160, "height": 120}}],
        ["passthrough"],
        passthrough={"delay_ms": 10},
        supervisor={"heartbeat_timeout_s": 2.0, "restart_backoff_s": 0.1},
    )
    port = yaml.safe_load(cfg.read_text())["metrics"]["port"]
    proc = start_stream("run", str(cfg), "--summary-json", str(tmp_path / "s.json"))
    try:
        health = wait_for(lambda: (h := get_json(f"http://127.0.0.1:{port}/healthz"))
                          and h["stages"]["passthrough"]["frames_out"] > 20 and h, 60, "frames flowing")
        os.kill(health["stages"]["passthrough"]["pid"], signal.SIGSTOP)
        out, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "sent no heartbeat" in err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["restarts"]["passthrough"] == 1
    assert summary["sources"][0]["processed"] + summary["sources"][0]["dropped"].get("lost in flight", 0) == 200


def test_metrics_endpoint_serves_prometheus_text(tmp_path):
    cfg = write_config(
        tmp_path,
        [{"id": "live", "type": "synthetic", "live": True, "fps": 30, "synthetic": {"width": 160, "height": 120}}],
        ["passthrough"],
    )
    port = yaml.safe_load(cfg.read_text())["metrics"]["port"]
    proc = start_stream("run", str(cfg))
    try:
        import urllib.request

        def scrape() -> str | None:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                return None
            return text if 'stream_stage_frames_out_total{stage="output"}' in text and \
                'stream_stage_frames_out_total{stage="output"} 0.0' not in text else None

        text = wait_for(scrape, 60, "metrics with frames")
        assert 'stream_stage_latency_ms{quantile="0.99",stage="passthrough"}' in text
        assert 'stream_stage_up{stage="capture:live"} 1.0' in text
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0


@pytest.mark.parametrize(
    ("setup", "expected", "code"),
    [
        ("missing", "does not exist", 3),
        ("notvideo", "not in a format FFmpeg reads", 3),
        ("emptydir", "no images in", 3),
        ("badtype", "sources.0.type: 'camera' is not allowed", 2),
        ("unconnected", "stage 'track' needs boxes", 2),
        ("port", "metrics.port: 127.0.0.1:", 4),
        ("badkey", "transport.hwmm: unknown key", 2),
    ],
)
def test_bad_input_gives_one_clear_line_and_leaves_nothing_running(tmp_path, setup, expected, code):
    source: dict = {"id": "cam", "type": "file", "path": str(tmp_path / "nope.mp4")}
    extra: dict = {}
    pipeline = ["passthrough"]
    if setup == "notvideo":
        (tmp_path / "notes.mp4").write_text("this is not a video\n")
        source["path"] = str(tmp_path / "notes.mp4")
    elif setup == "emptydir":
        (tmp_path / "empty").mkdir()
        source = {"id": "cam", "type": "folder", "path": str(tmp_path / "empty")}
    elif setup == "badtype":
        source = {"id": "cam", "type": "camera"}
    elif setup == "unconnected":
        source = {"id": "cam", "type": "synthetic"}
        pipeline = ["track"]
    elif setup == "badkey":
        source = {"id": "cam", "type": "synthetic"}
        extra = {"transport": {"hwmm": 3}}
    cfg = write_config(tmp_path, [source], pipeline, **extra)
    holder = None
    if setup == "port":
        import socket

        source_cfg = {"id": "cam", "type": "synthetic", "max_frames": 5}
        cfg = write_config(tmp_path, [source_cfg], pipeline)
        holder = socket.socket()
        holder.bind(("127.0.0.1", yaml.safe_load(cfg.read_text())["metrics"]["port"]))
        holder.listen()
    try:
        r, left_running = run_stream_reaped(tmp_path, "run", str(cfg))
    finally:
        if holder:
            holder.close()
    assert r.returncode == code, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("stream: ")]
    assert len(lines) == 1 and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert left_running == "", f"workers of this run still running after it exited:\n{left_running}"


def test_debug_flag_shows_the_traceback(tmp_path):
    cfg = write_config(tmp_path, [{"id": "cam", "type": "file", "path": str(tmp_path / "x.mp4")}], [])
    r = run_stream("--debug", "run", str(cfg))
    assert r.returncode == 3 and "Traceback" in r.stderr


def test_check_reports_sources_without_running(tmp_path, video):
    path, pts = video
    cfg = write_config(tmp_path, [{"id": "cam", "type": "file", "path": str(path)}], ["passthrough"])
    r = run_stream("check", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "source cam: file 160x120" in r.stdout and "config ok" in r.stdout
    assert not (tmp_path / "frames.jsonl").exists()


def test_inline_pixels_over_tcp(tmp_path, video):
    path, pts = video
    cfg = write_config(tmp_path, [{"id": "cam", "type": "file", "path": str(path)}], ["passthrough"],
                       transport={"pixels": "inline", "endpoints": "tcp"})
    r = run_stream("run", str(cfg))
    assert r.returncode == 0, r.stderr
    assert [x["pts"] for x in read_jsonl(tmp_path / "frames.jsonl")] == pts


def test_version():
    r = subprocess.run([*__import__("tests.conftest", fromlist=["stream_cmd"]).stream_cmd("--version")],
                       capture_output=True, text=True)
    assert r.stdout.startswith("stream ")
