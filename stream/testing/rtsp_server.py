"""A real RTSP server for tests and benchmarks: GStreamer's RTSP server (gst-rtsp-server),
run in a subprocess. ``tests/rtsp_server.py`` re-exports this with a pytest fixture;
``stream bench sources`` uses it directly.

Two roles in one file:

* run as a script by a Python that has PyGObject and GstRtspServer (the system
  ``/usr/bin/python3`` with the packages from ``scripts/system-deps.sh``) it
  serves, on ``--host``/``--port`` (0 = any free port):

  - RECORD mounts (``--record /in``): a client pushes H.264 over RTSP
    (ANNOUNCE/SETUP/RECORD, the way FFmpeg's ``rtsp`` muxer and MediaMTX
    publishers do, TCP or UDP); each session is written as MPEG-TS to
    ``--record-dir/<mount>-<n>.ts``, written through as it arrives, so a
    test can read it with PyAV while or after the push.
  - PLAY mounts (``--play /test``): a live H.264 test pattern
    (``videotestsrc ! x264enc``, ``--play-size``/``--play-fps``/``--play-pattern``)
    or, with ``--play-file``, a video file decoded and re-encoded in real time.
  - optional basic auth (``--user``/``--password``) on every mount.

  It reports on stdout, one JSON object a line: ``{"event": "ready", "port": N}``,
  ``{"event": "record-started", "mount", "path"}``,
  ``{"event": "record-finished", "mount", "path", "bytes"}``,
  ``{"event": "play-started", "mount"}``. SIGTERM/SIGINT stop it cleanly.

* imported (any Python, no GStreamer needed): ``start_server`` starts the
  script, waits for the ready line and for an answered RTSP OPTIONS request
  (no fixed sleeps), collects events; ``RtspServer.stop()`` always terminates
  it. ``RtspServerUnavailable`` is raised, with the command to run, when no
  Python with GstRtspServer is found.

The server side imports only the standard library and PyGObject: the system
Python runs this file as a script.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
GI_PYTHON_ENV = "STREAM_TEST_GI_PYTHON"  # a Python with PyGObject + GstRtspServer, if not the system one
_PROBE = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
    "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
    "import sys; sys.exit(0 if all(Gst.ElementFactory.find(e) for e in sys.argv[1:]) else 1)"
)
_ELEMENTS = ("rtph264depay", "rtph264pay", "h264parse", "mpegtsmux", "x264enc", "videotestsrc", "decodebin")
INSTALL_HINT = (
    "no Python with GStreamer's RTSP server (PyGObject + gir1.2-gst-rtsp-server-1.0); "
    "run scripts/system-deps.sh"
)


class RtspServerUnavailable(RuntimeError):
    """No Python with PyGObject and GstRtspServer on this machine."""


# --------------------------------------------------------------------------- client side


def find_gi_python() -> str | None:
    """A Python that can import GstRtspServer and has the elements this server uses, or None."""
    candidates = [os.environ.get(GI_PYTHON_ENV, ""), "/usr/bin/python3", shutil.which("python3") or ""]
    for exe in dict.fromkeys(c for c in candidates if c):
        try:
            ok = (
                subprocess.run([exe, "-c", _PROBE, *_ELEMENTS], capture_output=True, timeout=30).returncode
                == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return exe
    return None


def rtsp_options_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when an RTSP OPTIONS request on host:port gets an ``RTSP/1.0`` answer."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(f"OPTIONS rtsp://{host}:{port}/ RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
            return s.recv(64).startswith(b"RTSP/1.0")
    except OSError:
        return False


class RtspServer:
    """A running server subprocess. ``url(mount)`` builds client URLs (with the
    credentials when auth is on); ``wait_event`` waits for a reported event."""

    def __init__(
        self,
        proc: subprocess.Popen[str],
        host: str,
        port: int,
        user: str | None,
        password: str | None,
        record_dir: Path,
    ) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.record_dir = record_dir
        self.events: list[dict[str, Any]] = []
        self._new: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr = ""

    def url(self, mount: str, *, credentials: bool = True) -> str:
        auth = f"{self.user}:{self.password}@" if credentials and self.user else ""
        return f"rtsp://{auth}{self.host}:{self.port}/{mount.lstrip('/')}"

    def wait_event(self, event: str, timeout: float = 20.0, **match: Any) -> dict[str, Any]:
        """The first event named ``event`` whose fields equal ``match`` (already seen or new)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for ev in self.events[seen:]:
                if ev.get("event") == event and all(ev.get(k) == v for k, v in match.items()):
                    return ev
            seen = len(self.events)
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise TimeoutError(
                    f"RTSP server: no {event!r} event {match or ''} in {timeout} s "
                    f"(exit code {self.proc.poll()}, events {self.events}, stderr {self.stderr[-2000:]!r})"
                )
            try:
                self._new.get(timeout=min(left, 0.2))
            except queue.Empty:
                pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            self.events.append(ev)
            self._new.put(ev)

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr = (self.stderr + line)[-20000:]


