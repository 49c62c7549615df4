"""Weights registry, cache and download against a real local HTTP server (Range, dropped connections)."""

from __future__ import annotations

import hashlib
import http.server
import io
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch

from stream.cli import main
from stream.errors import WeightsError
from stream.models.weights import (
    OFFICIAL,
    DownloadError,
    cache_dir,
    download,
    get_spec,
    pull,
    resolve_weights,
    sidecar_path,
    verify,
    weights_path,
)
from stream.models.yolo_nas import HEAD_CLS_KEY
from stream.transport import free_port

REPO = Path(__file__).resolve().parents[2]
PAYLOAD = os.urandom(300_000)  # random bytes: any off-by-one in resume changes the hash
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _head_checkpoint(width: int = 64, classes: int = 80) -> bytes:
    """A .pth whose head says yolo_nas_s (64 wide): enough for pull's check of what arrived."""
    buf = io.BytesIO()
    torch.save(
        {HEAD_CLS_KEY: torch.randn(classes, width, 1, 1), "heads.head1.cls_pred.bias": torch.randn(classes)},
        buf,
    )
    return buf.getvalue()


CKPT = _head_checkpoint()
CKPT_SHA = hashlib.sha256(CKPT).hexdigest()


@dataclass
class ServerState:
    payload: bytes = PAYLOAD
    mode: str = "normal"  # normal | ignore_range | drop_half | drop_half_once
    ranges: list[str | None] = field(default_factory=list)


