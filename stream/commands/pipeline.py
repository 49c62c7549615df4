"""``stream run CONFIG`` and ``stream check CONFIG`` (``stream demo``: stream.commands.demo)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from stream.config import Config, load_config


def register(sub: Any) -> None:
    run = sub.add_parser("run", help="run a pipeline until its sources end (Ctrl-C stops it cleanly)")
    _common(run)
    run.add_argument("--summary-json", type=Path, help="also write the end-of-run summary as JSON here")
    run.add_argument("--part", choices=["upstream", "downstream"],
                     help="with a split pipeline (split: in the config): the part this host runs "
                          "(same as --set split.part=PART; docs/crosshost.md)")
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
    p.add_argument("--shard", metavar="I/N",
                   help="run only shard I of N of the sources (rendezvous hashing of source ids); "
                        "I=auto takes the ordinal of a StatefulSet pod from $POD_NAME or $HOSTNAME")


def _load(args: argparse.Namespace) -> Config:
    from stream.stages import check_pipeline

    config = load_config(args.config, _cli_overrides(args), env=os.environ)
    check_pipeline(config)  # stream check reports it too, without building anything
    shard = _shard(args)
    if shard is not None:
        from stream.shard import shard_config

        config = shard_config(config, shard)
        ids = [s.id for s in config.sources]
        print(f"stream: shard {shard}: {len(ids)} source(s): {', '.join(ids)}", file=sys.stderr)
    return config


def _shard(args: argparse.Namespace) -> Any:
    """The run's ``--shard`` (a stream.shard.Shard), or None."""
    if not getattr(args, "shard", None):
        return None
    from stream.shard import parse_shard

    # the environment is read here, in the entry point, only
    return parse_shard(args.shard, pod_name=os.environ.get("POD_NAME") or os.environ.get("HOSTNAME"))


def _cli_overrides(args: argparse.Namespace) -> list[str]:
    """Cache dir from the environment (read here, in the entry point, only), then the user's --set."""
    from stream.models.weights import cache_dir

    overrides = [f"cache_dir={cache_dir(os.environ)}", *args.overrides]
    if args.random_weights:
        overrides.append("random_weights=true")
    return overrides


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args)
    if args.part:
        if config.split is None:
            from stream.errors import ConfigError

            raise ConfigError(f"--part {args.part}: {args.config} has no split section, so there are no parts "
                              "(see docs/crosshost.md)")
        config = config.model_copy(update={"split": config.split.model_copy(update={"part": args.part})})
    return _run(config, args)


def _run(config: Config, args: argparse.Namespace) -> int:
    from stream.supervisor import run_pipeline

    # a source added through the control API may use ${ENV:NAME} too, resolved like the file's
    summary = run_pipeline(config, log_level="debug" if args.debug else args.log_level,
                           shard=_shard(args), env=os.environ)
    print(summary.format())
    if args.summary_json:
        args.summary_json.write_text(summary.to_json())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from stream.commands.weights import describe_missing, needed_weights
    from stream.config import LIVE_TYPES
    from stream.errors import WeightsError
    from stream.sources import open_source
    from stream.stages import output
    from stream.transport.ring import FrameRing

    config = _load(args)
    output.preflight(config)  # sink folders that run would fail to make
    missing, fetch = describe_missing(needed_weights(config))  # all of them, before a source can fail
    for line in missing:
        print(line)
    if fetch:
        print(f"fetch them with: {fetch}")
    shm = 0
    for s in config.sources:
        src = open_source(s)
        try:  # a live source connects here (open() alone only checks the address)
            info = src.probe() if hasattr(src, "probe") else src.open()
        finally:
            src.close()
        kind = "live" if (s.live or info.live) else "file"
        print(f"source {s.id}: {s.type} {info.width}x{info.height} @ {info.fps:g} fps ({kind})")
        # as the supervisor sizes the rings: a camera's for max_width x max_height, whatever it sends now
        w, h = (s.max_width, s.max_height) if s.type in LIVE_TYPES else (info.width, info.height)
        shm += FrameRing.nbytes(s.ring_slots, w * h * 3)
    print(f"shared memory: {shm / 2**20:.1f} MiB of /dev/shm for the frame rings")
    print(f"pipeline: capture → {' → '.join([*config.pipeline, 'output'])}")
    if missing:
        how = f"; fetch them with `{fetch}`" if fetch else ""
        raise WeightsError(f"{len(missing)} weight file(s) missing (listed above){how}")
    print("config ok")
    return 0
