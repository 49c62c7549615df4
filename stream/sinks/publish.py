"""Publish sink: every frame's objects (boxes, ids, classes, scores, COCO RLE masks)
on a ZeroMQ PUB socket, topic = source id. The record schema is in
``stream.published``, the subscriber API in ``stream.client``.

A slow or stuck subscriber never slows the pipeline: PUB drops messages for a
subscriber whose queue (``hwm`` messages) is full, and ``write`` never waits.
Each record carries the frame's ``seq`` (pipeline drops leave gaps) and this
publisher's per-source ``pub_seq`` (gaps there are records a subscriber lost).

Optional CURVE: the server secret key comes from a file (never logged); only
clients whose public keys are in the allow-list (a directory of *.key files
and/or a list of files) get through the ZAP authenticator. Binding a
non-loopback address without CURVE logs a warning.

Masks are RLE-encoded from their crops without building a full-frame mask
(``stream.masks.rle.crop_counts``), about 0.1 ms per 250×200 crop at 1080p instead of ~6 ms
for pycocotools on a full Fortran-order frame (``stream bench outputs``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import zmq

from stream import transport
from stream.config import Config, validate_section
from stream.errors import ConfigError, TransportError
from stream.masks.rle import crop_counts
from stream.messages import Frame
from stream.objects import COCO_CLASSES, MASK_KINDS, FrameObjects, class_names_of
from stream.published import EndRecord, FrameRecord, PublishedObject, Rle, encode_record
from stream.sections.sinks import PublishConfig
from stream.sinks import WRITTEN

log = logging.getLogger(__name__)

REFUSED = "refused"




def frame_size(frame: Frame) -> tuple[int, int]:
    """(height, width) of the frame's pixels from its image or shared-memory ref; (0, 0) unknown."""
    if frame.image is not None:
        return int(frame.image.shape[0]), int(frame.image.shape[1])
    px = frame.header.pixels
    return (px.height, px.width) if px is not None else (0, 0)


def frame_record(
    frame: Frame, pub_seq: int, class_names: Sequence[str], *, encode_masks: bool = True
) -> FrameRecord:
    """The published record of ``frame``'s objects (see stream.published)."""
    h = frame.header
    height, width = frame_size(frame)
    objs = FrameObjects.from_arrays(frame.arrays)
    n = len(objs)
    boxes = objs.boxes.reshape(-1, 4).tolist()
    scores = objs.scores.tolist()
    class_ids = objs.class_ids.tolist()
    track_ids = objs.track_ids.tolist() if objs.track_ids is not None else [None] * n
    masks = objs.masks
    n_masks = len(masks) if masks is not None else 0
    out = []
    for i in range(n):
        cid = int(class_ids[i])
        rle = kind = age = None
        if masks is not None and i < n_masks and int(masks.kind[i]) < 2:  # 2: this object has no mask
            kind_code = int(masks.kind[i])
            kind = MASK_KINDS[kind_code] if kind_code < len(MASK_KINDS) else str(kind_code)
            age = int(masks.age[i])
            if encode_masks and height and width:
                x1, y1, _, _ = (int(v) for v in masks.crop_boxes[i])
                rle = Rle((height, width), crop_counts(masks.crop(i), x1, y1, height, width))
        out.append(
            PublishedObject(
                class_id=cid,
                class_name=class_names[cid] if 0 <= cid < len(class_names) else str(cid),
                score=float(scores[i]),
                box=tuple(boxes[i]),
                track_id=track_ids[i],  # type: ignore[arg-type]
                rle=rle,
                mask_kind=kind,
                mask_age=age,
            )
        )
    return FrameRecord(
        source=h.source,
        seq=h.seq,
        pub_seq=pub_seq,
        pts=h.pts,
        time_base=h.time_base,
        capture_ns=h.capture_ns,
        publish_ns=time.time_ns(),
        random_weights=h.random_weights,
        width=width,
        height=height,
        objects=tuple(out),
    )


