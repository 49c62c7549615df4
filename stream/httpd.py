"""The one home of what every HTTP endpoint of the pipeline does the same way: the
live view (``stream.live.server``) and the supervisor's ``/metrics`` and
``/healthz`` (``stream.metrics``) both serve through these classes.

- **Idle timeout**: a client's socket times out after ``timeout`` seconds without
  progress (``GuardedServer.idle_timeout_s``, 30 s unless set), so a
  connection that never sends a request, or stops reading, frees its thread.
- **Host check** (DNS rebinding): a server marked ``loopback_only`` answers only
  requests whose ``Host`` header names a loopback host; a page served from another
  origin that resolves its name to 127.0.0.1 gets 403 and reads nothing.
- No reverse DNS at bind (the stdlib's FQDN lookup can stall), daemon threads.
"""

from __future__ import annotations

import socketserver
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from stream.transport.endpoints import LOOPBACK_NAMES, is_loopback  # noqa: F401  (the one loopback check)

DEFAULT_IDLE_TIMEOUT_S = 30.0


def host_name(host_header: str) -> str:
    """'127.0.0.1:8080' → '127.0.0.1', '[::1]:8080' → '::1', 'localhost' → 'localhost'."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class GuardedServer(ThreadingHTTPServer):
    """A threading HTTP server; ``loopback_only`` turns the Host check on and
    ``idle_timeout_s`` bounds how long a silent client holds its thread."""

    daemon_threads = True  # a client stuck in a stream must not hold up close()
    allow_reuse_address = True
    request_queue_size = 128  # the stdlib's 5 leaves a burst of clients waiting on SYN retries

    def __init__(self, address: tuple[str, int], handler: type[GuardedHandler], *, family: int,
                 loopback_only: bool, idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S) -> None:
        self.address_family = family
        self.loopback_only = loopback_only
        self.idle_timeout_s = idle_timeout_s
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN (a DNS lookup that can stall); skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class GuardedHandler(BaseHTTPRequestHandler):
    """Base handler: the idle timeout and the Host check of its ``GuardedServer``."""

    server: GuardedServer
    protocol_version = "HTTP/1.0"  # one request per connection
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout_s)  # every read and write, not just the first

    def host_allowed(self) -> bool:
        """True unless the server is loopback-only and Host names another host;
        answers 403 itself when it returns False."""
        if not self.server.loopback_only or is_loopback(host_name(self.headers.get("Host") or "")):
            return True
        self.refuse_host("forbidden: this server answers only to a loopback Host (127.0.0.1, localhost, [::1])\n")
        return False

    def refuse_host(self, text: str) -> None:
        """Answer 403 with ``text``; a subclass may add its own headers."""
        body = text.encode()
        self.send_response(HTTPStatus.FORBIDDEN)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — the stdlib's signature
        pass
