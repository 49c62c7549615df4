"""What ``stream bench live`` measures around its viewers: the live transports it can open
(``TRANSPORTS``), the bytes the live view's server sent per connection (the kernel's
``tcp_info`` through ``ss``), the CPU time of process groups, and one measurement window
over a set of viewers (``measure``)."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from stream.bench.browser import Browser, Sample, Viewer, wait_for
from stream.errors import StreamError
from stream.report import percentile


@dataclass(frozen=True)
class Transport:
    """One way pictures reach a browser. page(live_url, source_ids) → the URL a viewer opens;
    setup(live_url, source_ids) → a script run once it has loaded (None: nothing); uses: a
    script that returns what the page says it plays (None: no check), e.g. the live page's
    ``data-transport``, which falls back to MJPEG where the browser cannot play H.264;
    selector: the page's picture elements (one per source shown); wall: whether one page can
    show many sources (each in a card whose ``data-source`` names it; a page without cards is
    one tile, "page")."""

    name: str
    describe: str
    page: Callable[[str, Sequence[str]], str]
    selector: str
    wall: bool = True
    setup: Callable[[str, Sequence[str]], str] | None = None
    uses: str | None = None

    def tiles(self, ids: Sequence[str]) -> list[str]:
        """The tile names the probe reports for a page showing ``ids``."""
        return list(ids) if self.wall else ["page"]


_PAGE_TRANSPORT = "return document.documentElement.dataset.transport || 'mjpeg';"

TRANSPORTS: dict[str, Transport] = {
    "mjpeg": Transport(
        "mjpeg", "the live page's camera wall: JPEG parts over one fetch() per page (/wall)",
        lambda url, ids: f"{url}?transport=mjpeg", "section.card img.picture", uses=_PAGE_TRANSPORT,
    ),
    "h264": Transport(
        "h264", "the live page's H.264: fragmented MP4 over one WebSocket per page (/live) into MSE <video>s",
        lambda url, ids: f"{url}?transport=h264", "section.card video.video", uses=_PAGE_TRANSPORT,
    ),
    "mjpeg-img": Transport(
        # the <img> goes into a page of the live view's own origin (so the canvas may read it):
        # opened as a document of its own, a multipart image never finishes loading
        "mjpeg-img", "/stream/<id>.mjpg in a plain <img> (multipart/x-mixed-replace), one source",
        lambda url, ids: f"{url}healthz", "img", wall=False,
        setup=lambda url, ids: ("const i = document.createElement('img'); "
                                f"i.src = {f'/stream/{ids[0]}.mjpg'!r}; document.body.replaceChildren(i);"),
    ),
}

_PLAYING = 5  # new pictures every tile shows before a viewer counts as watching
_BYTES_ACKED = re.compile(r"\bbytes_acked:(\d+)")


def tcp_bytes_sent(port: int) -> dict[str, int]:
    """Bytes sent and acknowledged so far on each established TCP connection whose local
    port is ``port``, keyed by the peer's address:port."""
    if shutil.which("ss") is None:
        raise StreamError("stream bench live needs ss (iproute2) to count bytes per connection: "
                          "run scripts/system-deps.sh")
    out = subprocess.run(["ss", "-Htin", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    sent: dict[str, int] = {}
    peer = None
    for line in out.splitlines():
        if line and not line[0].isspace():
            parts = line.split()
            peer = parts[-1] if len(parts) >= 2 else None
            continue
        m = _BYTES_ACKED.search(line)
        if peer is not None and m:
            sent[peer] = int(m.group(1))
            peer = None
    return sent


def cpu_seconds(procs: Sequence[psutil.Process]) -> dict[int, float]:
    """user + system CPU seconds of each process still alive, by pid."""
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            continue
    return out


def _cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two ``cpu_seconds`` readings (a process born between them
    counts from 0)."""
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def open_viewer(browser: Browser, live_url: str, transport: Transport, ids: Sequence[str],
                geometry: dict[str, int], source_width: int, timeout_s: float,
                halt: threading.Event | None = None) -> Viewer:
    """A window on the transport's page for sources ``ids`` with the probe installed, once every
    tile has shown ``_PLAYING`` new stamped pictures (it plays, not only shows a first picture).
    live_url: the live view's root, e.g. http://127.0.0.1:8080/."""
    url, tiles = transport.page(live_url, ids), transport.tiles(ids)
    viewer = browser.open(url)
    if transport.setup is not None:
        viewer.run_script(transport.setup(live_url, ids))
    if (uses := transport.uses) is not None:
        plays = wait_for(lambda: viewer.run_script(uses), timeout_s, f"the page at {url}", halt=halt)
        if plays != transport.name:
            raise StreamError(f"stream bench live: the page at {url} plays {plays!r}, not {transport.name!r} "
                              f"(this browser cannot play it?)")
    wait_for(lambda: viewer.run_script("return document.querySelectorAll(arguments[0]).length;",
                                       transport.selector) >= len(tiles),
             timeout_s, f"{len(tiles)} picture element(s) {transport.selector!r} on {url}", halt=halt)
    viewer.install(transport.selector, geometry, source_width)
    seen = dict.fromkeys(tiles, 0)

    def all_playing() -> bool:
        for s in viewer.take()[0]:
            seen[s.tile] = seen.get(s.tile, 0) + 1
        return all(seen[t] >= _PLAYING for t in tiles)

    wait_for(all_playing, timeout_s, lambda: f"every tile of {url} to show {_PLAYING} stamped pictures "
             f"(so far {seen})", halt=halt)
    return viewer


def measure(viewers: Sequence[Viewer], tiles: Sequence[str], duration_s: float, port: int,
            server: Sequence[psutil.Process], browser: Browser,
            halt: threading.Event | None = None) -> dict[str, Any]:
    """One window of ``duration_s`` over ``viewers``: pooled latency percentiles (ms), displayed
    frames/s per tile (mean and worst tile), server bytes/s and CPU (% of one core) per viewer.
    Raises StreamError when ``halt`` is set meanwhile (the pipeline stopped)."""
    for v in viewers:
        v.take()  # what was displayed before the window
    b0, s0 = tcp_bytes_sent(port), cpu_seconds(server)
    procs = browser.processes()
    c0 = cpu_seconds(procs)
    t0 = time.monotonic()
    samples: list[list[Sample]] = [[] for _ in viewers]
    unreadable = 0
    halt = halt or threading.Event()
    while (left := duration_s - (time.monotonic() - t0)) > 0:
        if halt.wait(min(1.0, left)):
            raise StreamError("stream bench live: the pipeline stopped during a measurement")
        for i, v in enumerate(viewers):  # often enough that a page never holds many samples
            got, bad = v.take()
            samples[i] += got
            unreadable += bad
    elapsed = time.monotonic() - t0
    b1, s1 = tcp_bytes_sent(port), cpu_seconds(server)
    c1 = cpu_seconds(browser.processes())
    n = len(viewers)
    sent = sum(v - b0.get(peer, 0) for peer, v in b1.items())
    fps = [sum(1 for s in got if s.tile == t) / elapsed for got in samples for t in tiles]
    latencies = [s.latency_ms for got in samples for s in got]
    return {
        "viewers": n,
        "fps_per_tile": sum(fps) / len(fps) if fps else 0.0,
        "fps_worst_tile": min(fps) if fps else 0.0,
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p99_ms": percentile(latencies, 99),
        "bytes_per_s_per_viewer": sent / elapsed / n,
        "server_cpu_pct_per_viewer": 100.0 * _cpu_used(s0, s1) / elapsed / n,
        "browser_cpu_pct_per_viewer": 100.0 * _cpu_used(c0, c1) / elapsed / n,
        "pictures": len(latencies),
        "unreadable": unreadable,
        "seconds": elapsed,
    }
