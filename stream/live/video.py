"""The live view's H.264: the shared encoder's packets as fragmented MP4, per source,
for viewers on the WebSocket (``/live``).

``VideoFeed`` is a consumer of the output stage's ``EncoderPool``
(``stream.sinks.encode``): it wants a source's packets only while a viewer watches
it over H.264, asks for a keyframe when a viewer joins (so the picture starts at
once), and keeps per source the init segment and the fragments since the last
keyframe. A viewer takes, per source, the init segment when its stream is new to
it, then every fragment after its cursor; a viewer that fell a whole keyframe
interval behind jumps to the latest keyframe (the page then jumps to the live
edge). Nothing waits for a slow viewer and nothing grows with it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from stream.live import fmp4
from stream.sinks.encode import EncodedPacket

log = logging.getLogger(__name__)

MAX_FRAGMENTS = 300  # per source: a keyframe interval this long asks the encoder for a keyframe


@dataclass(frozen=True)
class Fragment:
    """One frame as moof+mdat. index: counts the source's fragments from 1 across streams."""

    index: int
    data: bytes
    seq: int
    capture_ns: int
    keyframe: bool


@dataclass
class _Video:
    viewers: int = 0
    generation: int = 0  # of the stream in ``init`` (0: none yet)
    init: bytes = b""
    codec: str = ""
    fragments: list[Fragment] = field(default_factory=list)  # the last keyframe and what followed
    count: int = 0
    stream_frames: int = 0


@dataclass
class Cursor:
    """What one viewer has of one source: the stream generation and the next fragment index."""

    generation: int = 0
    next_index: int = 0


@dataclass(frozen=True)
class Message:
    """What to send a viewer: kind 'init' (data = init segment, codec set) or 'media'."""

    source: str
    kind: str
    data: bytes
    codec: str = ""
    seq: int = 0
    capture_ns: int = 0
    keyframe: bool = False


class VideoFeed:
    """Per-source fMP4 for H.264 viewers (see module doc).

    sources: the served source ids (``set_sources`` changes them at runtime).
    request_keyframe: asks the encoder for a keyframe of a source (set when the feed is
    attached to a pool). notify: called after every new fragment (wakes the viewers'
    threads)."""

    key_interval_s = 2.0  # live viewers join on a requested keyframe; this only bounds a late join
    queue_size = 2  # frames for the encoder: a deeper queue would only add latency

    def __init__(self, sources: Sequence[str], notify: Callable[[], None]) -> None:
        self._videos = {s: _Video() for s in sources}
        self._served = frozenset(sources)
        self._lock = threading.Lock()
        self._notify = notify
        self.request_keyframe: Callable[[str], None] = lambda source: None

    def set_sources(self, sources: Sequence[str]) -> None:
        """The run's sources changed at runtime (the control API): a new one can be watched
        from now on; a removed one is let go once no viewer watches it (one still on it keeps
        it until it leaves)."""
        with self._lock:  # swapped whole: the encoder thread reads it without the lock
            self._served = frozenset(sources)
            self._videos = {
                **{s: v for s, v in self._videos.items() if v.viewers > 0},
                **{s: self._videos.get(s) or _Video() for s in sources},
            }

    # ---- viewers (HTTP threads) ---------------------------------------------------

    def watch(self, source: str) -> bool:
        """A viewer started watching ``source``: True, pair it with ``unwatch``; False for a
        source this feed does not serve (removed meanwhile): nothing comes for it."""
        with self._lock:
            v = self._videos.get(source)
            if v is None:
                return False
            v.viewers += 1
        self.request_keyframe(source)
        return True

    def unwatch(self, source: str) -> None:
        with self._lock:
            v = self._videos.get(source)
            if v is None:
                return
            v.viewers -= 1
            if v.viewers == 0 and source not in self._served:  # removed: its last viewer left
                self._videos = {s: x for s, x in self._videos.items() if s != source}

    def viewers(self, source: str) -> int:
        v = self._videos.get(source)
        return v.viewers if v is not None else 0

    def take(self, sources: Sequence[str], cursors: dict[str, Cursor]) -> list[Message]:
        """Everything new for a viewer of ``sources`` since its ``cursors`` (updated in place)."""
        out: list[Message] = []
        with self._lock:
            for s in sources:
                v = self._videos.get(s)
                if v is None or not v.generation or not v.fragments:
                    continue
                c = cursors.setdefault(s, Cursor())
                if c.generation != v.generation:
                    out.append(Message(s, "init", v.init, codec=v.codec))
                    c.generation, c.next_index = v.generation, v.fragments[0].index
                elif c.next_index < v.fragments[0].index:  # fell behind a whole keyframe interval
                    c.next_index = v.fragments[0].index
                first = v.fragments[0].index
                for f in v.fragments[max(0, c.next_index - first) :]:
                    out.append(Message(s, "media", f.data, seq=f.seq, capture_ns=f.capture_ns, keyframe=f.keyframe))
                c.next_index = v.fragments[-1].index + 1
        return out

    # ---- the encoder's side (stream.sinks.encode.PacketConsumer) ------------------------

    def wants_packets(self, source: str) -> bool:
        v = self._videos.get(source)
        return v is not None and v.viewers > 0

    def keyframe_due(self, source: str, pts: int, time_base: Fraction) -> bool:
        return False

    def on_packet(self, packet: EncodedPacket) -> None:
        info = packet.info
        v = self._videos.get(info.source)
        if v is None:
            return
        if v.viewers == 0:  # the encode runs for another sink: build nothing; a viewer restarts on a keyframe
            if v.generation:
                with self._lock:
                    v.generation, v.fragments = 0, []
            return
        if v.generation != info.generation:
            if not packet.keyframe:
                self.request_keyframe(info.source)
                return
            init = fmp4.init_segment(info.width, info.height, info.time_base, info.extradata)
            codec = fmp4.codec_string(info.extradata)
            with self._lock:
                v.generation, v.init, v.codec, v.fragments, v.stream_frames = info.generation, init, codec, [], 0
        v.stream_frames += 1
        data = fmp4.media_segment(
            v.stream_frames,
            packet.pts * info.time_base.numerator,
            packet.duration * info.time_base.numerator,
            fmp4.avcc_sample(packet.data),
            keyframe=packet.keyframe,
        )
        with self._lock:
            v.count += 1
            fragment = Fragment(v.count, data, packet.header.seq, packet.header.capture_ns, packet.keyframe)
            if packet.keyframe:
                v.fragments = [fragment]
            else:
                v.fragments.append(fragment)
            long_gop = len(v.fragments) >= MAX_FRAGMENTS
        if long_gop:  # bounded memory: the next frame starts a new keyframe interval
            self.request_keyframe(info.source)
        self._notify()

    def on_stream_end(self, source: str, why: str) -> None:
        """The stream ended (new size, source restarted, end of stream): its next stream
        starts with a new init segment."""
        v = self._videos.get(source)
        if v is not None:
            with self._lock:
                v.generation, v.fragments = 0, []