class _Handler(http.server.BaseHTTPRequestHandler):
    state: ServerState  # set on a per-test subclass

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        state = self.state
        if self.path != "/w.pth":
            self.send_error(404)
            return
        header = self.headers.get("Range")
        state.ranges.append(header)
        start = 0
        if header and state.mode != "ignore_range":
            start = int(header.removeprefix("bytes=").split("-")[0])
        if start >= len(state.payload):
            self.send_error(416)
            return
        body = state.payload[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(state.payload) - 1}/{len(state.payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.mode in ("drop_half", "drop_half_once"):
            if state.mode == "drop_half_once":
                state.mode = "normal"
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # the client sees EOF before Content-Length
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[tuple[str, ServerState]]:
    state = ServerState()
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/w.pth", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _closed_port() -> int:
    """A port that was free a moment ago: connecting to it is refused."""
    return free_port()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_download_verifies_hash_and_shows_progress(
    server: tuple[str, ServerState], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, state = server
    dest = tmp_path / "weights" / "w.pth"
    assert download(url, dest, PAYLOAD_SHA, progress=True, timeout_s=10) == dest
    assert dest.read_bytes() == PAYLOAD
    assert _files(tmp_path) == [dest]  # no .part left behind
    assert state.ranges == [None]
    err = capsys.readouterr().err
    assert "w.pth" in err and "100%" in err  # the tqdm bar on stderr reached the end


def test_hash_mismatch_names_both_hashes_and_url_and_leaves_nothing(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, _ = server
    wrong = "0" * 64
    with pytest.raises(WeightsError) as info:
        download(url, tmp_path / "weights" / "w.pth", wrong, progress=False, timeout_s=10)
    message = str(info.value)
    assert wrong in message and PAYLOAD_SHA in message and url in message
    assert not isinstance(info.value, DownloadError)
    assert _files(tmp_path) == []


def test_interrupted_download_resumes_with_range(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, state = server
    state.mode = "drop_half"
    dest = tmp_path / "weights" / "w.pth"
    with pytest.raises(DownloadError, match="interrupted"):
        download(url, dest, PAYLOAD_SHA, progress=False, timeout_s=10)
    part = dest.with_name("w.pth.part")
    assert not dest.exists()
    assert part.stat().st_size == len(PAYLOAD) // 2

    state.mode = "normal"
    download(url, dest, PAYLOAD_SHA, progress=False, timeout_s=10)
    assert state.ranges == [None, f"bytes={len(PAYLOAD) // 2}-"]
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == PAYLOAD_SHA
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, state = server
    dest = tmp_path / "w.pth"
    dest.with_name("w.pth.part").write_bytes(b"x" * 1000)  # stale bytes that must not survive
    state.mode = "ignore_range"
    download(url, dest, PAYLOAD_SHA, progress=False, timeout_s=10)
    assert state.ranges == ["bytes=1000-"]
    assert dest.read_bytes() == PAYLOAD


def test_partial_file_longer_than_the_remote_one_restarts(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    dest = tmp_path / "w.pth"
    dest.with_name("w.pth.part").write_bytes(PAYLOAD + b"junk")  # e.g. the file was republished smaller
    download(url, dest, PAYLOAD_SHA, progress=False, timeout_s=10)
    assert state.ranges == [f"bytes={len(PAYLOAD) + 4}-", None]  # 416, then a fresh request
    assert dest.read_bytes() == PAYLOAD


def test_unreachable_server_says_where_to_put_the_file(tmp_path: Path) -> None:
    port = _closed_port()
    dest = tmp_path / "weights" / "w.pth"
    with pytest.raises(DownloadError) as info:
        download(f"http://127.0.0.1:{port}/w.pth", dest, None, progress=False, timeout_s=5)
    assert str(dest) in str(info.value) and "--random-weights" in str(info.value)
    assert _files(tmp_path) == []


def test_http_404_is_a_download_error(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(DownloadError, match="404"):
        download(url.replace("w.pth", "missing.pth"), tmp_path / "w.pth", None, progress=False, timeout_s=5)


def test_pull_without_published_hash_records_it_on_first_use(
    server: tuple[str, ServerState], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, state = server
    state.payload = CKPT
    spec = get_spec("yolo_nas_s")
    assert spec.sha256 is None
    with caplog.at_level(logging.INFO, logger="stream.models.weights"):
        path = pull(spec, tmp_path, progress=False, timeout_s=10, urls=[url])
    assert path == tmp_path / "weights" / "yolo_nas_s_coco.pth"
    assert sidecar_path(path).read_text().split()[0] == CKPT_SHA
    assert "trusted on first use" in caplog.text and "NON-COMMERCIAL" in caplog.text
    assert verify(spec, tmp_path).status == "ok"

    # A later download must match the recorded hash.
    state.payload = _head_checkpoint()
    with pytest.raises(WeightsError, match="trust-on-first-use record"):
        pull(spec, tmp_path, force=True, progress=False, timeout_s=10, urls=[url])
    assert path.read_bytes() == CKPT  # the good file was not replaced


def test_pull_refuses_a_page_that_is_not_the_checkpoint(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    state.payload = b"<html><body>Access Denied</body></html>\n"  # what a proxy or a bucket sends with 200
    with pytest.raises(DownloadError, match=r"not the yolo_nas_s checkpoint.*not a PyTorch checkpoint"):
        pull(get_spec("yolo_nas_s"), tmp_path, progress=False, timeout_s=10, urls=[url])
    assert _files(tmp_path) == []  # nothing trusted, no sidecar

    state.payload = _head_checkpoint(width=96)  # a real checkpoint, of yolo_nas_m
    with pytest.raises(DownloadError, match="holds yolo_nas_m, not yolo_nas_s"):
        pull(get_spec("yolo_nas_s"), tmp_path, progress=False, timeout_s=10, urls=[url])
    assert _files(tmp_path) == []


def test_pull_tries_the_next_url_when_one_is_unreachable(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    state.payload = CKPT
    spec = replace(get_spec("yolo_nas_s"), sha256=CKPT_SHA)  # the registry accepts any WeightSpec
    dead = f"http://127.0.0.1:{_closed_port()}/w.pth"
    path = pull(spec, tmp_path, progress=False, timeout_s=5, urls=[dead, url])
    assert path.read_bytes() == CKPT
    assert not sidecar_path(path).exists()  # a published hash needs no record


def test_cli_pull_then_verify_detects_a_modified_file(
    server: tuple[str, ServerState],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, state = server
    state.payload = _head_checkpoint(width=96)
    monkeypatch.setenv("STREAM_CACHE", str(tmp_path))
    assert main(["weights", "pull", "yolo_nas_m", "--url", url, "--no-progress"]) == 0
    path = tmp_path / "weights" / "yolo_nas_m_coco.pth"
    damaged = bytearray(state.payload)
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    capsys.readouterr()
    assert main(["weights", "verify", "yolo_nas_m"]) == 1
    assert f"MISMATCH  yolo_nas_m: {path}" in capsys.readouterr().out
    # pull refuses to silently keep a bad file
    assert main(["weights", "pull", "yolo_nas_m", "--url", url, "--no-progress"]) != 0
    assert "--force" in capsys.readouterr().err


def test_cli_list_shows_the_non_commercial_license(tmp_path: Path) -> None:
    env = {**os.environ, "STREAM_CACHE": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "stream.cli", "weights", "list"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "YOLO-NAS weights: NON-COMMERCIAL use only" in out
    assert "LICENSE.YOLONAS.md" in out
    for name in OFFICIAL:
        assert name in out
    assert str(tmp_path / "weights") in out


def test_missing_weights_name_the_pull_command(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"stream weights pull sam_vit_h"):
        resolve_weights("sam_vit_h", tmp_path)
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_weights(tmp_path / "nope.pth", tmp_path)
    local = tmp_path / "mine.pth"
    local.write_bytes(b"x")
    assert resolve_weights(str(local), tmp_path) == local
    cached = weights_path(get_spec("sam_vit_h"), tmp_path)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert resolve_weights("sam_vit_h", tmp_path) == cached


def test_cache_dir_precedence(tmp_path: Path) -> None:
    assert cache_dir({"STREAM_CACHE": str(tmp_path / "a"), "XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "a"
    assert cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "stream"
    assert cache_dir({}) == Path.home() / ".cache" / "stream"


def test_registry_entries_are_well_formed() -> None:
    for spec in OFFICIAL.values():
        assert spec.url.startswith("https://") and spec.url.endswith(spec.filename)
        assert spec.sha256 is None or (len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0)
        assert ("NON-COMMERCIAL" in spec.license) == (spec.family == "yolo_nas")
    with pytest.raises(WeightsError, match="known: "):
        get_spec("yolo_nas_xl")


def test_verify_fails_for_a_file_that_is_not_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # What a captive portal or a dead bucket leaves behind when saved as the checkpoint.
    page = b"<html><body>403 Forbidden!</body></html>\n"
    assert len(page) == 41
    path = tmp_path / "weights" / "yolo_nas_s_coco.pth"
    path.parent.mkdir(parents=True)
    path.write_bytes(page)
    monkeypatch.setenv("STREAM_CACHE", str(tmp_path))
    assert main(["weights", "verify"]) == 1
    out = capsys.readouterr().out
    assert f"INVALID   yolo_nas_s: {path}" in out and "not a PyTorch checkpoint" in out
    # with a trust-on-first-use record that matches, it is still refused
    sidecar_path(path).write_text(f"{hashlib.sha256(page).hexdigest()}  {path.name}\n")
    assert main(["weights", "verify", "yolo_nas_s"]) == 1
    assert "INVALID" in capsys.readouterr().out


def test_check_names_every_missing_weight_file_and_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stream.data import demo_clip_path

    config = tmp_path / "c.yaml"
    config.write_text(
        f"sources: [{{id: s, type: file, path: {demo_clip_path()}}}]\n"
        "pipeline: [detect, track, segment]\n"
        "segment: {model: vit_l}\n"
    )
    monkeypatch.setenv("STREAM_CACHE", str(tmp_path / "cache"))
    assert main(["check", str(config)]) == WeightsError.exit_code
    out = capsys.readouterr()
    weights = tmp_path / "cache" / "weights"
    yolo = f"{weights / 'yolo-nas-s.safetensors'} or {weights / 'yolo_nas_s_coco.pth'}"
    assert f"weights detect.weights=yolo_nas_s: not in the cache ({yolo})" in out.out
    assert (
        f"weights segment.weights=sam_vit_l: not in the cache ({weights / 'sam_vit_l_0b3195.pth'})" in out.out
    )
    assert "fetch them with: stream weights pull yolo_nas_s sam_vit_l" in out.out
    assert "source s: file 768x576" in out.out  # the sources are still checked
    assert "2 weight file(s) missing" in out.err and "config ok" not in out.out
    # --random-weights needs none
    assert main(["check", str(config), "--random-weights"]) == 0
    assert "config ok" in capsys.readouterr().out


def test_pull_without_names_means_what_the_demo_config_needs(tmp_path: Path) -> None:
    import argparse

    from stream.commands.weights import DEMO_CONFIG, _default_names, needed_weights
    from stream.config import load_config

    config = tmp_path / "c.yaml"
    config.write_text("sources: [{id: s, type: synthetic}]\npipeline: [detect, track, segment]\n")
    loaded = load_config(config, [f"cache_dir={tmp_path}"], env={})
    assert [(n.key, n.value, n.present) for n in needed_weights(loaded)] == [
        ("detect.weights", "yolo_nas_s", False),
        ("segment.weights", "sam_vit_b", False),
    ]
    demo = load_config(DEMO_CONFIG, [f"cache_dir={tmp_path}"], env={})
    wanted = [n.value for n in needed_weights(demo) if n.official]
    assert wanted and _default_names(argparse.Namespace(config=None), tmp_path) == wanted