class PublishSink:
    """Publishes one record per frame at ``endpoint`` (bound here). Never blocks.

    curve_secret_key: this server's z85 secret key (CURVE on) with
    ``allowed_keys`` the z85 public keys of the clients let in.
    Counters: published (records sent), refused (records ZeroMQ would not take),
    bytes_published, last_write_ms.
    """

    name = "publish"
    wants_annotated = False

    def __init__(
        self,
        endpoint: str,
        *,
        hwm: int = 100,
        class_names: Sequence[str] = COCO_CLASSES,
        encode_masks: bool = True,
        curve_secret_key: bytes | None = None,
        allowed_keys: frozenset[bytes] = frozenset(),
    ) -> None:
        self.endpoint = endpoint
        self.class_names = tuple(class_names)
        self.encode_masks = encode_masks
        self.published = 0
        self.refused = 0
        self._outcomes: dict[str, dict[str, int]] = {}
        self.bytes_published = 0
        self.last_write_ms = 0.0
        self._pub_seq: dict[str, int] = {}
        self._last_seq: dict[str, int] = {}
        self._warned_no_size = False
        self._ctx: zmq.Context[Any] = zmq.Context()
        try:
            self._sock, self._auth = transport.open_publisher(
                self._ctx, endpoint, hwm=hwm, curve_secret_key=curve_secret_key, allowed_keys=allowed_keys
            )
        except BaseException:
            self._ctx.term()
            raise
        if curve_secret_key is None and not transport.is_loopback_address(endpoint):
            log.warning(
                "publish endpoint %s is reachable from other hosts and CURVE is off: anyone who can connect "
                "receives every object and mask; set sinks.publish.curve_server_secret_key_file and an "
                "allow-list, or bind 127.0.0.1",
                endpoint,
            )
        curve = f"CURVE on, {len(allowed_keys)} allowed client key(s)" if curve_secret_key else "no CURVE"
        log.info("publishing objects at %s (%s)", self.bound_endpoint, curve)

    @property
    def bound_endpoint(self) -> str:
        """The address actually bound (tcp://…:0 becomes the chosen port)."""
        return str(self._sock.getsockopt_string(zmq.LAST_ENDPOINT))

    def write(self, frame: Frame) -> None:
        t0 = time.perf_counter()
        src = frame.source
        pub_seq = self._pub_seq.get(src, 0)
        record = frame_record(frame, pub_seq, self.class_names, encode_masks=self.encode_masks)
        if record.width == 0 and record.objects and not self._warned_no_size:
            self._warned_no_size = True
            log.warning(
                "source=%s seq=%d: frame has no pixels, so its size is unknown; masks are not published",
                src,
                frame.seq,
            )
        sent = self._send(src, encode_record(record))
        row = self._outcomes.setdefault(src, {WRITTEN: 0})
        key = WRITTEN if sent else REFUSED
        row[key] = row.get(key, 0) + 1
        self._last_seq[src] = frame.seq
        self.last_write_ms = (time.perf_counter() - t0) * 1000

    def _send(self, source: str, payload: bytes) -> bool:
        self._pub_seq[source] = self._pub_seq.get(source, 0) + 1
        if transport.publish(self._sock, source.encode(), payload):
            self.published += 1
            self.bytes_published += len(payload)
            return True
        self.refused += 1
        return False

    def outcomes(self) -> dict[str, dict[str, int]]:
        """Per source: frame records handed to ZeroMQ ("written") and refused by it (its
        queue to the subscribers full), see ``stream.sinks``. A subscriber that is slow drops
        on its own side; it sees the gap in ``pub_seq``."""
        return {s: dict(row) for s, row in list(self._outcomes.items())}

    def end_source(self, source: str) -> None:
        rec = EndRecord(
            source=source, pub_seq=self._pub_seq.get(source, 0), last_seq=self._last_seq.get(source, -1)
        )
        self._send(source, encode_record(rec))

    def close(self) -> None:
        self._sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()


def build(section: PublishConfig | dict[str, Any], config: Config) -> PublishSink:
    """The sink for ``sinks.publish`` (see PublishConfig). Raises ConfigError."""
    cfg = validate_section(PublishConfig, section, "sinks.publish")
    secret = None
    allowed: frozenset[bytes] = frozenset()
    try:
        if cfg.curve_server_secret_key_file:
            _, secret = transport.load_curve_secret_key(Path(cfg.curve_server_secret_key_file))
            allowed = transport.load_allowed_keys(
                Path(cfg.curve_allowed_keys_dir) if cfg.curve_allowed_keys_dir else None,
                tuple(Path(p) for p in cfg.curve_allowed_keys),
            )
            if not allowed:
                raise ConfigError(
                    "config error: sinks.publish: CURVE is on but no client key is allowed; "
                    "put client *.key files in curve_allowed_keys_dir or list them in curve_allowed_keys"
                )
        elif cfg.curve_allowed_keys_dir or cfg.curve_allowed_keys:
            raise ConfigError(
                "config error: sinks.publish: an allow-list needs curve_server_secret_key_file "
                "(make one with `stream keys gen`)"
            )
    except TransportError as exc:
        raise ConfigError(f"config error: sinks.publish: {exc}") from None
    class_names = class_names_of(config)
    try:
        return PublishSink(
            cfg.endpoint,
            hwm=cfg.hwm,
            class_names=class_names,
            encode_masks=cfg.encode_masks,
            curve_secret_key=secret,
            allowed_keys=allowed,
        )
    except TransportError as exc:  # e.g. the port is in use: name the key to change
        raise TransportError(f"sinks.publish.endpoint: {exc}") from None
