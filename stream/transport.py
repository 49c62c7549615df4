"""All ZeroMQ sockets and shared-memory frame rings live here.

Endpoints are written ``KIND+bind:ADDRESS`` or ``KIND+connect:ADDRESS`` (as in
Savant), e.g. ``pull+bind:ipc:///tmp/stream-x/detect.in`` or
``push+connect:tcp://127.0.0.1:5601``.

Frame rings: one file per source under /dev/shm (a tmpfs), mapped by every
process that touches that source's pixels. Layout::

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
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from stream.errors import ProtocolError, TransportError
from stream.messages import PixelRef

_KINDS = {"push": zmq.PUSH, "pull": zmq.PULL, "pub": zmq.PUB, "sub": zmq.SUB}
_MAGIC = 0x5354524D52494E47  # "STRMRING"
_HEADER_BYTES = 4096
_SLOT_FIELDS = 8
_RING_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,200}")  # a file name in the ring dir, nothing else


@dataclass(frozen=True)
class Endpoint:
    kind: str
    bind: bool
    address: str

    @classmethod
    def parse(cls, spec: str) -> Endpoint:
        """'push+bind:ipc:///x' → Endpoint('push', True, 'ipc:///x')."""
        head, sep, address = spec.partition(":")
        kind, plus, mode = head.partition("+")
        if not sep or not plus or kind not in _KINDS or mode not in ("bind", "connect"):
            raise TransportError(
                f"bad endpoint {spec!r}: expected KIND+bind:ADDRESS or KIND+connect:ADDRESS "
                f"with KIND in {sorted(_KINDS)}"
            )
        if not address.startswith(("ipc://", "tcp://", "inproc://")):
            raise TransportError(f"bad endpoint {spec!r}: address must start with ipc://, tcp:// or inproc://")
        return cls(kind, mode == "bind", address)

    def __str__(self) -> str:
        return f"{self.kind}+{'bind' if self.bind else 'connect'}:{self.address}"


@dataclass(frozen=True)
class Curve:
    """CURVE on one stage socket (z85 keys, 40 bytes each). A bound socket is the
    server: ``secret_key`` is its own, and only clients whose public key is in
    ``allowed`` get in (checked by a ZAP handler in the binding process). A
    connecting socket is a client: ``public_key`` + ``secret_key`` are its own,
    ``server_key`` the server's public key."""

    secret_key: bytes
    public_key: bytes = b""
    server_key: bytes = b""
    allowed: frozenset[bytes] = frozenset()

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None) -> Curve | None:
        """From a worker spec's entry: key files (``from_files``) or the run's own keys
        ({"secret_key", "public_key", "server_key", "allowed"}: z85 strings); None: off."""
        if spec is None:
            return None
        if "secret_key_file" in spec:
            return cls.from_files(spec)
        return cls(spec["secret_key"].encode(), spec.get("public_key", "").encode(),
                   spec.get("server_key", "").encode(), frozenset(k.encode() for k in spec.get("allowed", ())))

    @classmethod
    def from_files(cls, spec: dict[str, Any]) -> Curve:
        """From key files: {"secret_key_file"} plus {"server_key_file"} (client) or
        {"allowed_key_files": [...]} (server), as written by ``stream keys gen``."""
        public, secret = load_curve_secret_key(Path(spec["secret_key_file"]))
        server = spec.get("server_key_file")
        allowed = load_allowed_keys(files=tuple(Path(f) for f in spec.get("allowed_key_files", ())))
        return cls(secret, public, load_curve_public_key(Path(server)) if server else b"", allowed)


def run_curve_keys() -> tuple[dict[str, Any], dict[str, Any]]:
    """Fresh CURVE keys for one run's own tcp:// hops (``transport.curve``), as worker
    spec entries: (server: every socket the run binds; client: every socket it connects).
    They exist only in the supervisor's memory and its workers' stdin: a local process
    outside the run has no allowed key, and is refused."""
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    server = {"secret_key": server_secret.decode(), "allowed": [client_public.decode()]}
    client = {"secret_key": client_secret.decode(), "public_key": client_public.decode(),
              "server_key": server_public.decode()}
    return server, client


