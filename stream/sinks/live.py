"""Live view sink: ``http://HOST:PORT/`` is a camera wall of every source's annotated
picture over one connection per viewer, with each tile's state, fps and frame age;
``/#cam=<id>`` is one camera with its object list (click an object to highlight its
box and mask); ``/#recordings`` plays the record sink's segments (``sinks.record.root``)
with boxes and masks drawn from their JSONL sidecars. See ``stream.live.server``
for the endpoints.

Config (``sinks.live``)::

    sinks:
      live:
        host: 127.0.0.1        # loopback by default; anything else needs a token
        port: 8080             # 0 = any free port (the URL is logged)
        token: ${ENV:LIVE_TOKEN}   # Authorization: Bearer … or ?token=… ; never logged
        max_fps: 15            # MJPEG pictures and object updates per second per source, at most
        jpeg_quality: 80

Video reaches a browser as H.264 where it plays it (MSE with ``avc1``): the output
stage's one encode per source (``stream.sinks.encode``, shared with record and
re-stream) as fragmented MP4 over one WebSocket per viewer, every encoded frame
(``max_fps`` does not apply; the object events keep it). Otherwise, or with
``?transport=mjpeg``, as JPEGs at most ``max_fps`` a second (``stream.live.server``).

``write`` runs on the output stage's hot path and never waits for a client: it
copies a picture only when someone watches that source and the source is due
(``max_fps``); encoding and serving happen on background threads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream.config import Config, validate_section
from stream.errors import ConfigError
from stream.httpd import is_loopback
from stream.live.hub import LiveHub
from stream.live.server import LiveServer
from stream.messages import Frame, RosterEntry
from stream.objects import COCO_CLASSES, class_names_of
from stream.sections.sinks import EncoderConfig, LiveConfig
from stream.sinks.encode import EncoderPool, EncoderPools

log = logging.getLogger(__name__)

_MIN_TOKEN_CHARS = 16


class LiveSink:
    """Feeds the live view. Binds and starts serving on construction.

    sources: the configured source ids (requests for any other id get 404).
    recordings: the recording root to serve read-only (None: no recordings).
    class_names: names indexed by class id, as every other output names them.
    encoders: the output stage's shared H.264 pool whose packets the H.264 viewers get
    (the stage gives it the pictures); None: the sink makes its own and feeds it.
    Raises ConfigError when the host is not loopback and no token is set, and
    TransportError (naming sinks.live.port) when the port cannot be bound.
    """

    name = "live"
    wants_annotated = True  # gets frames whose .image is the annotated picture

    def __init__(
        self,
        params: LiveConfig,
        sources: list[str],
        class_names: Sequence[str] = COCO_CLASSES,
        *,
        recordings: Path | None = None,
        encoders: EncoderPool | None = None,
    ) -> None:
        token = params.token.get_secret_value() if params.token is not None else ""
        if not token.strip():
            if not is_loopback(params.host):
                raise ConfigError(
                    f"config error: sinks.live.token: required when sinks.live.host is {params.host!r} "
                    f"(not loopback); set sinks.live.token: ${{ENV:LIVE_TOKEN}} and export LIVE_TOKEN, "
                    f"or bind sinks.live.host: 127.0.0.1"
                )
            token = ""
        elif token != token.strip() or any(not c.isprintable() or not c.isascii() for c in token):
            raise ConfigError(
                "config error: sinks.live.token: must be printable ASCII without surrounding "
                "spaces (it travels in an HTTP header and a URL)"
            )
        elif len(token) < _MIN_TOKEN_CHARS:
            log.warning(
                "sinks.live.token is shorter than %d characters; use a long random one, "
                "e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(24))'`",
                _MIN_TOKEN_CHARS,
            )
        self.params = params
        self.hub = LiveHub(
            sources, max_fps=params.max_fps, jpeg_quality=params.jpeg_quality, class_names=class_names
        )
        self.encoding = EncoderPool.attach(self.hub.video, encoders, annotated=True, encoder=EncoderConfig())
        self.pool = self.encoding.pool
        self.hub.video.request_keyframe = self.pool.request_keyframe
        try:
            self.server = LiveServer(self.hub, params.host, params.port, token or None, recordings)
        except BaseException:
            self.hub.close()
            raise
        log.info(
            "live view at %s%s",
            self.server.url,
            " (token required: Authorization: Bearer … or ?token=…)" if token else "",
        )

    @property
    def url(self) -> str:
        """The page's URL, without the token."""
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def needs_picture(self, source: str) -> bool:
        """The annotated picture is drawn only while someone watches ``source`` (MJPEG, or
        H.264 through the sink's own pool); without viewers the sink still gets every frame
        (for the object list), unannotated."""
        return self.hub.watched(source) or (self.encoding.own and self.pool.needs_picture(source))

    def h264_watched(self, source: str) -> bool:
        """True while a viewer watches ``source`` over H.264 (the encoder runs for it)."""
        return self.hub.video.viewers(source) > 0

    def write(self, frame: Frame) -> None:
        self.hub.offer(frame)
        if self.encoding.own and self.pool.needs_picture(frame.source):
            self.pool.write(frame)

    def reset(self, source: str) -> None:
        self.encoding.reset(source)

    def end_source(self, source: str) -> None:
        self.hub.end_source(source)
        self.encoding.end_source(source)

    def set_sources(self, roster: Sequence[RosterEntry]) -> None:
        """Sources added or removed at runtime: the wall shows the run's sources now."""
        self.hub.set_sources([e.source for e in roster])

    def source_states(self, states: dict[str, str]) -> None:
        """The supervisor's capture states; each tile shows its source's."""
        self.hub.set_source_states(states)

    def close(self) -> None:
        self.encoding.close()
        self.hub.close()
        self.server.close()


def recording_root(config: Config) -> Path | None:
    """``sinks.record.root`` (resolved) when the record sink is on, else None."""
    record = config.sinks.record
    if record is None or not record.enabled:
        return None
    return Path(record.root or "recordings").expanduser().resolve()


def build(
    section: LiveConfig | dict[str, Any], config: Config, *, encoders: EncoderPools | None = None
) -> LiveSink:
    """The live sink from ``sinks.live``, serving the config's source ids and, when the
    record sink is on, its recordings (``sinks.record.root``) read-only. encoders: the
    output stage's pools; H.264 viewers share the annotated encode of the record sink
    (``sinks.record.encoder``), else of the re-stream, else one with default settings."""
    params = validate_section(LiveConfig, section, "sinks.live")
    pool = encoders.get(annotated=True, encoder=live_encoder(config)) if encoders is not None else None
    return LiveSink(
        params,
        [s.id for s in config.sources],
        class_names_of(config),
        recordings=recording_root(config),
        encoders=pool,
    )


def live_encoder(config: Config) -> EncoderConfig:
    """The encoder settings of the annotated encode the H.264 viewers share (see ``build``)."""
    record, restream = config.sinks.record, config.sinks.restream
    if record is not None and record.enabled and record.annotated:
        return record.encoder
    if restream is not None and restream.enabled and restream.annotated:
        from stream.sinks.restream import shared_encoder

        return shared_encoder(restream, config)
    return EncoderConfig()
