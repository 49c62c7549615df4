"""Re-stream sink: the annotated (or raw) video pushed over RTSP to a server.

The stream is published the way MediaMTX, GStreamer's RTSP server or Wowza
expect a publisher to: RTSP ANNOUNCE (SDP) / SETUP / RECORD, RTP over the RTSP
TCP connection by default (FFmpeg's ``rtsp`` muxer through PyAV). Config
(``sinks.restream``)::

    restream:
      url: rtsp://${ENV:RTSP_USER}:${ENV:RTSP_PASSWORD}@media:8554/{source}
      annotated: true
      transport: tcp           # or udp
      keyframe_s: 1.0          # a player joining waits at most this long for a picture
      encoder: {codec: auto, bitrate_kbps: 4000}

``{source}`` in the url is replaced by the source id; without it only one source
may be pushed (``sources``). Credentials in the url are never logged: every log
line shows the url as ``rtsp://user:***@host/…`` (``stream.redact``; token-like query values
are masked too).

Pushing never blocks the pipeline: frames go through a bounded queue to one
thread per source that encodes and sends. When the server is down or the
connection drops, the frames are dropped (counted, logged once a second), the
error is logged with the masked url, and the connection is retried with
exponential backoff (``retry_initial_s`` doubling up to ``retry_max_s``). A
change of picture size reconnects with the new size.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from stream.backoff import Backoff
from stream.config import Config, validate_section
from stream.messages import Frame, FrameHeader
from stream.redact import Scrubber
from stream.sections.sinks import RestreamConfig, SinksConfig, check_sink_sources, check_url
from stream.sinks import WRITTEN
from stream.sinks.background import QUEUE_FULL, BackgroundWorker
from stream.sinks.h264 import (
    add_h264_stream,
    check_image,
    even_size,
    resolve_codec,
    video_frame,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Item:
    header: FrameHeader
    image: np.ndarray  # a private copy


_DISCONNECT = "disconnect"


class _Pusher:
    """One source's RTSP publication; everything but ``__init__`` runs on its worker thread."""

    def __init__(self, sink: RestreamSink, source: str, url: str) -> None:
        self.sink, self.source, self.url = sink, source, url
        self._scrubber = Scrubber(url)
        self.masked = self._scrubber.masked
        self.container: Any = None
        self.stream: Any = None
        self.size = (0, 0)
        self.pts0 = 0
        self.last_pts: int | None = None
        self.last_key: int | None = None
        self.time_base = Fraction(1, 90000)
        self.retry = Backoff(sink.config.retry_initial_s, sink.config.retry_max_s, jitter=0.0)
        self.next_attempt = 0.0
        self.failures = 0
        self.frames = 0
        self.connects = 0
        self.worker = BackgroundWorker(
            f"restream {source}", self.handle, maxsize=sink.config.queue_size, on_stop=self.disconnect
        )

    def handle(self, item: _Item | str) -> None:
        if isinstance(item, str):
            self.disconnect()
            return
        h = item.header
        size = even_size(item.image.shape[1], item.image.shape[0])
        tb = Fraction(*h.time_base)
        if self.container is not None and (
            size != self.size or tb != self.time_base or (self.last_pts is not None and h.pts < self.last_pts)
        ):
            log.info(
                "source=%s seq=%d restream: picture size or timing changed; reconnecting", h.source, h.seq
            )
            self.disconnect()
        if self.container is None:
            if time.monotonic() < self.next_attempt:
                self.worker.count_drop(h.source, h.seq, f"not connected to {self.masked}", reason="not connected")
                return
            if not self.connect(h, size, tb):
                self.worker.count_drop(h.source, h.seq, f"not connected to {self.masked}", reason="not connected")
                return
        if self.last_pts is not None and h.pts == self.last_pts:
            self.worker.count_drop(h.source, h.seq, "its pts repeats the previous frame's", reason="repeated pts")
            return
        rel = h.pts - self.pts0
        key = self.last_key is None or (rel - self.last_key) * tb >= self.sink.config.keyframe_s
        if key:
            self.last_key = rel
        try:
            for packet in self.stream.encode(video_frame(item.image, rel, tb, keyframe=key)):
                self.container.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            self.worker.count_drop(h.source, h.seq, f"lost the connection to {self.masked}", reason="not connected")
            self.fail(f"lost the connection to {self.masked}: {self.scrub(exc)}", h)
            self.disconnect()
            return
        self.last_pts = h.pts
        self.frames += 1
        if self.failures:
            log.info("source=%s seq=%d restream: pushing to %s again", h.source, h.seq, self.masked)
            self.failures = 0
            self.retry.reset()

    def connect(self, h: FrameHeader, size: tuple[int, int], tb: Fraction) -> bool:
        cfg = self.sink.config
        options = {"rtsp_transport": cfg.transport, "timeout": str(int(cfg.io_timeout_s * 1e6))}
        try:
            self.container = av.open(self.url, "w", format="rtsp", options=options)
            self.stream = add_h264_stream(self.container, self.sink.codec, size[0], size[1], tb, cfg.encoder)
            self.container.start_encoding()  # ANNOUNCE / SETUP / RECORD happen here
        except (av.FFmpegError, OSError) as exc:
            self.fail(f"cannot push to {self.masked}: {self.scrub(exc)}", h)
            self.disconnect()
            return False
        self.size, self.time_base, self.pts0 = size, tb, h.pts
        self.last_pts, self.last_key = None, None
        self.connects += 1
        log.info(
            "source=%s seq=%d restream: publishing %dx%d H.264 (%s) to %s",
            h.source,
            h.seq,
            size[0],
            size[1],
            self.sink.codec,
            self.masked,
        )
        return True

    def fail(self, what: str, h: FrameHeader) -> None:
        self.failures += 1
        delay = self.retry.next()
        log.log(
            logging.ERROR if self.failures == 1 else logging.WARNING,
            "source=%s seq=%d restream: %s; retrying in %.1f s, frames are dropped meanwhile%s",
            h.source,
            h.seq,
            what,
            delay,
            f" (attempt {self.failures})" if self.failures > 1 else "",
        )
        self.next_attempt = time.monotonic() + delay

    def scrub(self, exc: BaseException) -> str:
        """The error text without the url's credentials (FFmpeg errors quote the url)."""
        return self._scrubber(str(exc))

    def disconnect(self) -> None:
        container, self.container, self.stream = self.container, None, None
        if container is None:
            return
        try:
            container.close()  # TEARDOWN
        except (av.FFmpegError, OSError) as exc:
            log.debug("source=%s restream: closing %s: %s", self.source, self.masked, self.scrub(exc))


