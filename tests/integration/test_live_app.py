"""The live app in a real headless Chromium (Debian's chromium + chromedriver via selenium):
a camera wall of 12 sources over one connection, the camera page's object highlight,
recordings played from real H.264 segments with the sidecar's masks drawn over the
decoded frames, and the token/confinement rules of the recordings endpoints.

Screenshots are kept under ``$STREAM_TEST_ARTIFACTS`` (default: pytest's tmp_path).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import psutil
import pytest

from stream.config import Config
from stream.messages import Frame, FrameHeader
from stream.objects import ObjectMasks
from stream.sinks.live import LiveSink, build
from stream.sinks.record import RecordConfig, RecordSink
from stream.stages.output import OutputStage
from tests.integration.test_live_view import TOKEN, _annotate, _frame, _get, _wait, browser

__all__ = ["browser"]  # the module-scoped Chromium fixture, shared with test_live_view

pytestmark = pytest.mark.timeout(180)

WALL = [f"cam{i:02d}" for i in range(12)]
TB = (1, 90000)
STEP = 3600  # 25 fps
RW, RH = 320, 240


def _artifact_dir(tmp_path: Path) -> Path:
    root = os.environ.get("STREAM_TEST_ARTIFACTS")
    path = Path(root) if root else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path


def _wall_frame(source: str, seq: int) -> Frame:
    """test_live_view's picture and objects, relabelled for one of the wall's sources."""
    base = _frame("cam-a" if int(source[3:]) % 2 == 0 else "cam_b", seq)
    header = FrameHeader(source, seq, seq * 3000, (1, 90000), time.time_ns(), random_weights=True)
    return Frame(header, base.arrays, base.image)


class _WallFeeder:
    def __init__(self, sink: LiveSink, sources: list[str], fps: float = 10.0) -> None:
        self.stage = OutputStage([sink], annotator=_annotate)
        self.sources, self.fps = sources, fps
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        while not self._stop.wait(1.0 / self.fps):
            for source in self.sources:
                self.stage.write(_wall_frame(source, seq))
            seq += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def wall_sink() -> Iterator[LiveSink]:
    config = Config.model_validate({"sources": [{"id": s, "type": "pattern"} for s in WALL]})
    sink = build({"port": 0, "max_fps": 10}, config)
    feeder = _WallFeeder(sink, WALL)
    yield sink
    feeder.stop()
    sink.close()


_TILE_SIGNATURES = """
return Array.from(document.querySelectorAll('section.card')).map(card => {
  const img = card.querySelector('img.picture');
  if (!img || !img.complete || !img.naturalWidth) return [card.dataset.source, card.dataset.state, null];
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let h = 0;
  for (let i = 0; i < d.length; i += 4) h = (h * 31 + d[i] + 7 * d[i + 1]) % 1000000007;
  return [card.dataset.source, card.dataset.state, h];
});
"""


def _server_connections(port: int) -> int:
    """Established TCP connections this process's live server holds on ``port``."""
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def test_wall_shows_twelve_sources_changing_over_one_connection(
    browser: Any, wall_sink: LiveSink, tmp_path: Path
) -> None:
    browser.get(wall_sink.url + "?transport=mjpeg")  # the fallback; the H.264 wall: test_live_h264

    def all_streaming() -> list[Any] | None:
        tiles = browser.execute_script(_TILE_SIGNATURES)
        ok = len(tiles) == 12 and all(state == "streaming" and sig is not None for _, state, sig in tiles)
        return tiles if ok else None

    first = {s: sig for s, _, sig in _wait(all_streaming, 30, "all 12 tiles streaming")}
    assert sorted(first) == WALL
    changed: set[str] = set()

    def all_changed() -> bool:
        for s, _, sig in browser.execute_script(_TILE_SIGNATURES):
            if sig is not None and sig != first[s]:
                changed.add(s)
        return len(changed) == 12

    _wait(all_changed, 30, f"every tile's picture to change (changed so far: {sorted(changed)})")
    # every tile is watched (so the output stage draws its picture) over ONE connection
    assert all(wall_sink.needs_picture(s) for s in WALL)
    assert _server_connections(wall_sink.port) == 1
    ages = browser.execute_script(
        "return Array.from(document.querySelectorAll('section.card .age')).map(e => e.textContent)"
    )
    assert all(a.startswith("age ") and a.endswith(" ms") for a in ages), ages
    browser.set_window_size(1400, 1250)  # all three rows of tiles in the screenshot
    try:
        browser.save_screenshot(str(_artifact_dir(tmp_path) / "live-wall-12.png"))
    finally:
        browser.set_window_size(1400, 900)

    # leaving the page ends the connection: no tile is watched any more
    browser.get("about:blank")
    _wait(lambda: not any(wall_sink.needs_picture(s) for s in WALL), 20, "the wall viewer to leave")


