"""Fragmented MP4 for Media Source Extensions, written box by box from H.264 packets.

A browser's ``SourceBuffer`` takes one *init segment* (``ftyp`` + ``moov`` with the
stream's ``avcC``: size, SPS, PPS; no samples) and then *media segments*; here each
media segment is one frame: ``moof`` (``tfdt`` = the frame's decode time, one
``trun`` sample with duration, size and sync flag) + ``mdat`` (the access unit with
4-byte NAL lengths instead of Annex B start codes). One fragment per frame means a
frame can be shown as soon as it is encoded (the mp4 muxer would hold each
fragment until the next packet told it the duration). ISO/IEC 14496-12 and -15.
"""

from __future__ import annotations

import struct
from fractions import Fraction

_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def nal_units(annexb: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (3- or 4-byte start codes), without start codes."""
    units: list[bytes] = []
    i, n = annexb.find(b"\x00\x00\x01"), len(annexb)
    while 0 <= i < n:
        start = i + 3
        j = annexb.find(b"\x00\x00\x01", start)
        end = n if j < 0 else j
        unit = annexb[start:end]
        if j >= 0 and unit.endswith(b"\x00"):  # the next start code was 4 bytes long
            unit = unit.rstrip(b"\x00")
        if unit:
            units.append(unit)
        i = j
    return units


def avcc_sample(annexb: bytes) -> bytes:
    """One access unit in MP4 form: every NAL unit with a 4-byte big-endian length."""
    return b"".join(struct.pack(">I", len(u)) + u for u in nal_units(annexb))


def parameter_sets(extradata: bytes) -> tuple[list[bytes], list[bytes]]:
    """(SPS list, PPS list) from Annex B extradata (what libx264 writes with global_header)."""
    units = nal_units(extradata)
    return [u for u in units if u[0] & 0x1F == 7], [u for u in units if u[0] & 0x1F == 8]


def codec_string(extradata: bytes) -> str:
    """The RFC 6381 codec of the stream, e.g. 'avc1.42C01F' (profile, constraints, level of the SPS)."""
    sps, _ = parameter_sets(extradata)
    if not sps or len(sps[0]) < 4:
        raise ValueError("no H.264 SPS in the extradata: the encoder must run with global_header")
    return "avc1." + sps[0][1:4].hex().upper()


def _avcc(extradata: bytes) -> bytes:
    sps, pps = parameter_sets(extradata)
    if not sps or not pps:
        raise ValueError("no H.264 SPS/PPS in the extradata: the encoder must run with global_header")
    profile = sps[0][1]
    body = bytes([1, profile, sps[0][2], sps[0][3], 0xFF, 0xE0 | len(sps)])
    body += b"".join(struct.pack(">H", len(s)) + s for s in sps)
    body += bytes([len(pps)]) + b"".join(struct.pack(">H", len(p)) + p for p in pps)
    if profile in (100, 110, 122, 144):  # High profiles: chroma format 4:2:0, 8-bit, no SPS extensions
        body += bytes([0xFC | 1, 0xF8, 0xF8, 0])
    return _box(b"avcC", body)


def timescale(time_base: Fraction) -> int:
    """Ticks per second of the MP4 track for pts in ``time_base`` units (times are pts × numerator)."""
    return time_base.denominator


def init_segment(width: int, height: int, time_base: Fraction, extradata: bytes) -> bytes:
    """ftyp + moov for one H.264 track of ``width`` × ``height`` pixels (track id 1)."""
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 512), b"isomiso6avc1mp41")
    mvhd = _full(
        b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, 1000, 0), struct.pack(">IH", 0x10000, 0x100),
        bytes(10), _MATRIX, bytes(24), struct.pack(">I", 2),
    )
    tkhd = _full(
        b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, 1, 0, 0), bytes(8), struct.pack(">hhhH", 0, 0, 0, 0),
        _MATRIX, struct.pack(">II", width << 16, height << 16),
    )
    mdhd = _full(b"mdhd", 0, 0, struct.pack(">IIII", 0, 0, timescale(time_base), 0), struct.pack(">HH", 0x55C4, 0))
    hdlr = _full(b"hdlr", 0, 0, struct.pack(">I", 0), b"vide", bytes(12), b"VideoHandler\x00")
    avc1 = _box(
        b"avc1", bytes(6), struct.pack(">H", 1), bytes(16), struct.pack(">HH", width, height),
        struct.pack(">IIIH", 0x480000, 0x480000, 0, 1), bytes(32), struct.pack(">Hh", 0x18, -1),
        _avcc(extradata),
    )
    stbl = _box(
        b"stbl",
        _full(b"stsd", 0, 0, struct.pack(">I", 1), avc1),
        _full(b"stts", 0, 0, struct.pack(">I", 0)),
        _full(b"stsc", 0, 0, struct.pack(">I", 0)),
        _full(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        _full(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    dinf = _box(b"dinf", _full(b"dref", 0, 0, struct.pack(">I", 1), _full(b"url ", 0, 1)))
    minf = _box(b"minf", _full(b"vmhd", 0, 1, bytes(8)), dinf, stbl)
    trak = _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf))
    mvex = _box(b"mvex", _full(b"trex", 0, 0, struct.pack(">IIIII", 1, 1, 0, 0, 0)))
    return ftyp + _box(b"moov", mvhd, trak, mvex)


_SYNC = 0x02000000  # sample_depends_on = 2: depends on no other sample
_NON_SYNC = 0x01010000  # depends on others, sample_is_non_sync_sample


def media_segment(sequence: int, decode_time: int, duration: int, sample: bytes, *, keyframe: bool) -> bytes:
    """moof + mdat of one frame. sequence: fragment number (from 1); decode_time and
    duration: in the track's timescale; sample: the access unit in MP4 form (``avcc_sample``)."""
    trun_flags = 0x000001 | 0x000100 | 0x000200 | 0x000400  # data offset, duration, size, flags

    def moof(data_offset: int) -> bytes:
        traf = _box(
            b"traf",
            _full(b"tfhd", 0, 0x020000, struct.pack(">I", 1)),  # default-base-is-moof
            _full(b"tfdt", 1, 0, struct.pack(">Q", decode_time)),
            _full(
                b"trun", 0, trun_flags, struct.pack(">Ii", 1, data_offset),
                struct.pack(">III", duration, len(sample), _SYNC if keyframe else _NON_SYNC),
            ),
        )
        return _box(b"moof", _full(b"mfhd", 0, 0, struct.pack(">I", sequence)), traf)

    size = len(moof(0))  # the sample starts after the moof and the mdat header
    return moof(size + 8) + _box(b"mdat", sample)
