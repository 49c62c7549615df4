"""One H.264 encode per source, shared by every sink that shows that source's video.

The record sink (MP4 segments), the re-stream sink (RTSP push) and the live view's
H.264 viewers (fragmented MP4 over a WebSocket) do not encode: they are
*consumers* of an ``EncoderPool``, which is itself a sink of the output stage. Per
source the pool runs one libx264 (or NVENC) encoder on one background thread and
hands every packet to every consumer, so a picture is drawn once and encoded once
however many sinks and viewers show it.

- **Encode only when used**: the pool's ``needs_picture(source)`` is true only while
  a consumer ``wants_packets(source)`` (the recorder records it, the re-stream pushes
  it, a live viewer watches it over H.264), so the output stage draws and the pool
  encodes nothing otherwise.
- **Low latency**: no B-frames (packets come out in presentation order, one per
  frame), ``tune=zerolatency``, SPS/PPS in the extradata (``global_header``: the
  MP4 ``avcC``, the RTSP SDP and the browser's init segment all carry them).
- **Keyframes**: the first frame of a stream; then at most every
  ``min(consumer.key_interval_s)`` seconds of video; when a consumer asks for one
  (``request_keyframe``: a viewer joins, the re-stream reconnects) or says one is
  due before a frame is encoded (``keyframe_due``: a record segment rotates).
- **Timeline**: packet pts are the source's pts (its time base) made strictly
  increasing: a pts that repeats or steps back is re-stamped one frame interval
  after the previous one (``restamped``) and later frames keep their spacing.
- **Streams**: a change of picture size or time base, ``reset(source)``,
  ``end_source`` and ``close`` end the encoder's stream: it is flushed, every
  consumer gets ``on_stream_end``, and the next frame opens a new one (a new
  ``StreamInfo.generation``, starting on a keyframe). A source removed at runtime
  (``forget_source``) lets its thread and codec go once its stream has ended.
- **Never blocks**: ``write`` copies the picture into a bounded queue per source;
  when it is full the frame is dropped for every consumer (counted, logged once a
  second). Consumers' callbacks run on the encoder thread and must not block.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import av
import numpy as np

from stream.messages import Frame, FrameHeader
from stream.sections.sinks import EncoderConfig
from stream.sinks.background import QUEUE_FULL, BackgroundWorker
from stream.sinks.h264 import add_h264_stream, check_image, even_size, resolve_codec, video_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamInfo:
    """One opened encoder stream of a source. width, height: even pixels; time_base:
    seconds per pts unit; extradata: SPS and PPS (Annex B); generation: counts the
    source's streams from 1; template: the encoder's ``av`` stream, for
    ``OutputContainer.add_stream_from_template`` (read-only)."""

    source: str
    width: int
    height: int
    time_base: Fraction
    extradata: bytes
    codec: str
    generation: int
    template: Any


@dataclass(frozen=True)
class EncodedPacket:
    """One encoded frame. data: the access unit in Annex B (start codes); pts: on the
    stream's strictly increasing timeline (``info.time_base`` units); duration: the
    expected pts step to the next frame; header, arrays: the frame's identity and
    objects (for sidecars); restamped: the source's pts did not move forward."""

    info: StreamInfo
    data: bytes
    pts: int
    duration: int
    keyframe: bool
    header: FrameHeader
    arrays: Mapping[str, np.ndarray]
    restamped: bool


class PacketConsumer(Protocol):
    """A sink that takes a pool's packets. ``wants_packets`` runs on the pipeline thread;
    the rest on the source's encoder thread, in order, and must not block."""

    key_interval_s: float  # the longest this consumer accepts between keyframes, seconds of video
    queue_size: int  # frames it accepts waiting for the encoder

    def wants_packets(self, source: str) -> bool: ...

    def keyframe_due(self, source: str, pts: int, time_base: Fraction) -> bool: ...

    def on_packet(self, packet: EncodedPacket) -> None: ...

    def on_stream_end(self, source: str, why: str) -> None: ...


@dataclass(frozen=True)
class _Item:
    header: FrameHeader
    arrays: Mapping[str, np.ndarray]
    image: np.ndarray  # a private copy