class CurveAuth:
    """The ZAP handler of one ZeroMQ context: admits a CURVE client whose public
    key is allowed on some server socket of that context. ``stop`` after closing them."""

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        self._ctx = ctx
        self._keys: set[bytes] = set()
        self._auth: Any = None

    def allow(self, keys: frozenset[bytes]) -> None:
        if not keys:
            raise TransportError("CURVE is on but no client public key is allowed: every peer would be refused")
        self._keys.update(keys)
        if self._auth is None:
            import logging

            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(self._ctx, log=logging.getLogger(__name__ + ".zap"))
            self._auth.start()  # before bind: a client's handshake is checked as it connects
            self._auth.configure_curve_callback(domain="*", credentials_provider=self)

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self._keys

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


def open_socket(ctx: zmq.Context[Any], spec: str | Endpoint, *, hwm: int = 4, subscribe: bytes = b"",
                curve: Curve | None = None, auth: CurveAuth | None = None) -> zmq.Socket[Any]:
    """A socket for ``spec`` with send/receive high-water marks of ``hwm`` messages.

    linger is 0 so closing never blocks on a dead peer (``close_flushing`` waits for a
    peer on another host). A bind to an address in use raises TransportError naming it.
    ``curve``: CURVE server (bind; needs ``auth``, the context's ZAP handler) or client
    (connect) — see ``Curve``.
    """
    ep = spec if isinstance(spec, Endpoint) else Endpoint.parse(spec)
    if curve is not None and ep.bind and auth is None:
        raise TransportError(f"{ep.address}: a CURVE server socket needs the context's CurveAuth")
    if curve is not None and not ep.bind and not curve.server_key:
        raise TransportError(f"{ep.address}: a CURVE client needs the server's public key")
    if curve is not None and ep.bind and auth is not None:
        auth.allow(curve.allowed)
    sock = ctx.socket(_KINDS[ep.kind])
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    if ep.kind == "sub":
        sock.setsockopt(zmq.SUBSCRIBE, subscribe)
    if curve is not None and ep.bind:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret_key)
    elif curve is not None:
        sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.public_key)
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret_key)
        sock.setsockopt(zmq.CURVE_SERVERKEY, curve.server_key)
    try:
        if ep.bind:
            sock.bind(ep.address)
        else:
            sock.connect(ep.address)
    except zmq.ZMQError as exc:
        sock.close()
        raise TransportError(f"cannot {'bind' if ep.bind else 'connect'} {ep.address}: {exc.strerror}") from exc
    return sock


def close_flushing(sock: zmq.Socket[Any], linger_s: float) -> None:
    """Close ``sock`` after up to ``linger_s`` spent handing what is still queued to
    the peer (measured: a PUSH closed with linger 0 loses the frames its peer on the
    other end of a tcp:// connection has not read; with a linger it loses none)."""
    sock.close(linger=max(0, int(linger_s * 1000)))


def send_parts(sock: zmq.Socket[Any], parts: list[Any], *, block: bool, timeout_s: float,
               should_stop: Callable[[], bool] = lambda: False, on_wait: Callable[[], None] = lambda: None) -> bool:
    """Send a multipart message. block=False: one try, False when the peer is full
    (a live source drops at the edge). block=True: wait (backpressure), calling
    ``on_wait`` every ``timeout_s`` so the caller can heartbeat, until sent or
    ``should_stop()``; returns whether it was sent."""
    flags = 0 if block else zmq.NOBLOCK
    if block:
        sock.setsockopt(zmq.SNDTIMEO, max(1, int(timeout_s * 1000)))
    while True:
        try:
            sock.send_multipart(parts, flags=flags, copy=False)
            return True
        except zmq.Again:
            if not block or should_stop():
                return False
            on_wait()


def recv_parts(sock: zmq.Socket[Any], timeout_ms: int) -> list[zmq.Frame] | None:
    """Receive one multipart message, or None after ``timeout_ms``."""
    if sock.poll(timeout_ms, zmq.POLLIN):
        return sock.recv_multipart(copy=False)  # type: ignore[no-any-return]
    return None