def start_server(
    record_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    record: Sequence[str] = ("/in",),
    play: Sequence[str] = (),
    play_size: tuple[int, int] = (320, 240),
    play_fps: int = 25,
    play_pattern: str = "smpte",
    play_file: Path | None = None,
    user: str | None = None,
    password: str | None = None,
    python: str | None = None,
    timeout: float = 30.0,
) -> RtspServer:
    """Start the server and return once it answers RTSP OPTIONS. The caller must ``stop()`` it.
    Raises RtspServerUnavailable when no Python with GstRtspServer exists."""
    exe = python or find_gi_python()
    if exe is None:
        raise RtspServerUnavailable(INSTALL_HINT)
    record_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        exe,
        str(SCRIPT),
        "--host",
        host,
        "--port",
        str(port),
        "--record-dir",
        str(record_dir),
        "--play-size",
        f"{play_size[0]}x{play_size[1]}",
        "--play-fps",
        str(play_fps),
        "--play-pattern",
        play_pattern,
    ]
    for m in record:
        cmd += ["--record", m]
    for m in play:
        cmd += ["--play", m]
    if play_file is not None:
        cmd += ["--play-file", str(play_file)]
    if user is not None:
        cmd += ["--user", user, "--password", password or ""]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    server = RtspServer(proc, host, port, user, password, record_dir)
    threading.Thread(target=server._pump, daemon=True).start()
    threading.Thread(target=server._drain_stderr, daemon=True).start()
    try:
        ready = server.wait_event("ready", timeout=timeout)
        server.port = int(ready["port"])
        deadline = time.monotonic() + timeout
        while not rtsp_options_ok(host, server.port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise TimeoutError(f"RTSP server on {host}:{server.port} does not answer OPTIONS")
            time.sleep(0.05)  # polling a condition, not waiting a fixed time
    except BaseException:
        server.stop()
        raise
    return server


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# --------------------------------------------------------------------------- server side


def _emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def serve(args: argparse.Namespace) -> int:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    loop = GLib.MainLoop()
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    record_dir = Path(args.record_dir)
    sessions = {"n": 0}

    permissions = None
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("user", "media.factory.access", True)
        permissions.add_permission_for_role("user", "media.factory.construct", True)

    def on_record_configure(_factory: Any, media: Any, mount: str) -> None:
        sessions["n"] += 1
        path = record_dir / f"{mount.strip('/').replace('/', '_')}-{sessions['n']}.ts"
        media.get_element().get_by_name("out").set_property("location", str(path))
        _emit(event="record-started", mount=mount, path=str(path))

        def unprepared(_media: Any) -> None:
            size = path.stat().st_size if path.exists() else 0
            _emit(event="record-finished", mount=mount, path=str(path), bytes=size)

        media.connect("unprepared", unprepared)

    for mount in args.record:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
        # whole access units before h264parse: inserting SPS/PPS into a NAL-aligned
        # stream splits multi-slice frames (x264 zerolatency) and loses slices
        factory.set_launch(
            "( rtph264depay name=depay0 ! video/x-h264,stream-format=byte-stream,alignment=au "
            "! h264parse config-interval=-1 ! mpegtsmux "
            "! filesink name=out buffer-mode=unbuffered sync=false async=false )"
        )
        factory.set_eos_shutdown(True)  # the muxer flushes before the media goes away
        factory.set_latency(100)
        if permissions is not None:
            factory.set_permissions(permissions)
        factory.connect("media-configure", on_record_configure, mount)
        mounts.add_factory(mount, factory)

    width, height = (int(v) for v in args.play_size.lower().split("x"))
    if args.play_file:
        head = f'filesrc location="{args.play_file}" ! decodebin ! videoconvert ! videoscale ! videorate'
    else:
        head = f"videotestsrc is-live=true pattern={args.play_pattern}"
    play_launch = (
        f"( {head} ! video/x-raw,width={width},height={height},framerate={args.play_fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.play_fps} "
        "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    for mount in args.play:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(play_launch)
        factory.set_shared(True)
        if permissions is not None:
            factory.set_permissions(permissions)
        factory.connect(
            "media-configure", lambda _f, _m, mount=mount: _emit(event="play-started", mount=mount)
        )
        mounts.add_factory(mount, factory)

    if server.attach(None) == 0:
        sys.stderr.write(f"rtsp_server: cannot listen on {args.host}:{args.port}\n")
        return 1

    def stop() -> bool:
        loop.quit()
        return False

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, stop)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, stop)
    _emit(event="ready", port=server.get_bound_port(), record=list(args.record), play=list(args.play))
    loop.run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="GStreamer RTSP test server (RECORD + PLAY mounts)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = any free port (reported in the ready event)")
    p.add_argument("--record", action="append", default=[], help="RECORD mount, e.g. /in (repeatable)")
    p.add_argument("--record-dir", default=".", help="where pushed streams are written (.ts)")
    p.add_argument("--play", action="append", default=[], help="PLAY mount, e.g. /test (repeatable)")
    p.add_argument("--play-size", default="320x240")
    p.add_argument("--play-fps", type=int, default=25)
    p.add_argument("--play-pattern", default="smpte", help="videotestsrc pattern (smpte, ball, red, …)")
    p.add_argument("--play-file", default=None, help="serve this video file instead of a test pattern")
    p.add_argument("--user", default=None)
    p.add_argument("--password", default="")
    return serve(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
