"""The supervisor's /metrics server on real sockets: DNS-rebinding Host check and an
idle timeout that frees the threads of clients that never send a request."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from typing import Any

import pytest

from stream.metrics import MetricsServer
from tests.conftest import wait_for


def _snapshot() -> dict[str, Any]:
    return {"stages": {}, "drops": {}, "sources": {}, "frame_age": {}}


@pytest.fixture
def server():
    started: list[MetricsServer] = []

    def make(host: str = "127.0.0.1", idle_timeout_s: float = 10.0) -> MetricsServer:
        srv = MetricsServer(host, 0, _snapshot, lambda: (True, {"status": "ok"}), idle_timeout_s=idle_timeout_s)
        srv.start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.close()


def _get(port: int, path: str, host_header: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host_header})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_on_loopback_only_a_loopback_host_header_is_answered(server):
    srv = server()
    for host in (f"127.0.0.1:{srv.port}", f"localhost:{srv.port}", "[::1]"):
        status, body = _get(srv.port, "/metrics", host)
        assert status == 200 and b"# HELP" in body, host
    for path in ("/metrics", "/healthz"):
        status, body = _get(srv.port, path, f"attacker.example:{srv.port}")  # a rebinding page
        assert status == 403 and b"loopback Host" in body
        assert b"stream_" not in body and b"status" not in body


def test_bound_to_all_interfaces_any_host_header_is_answered(server):
    srv = server(host="0.0.0.0")
    status, _ = _get(srv.port, "/metrics", f"pod-7.example:{srv.port}")
    assert status == 200


def test_idle_connections_are_closed_and_their_threads_freed(server):
    srv = server(idle_timeout_s=1.5)
    baseline = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=20) for _ in range(100)]
    try:
        t0 = time.monotonic()
        for s in idle:
            assert s.recv(1) == b""  # the server closed it (without an idle timeout: socket.timeout)
        assert time.monotonic() - t0 < 15
        wait_for(lambda: threading.active_count() <= baseline + 2, 20, "handler threads to end")
        status, _ = _get(srv.port, "/metrics", f"127.0.0.1:{srv.port}")  # still serving
        assert status == 200
    finally:
        for s in idle:
            s.close()


def test_a_restart_right_after_a_scrape_gets_its_port_back(server):
    """A scraped run that stops leaves its port in TIME_WAIT (the server closed each connection)
    for a minute; the next run's start-up port check must not call that "in use" (the servers
    bind with SO_REUSEADDR) — but a port another program listens on still is."""
    from stream.errors import TransportError
    from stream.transport import check_tcp_port_free

    srv = server()
    port = srv.port
    for _ in range(3):
        assert _get(port, "/metrics", f"127.0.0.1:{port}")[0] == 200
    srv.close()
    check_tcp_port_free("127.0.0.1", port, "metrics.port")  # before: "metrics.port: … is already in use"
    again = MetricsServer("127.0.0.1", port, _snapshot, lambda: (True, {"status": "ok"}))
    again.start()
    try:
        assert _get(port, "/metrics", f"127.0.0.1:{port}")[0] == 200
        with pytest.raises(TransportError, match=rf"metrics.port: 127.0.0.1:{port} is already in use"):
            check_tcp_port_free("127.0.0.1", port, "metrics.port")
    finally:
        again.close()
