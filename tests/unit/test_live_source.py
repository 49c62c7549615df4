"""Live sources: the reconnecting engine (with small scripted connections), the in-flight
credit of the capture, url secrets, and real PyAV / OpenCV connections on local data."""

from __future__ import annotations

import functools
import http.server
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from stream.capture import InFlight
from stream.config import SourceConfig, load_config
from stream.errors import ConfigError, SourceError
from stream.redact import Scrubber, mask_url
from stream.sources import open_source
from stream.sources.live import BAD, TICK, Backoff, Decoded, LiveSource, LiveStatus, StreamStalled
from stream.sources.rtsp import check_url

pytestmark = pytest.mark.timeout(60)

SECRET = "s3cr%t:pw"  # characters that get percent-encoded
REPO = Path(__file__).resolve().parents[2]


def frame(value: int, width: int = 64, height: int = 48, media_s: float | None = None) -> Decoded:
    def image(w: int, h: int) -> np.ndarray:
        return np.full((h, w, 3), value, np.uint8)

    return Decoded("frame", width, height, media_s, image)


class Conn:
    """A scripted connection: yields its items (a callable item is called: it may raise or wait)."""

    def __init__(self, items: list[object], fps: float = 25.0, description: str = "fake 64x48") -> None:
        self.items = items
        self.fps = fps
        self.description = description
        self.closed = False

    def frames(self) -> Iterator[Decoded]:
        for item in self.items:
            if callable(item):
                item = item(self)
                if item is None:
                    continue
            assert isinstance(item, Decoded)
            yield item

    def close(self) -> None:
        self.closed = True


def hold(conn: Conn) -> None:
    """Block like an idle stream until its read timeout (0.3 s)."""
    time.sleep(0.3)
    raise StreamStalled("no data for 0.3 s")


def script(*outcomes: object) -> Callable[[float], Conn]:
    """A connector returning (or raising) the outcomes in turn; after them, connections that stall."""
    queue = list(outcomes)

    def connect(stall_s: float) -> Conn:
        outcome = queue.pop(0) if queue else Conn([hold])
        if isinstance(outcome, Exception):
            raise outcome
        assert isinstance(outcome, Conn)
        return outcome

    return connect


def source(connect: Callable[[float], Conn], **kwargs: object) -> LiveSource:
    kwargs.setdefault("backoff", Backoff(0.001, 0.005, rng=random.Random(0)))
    kwargs.setdefault("buffer", 64)  # the consumer gets every frame unless a test says otherwise
    return LiveSource("cam", connect, label="rtsp://u:***@h/cam", **kwargs)  # type: ignore[arg-type]


def live_source(cfg: SourceConfig) -> LiveSource:
    src = open_source(cfg)
    assert isinstance(src, LiveSource)
    return src


