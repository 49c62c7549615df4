"""The server side of RFC 6455 WebSockets, enough for the live view: the opening
handshake on a stdlib HTTP handler, unmasked binary/text frames out, masked frames
in (close, ping, and anything else read and discarded)."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
from typing import Any

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
MAX_CLIENT_FRAME = 1 << 16  # the page sends nothing but control frames


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def handshake_error(headers: Any) -> str | None:
    """Why a request is not a valid WebSocket opening handshake, or None when it is."""
    if "websocket" not in (headers.get("Upgrade") or "").lower():
        return "expected 'Upgrade: websocket'"
    if "upgrade" not in (headers.get("Connection") or "").lower():
        return "expected 'Connection: Upgrade'"
    if (headers.get("Sec-WebSocket-Version") or "") != "13":
        return "expected 'Sec-WebSocket-Version: 13'"
    key = headers.get("Sec-WebSocket-Key") or ""
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return "Sec-WebSocket-Key must be 16 bytes in base64"
    except ValueError:
        return "Sec-WebSocket-Key must be 16 bytes in base64"
    return None


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame (server to client)."""
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    return head + payload


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the client closed the connection")
        data += chunk
    return data


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """(opcode, unmasked payload) of the next client frame; ConnectionError when the
    client is gone or breaks the protocol (unmasked or oversized frames)."""
    b0, b1 = _read_exact(sock, 2)
    if not b1 & 0x80:
        raise ConnectionError("client frames must be masked")
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack(">H", _read_exact(sock, 2))
    elif n == 127:
        (n,) = struct.unpack(">Q", _read_exact(sock, 8))
    if n > MAX_CLIENT_FRAME:
        raise ConnectionError("client frame too large")
    mask = _read_exact(sock, 4)
    data = _read_exact(sock, n)
    return b0 & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))
