"""Subscriber API for consumers of published objects and masks.

The publish sink (``stream.sinks.publish``) sends one message per frame on a
ZeroMQ PUB socket: ``[topic = source id (utf-8)][record (msgpack)]``; the record
schema (``FrameRecord``, ``EndRecord``, every field) is in ``stream.published``
and re-exported here.

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

import zmq

from stream import transport
from stream.errors import ProtocolError
from stream.published import (
    PUBLISH_SCHEMA_VERSION,
    EndRecord,
    FrameRecord,
    PublishedObject,
    Record,
    Rle,
    decode_record,
    encode_record,
)

log = logging.getLogger(__name__)

__all__ = [
    "PUBLISH_SCHEMA_VERSION",
    "CurveClient",
    "EndRecord",
    "FrameRecord",
    "PublishedObject",
    "Record",
    "Rle",
    "Subscriber",
    "decode_record",
    "encode_record",
]


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
