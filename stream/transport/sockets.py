"""Stage sockets: open one for an endpoint (high-water marks, CURVE), send and
receive multipart messages, close while handing over what is queued; the ZAP
handler that admits a run's CURVE clients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zmq

from stream.errors import TransportError
from stream.transport.endpoints import _KINDS, Endpoint
from stream.transport.keys import Curve


class CurveAuth:
    """The ZAP handler of one ZeroMQ context: admits a CURVE client whose public
    key is allowed on some server socket of that context. ``stop`` after closing them."""

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        self._ctx = ctx
        self._keys: set[bytes] = set()
        self._auth: Any = None

    def allow(self, keys: frozenset[bytes], *, who: str = "peer") -> None:
        """Admit CURVE clients with these public keys (z85); starts the handler on first use."""
        if not keys:
            raise TransportError(f"CURVE is on but no client public key is allowed: every {who} would be refused")
        self._keys.update(keys)
        if self._auth is None:
            import logging

            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(self._ctx, log=logging.getLogger("stream.transport.zap"))
            self._auth.start()  # before bind: a client's handshake is checked as it connects
            self._auth.configure_curve_callback(domain="*", credentials_provider=self)

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self._keys

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


def open_socket(ctx: zmq.Context[Any], spec: str | Endpoint, *, hwm: int = 4, subscribe: bytes = b"",
                curve: Curve | None = None, auth: CurveAuth | None = None) -> zmq.Socket[Any]:
    """A socket for ``spec`` with send/receive high-water marks of ``hwm`` messages.

    linger is 0 so closing never blocks on a dead peer (``close_flushing`` waits for a
    peer on another host). A bind to an address in use raises TransportError naming it.
    ``curve``: CURVE server (bind; needs ``auth``, the context's ZAP handler) or client
    (connect) — see ``Curve``.
    """
    ep = spec if isinstance(spec, Endpoint) else Endpoint.parse(spec)
    if curve is not None and ep.bind and auth is None:
        raise TransportError(f"{ep.address}: a CURVE server socket needs the context's CurveAuth")
    if curve is not None and not ep.bind and not curve.server_key:
        raise TransportError(f"{ep.address}: a CURVE client needs the server's public key")
    if curve is not None and ep.bind and auth is not None:
        auth.allow(curve.allowed)
    sock = ctx.socket(_KINDS[ep.kind])
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    if ep.kind == "sub":
        sock.setsockopt(zmq.SUBSCRIBE, subscribe)
    if curve is not None and ep.bind:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret_key)
    elif curve is not None:
        sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.public_key)
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret_key)
        sock.setsockopt(zmq.CURVE_SERVERKEY, curve.server_key)
    try:
        if ep.bind:
            sock.bind(ep.address)
        else:
            sock.connect(ep.address)
    except zmq.ZMQError as exc:
        sock.close()
        raise TransportError(f"cannot {'bind' if ep.bind else 'connect'} {ep.address}: {exc.strerror}") from exc
    return sock


def close_flushing(sock: zmq.Socket[Any], linger_s: float) -> None:
    """Close ``sock`` after up to ``linger_s`` spent handing what is still queued to
    the peer (measured: a PUSH closed with linger 0 loses the frames its peer on the
    other end of a tcp:// connection has not read; with a linger it loses none)."""
    sock.close(linger=max(0, int(linger_s * 1000)))


def send_parts(sock: zmq.Socket[Any], parts: list[Any], *, block: bool, timeout_s: float,
               should_stop: Callable[[], bool] = lambda: False, on_wait: Callable[[], None] = lambda: None) -> bool:
    """Send a multipart message. block=False: one try, False when the peer is full
    (a live source drops at the edge). block=True: wait (backpressure), calling
    ``on_wait`` every ``timeout_s`` so the caller can heartbeat, until sent or
    ``should_stop()``; returns whether it was sent."""
    flags = 0 if block else zmq.NOBLOCK
    if block:
        sock.setsockopt(zmq.SNDTIMEO, max(1, int(timeout_s * 1000)))
    while True:
        try:
            sock.send_multipart(parts, flags=flags, copy=False)
            return True
        except zmq.Again:
            if not block or should_stop():
                return False
            on_wait()


def recv_parts(sock: zmq.Socket[Any], timeout_ms: int) -> list[zmq.Frame] | None:
    """Receive one multipart message, or None after ``timeout_ms``."""
    if sock.poll(timeout_ms, zmq.POLLIN):
        return sock.recv_multipart(copy=False)  # type: ignore[no-any-return]
    return None
