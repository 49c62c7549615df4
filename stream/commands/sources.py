"""``stream sources list|add|remove|change``: a running pipeline's sources, through its
control API (``stream.control``) on the metrics server.

    stream sources list
    stream sources add cam3.yaml                       # a file with one source's keys
    stream sources add '{id: cam3, type: rtsp, url: "rtsp://…"}'
    stream sources change cam3 --set fps=5 --set url=rtsp://…
    stream sources remove cam3

``--url`` (default http://127.0.0.1:9464) is the run's metrics server; ``--token``
(default: $STREAM_API_TOKEN) its ``metrics.token``. ``--json`` prints the API's answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from stream.errors import ConfigError, ControlError

DEFAULT_URL = "http://127.0.0.1:9464"


def register(sub: Any) -> None:
    p = sub.add_parser("sources", help="list, add, change or remove the sources of a running pipeline")
    p.add_argument("--url", default=DEFAULT_URL, help=f"the run's metrics server (default {DEFAULT_URL})")
    p.add_argument("--token", help="the run's metrics.token (default: $STREAM_API_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")
    p.add_argument("--timeout", type=float, default=100.0, help="seconds to wait for an answer (default 100)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="every source: state, fps, frame age, drops")
    add = actions.add_parser("add", help="add a source (validated like the config file)")
    add.add_argument("definition", help="a YAML/JSON file of one source, '-' for stdin, or the object inline")
    change = actions.add_parser("change", help="change a source's keys; its capture restarts")
    change.add_argument("id")
    change.add_argument("--set", dest="changes", action="append", default=[], metavar="KEY=VALUE",
                        help="a key of the source, e.g. --set fps=5 or --set synthetic.width=320 (repeatable)")
    remove = actions.add_parser("remove", help="remove a source (its recording is finalized)")
    remove.add_argument("id")
    p.set_defaults(handler=cmd_sources)


def cmd_sources(args: argparse.Namespace) -> int:
    from stream.jsonout import emit_json

    # the environment is read here, in the entry point, only
    token = args.token or os.environ.get("STREAM_API_TOKEN") or None
    base = args.url.rstrip("/")
    if args.action == "list":
        answer = _call("GET", f"{base}/api/sources", token, None, args.timeout)
    elif args.action == "add":
        answer = _call("POST", f"{base}/api/sources", token, _definition(args.definition), args.timeout)
    elif args.action == "change":
        if not args.changes:
            raise ConfigError("stream sources change: nothing to change; give --set KEY=VALUE, e.g. --set fps=5")
        answer = _call("PATCH", f"{base}/api/sources/{args.id}", token, _patch(args.changes), args.timeout)
    else:
        answer = _call("DELETE", f"{base}/api/sources/{args.id}", token, None, args.timeout)
    if args.json:
        emit_json(args, answer)
    elif args.action == "list":
        print(format_table(answer.get("sources", [])))
    elif args.action == "remove":
        print(f"removed {answer.get('removed')} after {answer.get('frames')} frames"
              + ("" if answer.get("clean", True) else " (not cleanly: see the run's log)"))
    else:
        s = answer.get("source", {})
        print(f"{'added' if args.action == 'add' else 'changed'} {s.get('id')} ({s.get('type')}), "
              f"capture pid {s.get('pid')}")
    return 0


def format_table(sources: list[dict[str, Any]]) -> str:
    lines = [f"{'source':<16} {'type':<9} {'state':<11} {'fps':>6} {'age ms':>7} {'frames':>8} {'dropped':>8}"]
    for s in sources:
        age = f"{s['frame_age_s'] * 1000:.0f}" if s.get("frame_age_s") is not None else "-"
        lines.append(f"{s['id']:<16} {s['type']:<9} {s['state']:<11} {s['fps']:>6.1f} {age:>7} "
                     f"{s['frames']:>8} {s['dropped']:>8}")
    return "\n".join(lines)


def _definition(text: str) -> Any:
    """A source definition from a file, stdin ('-') or the argument itself (YAML or JSON)."""
    if text == "-":
        raw = sys.stdin.read()
    elif Path(text).is_file():
        raw = Path(text).read_text()
    elif text.lstrip().startswith("{"):
        raw = text
    else:
        raise ConfigError(f"stream sources add: {text!r} is neither a file nor an inline object "
                          "like '{id: cam3, type: pattern}'")
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"stream sources add: the definition is not valid YAML/JSON: {' '.join(str(exc).split())}")\
            from None
    if isinstance(data, dict) and isinstance(data.get("sources"), list) and len(data["sources"]) == 1:
        data = data["sources"][0]  # a config-file fragment with one source
    return data


def _patch(changes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in changes:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set fps=5")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw else ""
    return out


def _call(method: str, url: str, token: str | None, body: Any, timeout: float) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"{}")  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error") or exc.reason
        except (ValueError, AttributeError):
            message = exc.reason
        raise ControlError(f"{method} {url}: {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        raise ControlError(f"cannot reach the control API at {url} ({why}); is `stream run` running, with "
                       "metrics.enabled and metrics.api on? (--url picks another address)") from None
