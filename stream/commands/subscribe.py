"""``stream subscribe ENDPOINT`` (print published records) and ``stream keys gen`` (CURVE keypairs).

subscribe prints one line per frame record (``--json``: one JSON object per
line, the record as published with masks as COCO RLE), a line when a source
ends, and at exit, on stderr, per source: records received, frames missing
by seq (gaps) and records lost on the way (pub_seq gaps).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from stream.client import CurveClient, EndRecord, FrameRecord, Subscriber
from stream.errors import ConfigError
from stream.jsonout import emit_json


def register(sub: Any) -> None:
    p = sub.add_parser("subscribe", help="print the objects and masks a pipeline publishes")
    p.add_argument("endpoint", metavar="ENDPOINT", nargs="+",
                   help="publisher address, e.g. tcp://127.0.0.1:5560 (several: all of them, e.g. every shard)")
    p.add_argument(
        "--source",
        action="append",
        default=None,
        metavar="S",
        help="only this source id (repeatable; default: all)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--count", type=int, default=None, metavar="N", help="exit after N frame records")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="exit (status 1) when no record came for this long",
    )
    p.add_argument(
        "--curve-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="this client's NAME.key_secret (CURVE); needs --server-key",
    )
    p.add_argument(
        "--server-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="the publisher's public key file (SERVER.key)",
    )
    p.set_defaults(handler=_subscribe)

    keys = sub.add_parser("keys", help="CURVE keys for the publish sink and its subscribers")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    g = keys_sub.add_parser("gen", help="write NAME.key (public) and NAME.key_secret (ZeroMQ z85 format)")
    g.add_argument("--out", type=Path, default=Path("."), metavar="DIR", help="directory (default: .)")
    g.add_argument("--name", default="stream", help="file name stem (default: stream)")
    g.set_defaults(handler=_keys_gen)


def _subscribe(args: argparse.Namespace) -> int:
    if (args.curve_key is None) != (args.server_key is None):
        raise ConfigError(
            "--curve-key and --server-key go together: CURVE needs this client's "
            "secret key file and the publisher's public key file"
        )
    if args.count is not None and args.count < 1:
        raise ConfigError(f"--count must be at least 1, got {args.count}")
    curve = CurveClient(args.curve_key, args.server_key) if args.curve_key is not None else None
    frames = 0
    status = 0
    with Subscriber(args.endpoint, sources=args.source, curve=curve) as sub:
        try:
            while args.count is None or frames < args.count:
                rec = sub.recv(args.timeout)
                if rec is None:
                    status = 1
                    print(f"stream: no record from {', '.join(args.endpoint)} for {args.timeout:g} s", file=sys.stderr)
                    break
                if args.json:
                    emit_json(args, msgspec.to_builtins(rec))
                else:
                    print(_text(rec), flush=True)
                if isinstance(rec, FrameRecord):
                    frames += 1
        except KeyboardInterrupt:
            pass
        for src in sorted(sub.gaps):
            print(
                f"{src}: {sub.received.get(src, 0)} records, {sub.gaps[src]} frames missing (seq gaps), "
                f"{sub.lost.get(src, 0)} records lost on the way (pub_seq gaps)",
                file=sys.stderr,
            )
    return status


def _text(rec: FrameRecord | EndRecord) -> str:
    if isinstance(rec, EndRecord):
        return f"{rec.source} ended (last seq {rec.last_seq})"
    latency_ms = (time.time_ns() - rec.capture_ns) / 1e6
    parts = []
    for o in rec.objects:
        ident = f"#{o.track_id}" if o.track_id is not None else ""
        box = ",".join(f"{v:.0f}" for v in o.box)
        mask = f" mask={o.mask_kind}/{o.mask_age}" if o.mask_kind is not None else ""
        parts.append(f"{o.class_name}{ident} {o.score:.2f} [{box}]{mask}")
    flag = " RANDOM-WEIGHTS" if rec.random_weights else ""
    return (
        f"{rec.source} seq={rec.seq} pub_seq={rec.pub_seq} pts={rec.pts} latency={latency_ms:.1f}ms"
        f"{flag} objects={len(rec.objects)}" + (": " + "; ".join(parts) if parts else "")
    )


def _keys_gen(args: argparse.Namespace) -> int:
    from stream.transport.keys import generate_curve_keypair, load_curve_public_key

    public, secret = generate_curve_keypair(args.out, args.name)
    print(f"public key  {public}  ({load_curve_public_key(public).decode()})")
    print(f"secret key  {secret}  (keep private: mode 0600)")
    return 0
