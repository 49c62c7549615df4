"""Publishing (PUB/SUB, CURVE).

The publish sink binds a PUB socket; consumers (stream.client.Subscriber) connect
a SUB socket. PUB never blocks: a message for a subscriber whose queue is at its
high-water mark is dropped for that subscriber only, so a slow or stuck consumer
cannot slow the pipeline. CURVE keys are ZeroMQ certificate files (z85 text):
NAME.key holds the public key, NAME.key_secret the public and the secret key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq

from stream.errors import TransportError
from stream.transport.sockets import CurveAuth


def open_publisher(
    ctx: zmq.Context[Any],
    address: str,
    *,
    hwm: int,
    curve_secret_key: bytes | None = None,
    allowed_keys: frozenset[bytes] = frozenset(),
) -> tuple[zmq.Socket[Any], CurveAuth | None]:
    """Bind a PUB socket at ``address`` (e.g. tcp://127.0.0.1:5560) with send HWM
    ``hwm`` messages per subscriber. With ``curve_secret_key`` (z85) it is a CURVE
    server and a ZAP authenticator admits only ``allowed_keys``; returns
    (socket, its ``CurveAuth`` or None) — stop it after closing the socket."""
    auth = None
    if curve_secret_key is not None:
        auth = CurveAuth(ctx)
        auth.allow(allowed_keys, who="subscriber")  # started before bind: a handshake is checked as it connects
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    if curve_secret_key is not None:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve_secret_key)
    try:
        sock.bind(address)
    except zmq.ZMQError as exc:
        sock.close()
        if auth is not None:
            auth.stop()
        raise TransportError(f"cannot bind publisher at {address}: {exc.strerror}") from exc
    return sock, auth


def publish(sock: zmq.Socket[Any], topic: bytes, payload: bytes) -> bool:
    """Send [topic, payload] without ever waiting; False when ZeroMQ refused it."""
    try:
        sock.send_multipart([topic, payload], flags=zmq.NOBLOCK, copy=True)
        return True
    except zmq.Again:
        return False


def open_subscriber(
    ctx: zmq.Context[Any],
    address: str | Sequence[str],
    *,
    topics: tuple[bytes, ...] = (b"",),
    hwm: int = 1000,
    curve_keys: tuple[bytes, bytes] | None = None,
    server_public_key: bytes | None = None,
) -> zmq.Socket[Any]:
    """Connect a SUB socket to a publisher (or to several: one socket fair-queues them,
    e.g. every shard of a sharded deployment), subscribed to ``topics`` (topic = source
    id; b"" = all). curve_keys: this client's (public, secret) z85 keys, with the
    server's public key: CURVE on. A refused client simply receives nothing."""
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, hwm)
    if curve_keys is not None or server_public_key is not None:
        if curve_keys is None or server_public_key is None:
            sock.close()
            raise TransportError(
                "CURVE needs both this client's secret key file and the server's public key file"
            )
        sock.setsockopt(zmq.CURVE_PUBLICKEY, curve_keys[0])
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve_keys[1])
        sock.setsockopt(zmq.CURVE_SERVERKEY, server_public_key)
    for t in topics:
        sock.setsockopt(zmq.SUBSCRIBE, t)
    for one in [address] if isinstance(address, str) else address:
        try:
            sock.connect(one)
        except zmq.ZMQError as exc:
            sock.close()
            raise TransportError(
                f"cannot connect subscriber to {one}: {exc.strerror} (expected tcp://HOST:PORT or ipc://PATH)"
            ) from exc
    return sock
