"""Wire messages between stages, and their encoding.

A frame travels as a multipart ZeroMQ message::

    [topic = source id (utf-8)] [header (msgpack)] [array 0 bytes] [array 1 bytes] …

The header is a tagged msgspec struct (``FrameHeader``, ``EndOfStream``,
``Reset``), validated on decode; arrays travel as raw buffers whose dtype and
shape are in the header (``ArraySpec``), so a receiver gets numpy views on the
received frames without copying. Only plain numeric dtypes are accepted: no
object arrays, nothing is ever unpickled.

Control traffic between a stage and the supervisor (``Heartbeat``,
``RunReport``, ``Control``) uses the same codec on its own sockets.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import msgspec
import numpy as np

from stream.errors import ProtocolError

SCHEMA_VERSION = 1
# Frame-age histogram bucket bounds (seconds), Prometheus style (le=…, then +Inf).
AGE_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# dtypes allowed on the wire (numpy .str form without byte order handled below)
_MAX_DIMS = 8  # no array on the wire has more dimensions
_WIRE_DTYPES = {"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8", "b1"}


class ArraySpec(msgspec.Struct, frozen=True, array_like=True):
    """dtype: numpy kind+size code (e.g. 'f4', 'u1'); shape in elements."""

    name: str
    dtype: str
    shape: tuple[int, ...]


class PixelRef(msgspec.Struct, frozen=True, array_like=True):
    """Where a frame's pixels live in its source's shared-memory ring.

    ring: ring file name (under the run's shm dir); slot: index in the ring;
    generation: the slot's (even) generation when written — a reader that sees
    another value knows the slot was overwritten. height, width, channels: the
    image shape (H×W×C uint8, BGR).
    """

    ring: str
    slot: int
    generation: int
    height: int
    width: int
    channels: int = 3


class Credit(msgspec.Struct, frozen=True, array_like=True):
    """A live frame's place in its source's in-flight budget while its pixels travel
    inline: the ring slot the capture reserved for it (``FrameRing.reserve``, no pixels
    in it). ring, slot, generation: as in ``PixelRef``. Released like a slot
    (``FrameRing.release``) by the last stage or whichever stage drops the frame."""

    ring: str
    slot: int
    generation: int


class FrameHeader(msgspec.Struct, frozen=True, tag="frame"):
    """Identity and timing of one frame.

    pts: presentation timestamp in time_base units (time_base = num/den seconds).
    capture_ns: wall-clock time (time.time_ns) when the frame was captured.
    stamps: (stage name, time.time_ns()) appended by every stage on output, so
        per-hop and end-to-end latency can be measured on every frame.
    pixels: shared-memory reference, or None when pixels travel inline as the
        array named "image" (tcp transport) or the frame has no pixels.
    credit: with inline pixels, a live frame's in-flight credit (``Credit``); None
        otherwise, and once the frame left its source's host (stream.split).
    arrays: specs of the array parts that follow the header, in order.
    random_weights: True when any model on the path ran with random weights;
        every output shows this.
    """

    source: str
    seq: int
    pts: int
    time_base: tuple[int, int]
    capture_ns: int
    stamps: tuple[tuple[str, int], ...] = ()
    pixels: PixelRef | None = None
    credit: Credit | None = None
    arrays: tuple[ArraySpec, ...] = ()
    random_weights: bool = False
    version: int = SCHEMA_VERSION


class EndOfStream(msgspec.Struct, frozen=True, tag="eos"):
    """No more frames from ``source``. frames: how many frames the capture produced
    (seq 0..frames-1); reason: 'end of input' | 'stopped' | 'failed: …'."""

    source: str
    frames: int
    reason: str
    version: int = SCHEMA_VERSION


class Reset(msgspec.Struct, frozen=True, tag="reset"):
    """The source restarted with possibly different geometry: per-source state
    (tracker, masks, recorder segment) must start fresh from ``seq``."""

    source: str
    seq: int
    reason: str
    version: int = SCHEMA_VERSION


class DropRecord(msgspec.Struct, frozen=True, array_like=True):
    """Frames a stage dropped on purpose: seq in [first, last] of ``source``."""

    source: str
    reason: str
    first: int
    last: int


class Heartbeat(msgspec.Struct, frozen=True, tag="hb"):
    """Sent by every stage process to the supervisor about once a second.

    Counters are cumulative since the process started; ``drops`` lists only the
    drops since the previous heartbeat. latency_ms: (p50, p99) of this stage's
    per-frame processing time over the last window. last_seq: newest seq seen
    per source. state: 'loading' (building the stage: imports, models) | 'starting'
    (warming up) | 'running' | 'done' | 'failed'. busy_s: how long
    the stage has been inside its current batch (0 when waiting for input).
    age_buckets, age_sum_s (last stage only): per source, cumulative counts of frame
    age (output time − capture time) at or below each of ``AGE_BUCKETS_S`` (then +Inf),
    and the sum of ages in seconds, since the process started. objects (last stage only):
    per source, (objects, objects with a mask) on the newest frame that reached the end.
    roster_gen: the newest source roster (``Control('roster')``) this stage applied; gone:
    sources removed at runtime whose end of stream has passed this stage (their state is freed).
    sinks (last stage only): per sink, per source, frames by outcome ("written", or a
    drop reason such as "queue full"), cumulative since the process started.
    """

    stage: str
    pid: int
    time_ns: int
    state: str
    frames_in: int = 0
    frames_out: int = 0
    errors: int = 0
    drops: tuple[DropRecord, ...] = ()
    last_seq: dict[str, int] = {}
    latency_ms: tuple[float, float] = (0.0, 0.0)
    source_state: dict[str, str] = {}
    detail: str = ""
    busy_s: float = 0.0
    age_buckets: dict[str, tuple[int, ...]] = {}
    age_sum_s: dict[str, float] = {}
    objects: dict[str, tuple[int, int]] = {}
    roster_gen: int = 0
    gone: tuple[str, ...] = ()
    sinks: dict[str, dict[str, dict[str, int]]] = {}
    version: int = SCHEMA_VERSION


LOADING = "loading"
LOADING_STATES = (LOADING, "starting")  # Heartbeat.state of a stage not ready yet

class SourceReport(msgspec.Struct, frozen=True):
    """What the last stage saw of one source. received: frames that arrived;
    received_ranges: (first, last) seq ranges that arrived, in order, complete for
    seqs >= ranges_from (older ranges are forgotten on long runs); latency_ms:
    end-to-end capture→output (p50, p99)."""

    source: str
    frames: int
    received: int
    received_ranges: tuple[tuple[int, int], ...]
    out_of_order: int
    latency_ms: tuple[float, float]
    hop_ms: dict[str, tuple[float, float]]
    first_ns: int
    last_ns: int
    ranges_from: int = 0


class RunReport(msgspec.Struct, frozen=True, tag="report"):
    """Sent once by the last stage when every source ended. sinks: per sink, per source,
    frames by outcome once the sinks are closed (see ``Heartbeat.sinks``)."""

    stage: str
    sources: tuple[SourceReport, ...]
    sinks: dict[str, dict[str, dict[str, int]]] = {}
    version: int = SCHEMA_VERSION


class RosterEntry(msgspec.Struct, frozen=True, array_like=True):
    """One source of the run as the stages need it: its id, whether it is live, and its
    ``stale_after_s`` (None: off)."""

    source: str
    live: bool = False
    stale_after_s: float | None = None


class Control(msgspec.Struct, frozen=True, tag="ctl"):
    """Supervisor → stages. command: 'drain' (forward end-of-stream for every
    source not yet ended, then exit) | 'stop' (exit now) | 'sources' (``sources``:
    source id → capture state, for outputs that show it, e.g. the live view) |
    'roster' (``roster``: every source of the run now, as of ``generation``; a source
    added at runtime is accepted from now on, one removed is freed at its end of stream)."""

    command: str
    sources: dict[str, str] = msgspec.field(default_factory=dict)
    roster: tuple[RosterEntry, ...] = ()
    generation: int = 0
    version: int = SCHEMA_VERSION


StreamMessage = FrameHeader | EndOfStream | Reset
ControlMessage = Heartbeat | RunReport | Control

_stream_decoder = msgspec.msgpack.Decoder(StreamMessage)
_control_decoder = msgspec.msgpack.Decoder(ControlMessage)
_encoder = msgspec.msgpack.Encoder()


def now_ns() -> int:
    return time.time_ns()


@dataclass(frozen=True)
class Frame:
    """A frame in a stage: its header, its named arrays and, when attached, its image.

    arrays: read-only numpy arrays by name (e.g. "boxes" (N,4) float32 XYXY
        pixels, "scores" (N,), "class_ids" (N,) int32, "track_ids" (N,) int64).
    image: H×W×3 uint8 BGR view of the pixels (shared memory or inline), or None.
    Stages never mutate a Frame: ``evolve`` returns a new one.
    """

    header: FrameHeader
    arrays: Mapping[str, np.ndarray] = field(default_factory=lambda: MappingProxyType({}))
    image: np.ndarray | None = None

    @property
    def source(self) -> str:
        return self.header.source

    @property
    def seq(self) -> int:
        return self.header.seq

    def evolve(self, *, stamp: str | None = None, image: Any = ..., **arrays: np.ndarray) -> Frame:
        """A new Frame with ``arrays`` added or replaced, optionally stamped by a stage."""
        merged = {**self.arrays, **{k: _readonly(v) for k, v in arrays.items()}}
        header = self.header
        if stamp is not None:
            header = msgspec.structs.replace(header, stamps=(*header.stamps, (stamp, now_ns())))
        return Frame(header, MappingProxyType(merged), self.image if image is ... else image)

    def with_header(self, **changes: Any) -> Frame:
        return Frame(msgspec.structs.replace(self.header, **changes), self.arrays, self.image)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def encode_frame(frame: Frame, *, inline_image: bool = False, image_codec: str = "raw",
                 jpeg_quality: int = 90) -> list[Any]:
    """Frame → multipart parts. Arrays are sent as buffers (zero copy).

    inline_image: the pixels travel in the message, as the array "image" (H×W×C uint8,
    image_codec "raw") or "image.jpeg" (1-D uint8 JPEG bytes at ``jpeg_quality`` 1-100,
    image_codec "jpeg"; ``decode`` turns it back into H×W×3 BGR)."""
    arrays = dict(frame.arrays)
    if inline_image and frame.image is not None:
        if image_codec == "jpeg":
            arrays[JPEG_IMAGE] = _jpeg_encode(frame.image, jpeg_quality)
        elif image_codec == "raw":
            arrays["image"] = frame.image
        else:
            raise ProtocolError(f"unknown image codec {image_codec!r} (allowed: raw, jpeg)")
    specs = []
    buffers = []
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        code = a.dtype.str[1:]
        if code not in _WIRE_DTYPES:
            raise ProtocolError(f"array {name!r} has dtype {a.dtype}, which cannot go on the wire")
        specs.append(ArraySpec(name, code, tuple(int(s) for s in a.shape)))
        buffers.append(memoryview(a).cast("B") if a.size else b"")  # type: ignore[arg-type]
    header = msgspec.structs.replace(frame.header, arrays=tuple(specs))
    if inline_image:
        header = msgspec.structs.replace(header, pixels=None)
    return [frame.header.source.encode(), _encoder.encode(header), *buffers]


def encode_message(msg: EndOfStream | Reset) -> list[bytes]:
    return [msg.source.encode(), _encoder.encode(msg)]


def decode(parts: list[Any]) -> Frame | EndOfStream | Reset:
    """Multipart parts (bytes or zmq.Frame) → Frame (arrays as read-only views) or event."""
    if len(parts) < 2:
        raise ProtocolError(f"message has {len(parts)} parts, expected at least 2 (topic, header)")
    try:
        msg = _stream_decoder.decode(_buffer(parts[1]))
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"bad header: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"undecodable header: {exc}") from exc
    if msg.version != SCHEMA_VERSION:
        raise ProtocolError(f"schema version {msg.version}, this build speaks {SCHEMA_VERSION}")
    if not isinstance(msg, FrameHeader):
        return msg
    if len(parts) - 2 != len(msg.arrays):
        raise ProtocolError(f"header lists {len(msg.arrays)} arrays but {len(parts) - 2} parts followed")
    arrays: dict[str, np.ndarray] = {}
    for spec, part in zip(msg.arrays, parts[2:], strict=True):
        if spec.dtype not in _WIRE_DTYPES:
            raise ProtocolError(f"array {spec.name!r}: dtype {spec.dtype!r} not allowed")
        dtype = np.dtype("<" + spec.dtype) if spec.dtype not in ("u1", "i1", "b1") else np.dtype(spec.dtype)
        buf = _buffer(part)
        if len(spec.shape) > _MAX_DIMS or any(d < 0 for d in spec.shape):
            raise ProtocolError(f"array {spec.name[:64]!r}: shape {spec.shape[:_MAX_DIMS + 1]} is not an array shape")
        expected = math.prod(spec.shape) * dtype.itemsize  # Python ints: (2^32, 2^32) does not wrap to 0
        if len(buf) != expected:
            raise ProtocolError(f"array {spec.name[:64]!r}: {len(buf)} bytes, shape {spec.shape} needs {expected}")
        try:
            a = np.frombuffer(buf, dtype=dtype).reshape(spec.shape)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. (2^63, 0): a dimension numpy cannot hold
            raise ProtocolError(f"array {spec.name[:64]!r}: shape {spec.shape}: {exc}") from None
        arrays[spec.name] = a
    image = arrays.pop("image", None)
    jpeg = arrays.pop(JPEG_IMAGE, None)
    if jpeg is not None:
        image = _jpeg_decode(jpeg, msg)
    header = msgspec.structs.replace(msg, arrays=())
    return Frame(header, MappingProxyType(arrays), image)


JPEG_IMAGE = "image.jpeg"  # array name of an inline JPEG-coded image


def _jpeg_encode(image: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ProtocolError(f"JPEG needs an H×W×3 or H×W×1 uint8 image, got {image.dtype} {image.shape}")
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ProtocolError(f"JPEG encoding of a {image.shape} image failed")
    return np.asarray(data, dtype=np.uint8).reshape(-1)


def _jpeg_decode(data: np.ndarray, header: FrameHeader) -> np.ndarray:
    import cv2

    if data.ndim != 1 or data.size == 0:
        raise ProtocolError(f"source={header.source} seq={header.seq}: {JPEG_IMAGE} must be non-empty 1-D bytes")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ProtocolError(f"source={header.source} seq={header.seq}: {JPEG_IMAGE} is not a decodable JPEG")
    if image.ndim == 2:
        image = image[:, :, None]
    image.flags.writeable = False
    return image  # type: ignore[no-any-return]


def encode_control(msg: Heartbeat | RunReport | Control) -> bytes:
    return _encoder.encode(msg)


def decode_control(data: Any) -> Heartbeat | RunReport | Control:
    try:
        msg = _control_decoder.decode(_buffer(data))
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ProtocolError(f"bad control message: {exc}") from exc
    if msg.version != SCHEMA_VERSION:
        raise ProtocolError(f"control schema version {msg.version}, this build speaks {SCHEMA_VERSION}")
    return msg


def _buffer(part: Any) -> Any:
    if isinstance(part, bytes | bytearray | memoryview):
        return part
    return part.buffer  # zmq.Frame
