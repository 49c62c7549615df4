"""Importing super-gradients 3.7.1 without its side effects on the console and the home folder.

Every import of super-gradients in this project goes through ``import_super_gradients``.
What the package does when it is first imported, and how each is turned off
(read from super-gradients 3.7.1's own source):

- ``common/crash_handler``: installs crash tips and the log upload on exit unless the
  environment says ``CRASH_HANDLER=FALSE`` and ``UPLOAD_LOGS=FALSE`` (env_variables.py).
- ``common/auto_logging/auto_logger.py``: ``logging.basicConfig(force=True)`` with a file
  ``$SUPER_GRADIENTS_LOG_DIR/logs_<ppid>_<time>.log`` (default ``~/sg_logs``), which
  replaces the root handlers of the caller, plus a console handler at
  ``$CONSOLE_LOG_LEVEL``. No switch turns the file off, so the import runs with the
  directory set to a temporary one, removed afterwards, and the caller's root handlers
  and level are put back.
- ``common/auto_logging/console_logging.py``: ``ConsoleSink`` replaces ``sys.stdout`` and
  ``sys.stderr`` with tees into ``$SUPER_GRADIENTS_LOG_DIR/console.log``, prints "The
  console stream is logged into …" on stdout and registers an ``atexit`` flush. stdout
  is captured during the import (logged at debug), both streams are put back and the
  flush is unregistered.
- ``sanity_check/env_sanity_check.py``: on import, compares installed packages with its
  pins and logs red "Failed to verify installed packages" warnings. It has no switch;
  its records go only to the console handler above, which runs at ERROR during the
  import (``CONSOLE_LOG_LEVEL``) and is removed after it.
- albumentations (imported by super-gradients) checks PyPI for updates unless
  ``NO_ALBUMENTATIONS_UPDATE=1``; setuptools warns that ``pkg_resources`` is deprecated
  (filtered for the import only).

A variable the user has set is left as it is (``setdefault``), except the log
directory, which is only redirected when the user has not chosen one.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import io
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from types import ModuleType

log = logging.getLogger(__name__)

_QUIET_ENV = {
    "CRASH_HANDLER": "FALSE",
    "UPLOAD_LOGS": "FALSE",
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "CONSOLE_LOG_LEVEL": "ERROR",
    "FILE_LOG_LEVEL": "ERROR",
}


@contextlib.contextmanager
def _first_import() -> Iterator[None]:
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    own_log_dir = "SUPER_GRADIENTS_LOG_DIR" not in os.environ
    log_dir = tempfile.mkdtemp(prefix="stream-sg-logs-") if own_log_dir else None
    if log_dir is not None:
        os.environ["SUPER_GRADIENTS_LOG_DIR"] = log_dir
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stdout, stderr = sys.stdout, sys.stderr
    captured = io.StringIO()
    sys.stdout = captured  # what it prints there is about the console tee, not for the user
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated")
            warnings.filterwarnings("ignore", message=r".*Albumentations")
            yield
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        sink_module = sys.modules.get("super_gradients.common.auto_logging.console_logging")
        sink = getattr(sink_module, "_console_sink", None)
        if sink is not None:
            atexit.unregister(sink._flush)  # it would recreate console.log at exit
        if log_dir is not None:
            del os.environ["SUPER_GRADIENTS_LOG_DIR"]
            shutil.rmtree(log_dir, ignore_errors=True)
        for line in captured.getvalue().splitlines():
            log.debug("super-gradients printed: %s", line)


def import_super_gradients(module: str = "super_gradients.training.models") -> ModuleType:
    """``importlib.import_module(module)`` for a super-gradients module, quietly (first import ~25 s).

    The first call imports the package with its environment check, update check,
    console tee and log file silenced (see the module docstring); later calls are
    plain imports. Nothing is printed on stdout, and nothing is left in ``~/sg_logs``.
    """
    if "super_gradients" in sys.modules:
        return importlib.import_module(module)
    with _first_import():
        importlib.import_module("super_gradients")
    return importlib.import_module(module)
