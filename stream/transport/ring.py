"""Shared-memory frame rings.

One file per source under /dev/shm (a tmpfs), mapped by every process that
touches that source's pixels. Layout::

    [header 4096 B: magic, slots, slot_bytes, released_seq, next_seq, epoch, releases]
    [slot table: slots × 8 int64: generation, seq, height, width, channels, nbytes, pts, released generation]
    [slot data: slots × slot_bytes, each 4096-aligned]

A slot's generation is odd while the writer fills it and even once written
(a seqlock). A reader checks the generation its FrameRef carries before and
after using the pixels: a mismatch means the slot was overwritten, and the
frame is dropped and counted — never used torn. Whoever ends a frame's way
releases its slot (``release``): the last stage once it delivered it, and any
stage or capture that drops it (filtered, failed, stale, …). A file source
(backpressure) waits for that before reusing a slot; a live source never waits,
but counts the frames not yet released against its ``max_in_flight``. A frame
held by a process that crashed is never released: the supervisor then bumps the
ring's ``epoch``, which tells the capture that frames written before it may be lost.
"""

from __future__ import annotations

import mmap
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stream.errors import ProtocolError, TransportError
from stream.messages import PixelRef

_MAGIC = 0x5354524D52494E47  # "STRMRING"
_HEADER_BYTES = 4096
_SLOT_FIELDS = 8
_RING_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,200}")  # a file name in the ring dir, nothing else


def shm_dir() -> Path:
    """Where rings live: /dev/shm when present (tmpfs), else the temp dir (``tempfile.gettempdir``,
    where the run's ipc folder is too)."""
    d = Path("/dev/shm")
    return d if d.is_dir() and os.access(d, os.W_OK) else Path(tempfile.gettempdir())



