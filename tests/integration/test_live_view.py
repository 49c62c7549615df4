"""The live view in a real headless Chromium (Debian's chromium + chromium-driver via
selenium), fed by the real output stage with moving synthetic frames and objects.

Install the browser with ``scripts/browser-deps.sh``. The browser tests skip only
when chromium or chromedriver is not installed.
"""

from __future__ import annotations

import logging
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np
import pytest

from stream.config import Config, load_config
from stream.errors import ConfigError, TransportError
from stream.live.hub import LiveHub
from stream.messages import Frame, FrameHeader
from stream.objects import ObjectMasks
from stream.sinks.live import LiveSink, build
from stream.stages.output import OutputStage

W, H = 320, 240
TOKEN = "live-test-token-0123456789abcdef"
# source -> (track id, class id, score); cam-a runs with random weights, cam_b does not
SCENE = {"cam-a": [(7, 0, 0.91), (42, 2, 0.78)], "cam_b": [(3, 16, 0.66)]}


def _config() -> Config:
    return Config.model_validate({"sources": [{"id": s, "type": "pattern"} for s in SCENE]})


def _frame(source: str, seq: int) -> Frame:
    """A 320×240 gradient with one bright square per object moving right 4 px a frame;
    boxes (N,4) float32 XYXY pixels; mask age counts 0..9 (keyframe every 10 frames)."""
    image = np.empty((H, W, 3), np.uint8)
    image[..., 0] = np.linspace(40, 200, W, dtype=np.uint8)[None, :]
    image[..., 1] = np.linspace(30, 120, H, dtype=np.uint8)[:, None]
    image[..., 2] = 60
    boxes, crops = [], []
    for i, _ in enumerate(SCENE[source]):
        x = (seq * 4 + i * 120) % (W - 60)
        y = 40 + i * 90
        image[y : y + 50, x : x + 50] = (0, 220, 255) if i == 0 else (255, 120, 0)
        boxes.append((x, y, x + 50, y + 50))
        crops.append(np.ones((50, 50), bool))
    n = len(boxes)
    age = seq % 10
    masks = ObjectMasks.pack(
        crops,
        np.array(boxes, np.int32),
        np.full(n, 0 if age == 0 else 1, np.uint8),
        np.full(n, age, np.int32),
    )
    header = FrameHeader(
        source, seq, seq * 3000, (1, 90000), time.time_ns(), random_weights=source == "cam-a"
    )
    arrays: dict[str, np.ndarray] = {
        "boxes": np.array(boxes, np.float32),
        "scores": np.array([o[2] for o in SCENE[source]], np.float32),
        "class_ids": np.array([o[1] for o in SCENE[source]], np.int32),
        "track_ids": np.array([o[0] for o in SCENE[source]], np.int64),
        **masks.to_arrays(),
    }
    return Frame(header, MappingProxyType(arrays), image)


