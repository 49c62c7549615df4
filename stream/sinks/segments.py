"""One recording segment: a fragmented MP4 (H.264) and its JSONL sidecar, both crash-safe.

The MP4 is written with ``movflags=frag_keyframe+empty_moov+default_base_moof``
(and ``frag_duration``): a moov without samples first, then one self-contained
moof+mdat fragment per keyframe (the shared encoder, ``stream.sinks.encode``, forces keyframes at least every
``fragment_s``; the segment muxes its packets, it does not encode).
PyAV hands the muxer's bytes to ``FragmentFile``, which passes them to the file
only as whole top-level boxes, a moof always together with its mdat, in one
``write`` call. So a killed recorder leaves a file that ends on a fragment
boundary and decodes without error; what is lost is the fragment being built
(at most ``fragment_s`` of video) and the frames still queued.

Sidecar lines are written when the fragment holding their frames reaches the
file, so the sidecar never describes frames the video does not have (a kill
between the two writes leaves the sidecar at most one fragment short). Line i
describes decoded frame i of the MP4::

    {"index": i, "source", "seq", "pts", "time_base": [num, den], "t": seconds since
     the segment's first frame (= the frame's pts in the MP4), "capture_ns",
     "width", "height", "objects": [{"track_id", "class_id", "score",
     "box": [x1, y1, x2, y2] source-image pixels, "mask": COCO RLE {"size": [H, W],
     "counts"}, "mask_kind"}, …]}
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import av
import numpy as np

from stream.masks.crop import MaskCrop
from stream.masks.rle import encode_crop
from stream.objects import MASK_KINDS, FrameObjects
from stream.sinks.encode import EncodedPacket, StreamInfo

MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"


class FragmentFile:
    """Write-only file object for PyAV that commits whole MP4 boxes, moof+mdat pairs atomically.

    The file is created (exclusively, never through a symlink) with its first
    complete boxes, so it never exists empty. ``fragments``: moof+mdat pairs on
    disk; ``bytes``: bytes on disk. Not seekable on purpose (the muxer then never
    rewrites earlier bytes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._closed = False
        self._buf = bytearray()
        self.fragments = 0
        self.bytes = 0

    def write(self, data: Any) -> int:
        self._buf += data
        self._commit()
        return len(data)

    def _commit(self) -> None:
        buf, pos, end, frags, pending = self._buf, 0, 0, 0, 0
        while pos + 8 <= len(buf):
            size, kind = struct.unpack_from(">I4s", buf, pos)
            if size == 1:
                if pos + 16 > len(buf):
                    break
                (size,) = struct.unpack_from(">Q", buf, pos + 8)
            if size < 8:  # size 0 ("to end of file") or corrupt: written at close
                break
            if pos + size > len(buf):
                break
            pos += size
            pending += kind == b"mdat"
            if kind != b"moof":
                end, frags, pending = pos, frags + pending, 0
        if end:
            self._write_all(memoryview(buf)[:end])
            del buf[:end]
            self.fragments += frags

    def _write_all(self, data: memoryview) -> None:
        if self._fd < 0:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o644)
        while data:
            n = os.write(self._fd, data)
            data = data[n:]
            self.bytes += n

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._buf:
                self._write_all(memoryview(self._buf))
                self._buf.clear()
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def objects_json(
    arrays: Mapping[str, np.ndarray], height: int, width: int, *, masks: bool
) -> list[dict[str, Any]]:
    """The sidecar's objects of one frame. height, width: the recorded picture size
    (mask RLEs have this size)."""
    if "boxes" not in arrays:
        return []
    objs = FrameObjects.from_arrays(arrays)
    out: list[dict[str, Any]] = []
    for i in range(len(objs)):
        o: dict[str, Any] = {
            "track_id": int(objs.track_ids[i]) if objs.track_ids is not None else None,
            "class_id": int(objs.class_ids[i]),
            "score": round(float(objs.scores[i]), 4),
            "box": [round(float(v), 2) for v in objs.boxes[i]],
        }
        if masks and objs.masks is not None and i < len(objs.masks):
            x1, y1 = (int(v) for v in objs.masks.crop_boxes[i, :2])
            o["mask"] = encode_crop(MaskCrop(objs.masks.crop(i), x1, y1), height, width)
            kind = int(objs.masks.kind[i])
            o["mask_kind"] = MASK_KINDS[kind] if kind < len(MASK_KINDS) else kind
        out.append(o)
    return out


class Segment:
    """An open segment being written by one thread (the source's encoder thread).

    info: the encoder stream whose packets it muxes (even size, time base = seconds
    per pts unit); pts0: encoder pts of the first packet (a keyframe; MP4 pts =
    pts − pts0); fragment_s: the fragment interval in seconds (keyframes come at
    least this often)."""

    def __init__(
        self,
        mp4: Path,
        jsonl: Path,
        *,
        info: StreamInfo,
        pts0: int,
        fragment_s: float,
        masks: bool = True,
    ) -> None:
        self.mp4, self.jsonl = mp4, jsonl
        self.info = info
        self.width, self.height, self.time_base, self.pts0 = info.width, info.height, info.time_base, pts0
        self.masks = masks
        self.frames = 0  # packets muxed
        self.last_pts = pts0 - 1
        self._file = FragmentFile(mp4)
        self._sidecar: Any = None  # created with its first lines, after the video's first fragment
        frag_us = str(max(1, int(fragment_s * 1e6)))
        self._container = av.open(
            self._file, "w", format="mp4", options={"movflags": MOVFLAGS, "frag_duration": frag_us}
        )
        self._stream = self._container.add_stream_from_template(info.template)
        self._stream.time_base = info.time_base
        self._muxed: list[str] = []  # lines of packets muxed but not yet on disk
        self.lines_written = 0

    @property
    def duration_s(self) -> float:
        return float((self.last_pts - self.pts0) * self.time_base) if self.frames else 0.0

    def add(self, packet: EncodedPacket, record: dict[str, Any]) -> None:
        """Mux one encoded frame (pts > the previous one's). record: the identity fields of
        its sidecar line; the packet's arrays give its objects."""
        rel = packet.pts - self.pts0
        line = {
            "index": self.frames,
            **record,
            "t": round(float(rel * self.time_base), 6),
            "width": self.width,
            "height": self.height,
            "objects": objects_json(packet.arrays, self.height, self.width, masks=self.masks),
        }
        out = av.Packet(packet.data)
        out.pts = out.dts = rel
        out.duration = packet.duration
        out.time_base = self.time_base
        out.is_keyframe = packet.keyframe
        out.stream = self._stream
        before = self._file.fragments
        self._container.mux(out)
        if self._file.fragments > before:  # the fragment holding every earlier packet is on disk
            self._write_lines(self._muxed)
            self._muxed = []
        self._muxed.append(json.dumps(line, separators=(",", ":")) + "\n")
        self.frames += 1
        self.last_pts = packet.pts

    def _write_lines(self, lines: list[str]) -> None:
        if lines:
            if self._sidecar is None:
                self._sidecar = self.jsonl.open("x", encoding="utf-8")
            self._sidecar.write("".join(lines))
            self._sidecar.flush()
            self.lines_written += len(lines)

    def close(self) -> None:
        """Write the last fragment and the remaining sidecar lines, close both files."""
        try:
            self._container.close()
            self._write_lines(self._muxed)
            self._muxed = []
        finally:
            self._file.close()
            if self._sidecar is not None:
                self._sidecar.close()