_HIGHLIGHT_BBOX = """
const card = document.querySelector('section.card.detail');
const c = card.querySelector('canvas.highlight');
if (!c.width) return null;
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let x1 = 1e9, y1 = 1e9, x2 = -1, y2 = -1, mask = 0;
for (let y = 0; y < c.height; y++) for (let x = 0; x < c.width; x++) {
  const a = d[(y * c.width + x) * 4 + 3];
  if (a > 0) { x1 = Math.min(x1, x); y1 = Math.min(y1, y); x2 = Math.max(x2, x); y2 = Math.max(y2, y); }
  if (a > 90 && a < 130) mask++;
}
return [card.dataset.highlighted || '', x1, y1, x2, y2, mask];
"""


@pytest.mark.parametrize("transport", ["mjpeg", "h264"])
def test_camera_page_click_highlights_the_objects_box_and_mask(
    browser: Any, wall_sink: LiveSink, tmp_path: Path, transport: str
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(wall_sink.url + f"?transport={transport}#cam=cam00")
    rows = 'section.card.detail tbody tr[data-track-id="42"]'
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, rows), 20, "track 42 in cam00's object list")
    watched = wall_sink.needs_picture if transport == "mjpeg" else wall_sink.h264_watched
    _wait(lambda: watched("cam00") and not watched("cam01"), 10, "only cam00 watched")
    _wait(lambda: _click(browser, rows), 10, "a click on track 42's row")

    def highlighted() -> list[Any] | None:
        got = browser.execute_script(_HIGHLIGHT_BBOX)
        return got if got and got[0] == "42" and got[5] > 0 else None

    tid, x1, y1, x2, y2, mask = _wait(highlighted, 20, "track 42's box and mask drawn")
    # the 50×50 square of track 42 (row y 130..180): its mask filled, its box outlined (3 px)
    assert 48 <= x2 - x1 + 1 <= 54 and 48 <= y2 - y1 + 1 <= 54, (x1, y1, x2, y2)
    assert 128 <= y1 <= 131, y1
    assert mask > 0.6 * 50 * 50, mask
    browser.save_screenshot(str(_artifact_dir(tmp_path) / f"live-camera-highlight-{transport}.png"))


def _click(driver: Any, selector: str) -> bool:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        driver.find_element(By.CSS_SELECTOR, selector).click()
    except StaleElementReferenceException:  # the rows are rebuilt on every update
        return False
    return bool(driver.execute_script("return document.querySelector('tr.selected') !== null"))


# ---- recordings ---------------------------------------------------------------------


def _triangle(size: int) -> np.ndarray:
    """(size, size) bool: the lower-left triangle, so a transposed or mirrored mask shows."""
    return np.tril(np.ones((size, size), bool))


