"""A real headless Chromium for ``stream bench live``: Debian's ``chromium`` and
``chromedriver`` driven by selenium (``scripts/browser-deps.sh`` installs the two;
selenium comes with the ``browser`` extra or the dev group).

``Browser`` is one browser process tree; each ``Viewer`` is one of its windows with a
page open and ``live_probe.js`` installed: on every animation frame the probe draws
each picture element (``<img>``, ``<video>`` or ``<canvas>``) it finds into a small
canvas, reads the pattern source's capture-time stamp back from the pixels (see
``stream.sources.pattern.StampGeometry``) and, when the stamp changed, keeps
``Date.now() − stamp``: the capture → displayed latency of that picture, in ms.
Background throttling is off, so every window paints as if it were in front.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psutil

from stream.errors import StreamError

_CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
    # every viewer window paints and runs its timers as a foreground tab would
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
)


@dataclass(frozen=True)
class Sample:
    """One picture seen for the first time. tile: the element's source id (``data-source``
    of its card, else "page"); latency_ms: displayed time − capture time; at_ms: the
    browser's Date.now() when it was seen."""

    tile: str
    latency_ms: float
    at_ms: float


def _probe_js() -> str:
    return resources.files("stream.bench").joinpath("live_probe.js").read_text(encoding="utf-8")


class Viewer:
    """One browser window showing ``url``; ``take()`` hands over its samples so far."""

    def __init__(self, browser: Browser, handle: str, url: str) -> None:
        self.browser, self.handle, self.url = browser, handle, url

    def _run(self, script: str, *args: Any) -> Any:
        driver = self.browser.driver
        if driver.current_window_handle != self.handle:
            driver.switch_to.window(self.handle)
        return driver.execute_script(script, *args)

    def install(self, selector: str, geometry: dict[str, int], source_width: int) -> None:
        self._run(_probe_js(), selector, geometry, source_width)

    def take(self) -> tuple[list[Sample], int]:
        """(samples since the last take, pictures whose stamp could not be read)."""
        out = self._run("return window.__liveProbe ? window.__liveProbe.take() : [[], 0];")
        samples, unreadable = out
        return [Sample(str(t), float(lat), float(at)) for t, lat, at in samples], int(unreadable)

    def run_script(self, script: str, *args: Any) -> Any:
        return self._run(script, *args)

    def close(self) -> None:
        driver = self.browser.driver
        driver.switch_to.window(self.handle)
        driver.close()
        remaining = driver.window_handles
        if remaining:
            driver.switch_to.window(remaining[0])


class Browser:
    """A headless Chromium (one process tree). Raises StreamError with what to install when
    chromium, chromedriver or selenium is missing."""

    def __init__(self, window_size: tuple[int, int] = (1280, 800)) -> None:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        driver_path = shutil.which("chromedriver")
        if not chromium or not driver_path:
            raise StreamError(
                "stream bench live needs Debian's chromium and chromium-driver: run scripts/browser-deps.sh"
            )
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError:
            raise StreamError(
                "stream bench live needs selenium: install the 'browser' extra (uv sync --extra browser)"
            ) from None
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for arg in (*_CHROME_FLAGS, f"--window-size={window_size[0]},{window_size[1]}"):
            opts.add_argument(arg)
        opts.page_load_strategy = "eager"  # a multipart <img> never finishes loading
        self.driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
        self.driver.set_page_load_timeout(30)
        self._first: str | None = self.driver.current_window_handle  # the blank window it starts with
        self.viewers: list[Viewer] = []

    def open(self, url: str) -> Viewer:
        """A new window (the first call reuses the blank one) with ``url`` loaded."""
        if self._first is not None:
            handle, self._first = self._first, None
            self.driver.switch_to.window(handle)
        else:
            self.driver.switch_to.new_window("window")
            handle = self.driver.current_window_handle
        viewer = Viewer(self, handle, url)
        self.viewers.append(viewer)
        from selenium.common.exceptions import WebDriverException

        try:
            self.driver.get(url)
        except WebDriverException as exc:
            raise StreamError(f"stream bench live: {url} did not load: {exc.msg or type(exc).__name__}") from None
        return viewer

    def close_viewer(self, viewer: Viewer) -> None:
        """Close ``viewer``'s window; the last one is kept open on about:blank (closing it
        would end the session)."""
        self.viewers.remove(viewer)
        if self.viewers:
            viewer.close()
        else:
            self.driver.switch_to.window(viewer.handle)
            self.driver.get("about:blank")
            self._first = viewer.handle

    def processes(self) -> list[psutil.Process]:
        """chromedriver and every process of the browser (renderers, GPU, network, …)."""
        try:
            root = psutil.Process(self.driver.service.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def close(self) -> None:
        try:
            self.driver.quit()
        except Exception:  # noqa: BLE001 — best effort at exit; the process tree goes with it
            pass


def wait_for(check: Callable[[], Any], timeout_s: float, what: str | Callable[[], str], poll_s: float = 0.2,
             halt: threading.Event | None = None) -> Any:
    """``check()``'s first truthy value within ``timeout_s``; StreamError naming ``what`` (or
    ``what()``, asked then) otherwise, or at once when ``halt`` is set."""
    halt = halt or threading.Event()
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StreamError(f"stream bench live: timed out after {timeout_s:.0f} s waiting for "
                              f"{what() if callable(what) else what}")
        if halt.wait(poll_s):
            raise StreamError(f"stream bench live: stopped while waiting for {what() if callable(what) else what}")