class RestreamSink:
    """Publishes each selected source to ``config.url`` (``{source}`` filled in) over RTSP.

    codec: encoder name; None resolves ``config.encoder.codec`` ('auto' probes NVENC).
    Frames without pixels are skipped."""

    name = "restream"

    def __init__(self, config: RestreamConfig, *, codec: str | None = None) -> None:
        check_url(config.url)
        self.config = config
        self.wants_annotated = config.annotated
        self.codec = codec or resolve_codec(config.encoder.codec, "restream")
        self._pushers: dict[str, _Pusher] = {}

    def url_for(self, source: str) -> str:
        return self.config.url.replace("{source}", source)

    def write(self, frame: Frame) -> None:
        if frame.image is None or (
            self.config.sources is not None and frame.source not in self.config.sources
        ):
            return
        check_image(frame.image, self.name, frame.source, frame.seq)
        p = self._pushers.get(frame.source)
        if p is None:
            if "{source}" not in self.config.url and self._pushers:
                return  # one url, one source: the first one seen (build() checks the config)
            p = self._pushers[frame.source] = _Pusher(self, frame.source, self.url_for(frame.source))
        if p.worker.would_drop():
            p.worker.count_drop(frame.source, frame.seq, "queue full, the encoder or the network is behind",
                               reason=QUEUE_FULL)
            return
        p.worker.offer(_Item(frame.header, np.array(frame.image, copy=True)), frame.source, frame.seq)

    def reset(self, source: str) -> None:
        """The source restarted: reconnect with its new geometry on the next frame."""
        if source in self._pushers:
            self._pushers[source].worker.put_control(_DISCONNECT)

    def end_source(self, source: str) -> None:
        if source in self._pushers:
            self._pushers[source].worker.put_control(_DISCONNECT)

    def close(self) -> None:
        for p in self._pushers.values():
            p.worker.close(timeout=self.config.io_timeout_s + 10)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per source: frames pushed, frames dropped, successful connections."""
        return {
            s: {"frames": p.frames, "dropped": p.worker.dropped, "connects": p.connects}
            for s, p in self._pushers.items()
        }

    def outcomes(self) -> dict[str, dict[str, int]]:
        """Per source: frames pushed ("written") and dropped, by reason (see ``stream.sinks``)."""
        return {s: {WRITTEN: p.frames, **p.worker.drops} for s, p in list(self._pushers.items())}


def build(section: RestreamConfig | dict[str, Any], config: Config) -> RestreamSink:
    """The restream sink from ``sinks.restream``; errors name the key and never show a password."""
    cfg = validate_section(RestreamConfig, section, "sinks.restream")
    check_sink_sources(SinksConfig(restream=cfg), [s.id for s in config.sources])
    return RestreamSink(cfg)
