"""``stream weights list | pull [NAME...] | verify [NAME...] | import FILE``: checkpoints and their cache.

The cache root is ``--cache-dir``, else $STREAM_CACHE, else $XDG_CACHE_HOME/stream,
else ~/.cache/stream; the mirror is ``--mirror``, else $STREAM_WEIGHTS_MIRROR, else the
Hugging Face repo (both read here, at the entry point, and passed down).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.errors import ModelError, WeightsError
from stream.models.weights import (
    MIRROR_ENV,
    OFFICIAL,
    YOLO_NAS_LICENSE,
    cache_dir,
    get_spec,
    mirror_base,
    pull,
    verify,
    weights_path,
)

if TYPE_CHECKING:
    from stream.config import Config

log = logging.getLogger(__name__)

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
# What the demo needs when the package is installed without the repository's configs/.
_DEMO_WEIGHTS = ("yolo_nas_s", "sam_vit_b")


def register(sub: Any) -> None:
    parser = sub.add_parser("weights", help="list, download, import and verify checkpoints")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache root (default: $STREAM_CACHE, else $XDG_CACHE_HOME/stream, else ~/.cache/stream)",
    )
    weights_sub = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)

    p = weights_sub.add_parser("list", help="show the registry, licenses and what is cached")
    p.set_defaults(handler=_list)

    p = weights_sub.add_parser(
        "pull", help="download checkpoints into the cache (mirror first, sha256-checked, resumable)"
    )
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"one of: {', '.join(OFFICIAL)} (default: what --config needs)",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="without NAMEs, fetch what this config needs (default: the demo config, configs/demo.yaml)",
    )
    p.add_argument("--force", action="store_true", help="download again even if the file is cached")
    p.add_argument(
        "--url",
        help="fetch from this URL instead of the registry's sources; only with a single NAME. "
        "The registry's sha256 still applies.",
    )
    p.add_argument(
        "--mirror",
        default=None,
        help=f"base URL of the Hugging Face mirror (default: ${MIRROR_ENV}, else {mirror_base({})})",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds without data before giving up")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(handler=_pull)

    p = weights_sub.add_parser(
        "verify",
        help="check cached files: sha256, and that each loads as its architecture (exit 1 otherwise)",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="names to check (default: every cached one)")
    p.set_defaults(handler=_verify)

    p = weights_sub.add_parser(
        "import", help="check a checkpoint obtained elsewhere (.pth or .safetensors) and add it to the cache"
    )
    p.add_argument("file", type=Path, help="super-gradients .pth (EMA or not), safetensors, or SAM .pth")
    p.add_argument(
        "--name",
        default=None,
        help="what detect.weights / segment.weights will call it (default: the registry name for an "
        "official checkpoint, else the file name without its suffix)",
    )
    p.add_argument("--force", action="store_true", help="replace weights already cached under that name")
    p.set_defaults(handler=_import)


def _cache(args: argparse.Namespace) -> Path:
    return args.cache_dir if args.cache_dir is not None else cache_dir(os.environ)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 2**20:.0f} MiB"


@dataclass(frozen=True)
class NeededWeights:
    """A checkpoint a config needs. key: the config key (``detect.weights``); value: a registry
    name, an imported name or a path; path: where it is looked for; present: whether it is there."""

    key: str
    value: str
    path: Path
    present: bool
    official: bool


def needed_weights(config: Config) -> list[NeededWeights]:
    """The checkpoints ``config``'s pipeline loads (none with --random-weights)."""
    from stream.models.weights_import import imported_path
    from stream.stages import detect, segment

    if config.random_weights:
        return []
    wanted: list[tuple[str, str]] = []
    if "detect" in config.pipeline:
        p = detect.params(config)
        wanted.append(("detect.weights", p.weights or p.model))
    if "segment" in config.pipeline:
        s = segment.params(config)
        if s.model != "tiny":
            wanted.append(("segment.weights", s.weights or f"sam_{s.model}"))
    cache = Path(config.cache_dir)
    found = []
    for key, value in wanted:
        if value in OFFICIAL:
            path = weights_path(OFFICIAL[value], cache)
        else:
            path = imported_path(value, cache) or Path(value).expanduser()
        found.append(NeededWeights(key, value, path, path.is_file(), value in OFFICIAL))
    return found


def describe_missing(needed: list[NeededWeights]) -> tuple[list[str], str | None]:
    """One line per missing checkpoint, and the one command that fetches the official ones (or None)."""
    missing = [n for n in needed if not n.present]
    lines = []
    for n in missing:
        if n.official:  # pull may save it under either name (the mirror's safetensors, the official .pth)
            where = " or ".join(str(n.path.parent / f) for f in OFFICIAL[n.value].filenames())
            lines.append(f"weights {n.key}={n.value}: not in the cache ({where})")
        else:
            lines.append(
                f"weights {n.key}={n.value}: {n.path} is missing (not an official name: "
                "`stream weights import FILE --name NAME` adds it)"
            )
    pullable = list(dict.fromkeys(n.value for n in missing if n.official))
    return lines, (f"stream weights pull {' '.join(pullable)}" if pullable else None)