def _annotate(frame: Frame) -> np.ndarray:
    """Stand-in annotator: box outlines and track ids on a copy of the picture."""
    assert frame.image is not None
    out = frame.image.copy()
    for box, tid in zip(frame.arrays["boxes"], frame.arrays["track_ids"], strict=True):
        x1, y1, x2, y2 = (int(v) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (255, 255, 255), 2)
        cv2.putText(out, f"#{tid}", (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return out


class _Feeder:
    """Writes frames of every source through a real OutputStage at ~fps until stopped."""

    def __init__(self, sink: LiveSink, fps: float = 30.0) -> None:
        self.stage = OutputStage([sink], annotator=_annotate)
        self.fps = fps
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        while not self._stop.wait(1.0 / self.fps):
            for source in SCENE:
                self.stage.write(_frame(source, seq))
            seq += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def live() -> Iterator[Callable[..., LiveSink]]:
    """Factory: a started LiveSink on a free loopback port, fed by a _Feeder."""
    made: list[tuple[LiveSink, _Feeder | None]] = []

    def make(feed: bool = True, **section: Any) -> LiveSink:
        sink = build({"port": 0, **section}, _config())
        made.append((sink, _Feeder(sink) if feed else None))
        return sink

    yield make
    for sink, feeder in made:
        if feeder is not None:
            feeder.stop()
        sink.close()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read(2048)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _wait(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ---- the page in a real browser -----------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("Debian's chromium and chromium-driver are not installed: run scripts/browser-deps.sh")
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed in this environment"
    )
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        opts.add_argument(arg)
    opts.page_load_strategy = "eager"  # the MJPEG <img> never finishes loading
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def _card(driver: Any, source: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'section.card[data-source="{source}"]')


def _image_loaded(driver: Any, source: str) -> int:
    return int(
        driver.execute_script(
            "const i = document.querySelector(arguments[0]); return i && i.complete ? i.naturalWidth : 0;",
            f'section.card[data-source="{source}"] img.picture',
        )
    )


def _track_rows(driver: Any, source: str) -> dict[str, list[str]]:
    """track id -> the row's cell texts, read in one script call (rows are replaced on every update)."""
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map("
        "r => [r.dataset.trackId, Array.from(r.cells).map(c => c.textContent)]);",
        f'section.card[data-source="{source}"] tbody tr',
    )
    return {tid: cells for tid, cells in rows}


def _text(driver: Any, source: str, selector: str) -> str:
    return str(
        driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            f'section.card[data-source="{source}"] {selector}',
        )
    )


def _png(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a PNG"
    return image.astype(np.int16)


def test_page_shows_moving_pictures_and_live_objects(
    browser: Any, live: Callable[..., LiveSink], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    sink = live()
    browser.get(sink.url + "?transport=mjpeg")  # the MJPEG fallback; H.264: test_live_h264
    _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, "section.card")) == 2, 10, "a card per source")
    assert _wait(lambda: _image_loaded(browser, "cam-a"), 10, "cam-a's picture") == W
    assert _wait(lambda: _image_loaded(browser, "cam_b"), 10, "cam_b's picture") == W

    # the picture changes over time (the squares move 4 px a frame)
    img = _card(browser, "cam-a").find_element(By.CSS_SELECTOR, "img.picture")
    first = _png(img.screenshot_as_png)
    assert first.shape[0] > 100 and first.shape[1] > 100
    _wait(lambda: np.abs(_png(img.screenshot_as_png) - first).mean() > 1.0, 5, "the picture to change")

    # the camera page's object list shows the source's tracks with class and score, and keeps updating
    browser.get(sink.url + "?transport=mjpeg#cam=cam-a")
    _wait(lambda: set(_track_rows(browser, "cam-a")) == {"7", "42"}, 10, "tracks 7 and 42 in cam-a's table")
    rows = _track_rows(browser, "cam-a")
    assert rows["7"][1:3] == ["person", "0.91"] and rows["42"][1:3] == ["car", "0.78"]
    browser.get(sink.url + "?transport=mjpeg#cam=cam_b")
    _wait(lambda: set(_track_rows(browser, "cam_b")) == {"3"}, 10, "track 3 in cam_b's table")
    browser.get(sink.url + "?transport=mjpeg#cam=cam-a")
    ages: set[str] = set()

    def seen_ages() -> int:
        ages.add(_track_rows(browser, "cam-a").get("7", ["", "", "", ""])[3])
        return len(ages)

    _wait(lambda: seen_ages() >= 3, 10, "the mask age of track 7 to update")
    seq_text = _text(browser, "cam-a", ".seq")
    _wait(lambda: _text(browser, "cam-a", ".seq") != seq_text, 5, "the seq in the status line to advance")

    # the status line: RANDOM WEIGHTS only where the frames say so, and a measured fps
    browser.get(sink.url + "?transport=mjpeg")
    _wait(lambda: _image_loaded(browser, "cam_b"), 10, "the wall again")
    _wait(
        lambda: _card(browser, "cam-a").find_element(By.CSS_SELECTOR, ".badge.random").is_displayed(),
        10,
        "cam-a's RANDOM WEIGHTS badge",
    )
    assert _card(browser, "cam-a").find_element(By.CSS_SELECTOR, ".badge.random").is_displayed()
    assert not _card(browser, "cam_b").find_element(By.CSS_SELECTOR, ".badge.random").is_displayed()
    _wait(
        lambda: _text(browser, "cam-a", ".fps").split()[0].replace("–", "0") not in ("0", "0.0"),
        5,
        "a measured fps",
    )

    shot = tmp_path / "live-view.png"
    browser.save_screenshot(str(shot))
    assert _png(shot.read_bytes()).shape[:2] == (900, 1400) or shot.stat().st_size > 10_000


