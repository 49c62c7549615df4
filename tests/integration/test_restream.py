"""Restream sink: H.264 pushed over RTSP (ANNOUNCE/RECORD) to a real GStreamer RTSP server,
read back with PyAV from what the server received."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import MappingProxyType

import av
import numpy as np
import pytest

from stream.config import Config, load_config
from stream.errors import ConfigError
from stream.messages import Frame, FrameHeader
from stream.redact import mask_url
from stream.sinks.restream import RestreamConfig, RestreamSink, build
from tests.rtsp_server import free_port, rtsp_server  # noqa: F401  (rtsp_server is a fixture)

pytestmark = pytest.mark.timeout(120)

PASSWORD = "s3cr3t-pw"
COLOUR = (40, 200, 90)  # BGR


def frame(seq: int, width: int = 320, height: int = 240, colour: tuple[int, int, int] = COLOUR) -> Frame:
    image = np.empty((height, width, 3), np.uint8)
    image[:] = colour
    return Frame(
        FrameHeader("cam0", seq, seq * 3600, (1, 90000), time.time_ns()), MappingProxyType({}), image
    )


def push(sink: RestreamSink, first: int, count: int) -> float:
    """Write ``count`` frames at 25 fps; returns the longest write() in seconds."""
    worst = 0.0
    start = time.monotonic()
    for i in range(count):
        t0 = time.perf_counter()
        sink.write(frame(first + i))
        worst = max(worst, time.perf_counter() - t0)
        time.sleep(max(0.0, start + (i + 1) * 0.04 - time.monotonic()))
    return worst


def read_back(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as f:
        return [fr.to_ndarray(format="bgr24") for fr in f.decode(video=0)]


def test_push_reaches_the_server_with_the_picture_that_was_sent(rtsp_server, caplog) -> None:  # noqa: F811
    caplog.set_level(logging.INFO)
    server = rtsp_server(user="pub", password=PASSWORD)
    config = load_config(
        None,
        env={"RTSP_PASSWORD": PASSWORD},
        base={
            "sources": [{"id": "cam0", "type": "pattern"}],
            "sinks": {
                "restream": {
                    "url": f"rtsp://pub:${{ENV:RTSP_PASSWORD}}@127.0.0.1:{server.port}/in",
                    "encoder": {"codec": "libx264"},
                }
            },
        },
    )
    sink = build(config.sinks.restream, config)
    assert sink.wants_annotated
    push(sink, 0, 75)  # 3 s
    sink.close()
    stats = sink.stats()["cam0"]
    assert stats["connects"] == 1 and stats["frames"] + stats["dropped"] == 75

    received = server.wait_event("record-finished")
    frames = read_back(Path(received["path"]))
    assert 65 <= len(frames) <= 77 and stats["frames"] >= 65
    assert frames[0].shape == (240, 320, 3)
    mean = frames[len(frames) // 2].reshape(-1, 3).mean(axis=0)
    assert np.abs(mean - COLOUR).max() < 8, f"received colour {mean}, sent {COLOUR}"

    text = caplog.text
    assert f"pub:***@127.0.0.1:{server.port}/in" in text  # the url is logged, masked
    assert PASSWORD not in text


def test_server_down_logs_retries_and_never_blocks_then_recovers(rtsp_server, caplog) -> None:  # noqa: F811
    caplog.set_level(logging.INFO)
    port = free_port()
    url = f"rtsp://pub:{PASSWORD}@127.0.0.1:{port}/in"
    sink = RestreamSink(RestreamConfig(url=url, retry_initial_s=0.2, retry_max_s=0.4), codec="libx264")
    worst = push(sink, 0, 30)  # 1.2 s with nothing listening
    assert worst < 0.1, f"write() took {worst * 1000:.0f} ms while the server was down"
    errors = [r for r in caplog.records if r.name == "stream.sinks.restream" and r.levelno >= logging.WARNING]
    assert errors and errors[0].levelno == logging.ERROR
    assert f"cannot push to rtsp://pub:***@127.0.0.1:{port}/in" in errors[0].getMessage()
    assert len(errors) >= 2, "the sink retries"
    assert sink.stats()["cam0"]["frames"] == 0

    server = rtsp_server(port=port, user="pub", password=PASSWORD)  # the server comes up
    worst = push(sink, 30, 50)
    sink.close()
    assert worst < 0.1
    stats = sink.stats()["cam0"]
    assert stats["connects"] == 1 and stats["frames"] >= 30
    frames = read_back(Path(server.wait_event("record-finished")["path"]))
    assert len(frames) >= 30
    assert PASSWORD not in caplog.text


def test_masked_urls_and_config_errors() -> None:
    assert mask_url("rtsp://user:pw@host:8554/a/b") == "rtsp://user:***@host:8554/a/b"
    assert mask_url("rtsp://host/x") == "rtsp://host/x"
    two = Config.model_validate({"sources": [{"id": "a", "type": "pattern"}, {"id": "b", "type": "pattern"}]})
    with pytest.raises(ConfigError, match=r"sinks\.restream\.url: .*no \{source\}") as err:
        build({"url": f"rtsp://u:{PASSWORD}@h/live"}, two)
    assert PASSWORD not in str(err.value)
    with pytest.raises(
        ConfigError, match=r"sinks\.restream\.url: 'http://u:\*\*\*@h/x' is not an RTSP url"
    ) as err:
        build({"url": f"http://u:{PASSWORD}@h/x"}, two)
    assert PASSWORD not in str(err.value)
    sink = build({"url": "rtsp://h/{source}", "annotated": False, "encoder": {"codec": "libx264"}}, two)
    assert sink.url_for("b") == "rtsp://h/b" and not sink.wants_annotated
    sink.close()


def test_fixture_serves_a_play_mount_and_enforces_auth(rtsp_server) -> None:  # noqa: F811
    """The test server other tests rely on: a PLAY mount (live H.264 test pattern) behind basic auth."""
    server = rtsp_server(record=(), play=["/test"], play_size=(176, 144), user="viewer", password=PASSWORD)
    with av.open(server.url("/test"), options={"rtsp_transport": "tcp", "timeout": "5000000"}) as f:
        frames = [fr for _, fr in zip(range(5), f.decode(video=0), strict=False)]
    assert len(frames) == 5 and (frames[0].width, frames[0].height) == (176, 144)
    with pytest.raises(av.FFmpegError):
        av.open(
            server.url("/test", credentials=False), options={"rtsp_transport": "tcp", "timeout": "5000000"}
        )


def test_tokens_and_percent_encoded_passwords_never_leave_the_sink(caplog) -> None:
    """The re-stream sink scrubs like the sources do (one stream.redact): query-string tokens and
    percent-encoded passwords, in its log lines and its config errors."""
    caplog.set_level(logging.DEBUG)
    token, raw_password = "SECRETTOKEN1234", "p@ss/w0rd"
    encoded = "p%40ss%2Fw0rd"
    port = free_port()
    url = f"rtsp://pub:{encoded}@127.0.0.1:{port}/in?token={token}&sig=abcdef987654"
    sink = RestreamSink(RestreamConfig(url=url, retry_initial_s=0.2, retry_max_s=0.4), codec="libx264")
    push(sink, 0, 10)  # nothing listens: errors are logged
    sink.close()
    text = caplog.text
    assert "cannot push to rtsp://pub:***@127.0.0.1" in text
    for secret in (token, "abcdef987654", encoded, raw_password):
        assert secret not in text, secret
    two = Config.model_validate({"sources": [{"id": "a", "type": "pattern"}, {"id": "b", "type": "pattern"}]})
    with pytest.raises(ConfigError) as err:
        build({"url": f"http://pub:{encoded}@h/x?token={token}"}, two)
    for secret in (token, encoded, raw_password):
        assert secret not in str(err.value), secret
