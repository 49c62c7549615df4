"""``stream eval NAME``: accuracy evaluations (tracking, masks, detection).

Each evaluation is a module ``stream.eval.NAME`` defining ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int`` (it prints its own report).
"""

from __future__ import annotations

import argparse
import os
from importlib import import_module
from typing import Any

EVALUATIONS = ("track", "masks", "detect")


def register(sub: Any) -> None:
    parser = sub.add_parser("eval", help="score tracking, masks or detection against ground truth")
    eval_sub = parser.add_subparsers(dest="evaluation", metavar="NAME", required=True)
    for name in EVALUATIONS:
        module = import_module(f"stream.eval.{name}")
        p = eval_sub.add_parser(name, help=module.HELP)
        module.add_arguments(p)
        p.set_defaults(handler=_with_cache_root(module.run))


def _with_cache_root(run: Any) -> Any:
    def handler(args: argparse.Namespace) -> int:
        from stream.models.weights import cache_dir

        args.cache_root = cache_dir(os.environ)  # the environment is read here, at the entry point
        return int(run(args))

    return handler