def test_token_is_required_when_set_and_passed_on_by_the_page(
    browser: Any, live: Callable[..., LiveSink], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="stream")
    sink = live(token=TOKEN)
    base = sink.url
    for path in (
        "",
        "api/sources",
        "events",
        "stream/cam-a.mjpg",
        "wall",
        "live",
        "api/recordings",
        f"api/sources?token={TOKEN[:-1]}x",
    ):
        status, headers, _ = _get(base + path)
        assert status == 401, path
        assert headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert _get(base + "api/sources", {"Authorization": "Bearer wrong"})[0] == 401
    status, _, body = _get(base + "api/sources", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and b'"cam-a"' in body
    assert _get(base + "healthz")[0] == 200  # probes need no token

    # the page opened with ?token= passes it on to its picture and event requests
    browser.get(f"{base}?token={TOKEN}&transport=mjpeg")
    assert _wait(lambda: _image_loaded(browser, "cam-a"), 10, "the picture with a token") == W
    browser.get(f"{base}?token={TOKEN}&transport=mjpeg#cam=cam-a")
    _wait(lambda: "7" in _track_rows(browser, "cam-a"), 10, "the object list with a token")
    assert not any(TOKEN in r.getMessage() for r in caplog.records if r.name.startswith("stream"))


# ---- refusals and errors a user sees -------------------------------------------------


def test_non_loopback_host_needs_a_token_and_token_never_shows_in_errors() -> None:
    with pytest.raises(ConfigError, match=r"sinks\.live\.token"):
        build({"host": "0.0.0.0", "port": 0}, _config())
    with pytest.raises(ConfigError, match=r"sinks\.live\.token") as info:
        build({"port": 0, "token": 98765432123}, _config())
    assert "98765432123" not in str(info.value)
    with pytest.raises(ConfigError, match=r"sinks\.live\.max_fps"):
        build({"port": 0, "max_fps": 0}, _config())


def test_token_from_the_environment_guards_every_data_endpoint() -> None:
    config = load_config(
        None,
        base={
            "sources": [{"id": "cam-a", "type": "pattern"}],
            "sinks": {"live": {"port": 0, "token": "${ENV:LIVE_TOKEN}"}},
        },
        env={"LIVE_TOKEN": TOKEN},
    )
    sink = build(config.sinks.live, config)
    try:
        assert TOKEN not in repr(sink.params)
        assert _get(sink.url + "api/sources")[0] == 401
        assert _get(sink.url + f"api/sources?token={TOKEN}")[0] == 200
    finally:
        sink.close()


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(
            TransportError, match=rf"sinks\.live\.port: 127\.0\.0\.1:{port} is already in use"
        ):
            build({"port": port}, _config())


def test_unknown_sources_and_foreign_hosts_are_refused(live: Callable[..., LiveSink]) -> None:
    base = live(feed=False).url
    assert _get(base + "stream/nope.mjpg")[0] == 404
    assert _get(base + "stream/..%2F..%2Fetc%2Fpasswd.mjpg")[0] == 404
    assert _get(base + "stream/cam-a.jpg")[0] == 404
    # without a token, a page served from another name (DNS rebinding) cannot read the view
    assert _get(base + "api/sources", {"Host": "attacker.example:80"})[0] == 403
    assert _get(base + "api/sources", {"Host": "localhost"})[0] == 200


def test_encodes_only_for_watchers_at_most_max_fps_and_write_never_waits(
    live: Callable[..., LiveSink],
) -> None:
    sink = live(feed=False, max_fps=10)
    hub: LiveHub = sink.hub

    def feed(seconds: float) -> float:
        """Write cam-a frames at ~60 fps; returns the slowest write() in ms."""
        slowest, seq, end = 0.0, 0, time.monotonic() + seconds
        while time.monotonic() < end:
            frame = _frame("cam-a", seq)
            t0 = time.perf_counter()
            sink.write(frame)
            slowest = max(slowest, time.perf_counter() - t0)
            seq += 1
            time.sleep(1 / 60)
        return slowest * 1e3

    feed(0.5)
    assert hub.encoded == 0, "no client watches: nothing should be encoded"

    # a client that opens the stream and never reads
    client = socket.create_connection(("127.0.0.1", sink.port))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.sendall(b"GET /stream/cam-a.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    try:
        _wait(lambda: hub.viewers("cam-a") == 1, 5, "the server to count the viewer")
        slowest_ms = feed(2.0)
        encoded = hub.encoded
        assert 5 <= encoded <= 2 * 10 + 2, f"{encoded} JPEGs in 2 s at max_fps 10"
        assert slowest_ms < 100, f"write() took {slowest_ms:.1f} ms with a stalled client"
    finally:
        client.close()
    _wait(lambda: hub.viewers("cam-a") == 0, 15, "the server to notice the client left")
