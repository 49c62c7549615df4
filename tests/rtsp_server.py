"""The real GStreamer RTSP test server (``stream.testing.rtsp_server``) for pytest.

Same API as before the server moved into the package (so that ``stream bench``
can use it too): ``start_server`` (skips the calling test, with the command to
run, when no Python with GstRtspServer exists), ``RtspServer``, ``free_port``,
``rtsp_options_ok``, ``find_gi_python``, and the ``rtsp_server`` fixture: a
factory of servers that are all stopped at the end of the test, whatever happened.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream.testing import rtsp_server as _impl
from stream.testing.rtsp_server import (  # noqa: F401  (re-exported)
    GI_PYTHON_ENV,
    SCRIPT,
    RtspServer,
    RtspServerUnavailable,
    find_gi_python,
    main,
    rtsp_options_ok,
    serve,
)
from stream.transport import free_port  # noqa: F401  (re-exported)


def start_server(record_dir: Path, **kwargs: Any) -> RtspServer:
    """``stream.testing.rtsp_server.start_server``, skipping the test when GStreamer is missing."""
    try:
        return _impl.start_server(record_dir, **kwargs)
    except RtspServerUnavailable as exc:
        pytest.skip(str(exc))


def _rtsp_server(tmp_path: Path) -> Iterator[Any]:
    """Factory fixture: ``server = rtsp_server(**start_server kwargs)``; every server it
    started is stopped after the test, whatever happened."""
    started: list[RtspServer] = []

    def factory(**kwargs: Any) -> RtspServer:
        kwargs.setdefault("record_dir", tmp_path / f"rtsp-server-{len(started)}")
        server = start_server(**kwargs)
        started.append(server)
        return server

    try:
        yield factory
    finally:
        for server in started:
            server.stop()


rtsp_server = pytest.fixture(_rtsp_server, name="rtsp_server")
