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

The sink does not encode: it pushes the packets of the output stage's shared
H.264 encode of the source (``stream.sinks.encode``; the same packets feed the
record sink and the live view). Pushing never blocks the pipeline: packets go
through a bounded queue to one thread per source that sends them; a publication
starts on a keyframe (asked of the encoder on connect). When the server is down or the
connection drops, the frames are dropped (counted, logged once a second), the
error is logged with the masked url, and the connection is retried with
exponential backoff (``retry_initial_s`` doubling up to ``retry_max_s``). A
change of picture size reconnects with the new size.
"""

from __future__ import annotations

import logging
import time
from fractions import Fraction
from typing import Any

import av

from stream.backoff import Backoff
from stream.config import Config, validate_section
from stream.messages import Frame, FrameHeader
from stream.redact import Scrubber
from stream.sections.sinks import EncoderConfig, RestreamConfig, SinksConfig, check_sink_sources, check_url
from stream.sinks import WRITTEN
from stream.sinks.background import QUEUE_FULL, BackgroundWorker
from stream.sinks.encode import EncodedPacket, EncoderPool, EncoderPools
from stream.sinks.h264 import check_image

log = logging.getLogger(__name__)


_DISCONNECT = "disconnect"


class _Pusher:
    """One source's RTSP publication; everything but ``__init__`` and ``in_backoff`` runs on
    its worker thread, which takes the shared encoder's packets through a bounded queue."""

    def __init__(self, sink: RestreamSink, source: str, url: str) -> None:
        self.sink, self.source, self.url = sink, source, url
        self._scrubber = Scrubber(url)
        self.masked = self._scrubber.masked
        self.container: Any = None
        self.stream: Any = None
        self.generation = 0
        self.pts0 = 0
        self.retry = Backoff(sink.config.retry_initial_s, sink.config.retry_max_s, jitter=0.0)
        self.next_attempt = 0.0
        self.failures = 0
        self.frames = 0
        self.connects = 0
        self.worker = BackgroundWorker(
            f"restream {source}", self.handle, maxsize=sink.config.queue_size, on_stop=self.disconnect
        )

    def in_backoff(self) -> bool:
        """Not connected and not yet time to try again (the encoder need not encode for it)."""
        return self.container is None and time.monotonic() < self.next_attempt

    def handle(self, item: EncodedPacket | str) -> None:
        if isinstance(item, str):
            self.disconnect()
            return
        h = item.header
        if self.container is not None and item.info.generation != self.generation:
            log.info(
                "source=%s seq=%d restream: picture size or timing changed; reconnecting", h.source, h.seq
            )
            self.disconnect()
        if self.container is None:
            if time.monotonic() < self.next_attempt:
                self.worker.count_drop(h.source, h.seq, f"not connected to {self.masked}", reason="not connected")
                return
            if not item.keyframe:  # a publication starts on a keyframe: ask for one, drop until then
                self.sink.pool.request_keyframe(self.source)
                self.worker.count_drop(
                    h.source, h.seq, "waiting for a keyframe to start on", reason="waiting for a keyframe"
                )
                return
            if not self.connect(item):
                self.worker.count_drop(h.source, h.seq, f"not connected to {self.masked}", reason="not connected")
                return
        packet = av.Packet(item.data)
        packet.pts = packet.dts = item.pts - self.pts0
        packet.duration = item.duration
        packet.time_base = item.info.time_base
        packet.is_keyframe = item.keyframe
        packet.stream = self.stream
        try:
            self.container.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            self.worker.count_drop(h.source, h.seq, f"lost the connection to {self.masked}", reason="not connected")
            self.fail(f"lost the connection to {self.masked}: {self.scrub(exc)}", h)
            self.disconnect()
            return
        self.frames += 1
        if self.failures:
            log.info("source=%s seq=%d restream: pushing to %s again", h.source, h.seq, self.masked)
            self.failures = 0
            self.retry.reset()

    def connect(self, p: EncodedPacket) -> bool:
        cfg, h, info = self.sink.config, p.header, p.info
        options = {"rtsp_transport": cfg.transport, "timeout": str(int(cfg.io_timeout_s * 1e6))}
        try:
            self.container = av.open(self.url, "w", format="rtsp", options=options)
            self.stream = self.container.add_stream_from_template(info.template)
            self.stream.time_base = info.time_base
            self.container.start_encoding()  # ANNOUNCE (SDP with the SPS/PPS) / SETUP / RECORD happen here
        except (av.FFmpegError, OSError) as exc:
            self.fail(f"cannot push to {self.masked}: {self.scrub(exc)}", h)
            self.disconnect()
            return False
        self.generation, self.pts0 = info.generation, p.pts
        self.connects += 1
        log.info(
            "source=%s seq=%d restream: publishing %dx%d H.264 (%s) to %s",
            h.source,
            h.seq,
            info.width,
            info.height,
            info.codec,
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

    encoders: the output stage's shared pool to take packets from; None: the sink makes
    its own and feeds it from ``write``. codec: encoder name for its own pool; None
    resolves ``config.encoder.codec`` ('auto' probes NVENC). Frames without pixels are skipped."""

    name = "restream"

    def __init__(
        self, config: RestreamConfig, *, codec: str | None = None, encoders: EncoderPool | None = None
    ) -> None:
        check_url(config.url)
        self.config = config
        self.key_interval_s = config.keyframe_s
        self.queue_size = config.queue_size
        self.encoding = EncoderPool.attach(
            self, encoders, annotated=config.annotated, encoder=config.encoder, codec=codec, label="restream"
        )
        self.pool = self.encoding.pool
        self.wants_annotated = config.annotated and self.encoding.own
        self._pushers: dict[str, _Pusher] = {}

    @property
    def codec(self) -> str:
        return self.pool.codec

    def url_for(self, source: str) -> str:
        return self.config.url.replace("{source}", source)

    def _pusher(self, source: str) -> _Pusher | None:
        """The source's pusher (made on first use), or None for a source not pushed."""
        if self.config.sources is not None and source not in self.config.sources:
            return None
        p = self._pushers.get(source)
        if p is None:
            if "{source}" not in self.config.url and self._pushers:
                return None  # one url, one source: the first one seen (build() checks the config)
            p = self._pushers[source] = _Pusher(self, source, self.url_for(source))
        return p

    # -- pipeline thread

    def wants_packets(self, source: str) -> bool:
        p = self._pusher(source)
        return p is not None and not p.in_backoff()

    def needs_picture(self, source: str) -> bool:
        return self.wants_packets(source) and self.pool.needs_picture(source)

    def write(self, frame: Frame) -> None:
        if frame.image is None:
            return
        p = self._pusher(frame.source)
        if p is None:
            return
        if p.in_backoff():  # nothing is encoded for a publication that is waiting to retry
            p.worker.count_drop(frame.source, frame.seq, f"not connected to {p.masked}", reason="not connected")
            return
        if self.encoding.own:
            check_image(frame.image, self.name, frame.source, frame.seq)
        self.encoding.write(frame)

    def reset(self, source: str) -> None:
        """The source restarted: the encoder starts a new stream, and the push reconnects with it."""
        self.encoding.reset(source)

    def end_source(self, source: str) -> None:
        self.encoding.end_source(source)

    def close(self) -> None:
        self.encoding.close()
        for p in self._pushers.values():
            p.worker.close(timeout=self.config.io_timeout_s + 10)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per source: frames pushed, frames dropped, successful connections."""
        return {
            s: {"frames": p.frames, "dropped": p.worker.dropped + self.pool.dropped(s), "connects": p.connects}
            for s, p in self._pushers.items()
        }

    def outcomes(self) -> dict[str, dict[str, int]]:
        """Per source: frames pushed ("written") and dropped, by reason ("queue full" at the
        shared encoder or the push queue, "not connected", "waiting for a keyframe"; see
        ``stream.sinks``)."""
        out: dict[str, dict[str, int]] = {}
        for s, p in list(self._pushers.items()):
            row = {WRITTEN: p.frames, **p.worker.drops}
            for reason, n in self.pool.drops(s).items():
                row[reason] = row.get(reason, 0) + n
            out[s] = row
        return out

    # -- encoder threads (stream.sinks.encode.PacketConsumer)

    def keyframe_due(self, source: str, pts: int, time_base: Fraction) -> bool:
        return False

    def on_packet(self, packet: EncodedPacket) -> None:
        p = self._pushers.get(packet.info.source)
        if p is None:
            return
        if p.worker.would_drop():
            p.worker.count_drop(
                packet.info.source, packet.header.seq, "queue full, the network is behind", reason=QUEUE_FULL
            )
            return
        p.worker.offer(packet, packet.info.source, packet.header.seq)

    def on_stream_end(self, source: str, why: str) -> None:
        p = self._pushers.get(source)
        if p is not None:
            p.worker.put_control(_DISCONNECT, timeout=2.0)  # TEARDOWN after the stream's last packet


def build(
    section: RestreamConfig | dict[str, Any], config: Config, *, encoders: EncoderPools | None = None
) -> RestreamSink:
    """The restream sink from ``sinks.restream``; errors name the key and never show a password.
    encoders: the output stage's pools. The push shares the record sink's encode (same
    picture kind, ``sinks.record.encoder``) unless ``sinks.restream.encoder`` is set."""
    cfg = validate_section(RestreamConfig, section, "sinks.restream")
    check_sink_sources(SinksConfig(restream=cfg), [s.id for s in config.sources])
    if encoders is None:
        return RestreamSink(cfg)
    return RestreamSink(cfg, encoders=encoders.get(annotated=cfg.annotated, encoder=shared_encoder(cfg, config)))


def shared_encoder(cfg: RestreamConfig, config: Config) -> EncoderConfig:
    """The encoder settings the push uses: its own when ``sinks.restream.encoder`` is set,
    else the record sink's (so both share one encode when they show the same picture)."""
    record = config.sinks.record
    if "encoder" in cfg.model_fields_set or record is None or not record.enabled:
        return cfg.encoder
    return record.encoder if record.annotated == cfg.annotated else cfg.encoder
