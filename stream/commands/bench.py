"""``stream bench NAME [--json]``: the project's own benchmarks (see stream.bench)."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module
from typing import Any

from stream.bench import BENCHMARKS
from stream.jsonout import emit_json
from stream.report import format_table


def register(sub: Any) -> None:
    parser = sub.add_parser("bench", help="measure throughput and latency against the reference")
    bench_sub = parser.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name in BENCHMARKS:
        module = import_module(f"stream.bench.{name}")
        p = bench_sub.add_parser(name, help=module.HELP)
        p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
        module.add_arguments(p)
        p.set_defaults(handler=_make_handler(module))


def _make_handler(module: Any) -> Any:
    def handler(args: argparse.Namespace) -> int:
        from stream.models.weights import cache_dir

        args.cache_root = cache_dir(os.environ)  # the environment is read here, at the entry point
        result = module.run(args)
        if args.json:
            emit_json(args, result.to_dict())
        else:
            print(format_table(result.rows))
            for key, value in result.summary.items():
                print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
        for line in result.failures:
            print(f"stream: {args.bench} failed: {line}", file=sys.stderr)
        return 1 if result.failures else 0

    return handler
