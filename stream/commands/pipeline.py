"""``stream run CONFIG`` and ``stream check CONFIG`` (``stream demo``: stream.commands.demo)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from stream.config import Config, load_config


def register(sub: Any) -> None:
    run = sub.add_parser("run", help="run a pipeline until its sources end (Ctrl-C stops it cleanly)")
    _common(run)
    run.add_argument("--summary-json", type=Path, help="also write the end-of-run summary as JSON here")
    run.set_defaults(handler=cmd_run)

    check = sub.add_parser("check", help="validate a config and open its sources, without running")
    _common(check)
    check.set_defaults(handler=cmd_check)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="YAML config (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set transport.hwm=8 (repeatable)")
    p.add_argument("--random-weights", action="store_true",
                   help="run the models with random weights (no download; outputs are NOT detections)")


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config, _cli_overrides(args), env=os.environ)


def _cli_overrides(args: argparse.Namespace) -> list[str]:
    """Cache dir from the environment (read here, in the entry point, only), then the user's --set."""
    from stream.models.weights import cache_dir

    overrides = [f"cache_dir={cache_dir(os.environ)}", *args.overrides]
    if args.random_weights:
        overrides.append("random_weights=true")
    return overrides


def cmd_run(args: argparse.Namespace) -> int:
    return _run(_load(args), args)


def _run(config: Config, args: argparse.Namespace) -> int:
    from stream.supervisor import run_pipeline

    summary = run_pipeline(config, log_level="debug" if args.debug else args.log_level)
    print(summary.format())
    if args.summary_json:
        args.summary_json.write_text(summary.to_json())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from stream.sources import open_source

    config = _load(args)
    for s in config.sources:
        src = open_source(s)
        try:  # a live source connects here (open() alone only checks the address)
            info = src.probe() if hasattr(src, "probe") else src.open()
        finally:
            src.close()
        kind = "live" if (s.live or info.live) else "file"
        print(f"source {s.id}: {s.type} {info.width}x{info.height} @ {info.fps:g} fps ({kind})")
    print(f"pipeline: capture → {' → '.join([*config.pipeline, 'output'])}")
    print("config ok")
    return 0
