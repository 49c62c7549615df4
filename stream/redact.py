"""Secrets out of text: the one home of URL masking and error-text scrubbing, used by
every place that logs, reports or raises with a URL in it (sources, re-stream sink).

``mask_url``: a URL with its password and credential-like query values replaced by
``***``. ``Scrubber(url)``: removes the URL and each of its secrets, as written,
percent-decoded and percent-encoded, from any text (FFmpeg errors quote URLs).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

# Query parameters whose values are credentials (signed HLS urls, camera tokens).
_SECRET_KEYS = re.compile(r"(token|key|pass|pwd|secret|auth|sig|signature|credential)", re.IGNORECASE)


def _secrets(url: str) -> list[str]:
    """The password and the values of credential-like query parameters in ``url``."""
    try:
        parts = urlsplit(url)
        found = [parts.password] if parts.password else []
    except ValueError:
        return []
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=False) if _SECRET_KEYS.search(k)]
    return found


def mask_url(url: str) -> str:
    """``url`` with its password and credential-like query values (token=, key=, sig=, …)
    replaced by ``***``: rtsp://user:***@host:port/path, https://host/live.m3u8?token=***."""
    try:
        parts = urlsplit(url)
        password, user, host, port = parts.password, parts.username, parts.hostname, parts.port
    except ValueError:
        return "<unparsable url>"
    if password is not None or user is not None:
        host = f"[{host}]" if host and ":" in host else (host or "")
        if port is not None:
            host += f":{port}"
        netloc = f"{user or ''}:***@{host}" if password is not None else f"{user}@{host}"
        parts = parts._replace(netloc=netloc)
    if parts.query:
        query = [
            (k, "***" if _SECRET_KEYS.search(k) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*"))
    return urlunsplit(parts)


class Scrubber:
    """Removes a url's secrets from text: the url itself (→ its masked form) and each
    secret (password, token values) as written, percent-decoded and percent-encoded."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.masked = mask_url(url)
        forms = {url: self.masked}
        for secret in _secrets(url):
            for form in (secret, unquote(secret), quote(unquote(secret), safe="")):
                forms.setdefault(form, "***")
        self._forms = sorted(forms.items(), key=lambda kv: -len(kv[0]))  # longest first

    def __call__(self, text: str) -> str:
        for secret, replacement in self._forms:
            text = text.replace(secret, replacement)
        return text
