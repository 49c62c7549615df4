"""The live view's HTTP server (stdlib ``ThreadingHTTPServer``, one thread per client).

Endpoints (GET only):
    /                     the page (HTML; its script and style under /static/)
    /stream/<source>.mjpg annotated pictures, ``multipart/x-mixed-replace`` JPEGs
    /events               Server-Sent Events: one JSON object per update per source
    /wall?sources=a,b     the camera wall: every listed source (default all) over ONE
                          connection, ``multipart/mixed`` parts tagged ``X-Source``:
                          image/jpeg pictures (``X-Seq``, ``X-Age-Ms``) and
                          application/json object events; ``&detail=a`` adds masks
                          to source a's events (the camera page)
    /live?sources=a,b     the same wall over H.264: a WebSocket (RFC 6455) carrying,
                          per source, the shared encode's fragmented MP4 as binary
                          messages ``[kind u8][len u8][source id]`` then for kind 1
                          (init segment, once per stream) ``[len u8][codec, e.g.
                          avc1.42C01F][ftyp+moov]``, for kind 2 (one frame)
                          ``[seq u32][age ms u32][flags u8: 1 = keyframe][moof+mdat]``
                          (big-endian); object events as text messages (the wall's
                          JSON); ``&detail=a`` as for /wall. A viewer starts on a
                          keyframe; the Origin, when sent, must be this server
    /api/recordings       JSON: each source's recorded segments by start time
    /recordings/<source>/<segment>.mp4|.jsonl   a recording, read-only, with HTTP Range
    /api/sources          JSON: the configured sources and their state
    /healthz              JSON {"status": "ok"}; no token needed (for probes)
    /static/app.js, rle.js, player.js, h264.js, style.css   the page's code (public, no data, no token)

Choosing the transport (for people and for ``stream bench live``): the page plays
H.264 over ``/live`` when the browser's Media Source Extensions take
``video/mp4; codecs="avc1.42E01F"`` and MJPEG over ``/wall`` otherwise;
``/?transport=mjpeg`` forces MJPEG and ``/?transport=h264`` asks for H.264 (the
chosen one is ``document.documentElement.dataset.transport``). Each tile reports
the capture-to-screen latency of the frame it shows in ``data-shown-latency-ms``
and the frames it has shown in ``data-frames``.

With a token, every other endpoint needs ``Authorization: Bearer <token>`` or
``?token=<token>`` (the page passes its own ``?token=`` on to its stream and
event requests) and answers 401 otherwise. Without a token (loopback only) the
Host header must name a loopback host, which stops DNS-rebinding pages from
reading the stream. Source ids are looked up among the configured ones; a
request string never becomes a path.
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import os
import re
import select
import socket
import threading
import time
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from stream.errors import TransportError
from stream.httpd import LOOPBACK_NAMES, GuardedHandler, GuardedServer
from stream.live import websocket
from stream.live.hub import LiveHub
from stream.live.live_socket import serve_viewer
from stream.live.recordings import list_recordings, parse_range, recording_file

log = logging.getLogger(__name__)

BOUNDARY = "liveframe"
_HEARTBEAT_S = 10.0  # SSE keep-alive comment: writing it tells a dead client from a quiet source
_IDLE_CHECK_S = 2.0  # MJPEG: how often a stream with no new picture checks that its client is still there
_STREAM = re.compile(r"^/stream/([A-Za-z0-9][A-Za-z0-9_-]{0,63})\.mjpg$")
_TOKEN_IN_TEXT = re.compile(r"token=[^&\s\"']*", re.IGNORECASE)
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; media-src 'self' blob:; "
    "connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _asset(name: str) -> bytes:
    return resources.files("stream.live").joinpath(name).read_bytes()


def _part(ctype: str, body: bytes, headers: str) -> bytes:
    """One part of the wall's multipart stream, boundary first."""
    head = f"--{BOUNDARY}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    return head.encode() + body + b"\r\n"


