"""``stream testing rtsp-server``: a camera to try the pipeline on, without a camera.

GStreamer's RTSP server (``stream.testing.rtsp_server``, also what the tests and
``stream bench sources`` use) serving a live H.264 test pattern, or a video file
re-encoded in real time, on loopback by default. It prints the URL and a config
snippet, then serves until Ctrl-C / SIGTERM. Needs the Debian packages that
``scripts/system-deps.sh`` installs (``make test`` runs it).
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

from stream.errors import ConfigError, StreamError


def register(sub: Any) -> None:
    p = sub.add_parser("testing", help="tools to try the pipeline without real hardware")
    tsub = p.add_subparsers(dest="testing_command", metavar="TOOL", required=True)
    r = tsub.add_parser(
        "rtsp-server",
        help="serve a live RTSP test camera (test pattern or a video file) until Ctrl-C",
        description=__doc__.splitlines()[0],
    )
    r.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    r.add_argument("--port", type=int, default=8554, help="RTSP port (0: any free port)")
    r.add_argument("--mount", action="append", default=None, help="path of a camera, e.g. /cam (repeatable)")
    r.add_argument("--file", default=None, help="serve this video file (re-encoded in real time) instead of a pattern")
    r.add_argument("--size", default="640x360", help="picture size WxH (default 640x360)")
    r.add_argument("--fps", type=int, default=25)
    r.add_argument("--pattern", default="ball", help="GStreamer videotestsrc pattern: ball, smpte, snow, …")
    r.add_argument("--user", default=None, help="require basic auth with this user (password from --password)")
    r.add_argument("--password", default="", help=argparse.SUPPRESS)
    r.set_defaults(handler=run_rtsp_server)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 640x360") from None
    if not (16 <= w <= 7680 and 16 <= h <= 4320):
        raise ConfigError(f"--size {text!r}: width 16..7680 and height 16..4320")
    return w, h


def run_rtsp_server(args: argparse.Namespace) -> int:
    from stream.testing.rtsp_server import RtspServerUnavailable, start_server

    size = _size(args.size)
    mounts = [m if m.startswith("/") else f"/{m}" for m in (args.mount or ["/cam"])]
    if args.file is not None and not Path(args.file).is_file():
        raise ConfigError(f"--file {args.file}: no such file")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix="stream-rtsp-") as tmp:
        try:
            server = start_server(
                Path(tmp), host=args.host, port=args.port, record=(), play=mounts, play_size=size,
                play_fps=args.fps, play_pattern=args.pattern,
                play_file=Path(args.file).resolve() if args.file else None,
                user=args.user, password=args.password or None,
            )  # fmt: skip
        except RtspServerUnavailable as exc:
            raise StreamError(f"testing rtsp-server: {exc}") from None
        except TimeoutError as exc:
            raise StreamError(f"testing rtsp-server: {exc} (is port {args.port} in use? try --port 0)") from None
        try:
            for mount in mounts:
                # the password is never printed: the URL names the user, the config takes ${ENV:…}
                url = server.url(mount, credentials=False)
                print(f"serving {url}", flush=True)
            print(
                "try it: stream run configs/rtsp.yaml --set sources.0.url=" + server.url(mounts[0], credentials=False)
                + "  (Ctrl-C stops this server)",
                flush=True,
            )
            while not stop.wait(0.5):
                if server.proc.poll() is not None:
                    raise StreamError(f"testing rtsp-server: the server exited ({server.stderr.strip()[-300:]})")
        finally:
            server.stop()
    return 0