_RESET = "reset"
_END = "end"


class _SourceEncoder:
    """One source's encoder; everything but ``__init__`` and ``request_keyframe`` runs on its thread."""

    def __init__(self, pool: EncoderPool, source: str, generation: int = 0) -> None:
        self.pool, self.source = pool, source
        self.container: Any = None
        self.stream: Any = None
        self.info: StreamInfo | None = None
        self.generation = generation  # streams opened so far (a source added again goes on counting)
        self.frames = 0
        self.last_pts = 0
        self.last_key: int | None = None
        self._offset = 0
        self._last_src: int | None = None
        self._steps: deque[int] = deque(maxlen=16)  # the source's recent forward pts steps
        self._inflight: deque[tuple[_Item, int, bool]] = deque()  # frames in the encoder, in order
        self.key_requested = threading.Event()
        self.retired = False  # its source was removed: the thread has ended, only the counts remain
        self.errors = 0
        self._last_error_log = -1e9
        size = max([c.queue_size for c in pool.consumers] or [4])
        self.worker = BackgroundWorker(f"h264 {source}", self.handle, maxsize=size, on_stop=self.close_stream)

    def handle(self, item: _Item | str) -> None:
        if isinstance(item, str):
            self.close_stream("the source restarted" if item == _RESET else "end of stream")
            return
        h = item.header
        width, height = even_size(item.image.shape[1], item.image.shape[0])
        tb = Fraction(*h.time_base)
        info = self.info
        if info is not None and ((width, height) != (info.width, info.height) or tb != info.time_base):
            log.debug("source=%s seq=%d h264: picture size or time base changed", h.source, h.seq)
            self.close_stream("picture size changed")
        try:
            if self.info is None:
                self.open(width, height, tb)
            assert self.info is not None
            pts, restamped = self._timeline(h.pts, tb)
            key = self._keyframe(pts, tb)
            self._inflight.append((item, pts, restamped))
            self.frames += 1
            packets = self.stream.encode(video_frame(item.image, pts, tb, keyframe=key))
        except (av.FFmpegError, OSError, ValueError) as exc:
            self.failed(h, exc)
            return
        self._fan_out(packets)

    def failed(self, h: FrameHeader, exc: BaseException) -> None:
        """The encoder could not open or encode: log (at most every 10 s), drop the frame,
        end the stream (the next frame opens a new one)."""
        self.errors += 1
        now = time.monotonic()
        if now - self._last_error_log >= 10.0:
            log.error(
                "source=%s seq=%d h264: cannot encode with %s: %s (%d frame(s) failed so far)",
                h.source, h.seq, self.pool.codec, exc, self.errors,
            )
            self._last_error_log = now
        self._inflight.clear()
        if self.info is not None:
            self.close_stream("the encoder failed")
        elif self.container is not None:
            self.container, self.stream = None, None

    def _timeline(self, src_pts: int, tb: Fraction) -> tuple[int, bool]:
        if self._last_src is not None and src_pts > self._last_src:
            self._steps.append(src_pts - self._last_src)
        self._last_src = src_pts
        pts = src_pts + self._offset
        if self.frames == 0 or pts > self.last_pts:
            self.last_pts = pts
            return pts, False
        self._offset += self.last_pts + self.step(tb) - pts
        self.last_pts += self.step(tb)
        return self.last_pts, True

    def step(self, tb: Fraction) -> int:
        """One frame interval in pts units: the median of the source's recent steps (else 1/30 s)."""
        return int(np.median(self._steps)) if self._steps else max(1, round(1 / (30 * tb)))

    def _keyframe(self, pts: int, tb: Fraction) -> bool:
        every = min([c.key_interval_s for c in self.pool.consumers] or [1.0])
        key = self.last_key is None or float((pts - self.last_key) * tb) >= every - 1e-9
        if self.key_requested.is_set():
            self.key_requested.clear()
            key = True
        for c in self.pool.consumers:
            try:
                key = c.keyframe_due(self.source, pts, tb) or key
            except Exception as exc:  # noqa: BLE001 — a failing consumer must not stop the encode
                log.error("source=%s h264: %s.keyframe_due failed: %s", self.source, type(c).__name__, exc)
        if key:
            self.last_key = pts
        return key

    def _fan_out(self, packets: list[Any]) -> None:
        info = self.info
        assert info is not None
        for packet in packets:
            if not self._inflight:
                log.warning("source=%s h264: a packet without a frame; dropped", self.source)
                continue
            item, pts, restamped = self._inflight.popleft()
            out = EncodedPacket(
                info, bytes(packet), pts, self.step(info.time_base), bool(packet.is_keyframe),
                item.header, item.arrays, restamped,
            )
            for c in self.pool.consumers:
                try:
                    c.on_packet(out)
                except Exception as exc:  # noqa: BLE001
                    log.error(
                        "source=%s seq=%d h264: %s failed to take a packet: %s",
                        self.source, item.header.seq, type(c).__name__, exc,
                    )

    def open(self, width: int, height: int, tb: Fraction) -> None:
        container = av.open(io.BytesIO(), "w", format="null")
        stream = add_h264_stream(container, self.pool.codec, width, height, tb, self.pool.encoder)
        stream.codec_context.flags |= av.codec.context.Flags.global_header  # SPS/PPS in the extradata
        container.start_encoding()
        self.container, self.stream = container, stream
        self.generation += 1
        self.info = StreamInfo(
            self.source, width, height, tb, bytes(stream.codec_context.extradata or b""),
            self.pool.codec, self.generation, stream,
        )
        self.frames, self.last_key, self._offset, self._last_src = 0, None, 0, None
        self.pool.opens += 1
        log.info("source=%s h264: encoding %dx%d (%s)", self.source, width, height, self.pool.codec)

    def close_stream(self, why: str = "closed") -> None:
        if self.info is None:
            return
        try:
            self._fan_out(self.stream.encode(None))
            self.container.close()
        except (av.FFmpegError, OSError, ValueError) as exc:
            log.debug("source=%s h264: closing the encoder: %s", self.source, exc)
        self._inflight.clear()
        self.info, self.container, self.stream = None, None, None
        for c in self.pool.consumers:
            try:
                c.on_stream_end(self.source, why)
            except Exception as exc:  # noqa: BLE001
                log.error("source=%s h264: %s failed at the end of a stream: %s", self.source, type(c).__name__, exc)