class _Server(GuardedServer):
    def __init__(
        self,
        address: tuple[str, int],
        hub: LiveHub,
        token: bytes | None,
        family: int,
        recordings: Path | None,
    ) -> None:
        self.hub = hub
        self.recordings = recordings
        self.token = token
        self.assets = {
            "/": (_asset("page.html"), "text/html; charset=utf-8"),
            "/static/app.js": (_asset("app.js"), "text/javascript; charset=utf-8"),
            "/static/rle.js": (_asset("rle.js"), "text/javascript; charset=utf-8"),
            "/static/h264.js": (_asset("h264.js"), "text/javascript; charset=utf-8"),
            "/static/player.js": (_asset("player.js"), "text/javascript; charset=utf-8"),
            "/static/style.css": (_asset("style.css"), "text/css; charset=utf-8"),
        }
        # without a token the view is loopback-only: the Host check stops DNS rebinding;
        # a client that stops reading for the idle timeout (30 s) is dropped
        super().__init__(address, _Handler, family=family, loopback_only=token is None)


class _Handler(GuardedHandler):
    server: _Server
    server_version = "stream-live"

    def do_GET(self) -> None:  # noqa: N802 — BaseHTTPRequestHandler's naming
        url = urlsplit(self.path)
        path = url.path
        if path == "/healthz":
            return self._send_json({"status": "ok"})
        if path.startswith("/static/") and path in self.server.assets:
            return self._send_asset(path)
        if not self._allowed(url.query):
            return
        if path == "/":
            return self._send_asset(path)
        if path == "/api/sources":
            hub = self.server.hub
            return self._send_json({"sources": hub.summary(), "max_fps": hub.max_fps})
        if path == "/events":
            return self._events()
        if path == "/wall":
            return self._wall(url.query)
        if path == "/live":
            return self._live(url.query)
        if path == "/api/recordings":
            return self._send_json({"recordings": list_recordings(self.server.recordings)})
        if path.startswith("/recordings/"):
            return self._recording(path)
        m = _STREAM.match(path)
        if m and self.server.hub.has_source(m.group(1)):
            return self._mjpeg(m.group(1))
        self._send_text(HTTPStatus.NOT_FOUND, "not found: see / for the sources this live view serves\n")

    def do_HEAD(self) -> None:  # noqa: N802
        self._send_text(HTTPStatus.METHOD_NOT_ALLOWED, "")

    # ---- access ---------------------------------------------------------------------

    def _allowed(self, query: str) -> bool:
        token = self.server.token
        if token is None:
            return self.host_allowed()
        offered: list[str] = []
        auth = self.headers.get("Authorization") or ""
        if auth[:7].lower() == "bearer ":
            offered.append(auth[7:].strip())
        offered += parse_qs(query).get("token", [])[:1]
        if any(hmac.compare_digest(t.encode(), token) for t in offered):
            return True
        body = b"401 unauthorized: pass the token as 'Authorization: Bearer <token>' or '?token=<token>'\n"
        self.send_response(HTTPStatus.UNAUTHORIZED)
        self.send_header("WWW-Authenticate", 'Bearer realm="stream live view"')
        self._common_headers("text/plain; charset=utf-8", len(body))
        self.end_headers()
        self.wfile.write(body)
        return False

    def refuse_host(self, text: str) -> None:
        self._send_text(HTTPStatus.FORBIDDEN, text.replace("this server", "this live view"))

    # ---- responses ------------------------------------------------------------------

    def _common_headers(self, content_type: str, length: int | None = None) -> None:
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", _CSP)

    def _send_asset(self, path: str) -> None:
        body, ctype = self.server.assets[path]
        self.send_response(HTTPStatus.OK)
        self._common_headers(ctype, len(body))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, obj: Any) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(HTTPStatus.OK)
        self._common_headers("application/json", len(body))
        self.end_headers()
        self.wfile.write(body)

    def _send_text(self, status: HTTPStatus, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self._common_headers("text/plain; charset=utf-8", len(body))
        self.end_headers()
        self.wfile.write(body)

    def _mjpeg(self, source: str) -> None:
        hub = self.server.hub
        self.send_response(HTTPStatus.OK)
        self._common_headers(f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.end_headers()
        hub.watch(source)
        try:
            self.wfile.write(f"--{BOUNDARY}\r\n".encode())
            version = 0
            while not hub.closing:
                version, jpeg = hub.next_jpeg(source, version, _IDLE_CHECK_S)
                if jpeg is None:
                    if self._client_gone():
                        break
                    continue
                # the closing boundary right after the picture: browsers show a part once it has ended
                head = (
                    f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg.data)}\r\n"
                    f"X-Frame-Seq: {jpeg.seq}\r\n\r\n"
                ).encode()
                self.wfile.write(head + jpeg.data + f"\r\n--{BOUNDARY}\r\n".encode())
                self.wfile.flush()
        except OSError:
            pass  # the client went away (closed tab, reload): normal for a stream
        finally:
            hub.unwatch(source)

    def _selection(self, query: str) -> tuple[list[str], list[str]]:
        """(sources, detail sources) of a /wall or /live query: ``sources=a,b`` (default
        all), ``detail=a`` (at most 4); unknown ids are left out."""
        hub = self.server.hub
        q = parse_qs(query)
        wanted = [s for part in q.get("sources", []) for s in part.split(",") if s]
        sources = [s for s in wanted if hub.has_source(s)] if wanted else list(hub.sources)
        detail = [s for part in q.get("detail", []) for s in part.split(",") if hub.has_source(s)][:4]
        return sources, detail

    def _wall(self, query: str) -> None:
        hub = self.server.hub
        sources, detail = self._selection(query)
        if not sources:
            return self._send_text(HTTPStatus.NOT_FOUND, "not found: none of these sources is served here\n")
        self.send_response(HTTPStatus.OK)
        self._common_headers(f"multipart/mixed; boundary={BOUNDARY}")
        self.end_headers()
        for s in sources:
            hub.watch(s)
        for s in detail:
            hub.want_detail(s, True)
        hub.subscribe_events()
        sent: dict[str, int] = {}
        seen, events_after = -1, 0
        try:
            while not hub.closing:
                seen, events_after, pictures, events = hub.next_updates(
                    sources, sent, events_after, seen, _IDLE_CHECK_S
                )
                if not pictures and not events:
                    if self._client_gone():
                        break
                    continue
                now = time.time_ns()
                out = [
                    _part(
                        "image/jpeg",
                        j.data,
                        f"X-Source: {s}\r\nX-Seq: {j.seq}\r\nX-Age-Ms: {(now - j.capture_ns) / 1e6:.0f}\r\n",
                    )
                    for s, j in pictures
                ]
                out += [_part("application/json", e, "") for e in events]
                self.wfile.write(b"".join(out))
                self.wfile.flush()
        except OSError:
            pass
        finally:
            hub.unsubscribe_events()
            for s in detail:
                hub.want_detail(s, False)
            for s in sources:
                hub.unwatch(s)

    def _live(self, query: str) -> None:
        """The H.264 wall: a WebSocket carrying every selected source's fragmented MP4
        (binary messages) and object events (text messages, the wall's JSON)."""
        hub = self.server.hub
        sources, detail = self._selection(query)
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() != (self.headers.get("Host") or "").lower():
            # browsers let any page open a WebSocket anywhere: only this view's own page may
            return self._send_text(HTTPStatus.FORBIDDEN, "forbidden: /live takes only this live view's own page\n")
        why = websocket.handshake_error(self.headers)
        if why is not None:
            return self._send_text(HTTPStatus.BAD_REQUEST, f"bad request: /live is a WebSocket: {why}\n")
        if not sources:
            return self._send_text(HTTPStatus.NOT_FOUND, "not found: none of these sources is served here\n")
        self.send_response(HTTPStatus.SWITCHING_PROTOCOLS)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", websocket.accept_key(self.headers["Sec-WebSocket-Key"]))
        self.end_headers()
        self.close_connection = True
        serve_viewer(hub, self.connection, self.wfile, sources, detail, _IDLE_CHECK_S)

    def _recording(self, path: str) -> None:
        found = recording_file(self.server.recordings, path)
        if found is None:
            return self._send_text(HTTPStatus.NOT_FOUND, "not found: see /api/recordings for the segments\n")
        file_path, ctype = found
        try:
            f = file_path.open("rb")
        except OSError:
            return self._send_text(HTTPStatus.NOT_FOUND, "not found: the segment was deleted\n")
        with f:
            size = os.fstat(f.fileno()).st_size
            span = parse_range(self.headers.get("Range"), size)
            if span == "unsatisfiable":
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self._common_headers("text/plain; charset=utf-8", 0)
                self.end_headers()
                return
            start, end = span if span is not None else (0, size - 1)
            length = max(0, end - start + 1)
            self.send_response(HTTPStatus.PARTIAL_CONTENT if span is not None else HTTPStatus.OK)
            if span is not None:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Accept-Ranges", "bytes")
            self._common_headers(ctype, length)
            self.end_headers()
            f.seek(start)
            try:
                while length > 0:
                    chunk = f.read(min(length, 1 << 16))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    length -= len(chunk)
            except OSError:
                pass  # the player closed the connection (seeking aborts requests)

    def _events(self) -> None:
        hub = self.server.hub
        self.send_response(HTTPStatus.OK)
        self._common_headers("text/event-stream; charset=utf-8")
        self.end_headers()
        hub.subscribe_events()
        try:
            self.wfile.write(b"retry: 1000\n\n")
            self.wfile.flush()
            version = 0
            while not hub.closing:
                new_version, events = hub.next_events(version, _HEARTBEAT_S)
                if new_version == version:
                    self.wfile.write(b": keep-alive\n\n")
                else:
                    self.wfile.write(b"".join(b"data: " + e + b"\n\n" for e in events))
                version = new_version
                self.wfile.flush()
        except OSError:
            pass
        finally:
            hub.unsubscribe_events()

    def _client_gone(self) -> bool:
        """True when the client closed its end (readable with nothing to read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — the stdlib's signature
        # request lines may carry ?token=…; it never reaches a log record
        log.debug("live view %s: %s", self.client_address[0], _TOKEN_IN_TEXT.sub("token=***", format % args))


class LiveServer:
    """Serves a ``LiveHub`` over HTTP from a background thread.

    host/port: where to bind (port 0 = any free port; ``port`` then tells which).
    token: required on every data request when given (compared in constant time).
    recordings: the record sink's root, served read-only (None: no recordings).
    Raises TransportError naming sinks.live.port / sinks.live.host when it cannot bind.
    """

    def __init__(
        self, hub: LiveHub, host: str, port: int, token: str | None, recordings: Path | None = None
    ) -> None:
        bind_host = "127.0.0.1" if host.lower() in LOOPBACK_NAMES else host.strip("[]")
        family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
        try:
            self._server = _Server(
                (bind_host, port), hub, token.encode() if token else None, family, recordings
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise TransportError(
                    f"sinks.live.port: {host}:{port} is already in use; choose another sinks.live.port "
                    f"(0 = any free port) or stop the program that holds it"
                ) from None
            if exc.errno == errno.EACCES:
                raise TransportError(
                    f"sinks.live.port: not allowed to bind {host}:{port} (ports below 1024 need privileges); "
                    f"choose a port of 1024 or more"
                ) from None
            raise TransportError(
                f"sinks.live.host: cannot bind {host}:{port}: {exc.strerror or exc}; use an address of this "
                f"machine, e.g. 127.0.0.1 or 0.0.0.0"
            ) from None
        self.hub = hub
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.25}, name="live-http", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The page's URL (without any token)."""
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        """Stop accepting; close the hub first so streaming clients wake up and end."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)