def check_tcp_port_free(host: str, port: int, key: str) -> None:
    """Raise TransportError naming ``key`` when host:port cannot be bound."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise TransportError(
                f"{key}: {host}:{port} is already in use ({exc.strerror}); "
                f"choose another with --set {key}=N (0 picks a free port)"
            ) from exc


def shm_dir() -> Path:
    """Where rings live: /dev/shm when present (tmpfs), else the temp dir."""
    d = Path("/dev/shm")
    return d if d.is_dir() and os.access(d, os.W_OK) else Path(os.environ.get("TMPDIR", "/tmp"))


# --- run-owned files: rings in shm_dir() and the ipc folder in the temp dir ---
# Named stream-RUNID-PID.NS-…: PID is the supervisor that owns them and NS its pid
# namespace (the inode of /proc/self/ns/pid), so a later run can tell a file whose
# owner is gone (SIGKILL gave it no chance to clean up) from one of a live run. A
# '.' never occurs in a source id, so names of another form are never mistaken for these.
_OWNED = re.compile(r"^stream-[0-9a-f]{8}-(\d+)\.(\d+)-")


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def run_prefix(run_id: str) -> str:
    """'stream-RUNID-PID.NS-': the start of every file and folder this process owns for a run."""
    return f"stream-{run_id}-{os.getpid()}.{_pid_namespace()}-"


def _owner_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def remove_stale_run_files(*directories: Path) -> list[Path]:
    """Remove the rings and ipc folders in ``directories`` whose owning supervisor is
    gone; returns what was removed. Only names of the run-owned form (``run_prefix``)
    of a process in our pid namespace are considered; a live owner's files, and any
    file named otherwise, are left alone."""
    ns = _pid_namespace()
    removed: list[Path] = []
    for d in directories:
        try:
            entries = list(d.iterdir())
        except OSError:
            continue
        for path in entries:
            m = _OWNED.match(path.name)
            if m is None or int(m.group(2)) != ns or int(m.group(1)) == os.getpid():
                continue
            if not _owner_gone(int(m.group(1))):
                continue
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except FileNotFoundError:
                continue  # another starting run removed it first
            except OSError:
                continue  # not ours to remove (another user's)
            removed.append(path)
    return removed


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
        frame was released (backpressure, or max_in_flight < ring_slots for live
        sources), and a write into a reused slot is detected and the frame dropped."""
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


def wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.0005) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


# --- publishing (PUB/SUB, CURVE) ---
# The publish sink binds a PUB socket; consumers (stream.client.Subscriber) connect
# a SUB socket. PUB never blocks: a message for a subscriber whose queue is at its
# high-water mark is dropped for that subscriber only, so a slow or stuck consumer
# cannot slow the pipeline. CURVE keys are ZeroMQ certificate files (z85 text):
# NAME.key holds the public key, NAME.key_secret the public and the secret key.


def is_loopback_address(address: str) -> bool:
    """True when a ZeroMQ address is only reachable from this host: ipc://,
    inproc://, or tcp:// on 127.x.x.x, ::1 or localhost. '*' and 0.0.0.0 are not."""
    if address.startswith(("ipc://", "inproc://")):
        return True
    if not address.startswith("tcp://"):
        return False
    host = address[len("tcp://") :].rpartition(":")[0].strip("[]")
    if ";" in host:  # tcp://SOURCE;HOST:PORT (connect form): the remote host decides
        host = host.rpartition(";")[2]
    return host == "localhost" or host == "::1" or host.startswith("127.")


def generate_curve_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write NAME.key (public) and NAME.key_secret (public + secret, mode 0600) in
    ``directory`` in ZeroMQ's certificate format (z85 keys). Refuses to overwrite."""
    import zmq.auth

    public_file, secret_file = directory / f"{name}.key", directory / f"{name}.key_secret"
    for f in (public_file, secret_file):
        if f.exists():
            raise TransportError(f"{f} already exists; remove it or choose another --name")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        old_umask = os.umask(0o077)  # the secret file is never readable by others, even briefly
        try:
            pub, sec = zmq.auth.create_certificates(directory, name)
        finally:
            os.umask(old_umask)
        Path(pub).chmod(0o644)
        Path(sec).chmod(0o600)
    except OSError as exc:
        raise TransportError(f"cannot write keys in {directory}: {exc.strerror}") from exc
    return Path(pub), Path(sec)


def load_curve_public_key(path: Path) -> bytes:
    """The z85 public key (40 bytes) in a .key or .key_secret file."""
    try:
        import zmq.auth

        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise TransportError(
            f"{path} is not a readable ZeroMQ key file (make one with `stream keys gen`): {exc}"
        ) from exc
    if len(public) != 40:
        raise TransportError(f"{path}: the public key is not 40 z85 characters")
    return public


