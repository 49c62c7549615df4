"""``stream weights list | pull NAME... | verify [NAME...]``: the official checkpoints and their cache.

The cache root is ``--cache-dir``, else $STREAM_CACHE, else $XDG_CACHE_HOME/stream,
else ~/.cache/stream (read here, at the entry point, and passed down).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from stream.errors import WeightsError
from stream.models.weights import OFFICIAL, YOLO_NAS_LICENSE, cache_dir, get_spec, pull, verify, weights_path


def register(sub: Any) -> None:
    parser = sub.add_parser("weights", help="list, download and verify official checkpoints")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache root (default: $STREAM_CACHE, else $XDG_CACHE_HOME/stream, else ~/.cache/stream)",
    )
    weights_sub = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)

    p = weights_sub.add_parser("list", help="show the registry, licenses and what is cached")
    p.set_defaults(handler=_list)

    p = weights_sub.add_parser("pull", help="download checkpoints into the cache (sha256-checked, resumable)")
    p.add_argument("names", nargs="+", metavar="NAME", help=f"one of: {', '.join(OFFICIAL)}")
    p.add_argument("--force", action="store_true", help="download again even if the file is cached")
    p.add_argument(
        "--url",
        help="fetch from this URL instead of the registry's (a mirror); only with a single NAME. "
        "The registry's sha256 still applies.",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds without data before giving up")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(handler=_pull)

    p = weights_sub.add_parser("verify", help="check cached files against their sha256 (exit 1 on mismatch)")
    p.add_argument("names", nargs="*", metavar="NAME", help="names to check (default: every cached one)")
    p.set_defaults(handler=_verify)


def _cache(args: argparse.Namespace) -> Path:
    return args.cache_dir if args.cache_dir is not None else cache_dir(os.environ)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 2**20:.0f} MiB"


def _list(args: argparse.Namespace) -> int:
    cache = _cache(args)
    rows = [("NAME", "FAMILY", "ARCH", "LICENSE", "SHA256", "CACHED")]
    for spec in OFFICIAL.values():
        path = weights_path(spec, cache)
        cached = f"yes, {_size(path.stat().st_size)}" if path.is_file() else f"no ({_size(spec.size_bytes)})"
        license_short = "NON-COMMERCIAL (Deci)" if spec.non_commercial else spec.license.split(" ")[0]
        check = "published" if spec.sha256 else "first use"
        rows.append((spec.name, spec.family, spec.arch, license_short, check, cached))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print()
    print(f"cache: {cache / 'weights'}")
    print(f"YOLO-NAS weights: {YOLO_NAS_LICENSE}.")
    print("SAM weights: Apache-2.0.")
    print(
        "SHA256 'first use': no published hash is known; the first download is recorded in <file>.sha256 "
        "and checked from then on."
    )
    return 0


def _pull(args: argparse.Namespace) -> int:
    if args.url and len(args.names) != 1:
        raise WeightsError(f"--url applies to a single NAME, got {len(args.names)}: {' '.join(args.names)}")
    cache = _cache(args)
    for name in args.names:
        path = pull(
            get_spec(name),
            cache,
            force=args.force,
            progress=not args.no_progress,
            timeout_s=args.timeout,
            urls=[args.url] if args.url else None,
        )
        print(f"{name}: {path}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    cache = _cache(args)
    names = args.names or [n for n, s in OFFICIAL.items() if weights_path(s, cache).is_file()]
    if not names:
        print(
            f"no official weights are cached under {cache / 'weights'}; fetch them with `stream weights pull NAME`"
        )
        return 0
    failed = 0
    for name in names:
        result = verify(get_spec(name), cache)
        if result.status == "ok":
            print(f"ok        {name}: {result.path} ({result.message})")
        elif result.status == "unverified":
            print(f"UNCHECKED {name}: {result.message}")
        elif result.status == "missing":
            failed += 1
            print(f"MISSING   {name}: {result.message}; fetch it with `stream weights pull {name}`")
        else:
            failed += 1
            print(f"MISMATCH  {name}: {result.message}; replace it with `stream weights pull {name} --force`")
    return 1 if failed else 0