class EncoderPool:
    """A sink that encodes each source's pictures once and feeds ``consumers`` (see module doc).

    annotated: encode the drawn picture (True) or the source's pixels (False).
    encoder: the settings; codec: the encoder name (None resolves ``encoder.codec``).
    """

    name = "h264"

    def __init__(self, *, annotated: bool, encoder: EncoderConfig, codec: str | None = None) -> None:
        self.wants_annotated = annotated
        self.encoder = encoder
        self.codec = codec or resolve_codec(encoder.codec, "h264")
        self.consumers: list[PacketConsumer] = []
        self._sources: dict[str, _SourceEncoder] = {}
        self.opens = 0

    def add_consumer(self, consumer: PacketConsumer) -> None:
        self.consumers.append(consumer)

    @classmethod
    def attach(
        cls,
        consumer: PacketConsumer,
        shared: EncoderPool | None,
        *,
        annotated: bool,
        encoder: EncoderConfig,
        codec: str | None = None,
        label: str = "h264",
    ) -> PoolAttachment:
        """``consumer`` on the output stage's ``shared`` pool, or (None: the sink was built alone,
        as in tests and benchmarks) on a pool of its own with these settings, which the sink
        then feeds (``PoolAttachment``). codec: its own pool's encoder name; None resolves
        ``encoder.codec`` ('auto' probes NVENC once; ``label`` names the sink in that log line)."""
        pool = shared if shared is not None else cls(
            annotated=annotated, encoder=encoder, codec=codec or resolve_codec(encoder.codec, label)
        )
        pool.add_consumer(consumer)
        return PoolAttachment(pool, own=shared is None)

    def _wanted(self, source: str) -> bool:
        return any(c.wants_packets(source) for c in self.consumers)

    def needs_picture(self, source: str) -> bool:
        """True while a consumer wants ``source``'s packets and its queue has room."""
        enc = self._sources.get(source)
        return self._wanted(source) and (enc is None or not enc.worker.would_drop())

    def write(self, frame: Frame) -> None:
        if frame.image is None or not self._wanted(frame.source):
            return
        check_image(frame.image, self.name, frame.source, frame.seq)
        enc = self._sources.get(frame.source)
        if enc is None or enc.retired:  # new, or added again after its removal
            enc = self._sources[frame.source] = _SourceEncoder(self, frame.source, enc.generation if enc else 0)
        if enc.worker.would_drop():  # don't copy pixels only to drop them
            enc.worker.count_drop(frame.source, frame.seq, "queue full, the encoder is behind", reason=QUEUE_FULL)
            return
        enc.worker.offer(_Item(frame.header, frame.arrays, np.array(frame.image, copy=True)), frame.source, frame.seq)

    def request_keyframe(self, source: str) -> None:
        """The next frame of ``source`` is encoded as a keyframe (thread-safe)."""
        enc = self._sources.get(source)
        if enc is not None:
            enc.key_requested.set()

    def dropped(self, source: str) -> int:
        enc = self._sources.get(source)
        return enc.worker.dropped if enc is not None else 0

    def drops(self, source: str) -> dict[str, int]:
        """Frames of ``source`` the encoder never got, by reason ("queue full")."""
        enc = self._sources.get(source)
        return dict(enc.worker.drops) if enc is not None else {}

    def errors(self, source: str) -> int:
        """Frames of ``source`` the encoder failed on."""
        enc = self._sources.get(source)
        return enc.errors if enc is not None else 0

    def reset(self, source: str) -> None:
        if source in self._sources:
            self._sources[source].worker.put_control(_RESET)

    def end_source(self, source: str) -> None:
        if source in self._sources:
            self._sources[source].worker.put_control(_END)

    def forget_source(self, source: str) -> None:
        """A source removed at runtime has ended (``end_source`` came first): its encoder
        encodes what is queued, ends its stream (every consumer's ``on_stream_end``: the
        last record segment is final), closes its codec and its thread ends, here, before
        this returns. Its counts stay (the run's summary lists removed sources); adding
        the source again starts a new encoder."""
        enc = self._sources.get(source)
        if enc is not None and not enc.retired:
            enc.retired = True
            enc.worker.close()

    def close(self) -> None:
        """Encode what is queued, flush every encoder and end its stream."""
        for enc in self._sources.values():
            if not enc.retired:
                enc.worker.close()

    def stats(self) -> dict[str, dict[str, int]]:
        """Per source: frames encoded in the current stream, frames dropped, streams opened."""
        return {
            s: {"frames": e.frames, "dropped": e.worker.dropped, "streams": e.generation}
            for s, e in self._sources.items()
        }