def _default_names(args: argparse.Namespace, cache: Path) -> list[str]:
    from stream.config import load_config

    path = args.config or (DEMO_CONFIG if DEMO_CONFIG.is_file() else None)
    if path is None:
        return list(_DEMO_WEIGHTS)
    config = load_config(path, [f"cache_dir={cache}"], env=os.environ)
    needed = needed_weights(config)
    names = [n.value for n in needed if n.official]
    others = [f"{n.key}={n.value}" for n in needed if not n.official]
    if others:
        print(f"{path} also needs {', '.join(others)}: not official names, so not fetched")
    if not names:
        print(f"{path} needs no official weights")
    return names


def _list(args: argparse.Namespace) -> int:
    from stream.models.weights_import import list_imported

    cache = _cache(args)
    rows = [("NAME", "FAMILY", "ARCH", "LICENSE", "SHA256", "CACHED")]
    for spec in OFFICIAL.values():
        path = weights_path(spec, cache)
        cached = (
            f"yes, {path.name}, {_size(path.stat().st_size)}"
            if path.is_file()
            else f"no ({_size(spec.size_bytes)})"
        )
        license_short = "NON-COMMERCIAL (Deci)" if spec.non_commercial else spec.license.split(" ")[0]
        check = "published" if spec.sha256 else "first use"
        rows.append((spec.name, spec.family, spec.arch, license_short, check, cached))
    for rec in list_imported(cache):
        classes = f", {rec.num_classes} classes" if rec.num_classes is not None else ""
        rows.append((rec.name, rec.family, f"{rec.arch}{classes}", "yours", "imported", f"yes, {rec.file}"))
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
    names = args.names or _default_names(args, cache)
    mirror = args.mirror.rstrip("/") if args.mirror else mirror_base(os.environ)
    specs = [get_spec(name) for name in names]  # every name checked before anything is fetched
    failed: list[str] = []
    for spec in specs:
        try:
            path = pull(
                spec,
                cache,
                force=args.force,
                progress=not args.no_progress,
                timeout_s=args.timeout,
                urls=[args.url] if args.url else None,
                mirror=mirror,
            )
        except WeightsError as exc:
            failed.append(spec.name)
            print(f"stream: FAILED {spec.name}: {exc}", file=sys.stderr)
            continue
        print(f"{spec.name}: {path}")
    if failed:
        raise WeightsError(
            f"could not fetch {len(failed)} of {len(specs)}: {', '.join(failed)} (reasons above)"
        )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from stream.models.weights_import import list_imported, read_record, verify_imported

    cache = _cache(args)
    imported = {r.name: r for r in list_imported(cache)}
    names = args.names or [
        *(n for n, s in OFFICIAL.items() if weights_path(s, cache).is_file()),
        *imported,
    ]
    if not names:
        print(f"no weights are cached under {cache / 'weights'}; fetch them with `stream weights pull NAME`")
        return 0
    failed = 0
    for name in names:
        record = None if name in OFFICIAL else read_record(name, cache)
        if record is not None:
            status, message = verify_imported(record, cache)
        else:
            result = verify(get_spec(name), cache, check_load=True)
            status, message = (
                result.status,
                (
                    f"{result.path} ({result.message})"
                    if result.status in ("ok", "invalid")
                    else result.message
                ),
            )
        if status == "ok":
            print(f"ok        {name}: {message}")
        elif status == "unverified":
            print(f"UNCHECKED {name}: {message}")
        elif status == "missing":
            failed += 1
            print(f"MISSING   {name}: {message}; fetch it with `stream weights pull {name}`")
        elif status == "invalid":
            failed += 1
            print(f"INVALID   {name}: {message}; replace it with `stream weights pull {name} --force`")
        else:
            failed += 1
            print(f"MISMATCH  {name}: {message}; replace it with `stream weights pull {name} --force`")
    return 1 if failed else 0


def _import(args: argparse.Namespace) -> int:
    from stream.models.weights_import import import_checkpoint

    cache = _cache(args)
    try:
        record, dest = import_checkpoint(args.file, cache, name=args.name, force=args.force)
    except ModelError as exc:
        if isinstance(exc, WeightsError):
            raise
        raise WeightsError(f"cannot import {args.file}: {exc}") from None
    what = f"{record.arch}, {record.num_classes} classes" if record.num_classes else record.arch
    names = (
        f"; class names from the file: {', '.join(record.class_names[:5])}"
        + (" …" if len(record.class_names) > 5 else "")
        if record.class_names
        else ""
    )
    print(f"imported {args.file} as {record.name} ({what}, {record.format}): {dest}")
    print(f"sha256 {record.sha256}{names}")
    if record.family == "yolo_nas":
        print(f"YOLO-NAS weights: {YOLO_NAS_LICENSE}.")
    kind = "detect" if record.family == "yolo_nas" else "segment"
    print(f"use it with --set {kind}.weights={record.name}")
    return 0