def _record_frame(seq: int) -> Frame:
    """A dark 320×240 picture with a white triangle moving 3 px a frame; its object's box is
    the triangle's square and its mask the triangle (so overlay and pixels must coincide)."""
    image = np.full((RH, RW, 3), 30, np.uint8)
    x, y, size = 20 + 3 * seq, 60 + seq, 60
    tri = _triangle(size)
    image[y : y + size, x : x + size][tri] = 250
    masks = ObjectMasks.pack([tri], np.array([[x, y, x + size, y + size]]), np.array([0]), np.array([0]))
    arrays = {
        "boxes": np.array([[x, y, x + size, y + size]], np.float32),
        "scores": np.array([0.9], np.float32),
        "class_ids": np.array([0], np.int32),
        "track_ids": np.array([5], np.int64),
        **masks.to_arrays(),
    }
    header = FrameHeader("cam00", seq, seq * STEP, TB, time.time_ns())
    return Frame(header, MappingProxyType(arrays), image)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real segment of 50 frames (2 s at 25 fps) of cam00 under a recording root."""
    root = tmp_path_factory.mktemp("rec")
    sink = RecordSink(
        RecordConfig(root=str(root), segment_s=600, fragment_s=0.5, queue_size=1000, annotated=False),
        codec="libx264",
    )
    for seq in range(50):
        sink.write(_record_frame(seq))
    sink.close()
    return root


def _recording_sink(root: Path, **section: Any) -> LiveSink:
    config = Config.model_validate(
        {
            "sources": [{"id": s, "type": "pattern"} for s in ("cam00", "cam01")],
            "sinks": {"record": {"root": str(root)}},
        }
    )
    return build({"port": 0, **section}, config)


_ALIGNMENT = """
const root = document.querySelector('#recordings .player');
const video = root.querySelector('video'), overlay = root.querySelector('canvas.rec-overlay');
if (!overlay.width || root.dataset.line === undefined) return null;
const w = video.videoWidth, h = video.videoHeight;
const s = document.createElement('canvas'); s.width = w; s.height = h;
const sctx = s.getContext('2d'); sctx.drawImage(video, 0, 0, w, h);
const px = sctx.getImageData(0, 0, w, h).data;
const ov = overlay.getContext('2d').getImageData(0, 0, overlay.width, overlay.height).data;
let both = 0, either = 0, bright = 0, masked = 0, mx1 = 1e9, my1 = 1e9, mx2 = -1, my2 = -1;
for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
  const i = (y * w + x) * 4;
  const isBright = px[i] > 140, a = ov[i + 3], isMask = a > 90 && a < 130;
  bright += isBright; masked += isMask; both += isBright && isMask; either += isBright || isMask;
  if (isMask) { mx1 = Math.min(mx1, x); my1 = Math.min(my1, y); mx2 = Math.max(mx2, x); my2 = Math.max(my2, y); }
}
return {line: Number(root.dataset.line), iou: either ? both / either : 0, bright, masked,
        box: [mx1, my1, mx2 + 1, my2 + 1], w, h, paused: video.paused};
