"""MQTT sink: per-object ``new`` / ``update`` / ``end`` events, a retained per-source
state (object counts by class) and an availability topic with a last will, for
Home Assistant, Frigate-style consumers and anything else that reads a broker.

Config (``sinks.mqtt``; topic schema and payloads: docs/mqtt.md)::

    sinks:
      mqtt:
        host: 127.0.0.1
        port: 1883                  # 8883 is usual with tls
        username: stream
        password: ${ENV:MQTT_PASSWORD}   # never logged
        tls: {ca_file: ca.pem}      # also cert_file, key_file, insecure
        topic_prefix: stream        # stream/<source>/events, stream/<source>/state
        qos: 1

Never blocks the output stage: ``write`` turns a frame into events (a few
microseconds per object) and queues them; paho's network loop and the
publishing thread do the rest (``stream.sinks.mqtt_client``). A broker that is
down at start, goes away or is slow fills the queue (``queue_size`` events),
then events are dropped and counted (``stats()``); the client reconnects with
backoff and the state and availability topics are refreshed on every connect.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import msgspec

from stream.config import Config, validate_section
from stream.errors import ConfigError
from stream.messages import Frame
from stream.objects import COCO_CLASSES, class_names_of
from stream.sections.mqtt import MqttConfig
from stream.sinks import WRITTEN
from stream.sinks.background import QUEUE_FULL
from stream.sinks.mqtt_client import Message, MqttPublisher, Tls
from stream.sinks.mqtt_events import SourceEvents

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode


class MqttSink:
    """Publishes events and state for every source (see the module doc and docs/mqtt.md).

    Topics: PREFIX/SOURCE/events (new/update/end, JSON), PREFIX/SOURCE/state (retained
    JSON), availability (retained ``online``/``offline``, last will ``offline``).
    """

    name = "mqtt"
    wants_annotated = False

    def __init__(self, cfg: MqttConfig, *, class_names: tuple[str, ...] = COCO_CLASSES,
                 default_client_id: str = "stream") -> None:
        self.cfg = cfg
        self.class_names = class_names
        self.prefix = cfg.topic_prefix
        port = cfg.port or (8883 if cfg.tls is not None else 1883)
        tls = None
        if cfg.tls is not None:
            tls = Tls(cfg.tls.ca_file, cfg.tls.cert_file, cfg.tls.key_file, cfg.tls.insecure)
        self._sources: dict[str, SourceEvents] = {}
        self._sent_state: dict[str, tuple[dict[str, int], int]] = {}
        self.last_write_ms = 0.0
        try:
            self.publisher = MqttPublisher(
                cfg.host, port,
                client_id=cfg.client_id or default_client_id,
                availability_topic=cfg.availability_topic or f"{self.prefix}/availability",
                username=cfg.username,
                password=cfg.password.get_secret_value() if cfg.password is not None else None,
                tls=tls,
                keepalive_s=cfg.keepalive_s,
                queue_size=cfg.queue_size,
                max_inflight=cfg.max_inflight,
                reconnect_min_s=cfg.reconnect_min_s,
                reconnect_max_s=max(cfg.reconnect_min_s, cfg.reconnect_max_s),
            )
        except (OSError, ValueError) as exc:  # TLS files that do not load (ssl.SSLError is an OSError)
            if tls is None:
                raise
            raise ConfigError(f"config error: sinks.mqtt.tls: cannot set up TLS: {exc}") from None

    def topic(self, source: str, leaf: str) -> str:
        return f"{self.prefix}/{source}/{leaf}"

    def write(self, frame: Frame) -> None:
        t0 = time.perf_counter()
        events = self._source(frame.source).frame(frame)
        self._emit(frame.source, events)
        self.last_write_ms = (time.perf_counter() - t0) * 1000

    def reset(self, source: str) -> None:
        if source in self._sources:
            self._emit(source, self._sources[source].end_all("reset"))

    def end_source(self, source: str) -> None:
        if source in self._sources:
            self._emit(source, self._sources[source].end_all("end_of_stream"))

    def close(self) -> None:
        for source, events in self._sources.items():
            if events.tracks:
                self._emit(source, events.end_all("stopped"))
        self.publisher.close(self.cfg.close_timeout_s)
        p = self.publisher
        log.info(
            "mqtt: %d event(s): %d published, %d dropped (queue full), %d lost (not delivered: no connection or it broke)",
            sum(p.offered.values()), sum(p.published.values()), sum(p.dropped.values()), sum(p.lost.values()),
        )

    def stats(self) -> dict[str, dict[str, int]]:
        """Per source: events made, published (acknowledged), dropped (queue full), lost
        (in flight when the connection broke or at close), queued (not yet sent)."""
        p = self.publisher
        out = {}
        for s in list(self._sources):
            made = p.offered.get(s, 0)
            done = p.published.get(s, 0) + p.dropped.get(s, 0) + p.lost.get(s, 0)
            out[s] = {
                "events": made, "published": p.published.get(s, 0), "dropped": p.dropped.get(s, 0),
                "lost": p.lost.get(s, 0), "queued": max(0, made - done),
            }
        return out

    def outcomes(self) -> dict[str, dict[str, int]]:
        """Per source, in messages (events): "written" (published), "queue full", "lost" (not
        delivered: no connection, or it broke) and "queued" (not sent yet), see ``stream.sinks``."""
        out = {}
        for s, row in self.stats().items():
            counts = {WRITTEN: row["published"], QUEUE_FULL: row["dropped"], "lost": row["lost"],
                      "queued": row["queued"]}
            out[s] = {k: v for k, v in counts.items() if v or k == WRITTEN}
        return out

    def _source(self, source: str) -> SourceEvents:
        ev = self._sources.get(source)
        if ev is None:
            c = self.cfg
            ev = self._sources[source] = SourceEvents(
                source, self.class_names, update_interval_s=c.update_interval_s,
                min_score_change=c.min_score_change, end_after_s=c.end_after_s, include_masks=c.include_masks,
            )
        return ev

    def _emit(self, source: str, events: list[dict[str, Any]]) -> None:
        topic = self.topic(source, "events")
        for e in events:
            self.publisher.offer(Message(topic, _encode(e), self.cfg.qos, False, source))
        ev = self._sources[source]
        key = (ev.counts, len(ev.tracks))
        if self._sent_state.get(source) != key:  # state changes rarely; send it only then
            self._sent_state[source] = key
            state = _encode(ev.state(time.time_ns()))
            self.publisher.set_state(Message(self.topic(source, "state"), state, self.cfg.qos, True, ""))


def default_client_id(config: Config) -> str:
    return f"{config.name}-{socket.gethostname()}-{os.getpid()}"[:128]


def build(section: MqttConfig | dict[str, Any], config: Config) -> MqttSink:
    """The sink for ``sinks.mqtt`` (``stream.sections.mqtt.MqttConfig``, validated at load; a
    mapping is validated here). Raises ConfigError; never shows the password."""
    cfg = validate_section(MqttConfig, section, "sinks.mqtt")
    if cfg.tls is not None:
        for key in ("ca_file", "cert_file", "key_file"):
            value = getattr(cfg.tls, key)
            if value is not None and not Path(value).is_file():
                raise ConfigError(f"config error: sinks.mqtt.tls.{key}: {value} is not a file")
    return MqttSink(cfg, class_names=class_names_of(config), default_client_id=default_client_id(config))
