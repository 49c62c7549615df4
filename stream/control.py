"""The control API: the run's sources at runtime, as JSON on the supervisor's metrics
server (``metrics.host``:``metrics.port``, beside ``/metrics``)::

    GET    /api/openapi.json      the OpenAPI 3 document of these routes (no token needed)
    GET    /api/sources           every source: state, fps, frame age, drops, capture pid
    GET    /api/sources/{id}      one source
    POST   /api/sources           add a source: a JSON (or YAML) object of one source, the
                                  keys of a ``sources:`` item in the config file → 201
    PATCH  /api/sources/{id}      change a source: the keys to change (e.g. {"fps": 5}) → 200;
                                  its capture restarts with the new definition
    DELETE /api/sources/{id}      remove a source → 200 once its end of stream passed the output

A definition is validated exactly like the config file and a bad one gets 400 with the
config loader's one-line message (``config error in POST /api/sources: sources.2.url: …``).
Other errors: 401 (token missing or wrong), 403 (off loopback without ``metrics.token``),
404 (no such source), 409 (the id exists, a split run, another shard's id), 503 (the run
is stopping). Every error body is ``{"error": "<one line>"}``.

Access: with ``metrics.token`` set every route but the schema needs ``Authorization:
Bearer <token>``; without one the API answers only when the server is bound to a
loopback host (whose Host header check stops DNS rebinding). The token is never logged.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from http import HTTPStatus
from typing import Any

import yaml

from stream.config import MetricsConfig
from stream.errors import ControlError, StreamError
from stream.httpd import GuardedHandler, is_loopback
from stream.roster import RosterChanges

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
_ID = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"  # stream.config.SOURCE_ID
_ONE = re.compile(rf"^/api/sources/({_ID})$")


class ControlApi:
    """Routes ``/api/…`` requests of the metrics server to the run's ``RosterChanges``."""

    def __init__(self, roster: RosterChanges, metrics: MetricsConfig) -> None:
        self.roster = roster
        self._token = metrics.token.get_secret_value() if metrics.token is not None else None
        self._loopback = is_loopback(metrics.host)
        if self._token is None and not self._loopback:
            log.warning("control API off: metrics.host %s is not loopback and metrics.token is not set", metrics.host)

    def handles(self, path: str) -> bool:
        return path.split("?", 1)[0].startswith("/api/")

    def handle(self, h: GuardedHandler, method: str) -> None:
        """Answer one request (the handler has done the Host check already)."""
        path = h.path.split("?", 1)[0]
        try:
            if method == "GET" and path == "/api/openapi.json":
                return _send(h, 200, openapi())
            self._authorize(h)
            status, body = self._route(h, method, path)
        except ControlError as exc:
            status, body = exc.status, {"error": str(exc)}
        except StreamError as exc:  # a bad definition: the config loader's message
            status, body = 400, {"error": " ".join(str(exc).split())}
        _send(h, status, body)
        return None

    def _authorize(self, h: GuardedHandler) -> None:
        if self._token is None:
            if not self._loopback:
                raise ControlError("the control API is off: metrics.host is not a loopback address and "
                                   "metrics.token is not set (set it, e.g. metrics.token: ${ENV:STREAM_API_TOKEN})",
                                   403)
            return
        offered = h.headers.get("Authorization") or ""
        scheme, _, value = offered.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self._token.encode()):
            raise ControlError("unauthorized: send Authorization: Bearer <metrics.token> "
                               "(stream sources --token, or $STREAM_API_TOKEN)", 401)

    def _route(self, h: GuardedHandler, method: str, path: str) -> tuple[int, dict[str, Any]]:
        one = _ONE.match(path)
        if path == "/api/sources":
            if method == "GET":
                return 200, {"sources": self.roster.sources()}
            if method == "POST":
                return self.roster.add(_body(h), "POST /api/sources")
            raise ControlError(f"{method} {path}: use GET (list) or POST (add)", 405)
        if one is not None:
            sid = one.group(1)
            if method == "GET":
                return 200, {"source": self.roster.describe(sid)}
            if method == "DELETE":
                return self.roster.remove(sid)
            if method == "PATCH":
                return self.roster.change(sid, _body(h), f"PATCH /api/sources/{sid}")
            raise ControlError(f"{method} {path}: use GET, PATCH or DELETE", 405)
        raise ControlError(f"not found: {path[:80]} (GET /api/openapi.json lists the routes)", 404)


