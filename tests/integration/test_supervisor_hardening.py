"""The supervisor on long and rough runs, end to end with real processes: secrets stay
out of worker environments, /healthz tells a failing pipeline from a working one,
stale shared memory of a killed run is collected, the summary counts what the sinks wrote."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import av
import pytest
import yaml

from stream.transport import shm_dir
from tests.conftest import free_port, get_json, stream_cmd, wait_for
from tests.integration.test_pipeline import write_config

pytestmark = pytest.mark.timeout(180)

TOKEN = "Hx4v9QpLr2Wz7Kt0Ys8B"  # a live-view token given as ${ENV:LIVE_TOKEN}


def _start(cfg: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(stream_cmd("run", str(cfg), *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})


def _port(cfg: Path) -> int:
    return int(yaml.safe_load(cfg.read_text())["metrics"]["port"])


def _health(port: int) -> dict:
    return get_json(f"http://127.0.0.1:{port}/healthz") or {}


def test_secrets_given_through_env_are_not_in_any_worker_environment(tmp_path):
    # the case: a camera password given as ${ENV:CAM_PASSWORD} inside its URL (the
    # camera is down: its capture keeps retrying, which is all this test needs of it)
    password = "Zq7mT2vX9pLw"
    cfg = write_config(
        tmp_path,
        [{"id": "live", "type": "synthetic", "live": True, "fps": 30, "synthetic": {"width": 160, "height": 120}},
         {"id": "door", "type": "rtsp", "url": f"rtsp://admin:${{ENV:CAM_PASSWORD}}@127.0.0.1:{free_port()}/x"}],
        ["passthrough"],
        sinks={"jsonl": {"path": str(tmp_path / "frames.jsonl")},
               "live": {"port": free_port(), "token": "${ENV:LIVE_TOKEN}"}},
    )
    proc = _start(cfg, env={"LIVE_TOKEN": TOKEN, "CAM_PASSWORD": password, "HARDENING_MARKER": "kept"})
    try:
        health = wait_for(lambda: (h := _health(_port(cfg))) and h["stages"]["output"]["frames_out"] > 5
                          and h["stages"]["capture:door"]["pid"] and h, 60, "frames flowing")
        pids = [st["pid"] for st in health["stages"].values()]
        assert len(pids) == 4  # two captures, passthrough, output: all real workers
        for pid in pids:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert b"HARDENING_MARKER=kept" in environ  # the rest of the environment is passed on
            for name, secret in ((b"LIVE_TOKEN=", TOKEN), (b"CAM_PASSWORD=", password)):
                assert not any(e.startswith(name) or secret.encode() in e for e in environ), pid
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]


def _health_code(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def test_healthz_is_503_naming_the_source_when_the_only_camera_has_failed(tmp_path):
    cfg = write_config(tmp_path, [{"id": "cam", "type": "rtsp", "url": f"rtsp://127.0.0.1:{free_port()}/cam",
                                   "open_timeout_s": 1, "reconnect": {"initial_s": 1.0, "max_s": 1.0}}],
                       ["passthrough"])
    proc = _start(cfg)
    try:
        code, body = wait_for(lambda: (r := _health_code(_port(cfg)))[1].get("status") == "failing" and r, 60,
                              "/healthz to say failing")
        assert code == 503 and body["failing"]["source:cam"] in ("failed", "stalled")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        proc.kill()


def test_healthz_is_503_while_no_frame_gets_through_and_ok_again_after(tmp_path):
    cfg = write_config(
        tmp_path,
        [{"id": "live", "type": "synthetic", "live": True, "fps": 30, "synthetic": {"width": 160, "height": 120}}],
        ["passthrough"],
        supervisor={"health_window_s": 2.0, "heartbeat_timeout_s": 120},
    )
    port = _port(cfg)
    proc = _start(cfg)
    try:
        code, health = wait_for(lambda: (r := _health_code(port))[1].get("status") == "ok" and r, 60, "ok")
        assert code == 200 and health["failing"] == {}
        stage = health["stages"]["passthrough"]["pid"]
        os.kill(stage, signal.SIGSTOP)  # a stage that hangs: frames enter, none come out
        try:
            code, body = wait_for(lambda: (r := _health_code(port))[1].get("status") == "failing" and r, 30,
                                  "/healthz to say failing")
            assert code == 503 and "no frame came through" in body["failing"]["output"]
        finally:
            with contextlib.suppress(ProcessLookupError):  # a supervisor may have replaced it meanwhile
                os.kill(stage, signal.SIGCONT)
        wait_for(lambda: _health_code(port)[0] == 200, 30, "/healthz back to 200")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0


def test_healthz_is_503_naming_the_stage_where_every_frame_fails(tmp_path):
    # the camera streams, and every frame fails in the stage (check_stamp on a picture that
    # carries no stamp: a counted error per frame, as a model that raises on every frame)
    cfg = write_config(
        tmp_path,
        [{"id": "cam", "type": "synthetic", "live": True, "fps": 20, "synthetic": {"width": 320, "height": 240}}],
        ["passthrough"],
        passthrough={"check_stamp": True},
        supervisor={"health_window_s": 2.0},
    )
    proc = _start(cfg)
    try:
        code, body = wait_for(lambda: {"passthrough", "output"} <= set((r := _health_code(_port(cfg)))[1].get(
            "failing", {})) and r, 90, "/healthz to name passthrough and the output")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert code == 503 and body["status"] == "failing", body
    assert "frames failed" in body["failing"]["passthrough"], body
    assert "no frame came through" in body["failing"]["output"], body


def test_after_sigint_with_a_stage_mid_call_the_summary_counts_what_the_sinks_wrote(tmp_path):
    # a stage that spends 4 s per frame (SAM on a CPU): the drain cannot finish before the
    # shutdown deadline, so the stages are terminated with frames still in flight
    cfg = write_config(
        tmp_path,
        [{"id": "live", "type": "synthetic", "live": True, "fps": 10, "max_in_flight": 3,
          "synthetic": {"width": 160, "height": 120}}],
        ["passthrough"],
        passthrough={"delay_ms": 4000},
        sinks={"jsonl": {"path": str(tmp_path / "frames.jsonl")}, "record": {"root": str(tmp_path / "rec")}},
    )
    summary_path = tmp_path / "summary.json"
    proc = _start(cfg, "--summary-json", str(summary_path))
    try:
        wait_for(lambda: _health(_port(cfg)).get("stages", {}).get("output", {}).get("frames_out", 0) >= 1, 90,
                 "a frame through the slow stage")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert took < 10.0, err[-3000:]
    lines = (tmp_path / "frames.jsonl").read_text().splitlines()
    src = json.loads(summary_path.read_text())["sources"][0]
    assert src["processed"] == len(lines) >= 1
    assert "lost in flight" not in src["dropped"]  # nothing crashed: those frames were stopped
    assert src["read"] == src["processed"] + sum(src["dropped"].values())
    assert f"{src['processed']:>9}" in out
    # and the recording holds the same frames (before: the summary said 0 processed, 34 lost,
    # while the recording and the JSONL file held 17)
    decoded = 0
    for mp4 in sorted((tmp_path / "rec" / "live").glob("*.mp4")):
        with av.open(str(mp4)) as c:
            decoded += sum(1 for _ in c.decode(video=0))
    assert src["sinks"]["record"] == {"written": decoded} and decoded == src["processed"], (src, decoded)


def test_a_run_removes_rings_and_ipc_folders_of_dead_supervisors_and_only_those(tmp_path):
    # a real ``stream run`` killed with SIGKILL (no handler runs) leaves its ring and ipc folder,
    # named by the run itself; files of a live supervisor and of another form stay
    shm, tmp = shm_dir(), Path(tempfile.gettempdir())
    ns = os.stat("/proc/self/ns/pid").st_ino
    frames = tmp_path / "frames.jsonl"
    killed = _start(write_config(
        tmp_path,
        [{"id": "cam", "type": "synthetic", "live": True, "fps": 20, "synthetic": {"width": 64, "height": 48}}],
        ["passthrough"],
    ))
    try:
        wait_for(lambda: frames.exists() and frames.read_text().count("\n") >= 3, 120, "frames flowing")
    finally:
        killed.kill()
        killed.communicate(timeout=30)  # reaped: its pid names no process now
    marker = f"-{killed.pid}.{ns}-"  # stream-RUNID-PID.PIDNS-…: the owner's pid in the name
    dead = [p for root in (shm, tmp) for p in root.glob("stream-*") if marker in p.name]
    # the test proves something only if SIGKILL really left them: a ring and an ipc folder
    assert any(p.name.endswith(".ring") for p in dead) and any(p.is_dir() for p in dead), dead
    alive = subprocess.Popen(["sleep", "120"])
    tag = secrets.token_hex(4)
    made: dict[str, list[Path]] = {"alive": [], "foreign": []}
    try:
        ring = shm / f"stream-{tag}-{alive.pid}.{ns}-cam.ring"
        ring.write_bytes(b"\0" * 4096)
        ipc = tmp / f"stream-{tag}-{alive.pid}.{ns}-x1y2z3"
        ipc.mkdir()
        (ipc / "detect.in").write_text("")
        made["alive"] += [ring, ipc]
        # names of another form (an older version, another program) are never touched
        other = shm / f"stream-{tag}-cam.ring"
        other.write_bytes(b"")
        made["foreign"].append(other)
        cfg = write_config(tmp_path, [{"id": "syn", "type": "synthetic", "max_frames": 5,
                                       "synthetic": {"width": 64, "height": 48}}], ["passthrough"])
        r = subprocess.run(stream_cmd("run", str(cfg)), capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert not any(p.exists() for p in dead), dead
        for p in dead:
            assert f"removed {p}, left behind by a run whose supervisor is gone" in r.stderr
        assert all(p.exists() for p in made["alive"] + made["foreign"])
    finally:
        alive.kill()
        alive.wait()
        for paths in (*made.values(), dead):
            for p in paths:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
