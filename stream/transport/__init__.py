"""All ZeroMQ sockets and shared-memory frame rings live here, one concern a module:

* ``endpoints``: ``KIND+bind:ADDRESS`` specs, loopback and free-port checks
* ``sockets``: stage sockets (open, send, receive, close flushing) and the ZAP handler
* ``keys``: CURVE settings of a socket, a run's own keys, key files
* ``pubsub``: the publish sink's PUB socket and consumers' SUB sockets
* ``ring``: the shared-memory frame ring a source's pixels travel in
* ``runfiles``: naming the files a run owns, collecting those a killed run left

The names below are the package's API: import them from ``stream.transport``.
"""

from __future__ import annotations

from stream.transport.endpoints import Endpoint, check_tcp_port_free, free_port, is_loopback_address
from stream.transport.keys import (
    Curve,
    generate_curve_keypair,
    load_allowed_keys,
    load_curve_public_key,
    load_curve_secret_key,
    run_curve_keys,
)
from stream.transport.pubsub import open_publisher, open_subscriber, publish
from stream.transport.ring import FrameRing, RingCache, shm_dir
from stream.transport.runfiles import remove_stale_run_files, run_prefix
from stream.transport.sockets import CurveAuth, close_flushing, open_socket, recv_parts, send_parts

__all__ = [
    "Curve",
    "CurveAuth",
    "Endpoint",
    "FrameRing",
    "RingCache",
    "check_tcp_port_free",
    "close_flushing",
    "free_port",
    "generate_curve_keypair",
    "is_loopback_address",
    "load_allowed_keys",
    "load_curve_public_key",
    "load_curve_secret_key",
    "open_publisher",
    "open_socket",
    "open_subscriber",
    "publish",
    "recv_parts",
    "remove_stale_run_files",
    "run_curve_keys",
    "run_prefix",
    "send_parts",
    "shm_dir",
]
