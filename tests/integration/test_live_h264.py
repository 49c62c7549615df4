"""The live view's H.264 path: the shared encode's packets as fragmented MP4 over ONE
WebSocket per viewer (/live), played by Media Source Extensions in a real headless
Chromium (Debian's chromium + chromedriver), and read by a raw RFC 6455 client here.

Screenshots are kept under ``$STREAM_TEST_ARTIFACTS`` (default: pytest's tmp_path).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from stream.config import Config
from stream.live.hub import LiveHub
from stream.sinks.encode import EncoderPool
from stream.sinks.live import LiveSink, build
from stream.stages.output import build as build_output
from tests.integration.test_live_app import WALL, _artifact_dir, _server_connections, _wall_frame, _WallFeeder
from tests.integration.test_live_view import TOKEN, _get, _wait, browser

__all__ = ["browser"]

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def wall_sink() -> Iterator[LiveSink]:
    config = Config.model_validate({"sources": [{"id": s, "type": "pattern"} for s in WALL]})
    sink = build({"port": 0, "max_fps": 10}, config)
    feeder = _WallFeeder(sink, WALL)
    yield sink
    feeder.stop()
    sink.close()


# per tile: state, presented frames, video time, and a hash of the decoded picture
_TILES = """
return Array.from(document.querySelectorAll('section.card')).map(card => {
  const v = card.querySelector('video.video');
  if (!v || v.hidden || !v.videoWidth || v.readyState < 2) return [card.dataset.source, card.dataset.state, 0, 0, null];
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(v, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let h = 0;
  for (let i = 0; i < d.length; i += 16) h = (h * 31 + d[i] + 7 * d[i + 1]) % 1000000007;
  return [card.dataset.source, card.dataset.state, Number(card.dataset.frames || 0), v.currentTime, h];
});
"""


def test_h264_wall_shows_twelve_sources_changing_over_one_websocket(
    browser: Any, wall_sink: LiveSink, tmp_path: Path
) -> None:
    browser.get(wall_sink.url)
    assert browser.execute_script("return document.documentElement.dataset.transport") == "h264"

    def all_playing() -> list[Any] | None:
        tiles = browser.execute_script(_TILES)
        ok = len(tiles) == 12 and all(st == "streaming" and n > 0 and h is not None for _, st, n, _, h in tiles)
        return tiles if ok else None

    first = {s: (n, t, h) for s, _, n, t, h in _wait(all_playing, 40, "all 12 H.264 tiles playing")}
    assert sorted(first) == WALL
    changed: set[str] = set()

    def all_changed() -> bool:
        for s, _, n, t, h in browser.execute_script(_TILES):
            if h is not None and h != first[s][2] and n > first[s][0] and t > first[s][1]:
                changed.add(s)
        return len(changed) == 12

    _wait(all_changed, 30, f"every tile's decoded picture and video time to move (so far: {sorted(changed)})")
    # one connection for the page (the WebSocket), the encoder runs for all 12, no JPEG is made
    assert _server_connections(wall_sink.port) == 1
    assert all(wall_sink.pool.needs_picture(s) and wall_sink.h264_watched(s) for s in WALL)
    assert not any(wall_sink.hub.watched(s) for s in WALL) and wall_sink.hub.encoded == 0
    ages = browser.execute_script("return Array.from(document.querySelectorAll('section.card .age')).map(e => e.textContent)")
    assert all(a.startswith("age ") and a.endswith(" ms") for a in ages), ages
    browser.set_window_size(1400, 1250)
    try:
        browser.save_screenshot(str(_artifact_dir(tmp_path) / "live-wall-12-h264.png"))
    finally:
        browser.set_window_size(1400, 900)
    browser.get("about:blank")  # leaving the page: the encoder stops
    _wait(lambda: not any(wall_sink.pool.needs_picture(s) for s in WALL), 20, "the H.264 viewer to leave")


# ---- a raw WebSocket client ------------------------------------------------------------


class WsClient:
    """Opens /live on ``port`` and reads server frames (unmasked) as (opcode, payload)."""

    def __init__(self, port: int, path: str, headers: dict[str, str] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                break
            head += chunk
        self.status = int(head.split(b" ", 2)[1]) if head else 0
        self.bytes = 0

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "the server closed the WebSocket"
            data += chunk
        return data

    def read(self) -> tuple[int, bytes]:
        b0, b1 = self._exact(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", self._exact(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", self._exact(8))
        payload = self._exact(n)
        self.bytes += n
        return b0 & 0x0F, payload

    def close(self) -> None:
        self.sock.close()


def _parse(payload: bytes) -> tuple[int, str, dict[str, Any], bytes]:
    kind, n = payload[0], payload[1]
    source = payload[2 : 2 + n].decode()
    pos = 2 + n
    if kind == 1:
        c = payload[pos]
        return kind, source, {"codec": payload[pos + 1 : pos + 1 + c].decode()}, payload[pos + 1 + c :]
    seq, age, flags = struct.unpack_from(">IIB", payload, pos)
    return kind, source, {"seq": seq, "age_ms": age, "key": bool(flags & 1)}, payload[pos + 9 :]


def test_websocket_carries_each_sources_fmp4_and_events_and_is_guarded(
    wall_sink: LiveSink, tmp_path: Path
) -> None:
    ws = WsClient(wall_sink.port, "/live?sources=cam01,cam02,nope")
    try:
        assert ws.status == 101
        video: dict[str, bytearray] = {}
        metas: dict[str, list[dict[str, Any]]] = {}
        events: set[str] = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            events == {"cam01", "cam02"} and all(len(metas.get(s, [])) >= 12 for s in ("cam01", "cam02"))
        ):
            opcode, payload = ws.read()
            if opcode == 1:
                events.add(json.loads(payload)["source"])
                continue
            kind, source, meta, data = _parse(payload)
            if kind == 1:
                assert meta["codec"].startswith("avc1.") and data[4:8] == b"ftyp"
                assert source not in video, "one init segment per stream"
                video[source] = bytearray(data)
            else:
                assert source in video, "media before the init segment"
                assert data[4:8] == b"moof" and meta["age_ms"] < 10_000
                video[source] += data
                metas.setdefault(source, []).append(meta)
        assert set(video) == {"cam01", "cam02"} and events == {"cam01", "cam02"}
        for source, data in video.items():
            assert metas[source][0]["key"], "a viewer starts on a keyframe"
            seqs = [m["seq"] for m in metas[source]]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            path = tmp_path / f"{source}.mp4"
            path.write_bytes(data)
            with av.open(str(path)) as f:
                frames = list(f.decode(video=0))
            assert len(frames) == len(seqs) and (frames[0].width, frames[0].height) == (320, 240)
        assert wall_sink.h264_watched("cam01") and not wall_sink.h264_watched("cam03")
    finally:
        ws.close()
    _wait(lambda: not wall_sink.h264_watched("cam01"), 20, "the server to notice the viewer left")

    # another site's page may not open it (browsers do not apply the same-origin rule to WebSockets)
    evil = WsClient(wall_sink.port, "/live", {"Origin": "http://attacker.example"})
    assert evil.status == 403
    evil.close()
    assert _get(wall_sink.url + "live")[0] == 400  # not a WebSocket handshake
    assert WsClient(wall_sink.port, "/live?sources=nope").status == 404


def test_websocket_needs_the_token_when_one_is_set() -> None:
    config = Config.model_validate({"sources": [{"id": "cam00", "type": "pattern"}]})
    sink = build({"port": 0, "token": TOKEN}, config)
    try:
        assert WsClient(sink.port, "/live").status == 401
        ok = WsClient(sink.port, f"/live?token={TOKEN}")
        assert ok.status == 101
        ok.close()
    finally:
        sink.close()


def test_h264_viewer_uses_a_quarter_of_the_mjpeg_bandwidth_on_the_same_sources(wall_sink: LiveSink) -> None:
    """Bytes per second a viewer of the 12-source wall receives, same frames, both paths at once."""
    ws = WsClient(wall_sink.port, "/live")
    mjpeg = socket.create_connection(("127.0.0.1", wall_sink.port), timeout=10)
    mjpeg.sendall(b"GET /wall HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    mjpeg_bytes = 0
    try:
        assert ws.status == 101
        _wait(lambda: all(wall_sink.hub.watched(s) for s in WALL), 10, "the MJPEG wall client")
        start, frames = time.monotonic(), 0
        while time.monotonic() - start < 4.0:
            opcode, payload = ws.read()
            frames += opcode == 2 and payload[0] == 2
            mjpeg.setblocking(False)
            try:
                while chunk := mjpeg.recv(1 << 20):
                    mjpeg_bytes += len(chunk)
            except BlockingIOError:
                pass
            mjpeg.setblocking(True)
        elapsed = time.monotonic() - start
    finally:
        ws.close()
        mjpeg.close()
    h264_rate, mjpeg_rate = ws.bytes / elapsed, mjpeg_bytes / elapsed
    print(f"\n12 sources 320x240: H.264 {h264_rate / 1e3:.1f} kB/s ({frames} frames), MJPEG {mjpeg_rate / 1e3:.1f} kB/s")
    assert frames > 12 and mjpeg_rate > 0
    assert h264_rate <= mjpeg_rate / 4, (h264_rate, mjpeg_rate)


def test_recording_and_live_viewers_get_the_same_encoded_frames(tmp_path: Path) -> None:
    """One encode per source: the record sink's MP4 holds byte for byte the samples the
    H.264 viewer received (the output stage built from a config with both sinks)."""
    root = tmp_path / "rec"
    config = Config.model_validate(
        {
            "sources": [{"id": "cam00", "type": "pattern"}],
            "sinks": {"record": {"root": str(root), "encoder": {"codec": "libx264"}}, "live": {"port": 0}},
        }
    )
    stage = build_output(config)
    live = next(s for s in stage.sinks if isinstance(s, LiveSink))
    (pool,) = [s for s in stage.sinks if isinstance(s, EncoderPool)]
    assert live.pool is pool
    ws = WsClient(live.port, "/live")
    samples: dict[int, bytes] = {}
    try:
        assert ws.status == 101
        _wait(lambda: live.h264_watched("cam00"), 10, "the viewer")
        for seq in range(30):
            stage.write(_wall_frame("cam00", seq))
            time.sleep(0.02)
        deadline = time.monotonic() + 20
        while len(samples) < 20 and time.monotonic() < deadline:
            opcode, payload = ws.read()
            if opcode == 2 and payload[0] == 2:
                _, _, meta, data = _parse(payload)
                mdat = data.index(b"mdat") + 4
                samples[meta["seq"]] = data[mdat:]
    finally:
        ws.close()
        stage.close()
    (mp4,) = sorted((root / "cam00").glob("*.mp4"))
    lines = [json.loads(s) for s in mp4.with_suffix(".jsonl").read_text().splitlines()]
    with av.open(str(mp4)) as f:
        recorded = [bytes(p) for p in f.demux(video=0) if p.size]
    assert len(recorded) == len(lines) == 30
    by_seq = {line["seq"]: data for line, data in zip(lines, recorded, strict=True)}
    assert len(samples) >= 20
    assert all(by_seq[seq] == data for seq, data in samples.items()), "the viewer and the recording differ"
    assert isinstance(live.hub, LiveHub)
