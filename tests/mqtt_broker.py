"""A real Mosquitto broker for tests: its own process on a free loopback port, a
generated config file, optional users (password file) and TLS listener; and a
paho subscriber that collects what arrives. Debian's ``mosquitto`` package
(scripts/system-deps.sh); its system service is never used."""

from __future__ import annotations

import getpass
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import free_port

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")

needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None, reason="needs Debian's mosquitto (scripts/system-deps.sh installs it)"
)


class Mosquitto:
    """``start()`` runs mosquitto on 127.0.0.1:port; ``kill()`` SIGKILLs it; ``start()`` again
    brings it back on the same port (without persistence: retained messages are gone).

    users: name → password (anonymous clients are then refused).
    tls: (ca, cert, key) PEM paths: the listener speaks TLS only and wants a client certificate.
    """

    def __init__(self, workdir: Path, *, users: dict[str, str] | None = None,
                 tls: tuple[Path, Path, Path] | None = None) -> None:
        assert MOSQUITTO is not None
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            f"user {getpass.getuser()}",  # as root, mosquitto would otherwise switch to its own user
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if users:
            assert MOSQUITTO_PASSWD is not None, "mosquitto_passwd comes with the mosquitto package"
            pw = workdir / "passwd"
            for i, (name, password) in enumerate(users.items()):
                subprocess.run([MOSQUITTO_PASSWD, *(["-c"] if i == 0 else []), "-b", str(pw), name, password],
                               check=True, capture_output=True)
            pw.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            ca, cert, key = tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}", "tls_version tlsv1.2",
                      "require_certificate true"]  # clients must show a certificate signed by the CA
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 20.0) -> Mosquitto:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout:.0f} s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Collector:
    """A paho subscriber on ``topic`` (QoS 1) that resubscribes after every reconnect."""

    port: int
    topic: str = "#"
    username: str | None = None
    password: str | None = None
    tls: tuple[Path, Path, Path] | None = None  # ca, client cert, client key
    messages: list[Received] = field(default_factory=list)
    connected: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._marker = f"test/ready/{id(self)}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{id(self)}")
        if self.username:
            self.client.username_pw_set(self.username, self.password)
        if self.tls:
            ca, cert, key = self.tls
            self.client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key))
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = self._on_message
        self.client.connect_async("localhost" if self.tls else "127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            client.subscribe([(self.topic, 1), (self._marker, 0)])
            self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until subscribed (a SUBACK came back), probing with a marker message."""
        marker = self._marker
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.client.publish(marker, b"1", qos=0)
            time.sleep(0.1)
            if any(m.topic == marker for m in self.snapshot()):
                return
        raise AssertionError(f"subscriber not ready within {timeout:.0f} s")

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.snapshot() if m.topic == topic]

    def events(self, topic: str) -> list[dict[str, Any]]:
        return [m.json() for m in self.on(topic)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- a scene with known tracks -------------------------------------------------------
H, W = 240, 320
FPS = 10
T0_NS = 1_700_000_000_000_000_000


@dataclass(frozen=True)
class Obj:
    track_id: int
    class_id: int
    score: float
    box: tuple[int, int, int, int]


def tracked_frame(seq: int, objs: list[Obj], finished: tuple[int, ...] = (), *, source: str = "cam",
                  masks: bool = False, random_weights: bool = True) -> Any:
    """A frame as the track stage hands it on: boxes, scores, class_ids, track_ids, finished_ids;
    captured at T0_NS + seq / FPS seconds. masks: a filled-ellipse crop mask per object."""
    import numpy as np

    from stream.messages import Frame, FrameHeader
    from stream.objects import ObjectMasks

    header = FrameHeader(source=source, seq=seq, pts=seq, time_base=(1, FPS),
                         capture_ns=T0_NS + seq * 1_000_000_000 // FPS, random_weights=random_weights)
    boxes = np.array([o.box for o in objs], np.float32).reshape(-1, 4)
    arrays: dict[str, Any] = {
        "boxes": boxes,
        "scores": np.array([o.score for o in objs], np.float32),
        "class_ids": np.array([o.class_id for o in objs], np.int32),
        "track_ids": np.array([o.track_id for o in objs], np.int64),
        "finished_ids": np.array(finished, np.int64),
    }
    if masks:
        crops = [ellipse(o.box) for o in objs]
        packed = ObjectMasks.pack(crops, boxes.astype(np.int32), np.zeros(len(objs), np.uint8),
                                  np.zeros(len(objs), np.int32))
        arrays.update(packed.to_arrays())
    return Frame(header, image=np.zeros((H, W, 3), np.uint8)).evolve(**arrays)


def ellipse(box: tuple[int, int, int, int]) -> Any:
    import numpy as np

    x1, y1, x2, y2 = box
    h, w = y2 - y1, x2 - x1
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - h / 2 + 0.5) / (h / 2)) ** 2 + ((xx - w / 2 + 0.5) / (w / 2)) ** 2 <= 1


PERSON, CAR, TRUCK = 0, 2, 7


def known_scene() -> list[tuple[list[Obj], tuple[int, ...]]]:
    """41 frames at 10 fps. Track 1 (person, frames 0-29, score 0.50 rising 0.01 a frame, ended
    by the tracker at frame 32); track 2 (car, frames 5-40, turns into a truck at frame 25);
    track 3 (person, frames 10-19, ended at frame 20)."""
    frames = []
    for f in range(41):
        objs = []
        if f <= 29:
            objs.append(Obj(1, PERSON, 0.50 + 0.01 * f, (10 + f, 20, 50 + f, 100)))
        if f >= 5:
            objs.append(Obj(2, CAR if f < 25 else TRUCK, 0.8, (150, 100, 230, 160)))
        if 10 <= f <= 19:
            objs.append(Obj(3, PERSON, 0.9, (260, 30, 300, 120)))
        finished = (3,) if f == 20 else (1,) if f == 32 else ()
        frames.append((objs, finished))
    return frames


# (type, id, seq, class[, end_reason]) of every event the scene must make, in order per track
KNOWN_EVENTS = [
    ("new", 1, 0, "person"), ("new", 2, 5, "car"), ("new", 3, 10, "person"),
    ("update", 1, 10, "person"), ("update", 1, 20, "person"), ("end", 3, 20, "person", "tracker"),
    ("update", 2, 25, "truck"), ("end", 1, 32, "person", "tracker"), ("end", 2, 40, "truck", "end_of_stream"),
]


def make_certs(d: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for the name ``localhost`` only (not 127.0.0.1)
    and a client certificate, all signed by the CA (openssl; scripts/system-deps.sh)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs openssl (scripts/system-deps.sh installs it)")
    p = {k: d / f"{k}.pem" for k in ("ca", "ca_key", "server", "server_key", "client", "client_key")}

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", str(p["ca_key"]), "-out", str(p["ca"]))
    for name, ext in (("server", "subjectAltName=DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")):
        csr = d / f"{name}.csr"
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(p[f"{name}_key"]),
            "-out", str(csr))
        extfile = d / f"{name}.ext"
        extfile.write_text(ext + "\n")
        run("x509", "-req", "-in", str(csr), "-CA", str(p["ca"]), "-CAkey", str(p["ca_key"]), "-CAcreateserial",
            "-days", "2", "-extfile", str(extfile), "-out", str(p[name]))
    return p
