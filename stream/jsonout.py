"""``--json`` output: the JSON alone on stdout, everything else on stderr.

With ``--json`` the CLI runs the command inside ``json_stdout(args)``: file
descriptor 1 and ``sys.stdout`` point at stderr for the whole command, so whatever
else writes to stdout (super-gradients' console lines on import, a worker process,
a stray ``print``) lands on stderr; the command writes its JSON with ``emit_json``,
which goes to the real stdout. Values are strict JSON: NaN and ±Inf become null.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO


@contextlib.contextmanager
def json_stdout(args: argparse.Namespace) -> Iterator[None]:
    """Around a command run with ``--json`` (a no-op without): see the module doc."""
    if not getattr(args, "json", False):
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    real = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8")
    previous = sys.stdout
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    args.json_stdout = real
    try:
        yield
    finally:
        sys.stdout = previous
        real.flush()
        os.dup2(saved, 1)
        os.close(saved)
        real.close()
        args.json_stdout = None


def emit_json(args: argparse.Namespace, value: Any) -> None:
    """Write ``value`` as one line of strict JSON to the command's real stdout."""
    out: TextIO = getattr(args, "json_stdout", None) or sys.stdout
    out.write(json.dumps(finite(value), allow_nan=False) + "\n")
    out.flush()


def finite(value: Any) -> Any:
    """NaN and ±Inf (no samples, no ground truth) become None, inside dicts, lists and tuples."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