@dataclass(frozen=True)
class PoolAttachment:
    """A sink's place on an ``EncoderPool`` (``EncoderPool.attach``). ``own``: the pool is the
    sink's alone, so the sink hands it its frames and the stream's ends; on the output stage's
    shared pool the stage does that (the pool is one of its sinks) and these calls do nothing."""

    pool: EncoderPool
    own: bool

    def write(self, frame: Frame) -> None:
        if self.own:
            self.pool.write(frame)

    def reset(self, source: str) -> None:
        if self.own:
            self.pool.reset(source)

    def end_source(self, source: str) -> None:
        if self.own:
            self.pool.end_source(source)

    def close(self) -> None:
        if self.own:
            self.pool.close()


class EncoderPools:
    """The output stage's pools, one per (picture kind, encoder settings): sinks that ask
    for the same get the same pool, hence one encode per source."""

    def __init__(self) -> None:
        self._pools: dict[tuple[bool, str], EncoderPool] = {}

    def get(self, *, annotated: bool, encoder: EncoderConfig) -> EncoderPool:
        key = (annotated, encoder.model_dump_json())
        if key not in self._pools:
            self._pools[key] = EncoderPool(annotated=annotated, encoder=encoder)
        return self._pools[key]

    @property
    def pools(self) -> list[EncoderPool]:
        return list(self._pools.values())
