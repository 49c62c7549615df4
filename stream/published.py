"""The published record schema: what the publish sink (``stream.sinks.publish``) sends
and subscribers (``stream.client``) receive. Both import it from here.

One message per frame on a ZeroMQ PUB socket: ``[topic = source id (utf-8)][record
(msgpack)]``. The record is a msgspec struct tagged by its ``kind`` field:

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
RLE (``pycocotools.mask.decode``).
"""

from __future__ import annotations

import msgspec
import numpy as np

from stream.errors import ProtocolError

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
