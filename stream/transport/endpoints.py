"""Endpoint specs and address checks.

Endpoints are written ``KIND+bind:ADDRESS`` or ``KIND+connect:ADDRESS`` (as in
Savant), e.g. ``pull+bind:ipc:///tmp/stream-x/detect.in`` or
``push+connect:tcp://127.0.0.1:5601``.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import zmq

from stream.errors import TransportError

_KINDS = {"push": zmq.PUSH, "pull": zmq.PULL, "pub": zmq.PUB, "sub": zmq.SUB}


@dataclass(frozen=True)
class Endpoint:
    kind: str
    bind: bool
    address: str

    @classmethod
    def parse(cls, spec: str) -> Endpoint:
        """'push+bind:ipc:///x' → Endpoint('push', True, 'ipc:///x')."""
        head, sep, address = spec.partition(":")
        kind, plus, mode = head.partition("+")
        if not sep or not plus or kind not in _KINDS or mode not in ("bind", "connect"):
            raise TransportError(
                f"bad endpoint {spec!r}: expected KIND+bind:ADDRESS or KIND+connect:ADDRESS "
                f"with KIND in {sorted(_KINDS)}"
            )
        if not address.startswith(("ipc://", "tcp://", "inproc://")):
            raise TransportError(f"bad endpoint {spec!r}: address must start with ipc://, tcp:// or inproc://")
        return cls(kind, mode == "bind", address)

    def __str__(self) -> str:
        return f"{self.kind}+{'bind' if self.bind else 'connect'}:{self.address}"



def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (the OS picked it), for a server
    that binds it later: another process may take it in between."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_tcp_port_free(host: str, port: int, key: str) -> None:
    """Raise TransportError naming ``key`` when host:port cannot be bound.

    The probe binds with SO_REUSEADDR, as the servers it stands in for do (the HTTP servers'
    ``allow_reuse_address``, ZeroMQ's tcp listeners): a port that only holds connections in
    TIME_WAIT, which a stopped run that was scraped leaves for a minute, is free for them;
    a port another socket listens on is not."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise TransportError(
                f"{key}: {host}:{port} is already in use ({exc.strerror}); "
                f"choose another with --set {key}=N (0 picks a free port)"
            ) from exc



LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for a host only this machine reaches: 'localhost' (and its aliases), any address
    in 127.0.0.0/8, ::1 ('[::1]' too). '*', 0.0.0.0 and interface names are not."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_address(address: str) -> bool:
    """True when a ZeroMQ address is only reachable from this host: ipc://,
    inproc://, or tcp:// on a loopback host (``is_loopback``)."""
    if address.startswith(("ipc://", "inproc://")):
        return True
    if not address.startswith("tcp://"):
        return False
    host = address[len("tcp://") :].rpartition(":")[0]
    if ";" in host:  # tcp://SOURCE;HOST:PORT (connect form): the remote host decides
        host = host.rpartition(";")[2]
    return is_loopback(host)
