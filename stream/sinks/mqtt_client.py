"""A paho-mqtt client that never makes its caller wait: a bounded queue, a
publishing thread, paho's network loop in its own thread, reconnects with backoff.

``offer`` (called from the output stage) only puts a message in the queue; when
the queue is full the message is dropped and counted. The publishing thread
hands messages to paho only while connected and while fewer than
``max_inflight`` are unacknowledged, so a broker that is down or slow fills the
queue (and then drops), never memory and never the pipeline. Retained state
messages are kept apart, newest only per topic, and sent whenever the
connection is up (again after every reconnect), so they are never dropped.

Accounting per key (the source id): ``offered`` = ``published`` (acknowledged
by the broker at QoS ≥ 1, written to the socket at QoS 0) + ``dropped`` (queue
full) + ``lost`` (QoS 0 in flight when the connection broke, or unacknowledged
at close) + what is still queued or in flight.

paho opens its own socket (it is the MQTT protocol implementation), so this is
the one network client outside ``stream.transport``.
"""

from __future__ import annotations

import logging
import queue
import ssl
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    key: str  # the source it counts for


@dataclass(frozen=True)
class Tls:
    """TLS towards the broker. ca_file: CA bundle (None: the system's); cert_file/key_file:
    client certificate; insecure: skip the host name check (the chain is still verified)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False


class MqttPublisher:
    """Connects to ``host:port`` in the background and publishes what is offered.

    availability_topic: gets ``online`` (retained) on every connect and
    ``offline`` (retained) on close; the broker publishes ``offline`` as the last
    will if this process dies. password: never logged, never in an error.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        availability_topic: str,
        username: str | None = None,
        password: str | None = None,
        tls: Tls | None = None,
        keepalive_s: int = 30,
        queue_size: int = 1000,
        max_inflight: int = 100,
        reconnect_min_s: int = 1,
        reconnect_max_s: int = 30,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.host, self.port = host, port
        self.availability_topic = availability_topic
        self.max_inflight = max_inflight
        self.connects = 0
        self.disconnects = 0
        self.offered: defaultdict[str, int] = defaultdict(int)
        self.published: defaultdict[str, int] = defaultdict(int)
        self.dropped: defaultdict[str, int] = defaultdict(int)
        self.lost: defaultdict[str, int] = defaultdict(int)
        self._queue: queue.Queue[Message] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._inflight: dict[int, Message] = {}
        self._early_acks: set[int] = set()
        self._states: dict[str, Message] = {}  # topic -> newest retained state
        self._dirty_states: set[str] = set()
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._last_reason = ""
        self._dropped_since_log = 0
        self._last_drop_log = 0.0

        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=True
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_connect_fail = self._on_connect_fail
        self.client.suppress_exceptions = True  # a failing callback must not end paho's network thread
        self.client.will_set(availability_topic, b"offline", qos=1, retain=True)
        self.client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)
        self.client.connect_timeout = connect_timeout_s
        self.client.max_queued_messages_set(max_inflight + 16)  # paho's own queue stays small: ours is the bound
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set(
                ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file, cert_reqs=ssl.CERT_REQUIRED
            )
            self.client.tls_insecure_set(tls.insecure)
        self.client.connect_async(host, port, keepalive=keepalive_s)
        self.client.loop_start()  # paho's network thread: connects, retries with backoff
        self._thread = threading.Thread(target=self._run, name="mqtt publish", daemon=True)
        self._thread.start()
        log.info(
            "mqtt: connecting to %s:%d as %s%s%s", host, port, client_id,
            f" (user {username})" if username else "", " over TLS" if tls else "",
        )

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def queued(self) -> int:
        return self._queue.qsize()

    def offer(self, msg: Message) -> bool:
        """Queue ``msg`` without waiting; False (dropped, counted) when the queue is full."""
        self.offered[msg.key] += 1
        try:
            self._queue.put_nowait(msg)
            return True
        except queue.Full:
            self.dropped[msg.key] += 1
            self._dropped_since_log += 1
            now = time.monotonic()
            if now - self._last_drop_log >= 1.0:
                log.warning(
                    "source=%s mqtt: broker %s:%d %s; dropped %d event(s) in the last second (%d in total)",
                    msg.key, self.host, self.port, "is slow" if self.connected else "is not connected",
                    self._dropped_since_log, sum(self.dropped.values()),
                )
                self._dropped_since_log, self._last_drop_log = 0, now
            return False

    def set_state(self, msg: Message) -> None:
        """Make ``msg`` the retained state of its topic (the newest replaces an unsent older one)."""
        with self._lock:
            self._states[msg.topic] = msg
            self._dirty_states.add(msg.topic)

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (for up to ``timeout`` s while connected), publish ``offline``, disconnect."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.connected and (self._pending() or self._inflight):
            time.sleep(0.02)
        self._stop.set()
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()) + 1.0)
        if self.connected:
            info = self.client.publish(self.availability_topic, b"offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=max(0.2, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        # paho's thread may sit in a connect attempt (up to its connect timeout): wait for it, but bounded
        stopper = threading.Thread(target=self.client.loop_stop, name="mqtt stop", daemon=True)
        stopper.start()
        stopper.join(max(0.5, deadline - time.monotonic()) + 1.0)
        with self._lock:
            for m in self._inflight.values():
                if m.key:
                    self.lost[m.key] += 1
            self._inflight.clear()
        while True:
            try:
                m = self._queue.get_nowait()
            except queue.Empty:
                break
            if m.key:
                self.lost[m.key] += 1

    def _pending(self) -> bool:
        return not self._queue.empty() or bool(self._dirty_states)

    # --- the publishing thread ---------------------------------------------------------
    def _run(self) -> None:
        held: Message | None = None
        while not self._stop.is_set():
            if not self._connected.wait(0.1):
                continue
            try:
                self._flush_states()
            except Exception as exc:  # noqa: BLE001
                log.exception("mqtt: publishing the state failed: %s", exc)
            if held is None:
                try:
                    held = self._queue.get(timeout=0.05)
                except queue.Empty:
                    continue
            try:
                if len(self._inflight) >= self.max_inflight or not self._send(held):
                    time.sleep(0.01)  # the broker is behind (or just went away): hold the message
                    continue
            except Exception as exc:  # noqa: BLE001 — this thread must outlive any one message
                log.exception("source=%s mqtt: publishing on %s failed: %s", held.key, held.topic, exc)
                if held.key:
                    self.lost[held.key] += 1
            held = None
        if held is not None and held.key:  # taken from the queue but never handed over
            self.lost[held.key] += 1

    def _flush_states(self) -> None:
        with self._lock:
            topics, self._dirty_states = self._dirty_states, set()
            msgs = [self._states[t] for t in topics]
        for i, m in enumerate(msgs):
            if not self._send(m):
                with self._lock:
                    self._dirty_states.update(x.topic for x in msgs[i:])
                return

    def _send(self, m: Message) -> bool:
        """Hand ``m`` to paho; False when it must be retried (not connected, paho's queue full)."""
        try:
            info = self.client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)
        except (ValueError, OSError) as exc:
            log.error("source=%s mqtt: cannot publish on %s: %s", m.key, m.topic, exc)
            if m.key:
                self.lost[m.key] += 1
            return True
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE or (info.rc == mqtt.MQTT_ERR_NO_CONN and m.qos == 0):
            return False
        # MQTT_ERR_SUCCESS, or NO_CONN at QoS ≥ 1: paho keeps the message and sends it on reconnect
        with self._lock:
            if info.mid in self._early_acks:
                self._early_acks.discard(info.mid)
                self._count_published(m)
            else:
                self._inflight[info.mid] = m
        return True

    def _count_published(self, m: Message) -> None:
        if m.key:
            self.published[m.key] += 1

    # --- paho callbacks (on paho's network thread) -------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._log_reason(f"refused the connection: {reason}")
            return
        self.connects += 1
        self._last_reason = ""
        log.info("mqtt: connected to %s:%d%s", self.host, self.port, " (reconnect)" if self.connects > 1 else "")
        self._send(Message(self.availability_topic, b"online", 1, True, ""))
        with self._lock:  # the broker may have restarted without its retained messages: send states again
            self._dirty_states.update(self._states)
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        with self._lock:  # QoS 0 messages not yet written are gone with the socket; QoS ≥ 1 are resent
            gone = [mid for mid, m in self._inflight.items() if m.qos == 0]
            for mid in gone:
                m = self._inflight.pop(mid)
                if m.key:
                    self.lost[m.key] += 1
        if was and not self._stop.is_set():
            self.disconnects += 1
            log.warning("mqtt: lost the connection to %s:%d (%s); reconnecting", self.host, self.port, reason)
        elif not was:
            self._log_reason(f"cannot connect ({reason})")

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        exc = sys.exc_info()[1]  # paho calls this inside its ``except OSError`` (refused, TLS, DNS …)
        self._log_reason(f"cannot connect ({exc or 'connection failed'})")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._lock:
            m = self._inflight.pop(mid, None)
            if m is None:
                self._early_acks.add(mid)  # acknowledged before _send registered it
            else:
                self._count_published(m)

    def _log_reason(self, text: str) -> None:
        if text != self._last_reason:  # once per distinct reason, not once per retry
            self._last_reason = text
            log.warning("mqtt: broker %s:%d %s; retrying in the background", self.host, self.port, text)
