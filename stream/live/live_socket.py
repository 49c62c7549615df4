"""One H.264 viewer on the ``/live`` WebSocket, after the handshake: every selected
source's fragmented MP4 (binary messages, see ``video_message``) and object events
(text messages, the wall's JSON) until the viewer leaves or the hub closes."""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any

from stream.live import websocket
from stream.live.hub import LiveHub
from stream.live.video import Cursor, Message


def video_message(m: Message, now_ns: int) -> bytes:
    """One binary /live message: kind (1 init, 2 media), the source id (length-prefixed),
    then for init the codec (length-prefixed) and the init segment, for media the frame's
    seq (u32), its age in ms when sent (u32), flags (1 = keyframe) and the moof+mdat."""
    src = m.source.encode()
    if m.kind == "init":
        codec = m.codec.encode()
        return struct.pack(">BB", 1, len(src)) + src + struct.pack(">B", len(codec)) + codec + m.data
    age_ms = max(0, min(0xFFFFFFFF, (now_ns - m.capture_ns) // 1_000_000))
    head = struct.pack(">BB", 2, len(src)) + src + struct.pack(">IIB", m.seq & 0xFFFFFFFF, age_ms, m.keyframe)
    return head + m.data


def serve_viewer(
    hub: LiveHub, conn: socket.socket, out: Any, sources: Sequence[str], detail: Sequence[str], idle_s: float
) -> None:
    """Stream to one viewer on ``conn`` (``out``: its write file) until it goes. Its sources
    are watched over H.264 (the encoder runs and starts them on a keyframe), its detail
    sources' events carry masks; everything is let go when it leaves. idle_s: how often a
    quiet stream checks on the client (close, ping)."""
    watched = [s for s in sources if hub.video.watch(s)]
    for s in detail:
        hub.want_detail(s, True)
    hub.subscribe_events()
    cursors: dict[str, Cursor] = {}
    seen, events_after = -1, 0
    try:
        while not hub.closing:
            seen = hub.wait_updates(seen, idle_s)
            messages = hub.video.take(sources, cursors)
            events_after, events = hub.events_since(events_after, sources)
            if not messages and not events:
                if not _alive(conn, out):
                    break
                continue
            now = time.time_ns()
            frames = [websocket.frame(websocket.BINARY, video_message(m, now)) for m in messages]
            frames += [websocket.frame(websocket.TEXT, e) for e in events]
            out.write(b"".join(frames))
    except (OSError, ConnectionError):
        pass  # the viewer went away
    finally:
        hub.unsubscribe_events()
        for s in detail:
            hub.want_detail(s, False)
        for s in watched:
            hub.video.unwatch(s)


def _alive(conn: socket.socket, out: Any) -> bool:
    """Answer what the client sent (ping, close) without waiting; False once it is gone."""
    while True:
        try:
            readable, _, _ = select.select([conn], [], [], 0)
            if not readable:
                return True
            opcode, payload = websocket.read_frame(conn)
        except (OSError, ConnectionError):
            return False
        if opcode == websocket.CLOSE:
            try:
                out.write(websocket.frame(websocket.CLOSE, payload[:2]))
            except OSError:
                pass
            return False
        if opcode == websocket.PING:
            out.write(websocket.frame(websocket.PONG, payload))
