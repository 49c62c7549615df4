"""``stream eval NAME``: accuracy evaluations (tracking, masks, detection).

Each evaluation is a module ``stream.eval.NAME`` defining ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int`` (it prints its own report).
"""

from __future__ import annotations

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
        p.set_defaults(handler=module.run)
