"""``stream bench live``'s parts that need no browser: the viewer counts it sweeps, when a count
holds, and the kernel's per-connection byte counter it reads (on a real loopback socket)."""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import time

import pytest

from stream.bench.live import _counts, _held, _served, add_arguments, run
from stream.bench.viewing import tcp_bytes_sent
from stream.errors import ConfigError


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_viewer_counts_go_on_doubling_up_to_max_viewers() -> None:
    assert _counts(_args("--viewers", "1,2,4")) == ([1, 2, 4], 4)
    assert _counts(_args("--viewers", "1,2", "--max-viewers", "12")) == ([1, 2, 4, 8, 12], 2)
    for bad in ("0,1", "2,1", "a", ""):
        with pytest.raises(ConfigError, match="--viewers"):
            _counts(_args("--viewers", bad))


def test_a_count_holds_only_with_every_tile_near_the_source_fps_and_latency_in_bounds() -> None:
    args = _args("--min-fps-ratio", "0.8", "--max-latency-ms", "500")
    assert _held({"fps_worst_tile": 25.0, "latency_p50_ms": 120.0}, 30.0, args)
    assert not _held({"fps_worst_tile": 20.0, "latency_p50_ms": 120.0}, 30.0, args)  # one tile fell behind
    assert not _held({"fps_worst_tile": 30.0, "latency_p50_ms": 800.0}, 30.0, args)
    assert not _held({"fps_worst_tile": 0.0, "latency_p50_ms": float("nan")}, 30.0, args)  # nothing shown


def test_viewers_served_is_the_most_that_held_with_every_smaller_count_holding() -> None:
    rows = [{"viewers": n, "held": held} for n, held in ((1, True), (2, True), (4, False), (8, True))]
    assert _served(rows) == 2
    assert _served([{"viewers": 1, "held": False}]) == 0


def test_bytes_sent_per_connection_come_from_the_kernel() -> None:
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed: run scripts/system-deps.sh")
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    try:
        client.sendall(b"x" * 5000)  # the client's bytes: its local port is not `port`
        conn.sendall(b"y" * 123_456)
        received = 0
        while received < 123_456:  # read, so that the kernel has them acknowledged
            received += len(client.recv(1 << 16))
        peer = f"127.0.0.1:{client.getsockname()[1]}"
        deadline = time.monotonic() + 10
        while (sent := tcp_bytes_sent(port)).get(peer) != 123_456 and time.monotonic() < deadline:
            time.sleep(0.05)  # the last ACK may be delayed a little
        assert sent == {peer: 123_456}
    finally:
        for s in (client, conn, server):
            s.close()


@pytest.mark.parametrize(("argv", "message"), [
    (("--resolution", "64x48"), "--resolution 64x48: too small for the capture-time stamp"),
    (("--wall-resolution", "huge"), "--wall-resolution 'huge': use"),
    (("--transports", "mjpeg,webrtc"), "--transports 'mjpeg,webrtc'"),
])
def test_bad_options_are_refused_before_anything_starts(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(_args(*argv))
