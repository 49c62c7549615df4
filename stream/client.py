"""Subscriber API for consumers of published objects and masks.

The publish sink (``stream.sinks.publish``) sends one message per frame on a
ZeroMQ PUB socket: ``[topic = source id (utf-8)][record (msgpack)]``. The record
is a msgspec struct tagged by its ``kind`` field:

``FrameRecord`` (kind "frame")::

    version        int      PUBLISH_SCHEMA_VERSION; a subscriber rejects other versions
    source         str      source id (= topic)
    seq            int      the frame's sequence number at capture (0, 1, …; frames
                            dropped in the pipeline leave gaps)
    pub_seq        int      this publisher's counter for the source (0, 1, …; a gap
                            here means records lost on the way to this subscriber)
    pts            int      presentation timestamp in time_base units
    time_base      [num, den]  seconds per pts unit = num/den
    capture_ns     int      wall clock (ns since the epoch) at capture
    publish_ns     int      wall clock when the record was sent
    random_weights bool     True: the models ran with random weights; not real detections
    width, height  int      frame size in pixels (0 when unknown: then no masks)
    objects        list of {track_id: int | null, class_id: int, class_name: str,
                            score: float, box: [x1, y1, x2, y2] float pixels,
                            mask: {"size": [H, W], "counts": str} COCO RLE of the
                            full frame | null, mask_kind: "keyframe" | "propagated"
                            | null, mask_age: frames since the keyframe | null}

``EndRecord`` (kind "end"): the source ended (version, source, pub_seq, last_seq).

Non-Python consumers decode the msgpack map directly; masks are standard COCO
RLE (``pycocotools.mask.decode``). In Python::

    with Subscriber("tcp://127.0.0.1:5560", sources=["cam1"]) as sub:
        for rec in sub:
            for obj in rec.objects:
                m = obj.mask()   # (H, W) bool, decoded on demand, or None
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import zmq

from stream import transport
from stream.errors import ProtocolError

log = logging.getLogger(__name__)

PUBLISH_SCHEMA_VERSION = 1


class Rle(msgspec.Struct, frozen=True):
    """COCO RLE of a full-frame mask: size [H, W], compressed column-major counts."""

    size: tuple[int, int]
    counts: str


class PublishedObject(msgspec.Struct, frozen=True):
    """One object. box: (x1, y1, x2, y2) float pixels in the source image.
    ``rle`` travels under the key "mask"; ``mask()`` decodes it."""

    class_id: int
    class_name: str
    score: float
    box: tuple[float, float, float, float]
    track_id: int | None = None
    rle: Rle | None = msgspec.field(default=None, name="mask")
    mask_kind: str | None = None
    mask_age: int | None = None

    def mask(self) -> np.ndarray | None:
        """(H, W) bool full-frame mask, or None when the record carries none."""
        if self.rle is None:
            return None
        from stream.masks.rle import decode

        return decode({"size": list(self.rle.size), "counts": self.rle.counts})


class FrameRecord(msgspec.Struct, frozen=True, tag="frame", tag_field="kind"):
    """The objects of one frame (see the module doc for every field)."""

    source: str
    seq: int
    pub_seq: int
    pts: int
    time_base: tuple[int, int]
    capture_ns: int
    publish_ns: int
    random_weights: bool
    width: int
    height: int
    objects: tuple[PublishedObject, ...] = ()
    version: int = PUBLISH_SCHEMA_VERSION


class EndRecord(msgspec.Struct, frozen=True, tag="end", tag_field="kind"):
    """The source ended; last_seq is the last frame seq published (-1: none)."""

    source: str
    pub_seq: int
    last_seq: int
    version: int = PUBLISH_SCHEMA_VERSION


Record = FrameRecord | EndRecord

_decoder = msgspec.msgpack.Decoder(Record)
_encoder = msgspec.msgpack.Encoder()


def encode_record(record: Record) -> bytes:
    return _encoder.encode(record)


def decode_record(payload: bytes | memoryview) -> Record:
    """msgpack bytes → record; ProtocolError when undecodable or of another version."""
    try:
        rec = _decoder.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ProtocolError(f"bad published record: {exc}") from exc
    if rec.version != PUBLISH_SCHEMA_VERSION:
        raise ProtocolError(
            f"published record has schema version {rec.version}, "
            f"this client speaks {PUBLISH_SCHEMA_VERSION}; upgrade the client"
        )
    return rec


@dataclass(frozen=True)
class CurveClient:
    """CURVE credentials of a subscriber: its own NAME.key_secret file (from
    ``stream keys gen``; its public key must be in the publisher's allow-list) and
    the publisher's public key file (SERVER.key)."""

    secret_key_file: Path
    server_public_key_file: Path


class Subscriber:
    """Receives published records from ``endpoint`` (e.g. tcp://127.0.0.1:5560), or from
    several publishers at once (a list: e.g. every shard of a sharded deployment).

    sources: source ids to receive (None: all). Iterating yields FrameRecord and
    EndRecord objects until ``close()``; ``recv(timeout_s)`` returns one or None.

    Counters per source (dicts keyed by source id):
        received: frame records received.
        gaps:     frames missing by ``seq`` (dropped anywhere: in the pipeline or on
                  the way here). A subscriber that joins late counts from its first record.
        lost:     records lost between the publisher and this subscriber (``pub_seq``
                  gaps: a slow subscriber at its high-water mark, a reconnect).
    rejected: records that did not decode or had another schema version (skipped).
    """

    def __init__(
        self,
        endpoint: str | Sequence[str],
        sources: Iterable[str] | None = None,
        curve: CurveClient | None = None,
        *,
        hwm: int = 1000,
    ) -> None:
        self.endpoint = endpoint if isinstance(endpoint, str) else ", ".join(endpoint)
        self.sources = frozenset(sources) if sources is not None else None
        self.received: dict[str, int] = {}
        self.gaps: dict[str, int] = {}
        self.lost: dict[str, int] = {}
        self.rejected = 0
        self._last_seq: dict[str, int] = {}
        self._last_pub: dict[str, int] = {}
        curve_keys = server_key = None
        if curve is not None:
            curve_keys = transport.load_curve_secret_key(Path(curve.secret_key_file))
            server_key = transport.load_curve_public_key(Path(curve.server_public_key_file))
        topics = tuple(s.encode() for s in sorted(self.sources)) if self.sources is not None else (b"",)
        self._ctx: zmq.Context[Any] = zmq.Context()
        try:
            self._sock = transport.open_subscriber(
                self._ctx,
                endpoint,
                topics=topics,
                hwm=hwm,
                curve_keys=curve_keys,
                server_public_key=server_key,
            )
        except BaseException:
            self._ctx.term()
            raise
        self._closed = False

    def recv(self, timeout_s: float | None = None) -> Record | None:
        """The next record, or None when none came within ``timeout_s`` (None: wait forever)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._closed:
            wait_ms = 200 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            parts = transport.recv_parts(self._sock, wait_ms)
            if parts is None:
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            rec = self._accept(parts)
            if rec is not None:
                return rec
        return None

    def __iter__(self) -> Iterator[Record]:
        while not self._closed:
            rec = self.recv(None)
            if rec is not None:
                yield rec

    def _accept(self, parts: list[Any]) -> Record | None:
        if len(parts) != 2:
            self.rejected += 1
            log.warning(
                "skipped a message of %d parts from %s (expected topic, record)", len(parts), self.endpoint
            )
            return None
        topic = bytes(parts[0].buffer).decode("utf-8", "replace")
        if self.sources is not None and topic not in self.sources:
            return None  # SUB filters by prefix: "cam1" also lets "cam10" through
        try:
            rec = decode_record(parts[1].buffer)
        except ProtocolError as exc:
            self.rejected += 1
            log.warning("skipped a record from %s: %s", self.endpoint, exc)
            return None
        src = rec.source
        last_pub = self._last_pub.get(src)
        if last_pub is not None and rec.pub_seq > last_pub + 1:
            self.lost[src] = self.lost.get(src, 0) + rec.pub_seq - last_pub - 1
        self._last_pub[src] = rec.pub_seq  # lower than before: the publisher restarted
        if isinstance(rec, FrameRecord):
            self.received[src] = self.received.get(src, 0) + 1
            last = self._last_seq.get(src)
            if last is not None and rec.seq > last + 1:
                self.gaps[src] = self.gaps.get(src, 0) + rec.seq - last - 1
                log.debug("source=%s seq=%d: %d frames missing before it", src, rec.seq, rec.seq - last - 1)
            self._last_seq[src] = rec.seq
        self.gaps.setdefault(src, 0)
        self.lost.setdefault(src, 0)
        return rec

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close(linger=0)
            self._ctx.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