def load_curve_secret_key(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys from a .key_secret file. Never logs the key."""
    try:
        import zmq.auth

        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise TransportError(
            f"{path} is not a readable ZeroMQ key file (make one with `stream keys gen`): {exc}"
        ) from None
    if secret is None or len(secret) != 40:
        raise TransportError(
            f"{path} holds no secret key; give the NAME.key_secret file written by `stream keys gen`"
        )
    return public, secret


def load_allowed_keys(directory: Path | None = None, files: tuple[Path, ...] = ()) -> frozenset[bytes]:
    """Public keys (z85) from every *.key file in ``directory`` and from ``files``."""
    paths = list(files)
    if directory is not None:
        if not directory.is_dir():
            raise TransportError(f"allowed-keys directory {directory} does not exist")
        paths.extend(sorted(directory.glob("*.key")))
    return frozenset(load_curve_public_key(p) for p in paths)


class _AllowList:
    """ZAP credentials provider: a client is let in when its public key is listed."""

    def __init__(self, keys: frozenset[bytes]) -> None:
        self._keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self._keys


def open_publisher(
    ctx: zmq.Context[Any],
    address: str,
    *,
    hwm: int,
    curve_secret_key: bytes | None = None,
    allowed_keys: frozenset[bytes] = frozenset(),
) -> tuple[zmq.Socket[Any], Any]:
    """Bind a PUB socket at ``address`` (e.g. tcp://127.0.0.1:5560) with send HWM
    ``hwm`` messages per subscriber. With ``curve_secret_key`` (z85) it is a CURVE
    server and a ZAP authenticator admits only ``allowed_keys``; returns
    (socket, authenticator or None) — stop the authenticator after closing the socket."""
    auth = None
    if curve_secret_key is not None:
        import logging

        from zmq.auth.thread import ThreadAuthenticator

        if not allowed_keys:
            raise TransportError(
                "CURVE is on but no client public key is allowed: every subscriber would be refused"
            )
        auth = ThreadAuthenticator(ctx, log=logging.getLogger(__name__ + ".zap"))
        auth.start()  # before bind: a client's handshake is checked as it connects
        auth.configure_curve_callback(domain="*", credentials_provider=_AllowList(allowed_keys))
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    if curve_secret_key is not None:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve_secret_key)
    try:
        sock.bind(address)
    except zmq.ZMQError as exc:
        sock.close()
        if auth is not None:
            auth.stop()
        raise TransportError(f"cannot bind publisher at {address}: {exc.strerror}") from exc
    return sock, auth


def publish(sock: zmq.Socket[Any], topic: bytes, payload: bytes) -> bool:
    """Send [topic, payload] without ever waiting; False when ZeroMQ refused it."""
    try:
        sock.send_multipart([topic, payload], flags=zmq.NOBLOCK, copy=True)
        return True
    except zmq.Again:
        return False


def open_subscriber(
    ctx: zmq.Context[Any],
    address: str | Sequence[str],
    *,
    topics: tuple[bytes, ...] = (b"",),
    hwm: int = 1000,
    curve_keys: tuple[bytes, bytes] | None = None,
    server_public_key: bytes | None = None,
) -> zmq.Socket[Any]:
    """Connect a SUB socket to a publisher (or to several: one socket fair-queues them,
    e.g. every shard of a sharded deployment), subscribed to ``topics`` (topic = source
    id; b"" = all). curve_keys: this client's (public, secret) z85 keys, with the
    server's public key: CURVE on. A refused client simply receives nothing."""
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, hwm)
    if curve_keys is not None or server_public_key is not None:
        if curve_keys is None or server_public_key is None:
            sock.close()
            raise TransportError(
                "CURVE needs both this client's secret key file and the server's public key file"
            )
        sock.setsockopt(zmq.CURVE_PUBLICKEY, curve_keys[0])
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve_keys[1])
        sock.setsockopt(zmq.CURVE_SERVERKEY, server_public_key)
    for t in topics:
        sock.setsockopt(zmq.SUBSCRIBE, t)
    for one in [address] if isinstance(address, str) else address:
        try:
            sock.connect(one)
        except zmq.ZMQError as exc:
            sock.close()
            raise TransportError(
                f"cannot connect subscriber to {one}: {exc.strerror} (expected tcp://HOST:PORT or ipc://PATH)"
            ) from exc
    return sock