def _body(h: GuardedHandler) -> Any:
    """The request's JSON or YAML object (JSON is read as YAML: the same types)."""
    try:
        length = int(h.headers.get("Content-Length") or "0")
    except ValueError:
        raise ControlError("Content-Length is not a number", 400) from None
    if length <= 0:
        raise ControlError("the request has no body: send the source as a JSON object", 400)
    if length > MAX_BODY:
        raise ControlError(f"the body is {length} bytes; a source definition is at most {MAX_BODY}", 413)
    raw = h.rfile.read(length)
    try:
        return yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        first = " ".join(str(exc).split())[:200]
        raise ControlError(f"the body is not a JSON or YAML object: {first}", 400) from None


def _send(h: GuardedHandler, status: int, body: dict[str, Any]) -> None:
    data = (json.dumps(body) + "\n").encode()
    h.send_response(HTTPStatus(status))
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.send_header("Cache-Control", "no-store")
    if status == 401:
        h.send_header("WWW-Authenticate", 'Bearer realm="stream"')
    h.end_headers()
    h.wfile.write(data)


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the control API."""
    err = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    errors = {str(c): {**err, "description": d} for c, d in (
        (400, "bad definition: the config loader's one-line message"), (401, "token missing or wrong"),
        (403, "off loopback without metrics.token"), (404, "no such source"),
        (409, "the id exists, a split run, or another shard's id"), (503, "the run is stopping"))}
    one = {"description": "the source", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"source": {"$ref": "#/components/schemas/Source"}}}}}}
    definition = {"required": True, "content": {m: {"schema": {"$ref": "#/components/schemas/Definition"}}
                                                for m in ("application/json", "application/yaml")}}
    sid = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": f"^{_ID}$"}}]
    return {
        "openapi": "3.0.3",
        "info": {"title": "stream control API", "version": "1",
                 "description": "The sources of a running pipeline: list, add, change, remove."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "metrics.token (needed off loopback)"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "Definition": {"type": "object", "required": ["id", "type"], "additionalProperties": True,
                               "description": "one item of the config file's sources: list (same keys, "
                                              "same validation); for PATCH, only the keys to change",
                               "properties": {"id": {"type": "string"}, "type": {"type": "string", "enum": [
                                   "file", "folder", "synthetic", "pattern", "mot", "rtsp", "rtmp", "http", "webcam"]},
                                   "url": {"type": "string"}, "path": {"type": "string"},
                                   "fps": {"type": "number"}, "live": {"type": "boolean"}}},
                "Source": {"type": "object", "properties": {
                    "id": {"type": "string"}, "type": {"type": "string"}, "live": {"type": "boolean"},
                    "url": {"type": "string", "nullable": True, "description": "password masked"},
                    "path": {"type": "string", "nullable": True},
                    "fps_setting": {"type": "number", "nullable": True},
                    "state": {"type": "string", "enum": ["starting", "connecting", "streaming", "stalled",
                                                         "failed", "done"]},
                    "fps": {"type": "number", "description": "frames its capture sent per second, recently"},
                    "frame_age_s": {"type": "number", "nullable": True,
                                    "description": "mean output time − capture time, recently"},
                    "frames": {"type": "integer"}, "dropped": {"type": "integer"},
                    "drops": {"type": "object", "additionalProperties": {"type": "integer"},
                              "description": "frames dropped, by reason"},
                    "pid": {"type": "integer", "nullable": True, "description": "its capture process"},
                    "restarts": {"type": "integer"}}},
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/openapi.json": {"get": {"summary": "this document", "security": [],
                                          "responses": {"200": {"description": "OpenAPI 3 JSON"}}}},
            "/api/sources": {
                "get": {"summary": "list the sources", "responses": {"200": {"description": "every source",
                        "content": {"application/json": {"schema": {"type": "object", "properties": {
                            "sources": {"type": "array", "items": {"$ref": "#/components/schemas/Source"}}}}}}},
                        **errors}},
                "post": {"summary": "add a source (its capture starts; the others go on untouched)",
                         "requestBody": definition, "responses": {"201": one, **errors}},
            },
            "/api/sources/{id}": {
                "parameters": sid,
                "get": {"summary": "one source", "responses": {"200": one, **errors}},
                "patch": {"summary": "change a source (its capture restarts with the merged definition)",
                          "requestBody": definition, "responses": {"200": one, **errors}},
                "delete": {"summary": "remove a source: its end of stream finalizes its recording and "
                                      "ends its subscribers' stream",
                           "responses": {"200": {"description": "removed", "content": {"application/json": {
                               "schema": {"type": "object", "properties": {
                                   "removed": {"type": "string"}, "frames": {"type": "integer"},
                                   "clean": {"type": "boolean"}}}}}}, **errors}},
            },
        },
    }