class FrameRing:
    """A fixed ring of frame slots in a shared-memory file (see module doc).

    Created once by the supervisor (``create``), attached by capture and stages
    (``attach``); the supervisor unlinks it at the end of the run.
    """

    def __init__(self, path: Path, mm: mmap.mmap) -> None:
        self.path = path
        self.name = path.name
        self._mm = mm
        if len(mm) < _HEADER_BYTES:
            raise TransportError(f"{path} is not a frame ring (only {len(mm)} bytes)")
        head = np.ndarray((8,), dtype=np.int64, buffer=mm, offset=0)
        if int(head[0]) != _MAGIC:
            raise TransportError(f"{path} is not a frame ring (bad magic)")
        self.slots = int(head[1])
        self.slot_bytes = int(head[2])
        self._data_offset = _align(_HEADER_BYTES + max(0, self.slots) * _SLOT_FIELDS * 8)
        if self.slots < 1 or self.slot_bytes < 0 or len(mm) < self._data_offset + self.slots * self.slot_bytes:
            raise TransportError(f"{path}: a damaged frame ring ({self.slots} slots of {self.slot_bytes} B "
                                 f"do not fit its {len(mm)} bytes)")
        self._head = head
        self._table = np.ndarray((self.slots, _SLOT_FIELDS), dtype=np.int64, buffer=mm, offset=_HEADER_BYTES)

    @staticmethod
    def nbytes(slots: int, slot_bytes: int) -> int:
        """Bytes of /dev/shm that ``create(path, slots, slot_bytes)`` takes: a 4 KiB header and
        slot table, then ``slots`` slots of ``slot_bytes`` (a frame: width·height·3) rounded up to 4 KiB."""
        return _align(_HEADER_BYTES + slots * _SLOT_FIELDS * 8) + slots * _align(slot_bytes)

    @classmethod
    def create(cls, path: Path, slots: int, slot_bytes: int) -> FrameRing:
        slot_bytes = _align(slot_bytes)
        size = _align(_HEADER_BYTES + slots * _SLOT_FIELDS * 8) + slots * slot_bytes
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise TransportError(f"cannot create frame ring {path}: {exc.strerror}") from exc
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        head = np.ndarray((8,), dtype=np.int64, buffer=mm, offset=0)
        head[:] = (_MAGIC, slots, slot_bytes, -1, 0, 0, 0, 0)
        return cls(path, mm)

    @classmethod
    def attach(cls, path: Path) -> FrameRing:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise TransportError(f"cannot open frame ring {path}: {exc.strerror}") from exc
        try:
            mm = mmap.mmap(fd, 0)
        except (OSError, ValueError) as exc:  # ValueError: an empty file
            raise TransportError(f"cannot map frame ring {path}: {exc}") from exc
        finally:
            os.close(fd)
        try:
            return cls(path, mm)
        except TransportError:
            mm.close()
            raise

    # --- shared counters -------------------------------------------------
    @property
    def released_seq(self) -> int:
        """Highest seq released so far (-1: none); informative: slots are released one by one."""
        return int(self._head[3])

    @property
    def releases(self) -> int:
        """Grows whenever a frame is released: progress, as the capture sees it."""
        return int(self._head[6])

    def release(self, ref: PixelRef) -> None:
        """The frame ``ref`` points at is done (delivered, or dropped anywhere): its slot may
        be reused. A no-op when the slot already holds another frame. ``ref`` must have
        passed ``check``."""
        row = self._table[ref.slot]
        if int(row[0]) != ref.generation or int(row[7]) == ref.generation:
            return
        row[7] = ref.generation
        self._head[6] += 1
        seq = int(row[1])
        if seq > self._head[3]:
            self._head[3] = seq

    def released(self, ref: PixelRef) -> bool:
        """True once the frame ``ref`` points at was released, or its slot was reused since."""
        row = self._table[ref.slot]
        return int(row[0]) != ref.generation or int(row[7]) == ref.generation

    @property
    def epoch(self) -> int:
        """How many times a process of the run crashed (bumped by the supervisor): frames
        written before the latest bump and not released may have been lost with it."""
        return int(self._head[5])

    def bump_epoch(self) -> None:
        self._head[5] += 1

    @property
    def next_seq(self) -> int:
        """The seq the capture writes next; a restarted capture resumes here."""
        return int(self._head[4])

    def set_next_seq(self, seq: int) -> None:
        self._head[4] = seq

    # --- writer ----------------------------------------------------------
    def slot_free(self, seq: int) -> bool:
        """True when writing ``seq`` would not overwrite a frame still in the pipeline: its
        slot was never written, its frame was released, or a writer died filling it (odd)."""
        row = self._table[seq % self.slots]
        gen = int(row[0])
        return gen == 0 or gen % 2 == 1 or int(row[7]) == gen

    def write(self, seq: int, image: np.ndarray, pts: int = 0) -> PixelRef:
        """Copy ``image`` (H×W×C uint8) into slot seq % slots; returns its reference."""
        if image.dtype != np.uint8 or image.ndim != 3:
            raise TransportError(f"ring {self.name}: expected H×W×C uint8, got {image.dtype} {image.shape}")
        if image.nbytes > self.slot_bytes:
            raise TransportError(
                f"ring {self.name}: frame {image.shape} ({image.nbytes} B) exceeds slot size {self.slot_bytes} B"
            )
        slot = seq % self.slots
        row = self._table[slot]
        gen = int(row[0]) + 1  # odd: being written
        row[0] = gen
        h, w, c = image.shape
        dst = np.ndarray((h, w, c), dtype=np.uint8, buffer=self._mm, offset=self._data_offset + slot * self.slot_bytes)
        np.copyto(dst, image)
        row[1:7] = (seq, h, w, c, image.nbytes, pts)
        row[0] = gen + 1  # even: committed
        return PixelRef(self.name, slot, gen + 1, h, w, c)

    # --- reader ----------------------------------------------------------
    def check(self, ref: PixelRef) -> None:
        """Raise ProtocolError unless ``ref`` names a slot of this ring and an image that
        fits in it (a crafted or corrupt message must not index outside the mapping)."""
        if not 0 <= ref.slot < self.slots:
            raise ProtocolError(f"ring {self.name}: slot {ref.slot} outside 0..{self.slots - 1}")
        if min(ref.height, ref.width, ref.channels) < 1 or ref.height * ref.width * ref.channels > self.slot_bytes:
            raise ProtocolError(f"ring {self.name}: a {ref.height}x{ref.width}x{ref.channels} image does not fit "
                                f"a slot of {self.slot_bytes} B")

    def view(self, ref: PixelRef) -> np.ndarray:
        """Read-only H×W×C view of the slot (zero copy). Check ``valid`` after use."""
        a = np.ndarray((ref.height, ref.width, ref.channels), dtype=np.uint8, buffer=self._mm,
                       offset=self._data_offset + ref.slot * self.slot_bytes)
        a.flags.writeable = False
        return a

    def valid(self, ref: PixelRef) -> bool:
        """False when the slot has been (or is being) overwritten since ``ref`` was made."""
        return int(self._table[ref.slot, 0]) == ref.generation

    def writable_view(self, ref: PixelRef) -> np.ndarray:
        """Writable H×W×C view of the slot, for a stage that replaces a frame's pixels in
        place (``preprocess``). Only the stage holding the frame may write, before it
        forwards the frame; the generation is left as it is, so ``ref`` stays valid. Check
        ``valid`` before and after writing: the capture does not reuse a slot before its
        frame was released (backpressure for files; for live sources it drops a frame whose
        slot a frame in flight still holds, ``InFlight.holds``), and a write into a reused
        slot is detected and the frame dropped."""
        return np.ndarray((ref.height, ref.width, ref.channels), dtype=np.uint8, buffer=self._mm,
                          offset=self._data_offset + ref.slot * self.slot_bytes)

    def close(self) -> None:
        try:
            self._mm.close()
        except BufferError:
            pass  # a numpy view still refers to it; the mapping goes with the process

    def unlink(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def _align(n: int, to: int = 4096) -> int:
    return (n + to - 1) // to * to


class RingCache:
    """Attach rings by name on first use (a stage sees several sources)."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._rings: dict[str, FrameRing] = {}

    def get(self, name: str) -> FrameRing:
        ring = self._rings.get(name)
        if ring is None:
            if not _RING_NAME.fullmatch(name):
                raise TransportError(f"bad ring name {name[:80]!r}")
            ring = self._rings[name] = FrameRing.attach(self._dir / name)
        return ring

    def close(self) -> None:
        for ring in self._rings.values():
            ring.close()
        self._rings.clear()

    def forget(self, which: Callable[[str], bool]) -> None:
        """Detach the rings whose names ``which`` accepts (a source removed at runtime)."""
        for name in [n for n in self._rings if which(n)]:
            self._rings.pop(name).close()