def take(src: LiveSource, n: int, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    out = []
    for f in src.frames(should_stop=lambda: time.monotonic() > deadline):
        out.append(f)
        if len(out) == n:
            break
    assert len(out) == n, f"got {len(out)} of {n} frames in {timeout} s"
    return out


def test_after_failed_attempts_the_source_comes_back_with_a_reset_and_a_counted_outage():
    states: list[LiveStatus] = []
    src = source(
        script(
            Conn([frame(i) for i in range(5)]),
            SourceError("connection refused"),
            SourceError("connection refused"),
            Conn([*[frame(9, 32, 24) for _ in range(3)], hold], description="fake 32x24"),
        )
    )
    src.on_status = states.append
    try:
        frames = take(src, 8)
    finally:
        src.close()
    assert [f.image.shape for f in frames] == [(48, 64, 3)] * 5 + [(24, 32, 3)] * 3
    assert not any("reset" in f.extra for f in frames[:5])
    first_back = frames[5]
    assert "reconnected after" in first_back.extra["reset"]
    assert "was fake 64x48, now fake 32x24" in first_back.extra["reset"]
    assert first_back.extra["skipped"]["source outage"] >= 1
    pts = [f.pts for f in frames]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    assert all(isinstance(f.extra["capture_ns"], int) for f in frames)
    seen = [s.state for s in states]
    assert seen[:2] == ["connecting", "streaming"] and "failed" in seen and seen[-1] == "streaming"
    assert states[-1].reconnects == 1
    assert any("connection refused" in s.detail and "attempt 2" in s.detail for s in states)


def test_corrupt_frames_are_counted_before_the_next_clean_frame():
    src = source(script(Conn([frame(1), BAD, TICK, BAD, frame(2), hold])))
    try:
        a, b = take(src, 2)
    finally:
        src.close()
    assert "skipped" not in a.extra
    assert b.extra["skipped"] == {"corrupt": 2} and int(b.image[0, 0, 0]) == 2


def test_a_stream_with_no_clean_frame_within_the_stall_timeout_is_reconnected():
    def slow_bad(conn: Conn) -> Decoded:
        time.sleep(0.01)
        return BAD

    states: list[str] = []
    src = source(script(Conn([frame(1), *[slow_bad] * 100]), Conn([frame(2), hold])), stall_timeout_s=0.1)
    src.on_status = lambda s: states.append(s.state)
    try:
        a, b = take(src, 2)
    finally:
        src.close()
    assert "stalled" in states
    assert "reset" in b.extra and b.extra["skipped"]["corrupt"] >= 5


def test_a_full_edge_buffer_drops_the_oldest_frames():
    filled = threading.Event()

    def done(conn: Conn) -> None:
        filled.set()  # the generator resumed after the last frame: every frame was pushed
        hold(conn)

    src = source(script(Conn([*[frame(i) for i in range(10)], done])), buffer=2)
    try:
        it = src.frames()
        src._start()  # the reader runs ahead of the consumer
        assert filled.wait(10)
        a, b = next(it), next(it)
    finally:
        src.close()
    assert [int(a.image[0, 0, 0]), int(b.image[0, 0, 0])] == [8, 9]
    assert a.extra["skipped"] == {"downstream busy": 8} and "skipped" not in b.extra


def test_after_max_attempts_the_source_gives_up_with_the_last_error():
    src = source(script(*[SourceError("401 Unauthorized")] * 5), max_attempts=3)
    with pytest.raises(SourceError, match="gave up after 3 failed attempts.*401 Unauthorized"):
        take(src, 1)
    assert src.status.state == "failed"
    src.close()


def test_close_interrupts_a_long_backoff_and_frames_returns_on_stop():
    src = source(script(SourceError("down")), backoff=Backoff(30.0, 30.0))
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    t0 = time.monotonic()
    assert list(src.frames(should_stop=stop.is_set)) == []
    src.close()
    assert time.monotonic() - t0 < 3.0
    assert src.status.state == "failed" and "retrying in" in src.status.detail


def test_frames_larger_than_the_slot_are_downscaled_to_fit():
    src = source(script(Conn([frame(5, 128, 72), hold])), max_width=64, max_height=48)
    try:
        (f,) = take(src, 1)
    finally:
        src.close()
    assert f.image.shape == (36, 64, 3)  # 128x72 halved: aspect kept, even sizes
    assert src.open().width == 64 and src.open().height == 48


def test_backoff_is_capped_exponential_with_jitter():
    b = Backoff(0.5, 4.0, jitter=0.5, rng=random.Random(1))
    waits = [b.next() for _ in range(6)]
    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(c * 0.5 <= w <= c for w, c in zip(waits, caps, strict=True))
    assert len({round(w, 6) for w in waits[3:]}) == 3  # jittered, not identical
    b.reset()
    assert b.next() <= 0.5


@pytest.fixture
def ring(tmp_path):
    from stream.transport import FrameRing

    r = FrameRing.create(tmp_path / "x-cam.ring", slots=8, slot_bytes=4 * 4 * 3)
    yield r
    r.unlink()


def test_in_flight_credit_counts_frames_until_released_however_long_they_take(ring):
    now = [0.0]
    credit = InFlight(2, clock=lambda: now[0], last_resort_s=30.0)
    img = np.zeros((4, 4, 3), np.uint8)
    refs = [ring.write(s, img) for s in range(4)]
    credit.sent(0, refs[0], ring)
    credit.sent(1, refs[1], ring)
    assert not credit.has_room(ring)
    ring.release(refs[1])  # dropped by a middle stage: its credit comes back too
    assert credit.has_room(ring)
    credit.sent(2, refs[2], ring)
    now[0] = 20.0  # a stalled stage holds frames 0 and 2: the source waits, it does not send more
    assert not credit.has_room(ring) and credit.expired == 0
    ring.release(refs[0])
    assert credit.has_room(ring)


def test_in_flight_forgets_frames_only_after_a_crash_or_the_last_resort(ring):
    now = [0.0]
    credit = InFlight(2, clock=lambda: now[0], last_resort_s=30.0)
    img = np.zeros((4, 4, 3), np.uint8)
    refs = [ring.write(s, img) for s in range(4)]
    credit.sent(0, refs[0], ring)
    credit.sent(1, refs[1], ring)
    assert not credit.has_room(ring)
    ring.bump_epoch()  # the supervisor saw a process crash: frames it held are never released
    now[0] = 0.5
    assert not credit.has_room(ring)  # frames downstream of the crash get time to come back
    now[0] = 0.5 + credit.timeout_s() + 0.01
    assert credit.has_room(ring) and credit.expired == 2
    credit.sent(2, refs[2], ring)  # sent after the crash: only the last resort forgets it
    credit.sent(3, refs[3], ring)
    now[0] += 29.0
    assert not credit.has_room(ring)
    now[0] += 2.0
    assert credit.has_room(ring) and credit.expired == 4


def test_a_slot_holding_a_frame_in_flight_is_held_until_the_frame_is_done_or_presumed_lost(ring):
    # seqs skip at the edge, so seq % slots can name the slot of a frame still out
    now = [0.0]
    credit = InFlight(2, clock=lambda: now[0], last_resort_s=30.0)
    img = np.zeros((4, 4, 3), np.uint8)
    first = ring.write(1, img)
    credit.sent(1, first, ring)
    assert credit.has_room(ring)
    assert credit.holds(1 % ring.slots, ring) and not credit.holds(2 % ring.slots, ring)
    assert credit.holds((1 + ring.slots) % ring.slots, ring)  # the seq one ring later: same slot
    ring.release(first)  # the last stage is done with it
    assert not credit.holds(1 % ring.slots, ring)
    again = ring.write(1 + ring.slots, img)
    credit.sent(1 + ring.slots, again, ring)
    now[0] = 31.0  # vanished without a crash: the last resort forgets it, and its slot
    assert credit.has_room(ring) and credit.expired == 1
    assert not credit.holds(again.slot, ring)


def test_url_secrets_are_masked_and_scrubbed_in_every_form():
    url = "rtsp://admin:s3cr%25t%3Apw@cam.local:554/Streaming/101"
    assert mask_url(url) == "rtsp://admin:***@cam.local:554/Streaming/101"
    scrub = Scrubber(url)
    text = f"[Errno 5] Input/output error: '{url}' (password s3cr%t:pw, encoded s3cr%25t%3Apw)"
    clean = scrub(text)
    assert "s3cr" not in clean and "rtsp://admin:***@cam.local:554/Streaming/101" in clean
    hls = "https://cdn.example/live.m3u8?channel=2&token=abc123XYZ"
    assert mask_url(hls) == "https://cdn.example/live.m3u8?channel=2&token=***"
    assert "abc123XYZ" not in Scrubber(hls)("Server returned 403 for token abc123XYZ")
    with pytest.raises(SourceError) as err:
        check_url("http://admin:s3cr%25t%3Apw@cam.local/x", "rtsp")
    assert "s3cr" not in str(err.value) and "not a rtsp url" in str(err.value)


def test_the_url_is_a_secret_in_config_but_reaches_the_workers():
    base = {"sources": [{"id": "cam", "type": "rtsp", "url": "rtsp://u:${ENV:CAM_PASSWORD}@h/cam"}]}
    config = load_config(None, base=base, env={"CAM_PASSWORD": SECRET})
    src_cfg = config.sources[0]
    assert SECRET not in repr(config) and SECRET not in str(src_cfg)
    dumped = config.model_dump(mode="json")  # what the supervisor sends workers on stdin
    url = type(config).model_validate(dumped).sources[0].url
    assert url is not None and url.get_secret_value() == f"rtsp://u:{SECRET}@h/cam"
    bad = {"sources": [{"id": "cam", "type": "file", "url": f"rtsp://u:{SECRET}@h/cam"}]}
    with pytest.raises(ConfigError, match="path is required") as err:
        load_config(None, base=bad)
    assert SECRET not in str(err.value)
    with pytest.raises(ConfigError, match="sources.0.url: url is required for a source of type 'rtsp'"):
        load_config(None, base={"sources": [{"id": "cam", "type": "rtsp"}]})
    with pytest.raises(ConfigError, match="device is required for a webcam"):
        load_config(None, base={"sources": [{"id": "cam", "type": "webcam"}]})


def test_the_rtsp_example_config_takes_its_password_from_the_environment():
    config = load_config(REPO / "configs" / "rtsp.yaml", env={"CAM_PASSWORD": SECRET})
    cam = config.sources[0]
    assert cam.type == "rtsp" and cam.url is not None and SECRET in cam.url.get_secret_value()
    assert SECRET not in repr(config)
    with pytest.raises(ConfigError, match="sources.0.url: environment variable CAM_PASSWORD is not set"):
        load_config(REPO / "configs" / "rtsp.yaml", env={})


def test_a_webcam_that_does_not_exist_fails_clearly_at_probe_but_not_at_open(tmp_path):
    cfg = SourceConfig(
        id="usb", type="webcam", device=str(tmp_path / "video9"), reconnect={"initial_s": 0.01, "max_s": 0.02}
    )
    src = open_source(cfg)
    assert isinstance(src, LiveSource)
    info = src.open()  # a run starts; the capture keeps retrying
    assert info.live and (info.width, info.height) == (1920, 1080)
    with pytest.raises(SourceError, match=r"webcam .*video9 does not exist; check the path"):
        src.probe()  # what `stream check` reports
    states: list[LiveStatus] = []
    src.on_status = states.append
    assert list(src.frames(should_stop=lambda: len(states) >= 4)) == []
    src.close()
    assert any(s.state == "failed" and "does not exist" in s.detail for s in states)
    with pytest.raises(SourceError, match="give an index"):
        open_source(SourceConfig(id="usb", type="webcam", device="video0")).open()


def make_ts(path: Path, frames: int = 60, fps: int = 25, gop: int = 10) -> None:
    """MPEG-TS, H.264 without B-frames: frame i is flat grey (4·i) % 256, a keyframe every ``gop``."""
    with av.open(str(path), "w", format="mpegts") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = 160, 120, "yuv420p"
        st.options = {
            "preset": "ultrafast",
            "bf": "0",
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
        }
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.full((120, 160, 3), (i * 4) % 256, np.uint8), format="bgr24")
            f.pts = i
            for p in st.encode(f):
                out.mux(p)
        for p in st.encode():
            out.mux(p)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield tmp_path, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_corrupted_http_stream_counts_bad_frames_and_is_clean_again_from_the_next_keyframe(http_dir):
    directory, port = http_dir
    make_ts(directory / "clean.ts")
    data = bytearray((directory / "clean.ts").read_bytes())
    rng = random.Random(1)
    for _ in range(30):  # flip bytes in the middle third: frames ~20..40 are damaged
        data[rng.randrange(len(data) // 3, len(data) // 2)] ^= 0xFF
    (directory / "bad.ts").write_bytes(bytes(data))
    cfg = SourceConfig(id="tv", type="http", url=f"http://u:{SECRET}@127.0.0.1:{port}/bad.ts", buffer=64)
    src = live_source(cfg)
    states: list[LiveStatus] = []
    src.on_status = states.append
    got: list[tuple[int, float, dict]] = []
    try:
        for f in src.frames(should_stop=lambda: len(got) > 200):
            index = round(f.pts * 25 / 90000)
            got.append((index, float(f.image.mean()), f.extra.get("skipped", {})))
            if "reset" in f.extra:  # the file ended and was opened again: one pass is enough
                got.pop()
                break
    finally:
        src.close()
    assert 20 < len(got) < 60, f"{len(got)} clean frames of 60"
    for index, mean, _ in got:
        assert abs(mean - (index * 4) % 256) < 6, f"frame {index} is not clean (mean {mean:.1f})"
    after_damage = [index for index, _, skipped in got if skipped.get("corrupt")]
    assert after_damage and all(index % 10 == 0 for index in after_damage), after_damage
    assert sum(s.get("corrupt", 0) for _, _, s in got) >= 2
    assert not any(SECRET in s.detail for s in states)


def test_a_video_file_can_stand_in_for_a_webcam(tmp_path):
    make_ts(tmp_path / "cam.ts", frames=10)
    cfg = SourceConfig(
        id="usb",
        type="webcam",
        device=str(tmp_path / "cam.ts"),
        buffer=64,
        webcam={"width": 80, "height": 60},
    )
    src = live_source(cfg)
    try:
        frames = take(src, 5)
    finally:
        src.close()
    assert [f.image.shape for f in frames] == [(60, 80, 3)] * 5  # 160x120 downscaled to the asked size
    assert [round(f.pts * 25 / 90000) for f in frames] == [0, 1, 2, 3, 4]


def test_backoff_retries_fast_in_the_first_seconds_then_backs_off_and_never_overflows():
    now = [0.0]
    b = Backoff(0.25, 2.0, jitter=0.0, fast_s=0.5, fast_for_s=30.0, clock=lambda: now[0])
    waits = []
    while now[0] < 40.0:  # an outage of 40 s; each failed attempt is instant (connection refused)
        waits.append((now[0], b.next()))
        now[0] += waits[-1][1]
    early = [w for t, w in waits if t < 30.0]
    late = [w for t, w in waits if t >= 30.0]
    assert early[:2] == [0.25, 0.5] and max(early) == 0.5  # a server back at 10 s is seen within 0.5 s
    assert late and all(w == 2.0 for w in late)  # a long outage backs off to max_s
    for _ in range(5000):  # weeks of retries: the exponent must not overflow a float
        b.next()
    assert b.next() == 2.0
    b.reset()
    assert b.next() == 0.25


def test_reconnect_config_reaches_the_backoff():
    from stream.config import SourceConfig
    from stream.sources.live import LiveSource

    cfg = SourceConfig.model_validate({"id": "cam", "type": "rtsp", "url": "rtsp://h/x",
                                       "reconnect": {"fast_s": 0.3, "fast_for_s": 12}})
    src = LiveSource.from_config(cfg, lambda stall_s: None, label="cam")  # type: ignore[arg-type,return-value]
    assert (src._backoff.fast_s, src._backoff.fast_for_s) == (0.3, 12)