"""


def test_recording_plays_with_the_sidecar_mask_aligned_to_the_decoded_frame(
    browser: Any, recording: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    sink = _recording_sink(recording, token=TOKEN)  # the page passes its token to the list, sidecar and video
    try:
        listing = json.loads(_get(sink.url + f"api/recordings?token={TOKEN}")[2])["recordings"]
        (segment,) = listing["cam00"]
        sidecar = (recording / "cam00" / f"{segment['name']}.jsonl").read_text().splitlines()
        lines = [json.loads(s) for s in sidecar]
        assert len(lines) == 50

        browser.get(sink.url + f"?token={TOKEN}#recordings")
        link = f'#segments a.segment[data-name="{segment["name"]}"]'
        _wait(lambda: browser.find_elements(By.CSS_SELECTOR, link), 20, "the segment in the list")
        browser.find_element(By.CSS_SELECTOR, link).click()
        _wait(
            lambda: browser.execute_script(
                "return document.querySelector('#recordings .player').dataset.ready"
            ),
            30,
            "the video to load (H.264 fragmented MP4)",
        )
        # it plays: the overlay follows the presented frames
        browser.execute_script("document.querySelector('#recordings video').play()")
        _wait(
            lambda: (browser.execute_script(_ALIGNMENT) or {}).get("line", 0) > 3, 30, "playback to advance"
        )
        # a chosen frame: seek there paused and compare overlay, decoded pixels and sidecar
        chosen = lines[30]
        browser.execute_script(
            "const v = document.querySelector('#recordings video'); v.pause(); v.currentTime = arguments[0];",
            chosen["t"] + 0.005,
        )

        def at_chosen() -> dict[str, Any] | None:
            got = browser.execute_script(_ALIGNMENT)
            return got if got and got["line"] == chosen["index"] and got["paused"] else None

        got = _wait(at_chosen, 30, f"the overlay of frame {chosen['index']}")
        assert (got["w"], got["h"]) == (RW, RH)
        box = [round(v) for v in chosen["objects"][0]["box"]]
        assert all(abs(a - b) <= 1 for a, b in zip(got["box"], box, strict=True)), (got["box"], box)
        # the mask drawn from the sidecar covers the triangle in the decoded frame
        assert got["iou"] > 0.85, got
        browser.save_screenshot(str(_artifact_dir(tmp_path) / "live-recording-overlay.png"))
    finally:
        sink.close()


def _off_loopback_address() -> str:
    """An address of this machine other than loopback, or 127.0.0.1 when it has none."""
    for infos in psutil.net_if_addrs().values():
        for info in infos:
            if info.family == socket.AF_INET and not info.address.startswith("127."):
                return str(info.address)
    return "127.0.0.1"


def test_recordings_need_the_token_off_loopback_serve_ranges_and_stay_confined(
    recording: Path, tmp_path: Path
) -> None:
    sink = _recording_sink(recording, host="0.0.0.0", token=TOKEN)
    try:
        base = f"http://{_off_loopback_address()}:{sink.port}/"
        (mp4,) = (recording / "cam00").glob("*.mp4")
        path = f"recordings/cam00/{mp4.name}"
        for p in ("api/recordings", path, path.replace(".mp4", ".jsonl"), "wall", "wall?sources=cam00"):
            assert _get(base + p)[0] == 401, p
        auth = {"Authorization": f"Bearer {TOKEN}"}
        status, _, body = _get(base + "api/recordings", auth)
        assert status == 200 and json.loads(body)["recordings"]["cam00"][0]["mp4"] == "/" + path

        data = mp4.read_bytes()
        req = urllib.request.Request(base + path, headers={**auth, "Range": "bytes=100-1099"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 206 and r.headers["Content-Range"] == f"bytes 100-1099/{len(data)}"
            assert r.read() == data[100:1100]
        assert _get(base + path, {**auth, "Range": f"bytes={len(data)}-"})[0] == 416

        # only segment files under the root: traversal, other names and links out are refused
        outside = tmp_path / "secret.mp4"
        outside.write_bytes(b"secret")
        (recording / "cam01").mkdir(exist_ok=True)
        link = recording / "cam01" / "20250101T000000.000Z_00000001.mp4"
        link.unlink(missing_ok=True)
        link.symlink_to(outside)
        try:
            for p in (
                "recordings/cam00/..%2F..%2Fsecret.mp4",
                "recordings/../secret.mp4",
                "recordings/cam00/notes.txt",
                f"recordings/cam01/{link.name}",
                "recordings/cam00/" + mp4.name.replace(".mp4", ".txt"),
            ):
                assert _get(base + p, auth)[0] == 404, p
            assert link.name not in json.dumps(json.loads(_get(base + "api/recordings", auth)[2]))
        finally:
            link.unlink()
    finally:
        sink.close()


def test_live_sink_serves_no_recordings_without_the_record_sink(tmp_path: Path) -> None:
    config = Config.model_validate({"sources": [{"id": "cam00", "type": "pattern"}]})
    sink = build({"port": 0}, config)
    try:
        assert json.loads(_get(sink.url + "api/recordings")[2]) == {"recordings": {}}
        assert _get(sink.url + "recordings/cam00/20250101T000000.000Z_00000001.mp4")[0] == 404
    finally:
        sink.close()


def _read_parts(stream: Any, want: Callable[[dict[str, list[dict[str, str]]]], bool], timeout: float) -> Any:
    """Parse the wall's multipart parts from a urllib response until ``want(parts by source)``."""
    parts: dict[str, list[dict[str, str]]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not want(parts):
        assert stream.readline() == b"--liveframe\r\n"
        headers: dict[str, str] = {}
        while (line := stream.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = stream.read(int(headers["content-length"]))
        assert stream.read(2) == b"\r\n"
        if headers["content-type"] == "image/jpeg":
            assert body[:2] == b"\xff\xd8", "not a JPEG"
            parts.setdefault(headers["x-source"], []).append(headers)
        else:
            event = json.loads(body)
            parts.setdefault(event["source"], []).append(
                {"event": "1", "masks": str(any("mask" in o for o in event.get("objects", [])))}
            )
    assert want(parts), (
        f"timed out after {timeout} s; parts so far: { {s: len(p) for s, p in parts.items()} }"
    )
    return parts


def test_wall_stream_interleaves_every_sources_pictures_and_events_on_one_response(
    wall_sink: LiveSink,
) -> None:
    def every_source_twice(parts: dict[str, list[dict[str, str]]]) -> bool:
        return all(sum("x-seq" in p for p in parts.get(s, [])) >= 2 for s in WALL) and all(
            any("event" in p for p in parts.get(s, [])) for s in WALL
        )

    with urllib.request.urlopen(wall_sink.url + "wall", timeout=10) as r:
        assert r.headers["Content-Type"] == "multipart/mixed; boundary=liveframe"
        parts = _read_parts(r, every_source_twice, 30)
        assert all(wall_sink.needs_picture(s) for s in WALL)
        for s in WALL:
            seqs = [int(p["x-seq"]) for p in parts[s] if "x-seq" in p]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), (s, seqs)
            assert all(float(p["x-age-ms"]) >= 0 for p in parts[s] if "x-seq" in p)
            assert not any(p.get("masks") == "True" for p in parts[s]), "masks only for a camera page"
    _wait(lambda: not any(wall_sink.needs_picture(s) for s in WALL), 20, "the wall client to be let go")

    # one source with detail (the camera page): only its parts, and its events carry masks
    def masks_seen(parts: dict[str, list[dict[str, str]]]) -> bool:
        return any(p.get("masks") == "True" for p in parts.get("cam03", []))

    with urllib.request.urlopen(wall_sink.url + "wall?sources=cam03,nope&detail=cam03", timeout=10) as r:
        parts = _read_parts(r, masks_seen, 30)
        assert set(parts) == {"cam03"}
        assert wall_sink.needs_picture("cam03") and not wall_sink.needs_picture("cam02")
    assert _get(wall_sink.url + "wall?sources=nope")[0] == 404


def test_tiles_show_the_supervisors_capture_states(browser: Any, tmp_path: Path) -> None:
    """cam00 flows; the supervisor says cam01 is connecting and cam02 failed (the states a
    real run passes on are checked in test_live_sources): each tile says so."""
    ids = ["cam00", "cam01", "cam02"]
    config = Config.model_validate({"sources": [{"id": s, "type": "pattern"} for s in ids]})
    sink = build({"port": 0, "max_fps": 10}, config)
    feeder = _WallFeeder(sink, ["cam00"])
    try:
        sink.source_states({"cam00": "streaming", "cam01": "connecting"})
        browser.get(sink.url)
        sink.source_states({"cam00": "streaming", "cam01": "connecting", "cam02": "failed"})

        def tiles() -> dict[str, str] | None:
            got = browser.execute_script(
                "return Object.fromEntries(Array.from(document.querySelectorAll('section.card'))"
                ".map(c => [c.dataset.source, c.dataset.state]))"
            )
            want = {"cam00": "streaming", "cam01": "reconnecting", "cam02": "failed"}
            return got if got == want else None

        _wait(tiles, 20, "cam00 streaming, cam01 reconnecting, cam02 failed")
        assert {s["id"]: s["state"] for s in json.loads(_get(sink.url + "api/sources")[2])["sources"]} == {
            "cam00": "streaming",
            "cam01": "connecting",
            "cam02": "failed",
        }
        browser.save_screenshot(str(_artifact_dir(tmp_path) / "live-wall-states.png"))
    finally:
        feeder.stop()
        sink.close()
