"""One resumable, sha256-checked HTTP download (``download``), used by ``stream.models.weights``.

Streams a URL to ``<dest>.part``, resumes it with a Range request, checks the
sha256 over the whole file and moves it into place atomically. Only http(s).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from stream import __version__
from stream.errors import WeightsError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20  # 1 MiB per read: small enough for a smooth progress bar, large enough to be cheap


class DownloadError(WeightsError):
    """The transfer failed (network, HTTP status, interrupted); a partial ``.part`` may be kept for resume."""


def _manual_hint(dest: Path) -> str:
    return (
        f"If this machine cannot reach it, download the file elsewhere and place it at {dest} "
        "(then check it with `stream weights verify`), or run with --random-weights "
        "(untrained weights, for tests and benchmarks only)."
    )


def _open(url: str, offset: int, timeout_s: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": f"stream/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    # The caller has checked the scheme: urlopen would also read file:// and ftp:// URLs.
    return urllib.request.urlopen(request, timeout=timeout_s)


def _download(url: str, dest: Path, sha256: str | None, *, progress: bool, timeout_s: float) -> str:
    """Body of ``download``; returns the hex sha256 of the file now at ``dest``."""
    from tqdm import tqdm  # only a download needs it

    if not url.startswith(("http://", "https://")):
        raise WeightsError(f"cannot download {url!r}: only http:// and https:// URLs are supported")
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    try:
        try:
            response = _open(url, offset, timeout_s)
        except urllib.error.HTTPError as exc:
            if exc.code != 416 or not offset:
                raise
            # 416: the partial file does not fit the remote one (already complete, or changed); start over.
            log.info("server rejected resuming %s at byte %d; restarting from 0", dest.name, offset)
            part.unlink()
            offset = 0
            response = _open(url, 0, timeout_s)
        with response:
            length = response.headers.get("Content-Length")
            if offset and response.status == 206:
                if not (response.headers.get("Content-Range") or "").startswith(f"bytes {offset}-"):
                    raise DownloadError(
                        f"server answered the resume request for {url} with an unexpected "
                        f"Content-Range {response.headers.get('Content-Range')!r}; delete {part} and retry"
                    )
                log.info("resuming %s at byte %d", dest.name, offset)
            elif offset:
                log.info("server ignored the Range request for %s; restarting from 0", url)
                offset = 0
            total = offset + int(length) if length is not None else None
            digest = hashlib.sha256()
            if offset:
                with part.open("rb") as fh:
                    while block := fh.read(_CHUNK):
                        digest.update(block)
            received = offset
            dest.parent.mkdir(parents=True, exist_ok=True)
            bar = tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                file=sys.stderr,
                disable=not progress,
            )
            with bar, part.open("ab" if offset else "wb") as out:
                while block := response.read(_CHUNK):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
            if total is not None and received < total:
                raise DownloadError(
                    f"download of {url} was interrupted at {received} of {total} bytes; "
                    f"the partial file {part} is kept: run the same command again to resume."
                )
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        if part.exists() and part.stat().st_size == 0:
            part.unlink()
        if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
            reason: object = exc.reason
        else:
            reason = exc
        raise DownloadError(f"could not download {url}: {reason}.") from exc

    actual = digest.hexdigest()
    if sha256 is not None and actual != sha256.lower():
        part.unlink(missing_ok=True)
        raise WeightsError(
            f"sha256 mismatch for {url}: expected {sha256.lower()}, got {actual}; the download was "
            f"discarded and {dest} was not written. Retry later; if it persists, the published file "
            "changed or something between you and the server alters it."
        )
    os.replace(part, dest)
    return actual


def download(url: str, dest: Path, sha256: str | None, *, progress: bool, timeout_s: float) -> Path:
    """Stream ``url`` to ``dest`` through ``<dest>.part`` and move it into place atomically.

    An existing ``.part`` is resumed with an HTTP Range request (a server that
    ignores Range and answers 200 restarts it from 0). The progress bar (bytes)
    goes to stderr. ``sha256`` (hex) is checked over the whole file; a mismatch
    deletes the partial file and raises WeightsError naming expected, actual and
    URL. Network failures raise DownloadError (a WeightsError) that says where
    to place the file by hand; a partial file is kept for the next attempt.
    ``timeout_s``: seconds of socket inactivity before giving up.
    """
    try:
        _download(url, dest, sha256, progress=progress, timeout_s=timeout_s)
    except DownloadError as exc:
        raise DownloadError(f"{exc} {_manual_hint(dest)}") from exc
    return dest
