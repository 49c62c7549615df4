"""The ``stream`` command line: run, check, demo, weights, eval, bench.

Each command group lives in its own module and registers itself through a
``register(subparsers)`` function; the handlers import heavy packages (torch,
super-gradients) lazily so that ``stream --version`` and ``stream check`` stay
fast. A ``StreamError`` escaping a handler is printed as one line and exits
with the error's code; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from stream import __version__
from stream.errors import StreamError
from stream.jsonout import json_stdout

log = logging.getLogger("stream")

# Modules that add sub-commands: each defines register(subparsers) -> None.
COMMAND_MODULES = (
    "stream.commands.pipeline",
    "stream.commands.demo",
    "stream.commands.weights",
    "stream.commands.eval",
    "stream.commands.bench",
    "stream.commands.subscribe",
    "stream.commands.predict",
    "stream.commands.testing",
    "stream.commands.sources",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stream", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"stream {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        import_module(name).register(sub)
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("super_gradients", "matplotlib", "PIL", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging("debug" if args.debug else args.log_level)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        with json_stdout(args):  # --json: the JSON alone on stdout, everything else on stderr
            return handler(args)
    except StreamError as exc:
        if args.debug:
            log.exception("failed")
        print(f"stream: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
