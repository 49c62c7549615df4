"""Network streams through PyAV (FFmpeg): RTSP (TCP or UDP transport), RTMP, and HTTP(S)
(HLS playlists, MPEG-TS or other streams FFmpeg reads over HTTP).

``network_source`` builds a reconnecting ``LiveSource`` (``stream.sources.live``) whose
connections are ``PyAVConnection``. Opening is bounded by ``open_timeout_s`` and every
read by half the stall timeout (PyAV's interrupt callback; an interrupted read can take
up to twice its timeout, so no read blocks longer than the stall timeout).

RTSP is opened with minimal probing (the SDP states the codec) so that the first frame
comes within about 0.1 s of a reconnect; the decoder uses slice threads only (frame
threads would add one frame of latency per thread).

Decoder errors: FFmpeg conceals damaged macroblocks and returns the frame as if it were
fine, saying so only in its log. Each packet is decoded inside an ``av.logging.Capture``;
a packet that logged a decoder error, failed to decode, or is flagged corrupt makes its
frames, and every frame after it up to the next keyframe, ``bad`` (counted, not shown).
FFmpeg's log lines are otherwise not forwarded to Python logging in the capture process:
they can quote the URL, password included.

Secrets: the url is only ever logged as ``mask_url(url)`` (password → ``***``) and every
FFmpeg error text passes through ``Scrubber`` before it reaches a log line, a heartbeat
or an exception.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import av
import av.logging

from stream.config import SourceConfig
from stream.errors import SourceError
from stream.redact import Scrubber, mask_url
from stream.sources.connection import BAD, TICK, Decoded, StreamStalled
from stream.sources.live import LiveSource

log = logging.getLogger(__name__)

SCHEMES = {"rtsp": ("rtsp", "rtsps"), "rtmp": ("rtmp", "rtmps", "rtmpt"), "http": ("http", "https")}


def check_url(url: str, kind: str) -> None:
    """Raise SourceError (url masked) unless ``url`` is a ``kind`` url with a host."""
    schemes = SCHEMES[kind]
    try:
        parts = urlsplit(url)
        ok = parts.scheme in schemes and bool(parts.hostname)
        _ = parts.port  # a bad port raises ValueError
    except ValueError:
        ok = False
    if not ok:
        raise SourceError(
            f"url {mask_url(url)!r} is not a {kind} url: expected {schemes[0]}://[user:password@]host[:port]/path"
        )


def ffmpeg_options(kind: str, transport: str, open_timeout_s: float, extra: dict[str, str]) -> dict[str, str]:
    """FFmpeg options for opening a ``kind`` stream; ``extra`` (config ``ffmpeg_options``) wins."""
    us = str(int(open_timeout_s * 1_000_000))
    opts: dict[str, str]
    if kind == "rtsp":
        # The SDP states codec and size: no probing, so the first frame comes at once.
        opts = {
            "rtsp_transport": transport,
            "timeout": us,
            "analyzeduration": "0",
            "probesize": "32",
            "fflags": "nobuffer",
        }
    else:
        opts = {"rw_timeout": us}
    return {**opts, **extra}


class PyAVConnection:
    """One open network stream: its first video stream, decoded to BGR on demand."""

    def __init__(
        self, container: Any, stream: Any, scrub: Callable[[str], str], read_timeout_s: float
    ) -> None:
        self._container = container
        self._stream = stream
        self._scrub = scrub
        self._read_timeout_s = read_timeout_s
        cc = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        size = f" {cc.width}x{cc.height}" if cc.width else ""
        self.description = f"{cc.name}{size}" + (f" @ {self.fps:g} fps" if self.fps else "")

    @classmethod
    def open(
        cls,
        url: str,
        kind: str,
        *,
        transport: str = "tcp",
        open_timeout_s: float = 4.0,
        stall_s: float = 2.0,
        options: dict[str, str] | None = None,
        scrub: Callable[[str], str] | None = None,
    ) -> PyAVConnection:
        """Open ``url`` within ``open_timeout_s``; raises SourceError (url masked) on failure."""
        scrub = scrub or Scrubber(url)
        _quiet_ffmpeg()
        opts = ffmpeg_options(kind, transport, open_timeout_s, options or {})
        t0 = time.monotonic()
        try:
            with av.logging.Capture(local=False):  # FFmpeg's own lines may quote the url
                container = av.open(url, options=opts, timeout=(open_timeout_s, stall_s / 2))
        except (av.FFmpegError, OSError) as exc:
            timed_out = time.monotonic() - t0 >= 0.9 * open_timeout_s
            why = _explain(exc, scrub, open_timeout_s, timed_out)
            raise SourceError(f"cannot open {mask_url(url)}: {why}") from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"{mask_url(url)} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        return cls(container, stream, scrub, stall_s / 2)

    def frames(self) -> Iterator[Decoded]:
        recovering = False  # after damage: nothing is clean until the next keyframe
        saw_pts = False
        packets = self._container.demux(self._stream)
        while True:
            with av.logging.Capture(local=False) as logs:
                try:
                    packet = next(packets)
                except StopIteration:
                    return
                except (av.FFmpegError, OSError) as exc:
                    raise self._read_error(exc) from None
                error = False
                try:
                    decoded = packet.decode()
                except (av.FFmpegError, OSError) as exc:
                    decoded, error = [], True
                    log.debug("decode error: %s", self._scrub(str(exc)))
            damaged = (
                error or bool(packet.is_corrupt) or any(level <= av.logging.ERROR for level, _, _ in logs)
            )
            if damaged:
                recovering = True
                if not decoded:
                    yield BAD
                    continue
            if not decoded:
                yield TICK
                continue
            for frame in decoded:
                if frame.pts is not None:
                    saw_pts = True
                elif saw_pts:  # a lost timestamp in a stream that has them: damaged too
                    damaged = recovering = True
                if damaged or (recovering and not frame.key_frame):
                    yield BAD
                    continue
                recovering = False
                yield Decoded("frame", frame.width, frame.height, _media_s(frame), _converter(frame))

    def _read_error(self, exc: BaseException) -> SourceError:
        if isinstance(exc, av.ExitError):
            return StreamStalled(f"no data for {self._read_timeout_s:.1f} s (stalled)")
        return SourceError(f"reading failed: {self._scrub(str(exc))}")

    def close(self) -> None:
        with av.logging.Capture(local=False):
            self._container.close()


def _media_s(frame: Any) -> float | None:
    t = frame.time
    return float(t) if t is not None else None


def _converter(frame: Any) -> Callable[[int, int], Any]:
    def image(width: int, height: int) -> Any:
        if (width, height) == (frame.width, frame.height):
            return frame.to_ndarray(format="bgr24")
        return frame.to_ndarray(format="bgr24", width=width, height=height)

    return image


def _quiet_ffmpeg() -> None:
    """Let decoder errors reach ``av.logging.Capture`` but never a log handler: FFmpeg's
    lines can quote the url with its password. Process-wide; capture processes only."""
    av.logging.set_level(av.logging.ERROR)
    logging.getLogger("libav").setLevel(logging.CRITICAL + 1)


def _explain(exc: BaseException, scrub: Callable[[str], str], open_timeout_s: float, timed_out: bool) -> str:
    if isinstance(exc, av.ExitError) or timed_out:
        return (
            f"no answer within {open_timeout_s:g} s (open_timeout_s): the server accepted nothing or said "
            "nothing; is it the right host, port and protocol?"
        )
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens on that host and port; is the camera or server up?"
    text = scrub(str(exc))
    if "401" in text:
        return "authentication failed (401 Unauthorized): check the user and password in the url"
    if "404" in text:
        return "not found (404): check the path in the url"
    return text.split(": '", 1)[0] if ": '" in text else text  # PyAV appends the url: said already


def network_source(cfg: SourceConfig) -> LiveSource:
    """A reconnecting live source for ``cfg.url`` (cfg.type rtsp, rtmp or http). Nothing is opened yet."""
    if cfg.type not in SCHEMES or cfg.url is None:
        raise SourceError(
            f"source {cfg.id}: not a network source (type {cfg.type!r}, url set: {cfg.url is not None})"
        )
    url, kind = cfg.url.get_secret_value(), cfg.type
    scrub = Scrubber(url)

    def connect(stall_s: float) -> PyAVConnection:
        return PyAVConnection.open(
            url,
            kind,
            transport=cfg.transport,
            open_timeout_s=cfg.open_timeout_s,
            stall_s=stall_s,
            options=dict(cfg.ffmpeg_options),
            scrub=scrub,
        )

    return LiveSource.from_config(
        cfg, connect, label=scrub.masked, check=lambda: check_url(url, kind), scrub=scrub
    )
